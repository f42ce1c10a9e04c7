use std::process::ExitCode;

use palisade::explain::{self, Endpoint};
use palisade::model::{ObjectKey, Protocol};

use super::EXIT_INVALID_INPUT;
use crate::cli::{ExplainArgs, OutputArg, ProtocolArg};

/// A connection that would be dropped.
const EXIT_DENIED: u8 = 3;

fn endpoint(flag: &str, text: &str) -> Result<Endpoint, ExitCode> {
    Endpoint::parse(text).map_err(|error| {
        tracing::error!("invalid input: --{flag}: {error}");
        ExitCode::from(EXIT_INVALID_INPUT)
    })
}

fn print_json(value: &impl serde::Serialize) -> Result<(), ExitCode> {
    match serde_json::to_string_pretty(value) {
        Ok(text) => {
            println!("{text}");
            Ok(())
        }
        Err(error) => {
            tracing::error!(%error, "cannot write the explanation as JSON");
            Err(ExitCode::from(EXIT_INVALID_INPUT))
        }
    }
}

/// The live cluster, listed once.
fn read_cluster(args: &ExplainArgs) -> Result<palisade::index::ClusterIndex, ExitCode> {
    let unreachable = |error: palisade::k8s::SourceError| {
        tracing::error!("cannot read the cluster: {error}");
        ExitCode::from(EXIT_INVALID_INPUT)
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            tracing::error!(%error, "cannot start the client runtime");
            ExitCode::from(EXIT_INVALID_INPUT)
        })?;
    let manifests = runtime.block_on(async {
        let client = palisade::k8s::client_from(args.kubeconfig.as_deref()).await?;
        palisade::k8s::snapshot(&client, args.calico_api.into()).await
    });
    let manifests = manifests.map_err(unreachable)?;
    for warning in &manifests.warnings {
        tracing::warn!("{warning}");
    }
    Ok(manifests.into_index())
}

pub fn explain(args: &ExplainArgs) -> ExitCode {
    match run(args) {
        Ok(code) | Err(code) => code,
    }
}

fn run(args: &ExplainArgs) -> Result<ExitCode, ExitCode> {
    let config = super::compiler_config(&args.marks)?;
    let index = if args.manifests.is_empty() {
        read_cluster(args)?
    } else {
        super::load(&args.manifests)?.into_index()
    };
    let failed = |error: explain::ExplainError| {
        tracing::error!("invalid input: {error}");
        ExitCode::from(EXIT_INVALID_INPUT)
    };
    if let Some(pod) = &args.pod {
        let Endpoint::Pod(key) = endpoint("pod", pod)? else {
            tracing::error!("invalid input: --pod takes NAMESPACE/POD");
            return Err(ExitCode::from(EXIT_INVALID_INPUT));
        };
        let policies =
            explain::pod_policies(&index, &ObjectKey::clone(&key), &config).map_err(failed)?;
        match args.output {
            OutputArg::Text => print!("{}", policies.text()),
            OutputArg::Json => print_json(&policies)?,
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(from), Some(to), Some(port)) = (&args.from, &args.to, args.port) else {
        tracing::error!("invalid input: give --from, --to and --port, or --pod");
        return Err(ExitCode::from(EXIT_INVALID_INPUT));
    };
    let protocol = match args.protocol {
        ProtocolArg::Tcp => Protocol::Tcp,
        ProtocolArg::Udp => Protocol::Udp,
        ProtocolArg::Sctp => Protocol::Sctp,
    };
    let explanation = explain::explain(
        &index,
        &endpoint("from", from)?,
        &endpoint("to", to)?,
        protocol,
        port,
        &config,
    )
    .map_err(failed)?;
    match args.output {
        OutputArg::Text => print!("{}", explanation.text()),
        OutputArg::Json => print_json(&explanation)?,
    }
    Ok(if explanation.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DENIED)
    })
}
