//! The subcommands. Each returns the process exit status.

mod agent;
mod apply;
mod crds;
mod explain;
mod render;

pub use agent::agent;
pub use apply::{apply, cleanup};
pub use crds::crds;
pub use explain::explain;
pub use render::render;

use std::process::ExitCode;

use palisade::compiler::{CompilerConfig, DenyAction, LogConfig, Marks};
use palisade::manifest;

use palisade::model::{Enforcement, NodeDenials};

use crate::cli::{DenyArg, EnforcementArg, MarkArgs};

/// Input Palisade rejects; nothing was applied.
pub const EXIT_INVALID_INPUT: u8 = 1;
/// A kernel or command failure.
pub const EXIT_KERNEL_FAILURE: u8 = 2;

fn load(paths: &[std::path::PathBuf]) -> Result<manifest::Manifests, ExitCode> {
    match manifest::load(paths) {
        Ok(manifests) => {
            for warning in &manifests.warnings {
                tracing::warn!("{warning}");
            }
            for notice in &manifests.notices {
                tracing::info!("{notice}");
            }
            Ok(manifests)
        }
        Err(error) => {
            tracing::error!("invalid input: {error}");
            Err(ExitCode::from(EXIT_INVALID_INPUT))
        }
    }
}

fn compiler_config(args: &MarkArgs) -> Result<CompilerConfig, ExitCode> {
    let marks = Marks::new(args.accept_mark, args.pass_mark).map_err(|error| {
        tracing::error!("invalid marks: {error}");
        ExitCode::from(EXIT_INVALID_INPUT)
    })?;
    Ok(CompilerConfig {
        marks,
        deny: match args.deny_action {
            DenyArg::Drop => DenyAction::Drop,
            DenyArg::Reject => DenyAction::Reject,
        },
        log: LogConfig {
            prefix: args.log_prefix.clone(),
            rate_per_second: args.log_rate,
            burst: args.log_burst,
        },
        denials: NodeDenials {
            enforcement: match args.enforcement {
                EnforcementArg::Enforce => Enforcement::Enforce,
                EnforcementArg::Audit => Enforcement::Audit,
            },
            log_denied: args.log_denied,
        },
        nflog_group: args.nflog_group,
        set_capacity: args.max_ipset_size as usize,
    })
}

/// Compiles NODE's state, logging every set too large to write (the policies reading it are
/// compiled failed closed).
fn compile_reporting_overflows(
    index: &palisade::index::ClusterIndex,
    node: &str,
    config: CompilerConfig,
) -> palisade::compiler::DesiredState {
    let compiler = palisade::compiler::NodeCompiler::new(index, node, config);
    for overflow in compiler.overflowing_sets() {
        tracing::error!("{overflow}");
    }
    compiler.into_state()
}

/// The process's peak resident memory so far, in MiB (`VmHWM`), for the timing logs; 0 where
/// `/proc` does not tell.
fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}
