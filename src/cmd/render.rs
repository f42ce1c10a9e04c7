use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use palisade::model::Family;
use palisade::render;

use super::EXIT_KERNEL_FAILURE;
use crate::cli::{FamilyArg, ManifestArgs, MarkArgs};

pub fn render(input: &ManifestArgs, family: FamilyArg, mark_args: &MarkArgs) -> ExitCode {
    let started = Instant::now();
    let (manifests, config) = match (
        super::load(&input.manifests),
        super::compiler_config(mark_args),
    ) {
        (Ok(m), Ok(config)) => (m, config),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let loaded = Instant::now();
    let state = super::compile_reporting_overflows(&manifests.into_index(), &input.node, config);
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
    let written = std::io::stdout().lock().write_all(out.as_bytes());
    let finished = Instant::now();
    tracing::debug!(
        load_ms = (loaded - started).as_millis() as u64,
        compile_and_print_ms = (finished - loaded).as_millis() as u64,
        bytes = out.len(),
        peak_rss_mib = super::peak_rss_mib(),
        "rendered"
    );
    match written {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`| head`) is the reader's choice, not a failure worth a message.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "cannot write to stdout");
            ExitCode::from(EXIT_KERNEL_FAILURE)
        }
    }
}
