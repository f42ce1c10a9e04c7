use std::process::ExitCode;
use std::sync::Arc;

use palisade::dataplane::{
    resolve_backend, ApplyOptions, ApplyReport, BackendChoice, Dataplane, SystemRunner,
};
use palisade::model::Family;

use super::EXIT_KERNEL_FAILURE;
use crate::cli::{BackendArg, ManifestArgs, MarkArgs};

fn dataplane(backend: BackendArg) -> Result<Dataplane, ExitCode> {
    let runner = Arc::new(SystemRunner);
    match resolve_backend(BackendChoice::from(backend), runner.as_ref()) {
        Ok((backend, reason)) => {
            tracing::info!(backend = %backend, reason = %reason, "iptables backend");
            Ok(Dataplane::new(runner, backend))
        }
        Err(error) => {
            tracing::error!("{error}");
            Err(ExitCode::from(EXIT_KERNEL_FAILURE))
        }
    }
}

pub fn apply(
    input: &ManifestArgs,
    backend: BackendArg,
    dry_run: bool,
    mark_args: &MarkArgs,
) -> ExitCode {
    // Input is validated completely before the kernel is read or written.
    let (manifests, config) = match (
        super::load(&input.manifests),
        super::compiler_config(mark_args),
    ) {
        (Ok(m), Ok(config)) => (m, config),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let state = super::compile_reporting_overflows(&manifests.into_index(), &input.node, config);
    let dataplane = match dataplane(backend) {
        Ok(d) => d,
        Err(code) => return code,
    };
    match dataplane.apply(&state, ApplyOptions { dry_run }) {
        Ok(report) => {
            print_report(&report);
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::from(EXIT_KERNEL_FAILURE)
        }
    }
}

pub fn cleanup(backend: BackendArg) -> ExitCode {
    let dataplane = match dataplane(backend) {
        Ok(d) => d,
        Err(code) => return code,
    };
    match dataplane.cleanup(ApplyOptions::default()) {
        Ok(report) => {
            print_report(&report);
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::from(EXIT_KERNEL_FAILURE)
        }
    }
}

fn print_report(report: &ApplyReport) {
    if report.dry_run {
        for restore in &report.restores {
            println!("# {} {}", restore.program, restore.args.join(" "));
            print!("{}", restore.input);
        }
    }
    let verb = if report.dry_run {
        "would make"
    } else {
        "applied"
    };
    println!(
        "{verb} {} changes in {} ms",
        report.changes,
        report.elapsed.as_millis()
    );
    for family in Family::ALL {
        let stats = report.family(family);
        if stats.skipped || stats.changes() == 0 {
            continue;
        }
        println!(
            "  {family}: {} chains written, {} chains deleted, {} sets created, {} sets destroyed, {} members added, {} members removed, {} hooks inserted, {} hooks removed",
            stats.chains_written,
            stats.chains_deleted,
            stats.sets_created,
            stats.sets_destroyed,
            stats.members_added,
            stats.members_removed,
            stats.hooks_inserted,
            stats.hooks_removed
        );
    }
}
