//! Switchyard: a service-discovery load balancer for Marathon/Mesos clusters.
//!
//! The flow is `discovery → cluster → routing::compile (and zone) → snapshot → proxy / dns /
//! admin`; imports point down that flow only (see ARCHITECTURE in the README).
//! [`run`] wires it together, step by step; each subsystem's start is in `wiring.rs`.

pub mod access;
pub mod admin;
pub mod backends;
pub mod background;
pub mod bulk_text;
pub mod chunked;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod control_plane;
pub mod demo;
pub mod discovery;
pub mod dns;
pub mod health_check;
pub mod metrics;
pub mod proxy;
pub mod reconciler;
pub mod relay;
pub mod reload;
pub mod rollout;
pub mod routing;
pub mod runtime_thread;
pub mod sd_notify;
pub mod snapshot;
pub mod stall;
pub mod text;
pub mod upgrade;
mod wiring;
pub mod workers;
pub mod zone;

use std::sync::Arc;

use tokio::sync::{Notify, mpsc};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::Context;
use crate::proxy::listeners::Listeners;
use crate::reconciler::{Reconciler, Status};
use crate::snapshot::Store;
use crate::wiring::{Planes, admin_token, serve_vhosts, start_dns, start_relay, start_source};

/// How `switchyard run` was asked to start.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// Also start the demo backends.
    pub demo: bool,
    /// Take the listening sockets over from the process at `runtime.upgrade_socket`.
    pub upgrade: bool,
    /// Where the configuration came from; `None`: the embedded default (nothing to reload).
    pub config_path: Option<std::path::PathBuf>,
}

/// Runs switchyard until SIGTERM or SIGINT, or until a new process took over: the steps below,
/// in order, then a drain.
pub async fn run(config: Config, options: RunOptions) -> Result<(), String> {
    let planes = Planes {
        control: control_plane::start().map_err(|e| format!("control plane thread: {e}"))?,
        workers: Arc::new(
            workers::Workers::start(config.worker_threads())
                .map_err(|e| format!("worker threads: {e}"))?,
        ),
    };
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(Store::new());
    let status = Arc::new(Status::default());
    status.mesos_only.store(
        config.discovery.marathon.is_empty() && !config.discovery.mesos.masters.is_empty(),
        std::sync::atomic::Ordering::Relaxed,
    );
    let admin_token = admin_token(&config)?;
    // Before any socket: a second instance on the same `rollout.state_dir` is refused here.
    let rollouts = Arc::new(rollout::Rollouts::new(
        rollout::Settings {
            interval: config.rollout.interval,
            state_dir: config.rollout.state_dir.clone(),
            taking_over: options.upgrade,
        },
        metrics.clone(),
    )?);
    let mut ctx = Context::new(store.clone(), metrics.clone(), config.proxy_settings());
    ctx.trace_token = admin_token.as_deref().map(Into::into);
    let handover = take_over(&config, &options, &mut ctx)?;
    let ctx = Arc::new(ctx);

    let admin_listener = {
        let _control = planes.control.handle().enter();
        proxy::listeners::bind(config.admin.listen)
            .map_err(|e| format!("admin.listen {}: {e}", config.admin.listen))?
    };
    let admin_addr = admin_listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!("admin listening on {admin_addr}");
    serve_vhosts(&config, &planes, &ctx)?;

    let listeners = Listeners::new(ctx.clone(), planes.workers.clone());
    let (commands_tx, commands_rx) = mpsc::channel(64);
    let (reload_tx, reload_rx) = mpsc::channel(8);
    // A full resync of the source: SIGHUP, and marathon-lb's `/_mlb_signal/hup` on the admin
    // listener.
    let resync = Arc::new(Notify::new());
    let held_weights = rollouts.held();
    planes
        .control
        .spawn(rollouts.clone().run(store.clone(), commands_tx.clone()));
    let history = admin::history::History::new(config.admin.history_interval);
    let admin = Arc::new(admin::Admin {
        rollouts,
        guesses: ctx.guesses.clone(),
        token: admin_token,
        sessions: admin::session::Sessions::new(config.admin.session_ttl),
        loopback_reads_open: config.admin.loopback_reads_open,
        resync: resync.clone(),
        commands: commands_tx.clone(),
        reload: reload_tx.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        status: status.clone(),
        bind_failures: listeners.failures(),
        history: history.clone(),
        timeouts: stall::Timeouts {
            header: config.admin.header_timeout,
            idle: config.admin.idle_timeout,
        },
        connections: {
            let refused = prometheus_client::metrics::counter::Counter::default();
            metrics.register(
                "admin_refused_connections",
                "Connections to the admin API closed at once because admin.max_connections were open",
                refused.clone(),
            );
            stall::Slots::with_probe_reserve(config.admin.max_connections, refused)
        },
        planning: tokio::sync::Semaphore::new(1),
    });
    planes.control.spawn(admin.serve(admin_listener));
    planes.control.spawn(history.run(store.clone()));

    let dns = start_dns(&config, &ctx)?;
    let (events_rx, refetch_tx) = start_source(&config, &planes, &metrics, &resync)?;

    // The control plane: compile and publish, health checks, reloads.
    let registry = backends::Registry::new(metrics.clone(), config.proxy.drain_timeout);
    registry.series_of_used_only(config.admin.backend_series == config::BackendSeries::Used);
    // Its thread runs until `run` returns (after the drain), like the control plane's.
    let (relay, _relay_thread) = match start_relay(&config, &metrics, &status)? {
        Some((relay, thread)) => (Some(relay), Some(thread)),
        None => (None, None),
    };
    let mut reconciler = Reconciler::new(
        config.compile_config(),
        config.discovery.debounce,
        registry,
        store.clone(),
        listeners,
        metrics.clone(),
        status.clone(),
        refetch_tx,
        ctx.clone(),
        config.zone_config(),
    );
    // The rollouts recorded in `rollouts.json` are in the first table already.
    reconciler.held = held_weights;
    if let Some(relay) = relay {
        // Read on the reconciler's task, after every event the swap's model holds was applied:
        // the full reads in it.
        let status = status.clone();
        reconciler.on_swap = Some(Box::new(move |cluster| {
            let reads = status.full_reads.load(std::sync::atomic::Ordering::Relaxed);
            relay.offer(cluster, reads)
        }));
    }
    if config.health_checks.enabled {
        let targets = reconciler.health_targets.subscribe();
        let concurrency = config.health_checks.concurrency;
        planes
            .control
            .spawn(health_check::run(targets, concurrency, metrics.clone()));
    }
    let reconciler = planes.control.spawn(reconciler.run(events_rx, commands_rx));
    let reloader = reload::Reloader {
        path: options.config_path.clone(),
        started: config.clone(),
        running: config.clone(),
        ctx: ctx.clone(),
        commands: commands_tx,
        metrics: metrics.clone(),
        dns,
    };
    planes.control.spawn(reloader.run(reload_rx));
    if options.demo {
        planes.control.spawn(demo::run(store.clone()));
    }

    let handed_over = Arc::new(Notify::new());
    if handover.is_none() {
        // Under systemd (Type=notify): started, every listener bound. Not "synced": a source
        // that is down must not fail the start (or hold up boot); /readyz says that.
        sd_notify::notify(&format!("MAINPID={}\nREADY=1", std::process::id()));
    }
    if let Some(path) = config.runtime.upgrade_socket.clone() {
        let (ctx, status, handed_over) = (ctx.clone(), status.clone(), handed_over.clone());
        tokio::spawn(async move {
            if let Some(handover) = handover {
                finish_takeover(handover, &ctx, &status).await;
            }
            if let Err(e) = upgrade::listen(path.clone(), handed_over) {
                tracing::warn!(socket = %path.display(), "upgrade socket: {e}; upgrades are off");
            }
        });
    }

    let upgrade = config
        .runtime
        .upgrade_socket
        .is_some()
        .then(|| options.config_path.clone())
        .flatten();
    wait_for_signals(&resync, &reload_tx, &handed_over, upgrade.as_deref()).await;
    tracing::info!(
        open = ctx.shutdown.open(),
        "stopping: no longer accepting, draining"
    );
    ctx.shutdown.begin();
    let _ = reconciler.await; // closes every listener on its way out
    // The drain timeout in force now: a reload may have changed it since startup.
    let drain_timeout = ctx.settings.load().drain_timeout;
    let drained = tokio::time::timeout(drain_timeout, ctx.shutdown.idle()).await;
    match drained {
        Ok(()) => tracing::info!("drained, exiting"),
        Err(_) => tracing::warn!(open = ctx.shutdown.open(), "drain timeout, exiting"),
    }
    let workers = planes.workers;
    let _ = tokio::task::spawn_blocking(move || workers.stop()).await;
    Ok(())
}

/// Taking over from a running process (`--upgrade`): its sockets, and nothing accepted until
/// this one is ready.
fn take_over(
    config: &Config,
    options: &RunOptions,
    ctx: &mut Context,
) -> Result<Option<upgrade::Handover>, String> {
    match (&config.runtime.upgrade_socket, options.upgrade) {
        (Some(path), true) => match upgrade::take_over(path) {
            Ok(Some(handover)) => {
                tracing::info!(sockets = handover.count, socket = %path.display(),
                    "upgrade: took the listening sockets over");
                ctx.serving = proxy::Gate::closed();
                Ok(Some(handover))
            }
            Ok(None) => {
                tracing::warn!(socket = %path.display(),
                    "upgrade: no running process to take over from; binding afresh");
                Ok(None)
            }
            Err(e) => Err(format!("upgrade from {}: {e}", path.display())),
        },
        (None, true) => Err("--upgrade needs runtime.upgrade_socket".into()),
        (_, false) => Ok(None),
    }
}

/// A new process that took sockets over opens its accept loops once its first table is live,
/// then tells the old one to drain.
async fn finish_takeover(handover: upgrade::Handover, ctx: &Context, status: &Status) {
    while !status.ready.load(std::sync::atomic::Ordering::Relaxed) {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    ctx.serving.set_open();
    // Under systemd this process becomes the service's main one before the old one is told
    // to go: the old one's exit must not look like the service's end.
    sd_notify::notify(&format!("MAINPID={}\nREADY=1", std::process::id()));
    let unclaimed = upgrade::close_unclaimed();
    match tokio::task::spawn_blocking(move || handover.ready()).await {
        Ok(Ok(())) => tracing::info!(unclaimed, "upgrade: serving; the old process drains"),
        Ok(Err(e)) => tracing::warn!("upgrade: could not tell the old process: {e}"),
        Err(e) => tracing::warn!("upgrade: {e}"),
    }
}

/// SIGUSR2: starts this binary again (`argv[0]`, which an upgrade has replaced) as
/// `run --upgrade --config FILE`, a child of this process: under systemd it stays in the
/// service, with its user, sandbox and capabilities. It takes the sockets over through the
/// upgrade socket; this process then drains and exits. A child that fails leaves this one
/// serving; its exit is logged.
fn start_upgrade(config: &std::path::Path) {
    let exe = std::env::args_os()
        .next()
        .unwrap_or_else(|| "switchyard".into());
    let child = std::process::Command::new(&exe)
        .args(["run", "--upgrade", "--config"])
        .arg(config)
        .stdin(std::process::Stdio::null())
        .spawn();
    match child {
        Ok(mut child) => {
            tracing::info!(pid = child.id(), exe = ?exe, "SIGUSR2: started the upgrade");
            std::thread::spawn(move || match child.wait() {
                Ok(status) if status.success() => {}
                Ok(status) => tracing::error!("upgrade process exited: {status}; still serving"),
                Err(e) => tracing::error!("upgrade process: {e}"),
            });
        }
        Err(e) => tracing::error!(exe = ?exe, "SIGUSR2: cannot start the upgrade: {e}"),
    }
}

async fn wait_for_signals(
    resync: &Notify,
    reload: &mpsc::Sender<reload::Request>,
    handed_over: &Notify,
    upgrade: Option<&std::path::Path>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut usr2 = signal(SignalKind::user_defined2()).expect("SIGUSR2 handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration and resyncing");
                resync.notify_one();
                let (reply, _) = tokio::sync::oneshot::channel();
                let _ = reload.try_send(reply);
            }
            _ = usr2.recv() => match upgrade {
                Some(config) => start_upgrade(config),
                None => tracing::warn!(
                    "SIGUSR2: a binary upgrade needs runtime.upgrade_socket and --config"
                ),
            },
            _ = handed_over.notified() => return,
            _ = term.recv() => return,
            _ = int.recv() => return,
        }
    }
}
