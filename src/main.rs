#![forbid(unsafe_code)]

mod cli;
mod cmd;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, LogFormat};

fn main() -> ExitCode {
    // A usage error is bad input (exit 1), as for every other input Palisade rejects; 2 means
    // a kernel or command failure. --help and --version print and exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { 1 } else { 0 });
        }
    };
    init_logging(cli.log_format);
    match cli.command {
        Command::Render {
            input,
            family,
            marks,
        } => cmd::render(&input, family, &marks),
        Command::Apply {
            input,
            backend,
            dry_run,
            marks,
        } => cmd::apply(&input, backend, dry_run, &marks),
        Command::Cleanup { backend } => cmd::cleanup(backend),
        Command::Agent(args) => cmd::agent(args),
        Command::Explain(args) => cmd::explain(&args),
        Command::Crds { group } => cmd::crds(group),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
