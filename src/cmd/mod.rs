//! The subcommands. Each returns the process exit status.

mod agent;
mod apply;
mod render;

pub use agent::agent;
pub use apply::{apply, cleanup};
pub use render::render;

use std::process::ExitCode;

use palisade::compiler::Marks;
use palisade::manifest;

use crate::cli::MarkArgs;

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
            Ok(manifests)
        }
        Err(error) => {
            tracing::error!("invalid input: {error}");
            Err(ExitCode::from(EXIT_INVALID_INPUT))
        }
    }
}

fn marks(args: &MarkArgs) -> Result<Marks, ExitCode> {
    Marks::new(args.accept_mark, args.pass_mark).map_err(|error| {
        tracing::error!("invalid marks: {error}");
        ExitCode::from(EXIT_INVALID_INPUT)
    })
}
