#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

use clap::Parser;
use palisade::compiler::{self, Marks};
use palisade::model::Family;
use palisade::{manifest, render};

use cli::{Cli, Command, FamilyArg, LogFormat};

/// Exit status for input Palisade rejects (nothing was applied).
const EXIT_INVALID_INPUT: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Render { manifests, node, family } => render_command(&manifests, &node, family),
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

fn load(paths: &[std::path::PathBuf]) -> Result<manifest::Manifests, ExitCode> {
    match manifest::load(paths) {
        Ok(manifests) => {
            for warning in &manifests.warnings {
                tracing::warn!("{warning}");
            }
            Ok(manifests)
        }
        Err(error) => {
            tracing::error!("invalid input: {error}");
            Err(ExitCode::from(EXIT_INVALID_INPUT))
        }
    }
}

fn render_command(paths: &[std::path::PathBuf], node: &str, family: FamilyArg) -> ExitCode {
    let manifests = match load(paths) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let index = manifests.into_index();
    let state = compiler::compile(&index, node, Marks::default());
    let families: &[Family] = match family {
        FamilyArg::Ipv4 => &[Family::V4],
        FamilyArg::Ipv6 => &[Family::V6],
        FamilyArg::Both => &Family::ALL,
    };
    let mut out = String::new();
    for family in families {
        let family_state = state.family(*family);
        // IPv6 text only where this node has IPv6 pods, unless asked for explicitly.
        if family_state.chains.is_empty() && families.len() > 1 {
            continue;
        }
        out.push_str(&render::full_text(family_state, *family));
    }
    print!("{out}");
    ExitCode::SUCCESS
}
