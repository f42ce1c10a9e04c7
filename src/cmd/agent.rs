use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade::agent::{self, AgentConfig, AgentMessage, OverflowListener};
use palisade::dataplane::{resolve_backend, BackendChoice, Dataplane, SystemRunner};
use palisade::flowlog::DeniedLogConfig;
use palisade::k8s::CalicoApi;
use palisade::metrics::{self, Metrics};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;

use super::{EXIT_INVALID_INPUT, EXIT_KERNEL_FAILURE};
use crate::cli::AgentArgs;

/// How often the manifest-directory source looks for changes.
const MANIFEST_POLL: Duration = Duration::from_millis(200);
/// How long the last tasks get to finish after the sync thread stopped.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

pub fn agent(args: AgentArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::from(EXIT_KERNEL_FAILURE);
        }
    };
    let code = runtime.block_on(run(args));
    // The sync thread has stopped, so the kernel's rules are final. What is left in the runtime
    // (watch streams, the metrics server, requests in flight) has nothing more to do, and must
    // not hold the exit that Kubernetes waits for with SIGKILL ready.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    tracing::info!("stopped");
    code
}

async fn run(args: AgentArgs) -> ExitCode {
    let compiler = match super::compiler_config(&args.marks) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if args.node.is_empty() {
        tracing::error!("--node (or NODE_NAME) is empty");
        return ExitCode::from(EXIT_INVALID_INPUT);
    }
    let metrics = match Metrics::new() {
        Ok(m) => m,
        Err(error) => {
            tracing::error!(%error, "cannot set up metrics");
            return ExitCode::from(EXIT_KERNEL_FAILURE);
        }
    };
    let runner = Arc::new(SystemRunner);
    let backend = match resolve_backend(BackendChoice::from(args.backend), runner.as_ref()) {
        Ok((backend, _)) => backend,
        Err(error) => {
            tracing::error!(%error, "cannot read iptables");
            return ExitCode::from(EXIT_KERNEL_FAILURE);
        }
    };
    let dataplane = Arc::new(Dataplane::new(runner, backend));
    let mut config = AgentConfig::new(args.node.clone());
    config.debounce = args.debounce;
    config.refresh_interval = args.refresh_interval;
    config.counters_interval = args.counters_interval;
    config.denied_log = (args.denied_log_rate > 0).then_some(DeniedLogConfig {
        group: compiler.nflog_group,
        window: args.denied_log_window,
        lines_per_second: args.denied_log_rate,
    });
    config.compiler = compiler;
    config.cleanup_on_exit = args.cleanup_on_exit;

    let server = tokio::spawn(metrics::serve(Arc::clone(&metrics), args.metrics_addr));
    let stop_files = Arc::new(AtomicBool::new(false));

    let (sender, core) = match args.manifests {
        Some(paths) => {
            config.kinds = agent::Kind::ALL.to_vec();
            let (sender, core) = match start_core(config, dataplane, &metrics) {
                Ok(started) => started,
                Err(code) => return code,
            };
            tracing::info!(?paths, node = %args.node, "agent reading manifests");
            let files = sender.clone();
            let stop = Arc::clone(&stop_files);
            std::thread::spawn(move || agent::files::watch(paths, files, MANIFEST_POLL, stop));
            (sender, core)
        }
        None => {
            let connection = match palisade::k8s::Connection::infer().await {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::error!(%error, "cannot reach Kubernetes");
                    return ExitCode::from(EXIT_INVALID_INPUT);
                }
            };
            let (overflows_now, overflows) = tokio::sync::watch::channel(Vec::new());
            config.overflow_listener = Some(OverflowListener::new(move |now| {
                overflows_now.send_replace(now.to_vec());
            }));
            let choice = CalicoApi::from(args.calico_api);
            // The first sync must wait for every kind that will be watched, so the groups are
            // known before the core starts; the kernel keeps its rules meanwhile.
            let served = palisade::k8s::discover(connection.client(), choice).await;
            config.kinds = served.kinds();
            let (sender, core) = match start_core(config, dataplane, &metrics) {
                Ok(started) => started,
                Err(code) => return code,
            };
            tracing::info!(node = %args.node, calico = served.calico.map(|g| g.as_str()), "agent watching the API server");
            tokio::spawn(palisade::k8s::run(
                connection,
                choice,
                served,
                sender.clone(),
                Arc::clone(&metrics),
                overflows,
            ));
            (sender, core)
        }
    };
    tokio::select! {
        signal = shutdown_signal() => tracing::info!(signal, "shutting down"),
        result = server => {
            match result {
                Ok(Err(error)) => tracing::error!(%error, "metrics server stopped"),
                other => tracing::error!(?other, "metrics server stopped"),
            }
            stop_files.store(true, Ordering::SeqCst);
            let _ = sender.send(AgentMessage::Shutdown);
            let _ = tokio::task::spawn_blocking(move || core.join()).await;
            return ExitCode::from(EXIT_KERNEL_FAILURE);
        }
    }
    stop_files.store(true, Ordering::SeqCst);
    let _ = sender.send(AgentMessage::Shutdown);
    let _ = tokio::task::spawn_blocking(move || core.join()).await;
    ExitCode::SUCCESS
}

fn start_core(
    config: AgentConfig,
    dataplane: Arc<Dataplane>,
    metrics: &Arc<Metrics>,
) -> Result<(Sender<AgentMessage>, JoinHandle<()>), ExitCode> {
    agent::spawn(config, dataplane, Arc::clone(metrics)).map_err(|error| {
        tracing::error!(%error, "cannot start the sync thread");
        ExitCode::from(EXIT_KERNEL_FAILURE)
    })
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
