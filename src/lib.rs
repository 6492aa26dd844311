//! Switchyard: a service-discovery load balancer for Marathon/Mesos clusters.
//!
//! The flow is `discovery → cluster → routing::compile (and zone) → snapshot → proxy / dns /
//! admin`; imports point down that flow only (see ARCHITECTURE in the README).
//! [`run`] wires it together.

pub mod access;
pub mod admin;
pub mod backends;
pub mod background;
pub mod chunked;
pub mod cli;
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
pub mod upgrade;
pub mod workers;
pub mod zone;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{Notify, mpsc};

use crate::config::Config;
use crate::discovery::file::FileSource;
use crate::discovery::marathon::MarathonSource;
use crate::discovery::marathon::client::{BaseUrl, Client};
use crate::metrics::Metrics;
use crate::proxy::Context;
use crate::proxy::listeners::Listeners;
use crate::reconciler::{Reconciler, Status};
use crate::snapshot::Store;

const SOURCE_QUEUE: usize = 4096;

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

/// The DNS listeners: UDP and TCP on `listen`. With port 0 (tests), TCP takes the port UDP was
/// given, a few ports tried in turn when TCP finds that one taken.
fn bind_dns(
    listen: SocketAddr,
) -> Result<
    (
        std::net::UdpSocket,
        Arc<tokio::net::TcpListener>,
        SocketAddr,
    ),
    String,
> {
    let mut attempts = if listen.port() == 0 { 32 } else { 1 };
    loop {
        attempts -= 1;
        let udp = proxy::listeners::bind_std_udp(listen)
            .map_err(|e| format!("dns.listen {listen} (UDP): {e}"))?;
        let bound = udp.local_addr().map_err(|e| e.to_string())?;
        let tcp_addr = if listen.port() == 0 { bound } else { listen };
        match proxy::listeners::bind(tcp_addr) {
            Ok(tcp) => return Ok((udp, tcp, bound)),
            Err(e) if attempts > 0 && e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(format!("dns.listen {tcp_addr} (TCP): {e}")),
        }
    }
}

/// Where each task runs (one rule): accept loops and connections on the data plane's workers;
/// everything that reads the cluster, files or serves operators (sources, compile, the admin
/// API, health checks, reloads, the certificate watcher, the demo's backends) on the control
/// plane's thread; the DNS UDP loop and the relay (`start_relay`) on threads of their own.
struct Planes {
    control: runtime_thread::RuntimeThread,
    workers: Arc<workers::Workers>,
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
        guesses: Default::default(),
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

/// The shared listeners: plain vhosts (and h2c), the app-id listener, HTTPS vhosts with their
/// certificates (watched for changes on the control plane).
fn serve_vhosts(config: &Config, planes: &Planes, ctx: &Arc<Context>) -> Result<(), String> {
    let workers = &planes.workers;
    for addr in &config.http.listen {
        let listener =
            proxy::listeners::bind(*addr).map_err(|e| format!("http.listen {addr}: {e}"))?;
        tracing::info!(
            "http vhost listener on {}",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        let entry = proxy::http::Entry::Vhost { https: false };
        let protocol = if config.http.h2c {
            proxy::http::Protocol::Auto
        } else {
            proxy::http::Protocol::Http1
        };
        proxy::listeners::serve_http(workers, listener, (entry, protocol), ctx)
            .map_err(|e| format!("http.listen {addr}: {e}"))?;
    }
    if let Some(addr) = config.http.app_id_listen {
        let listener =
            proxy::listeners::bind(addr).map_err(|e| format!("http.app_id_listen {addr}: {e}"))?;
        tracing::info!(
            "http app-id listener on {}",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        let entry = (proxy::http::Entry::AppId, proxy::http::Protocol::Http1);
        proxy::listeners::serve_http(workers, listener, entry, ctx)
            .map_err(|e| format!("http.app_id_listen {addr}: {e}"))?;
    }
    if config.https.listen.is_empty() {
        return Ok(());
    }
    let certs = Arc::new(proxy::tls::Certificates::new(
        config.https.certs.clone(),
        config.https.default_cert.clone(),
    ));
    let loaded = certs.reload(&[], &ctx.metrics);
    tracing::info!(certificates = loaded, "TLS certificates loaded");
    let policy = proxy::tls::Policy::parse(&config.https.min_version, &config.https.cipher_suites)?;
    let tls = Arc::new(proxy::tls_edge::HttpsTls::new(
        certs.clone(),
        config.https.h2,
        policy,
    )?);
    for addr in &config.https.listen {
        let listener =
            proxy::listeners::bind(*addr).map_err(|e| format!("https.listen {addr}: {e}"))?;
        tracing::info!(
            "https vhost listener on {}",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        let timeout = config.https.handshake_timeout;
        proxy::listeners::serve_https(workers, listener, (&tls, timeout), ctx)
            .map_err(|e| format!("https.listen {addr}: {e}"))?;
    }
    // Reading certificate files is the control plane's work, not a data-plane worker's.
    planes.control.spawn(proxy::tls::watch(
        certs,
        ctx.store.clone(),
        ctx.metrics.clone(),
        config.https.reload_interval,
    ));
    Ok(())
}

/// The relay (`[relay]`), when configured: its listener bound and served, and its models diffed
/// into events, on a thread of its own (returned: it runs until dropped), so that followers
/// reading 30 MiB snapshots never hold up the control plane's swaps, admin API or probes.
fn start_relay(
    config: &Config,
    metrics: &Arc<Metrics>,
    status: &Arc<reconciler::Status>,
) -> Result<Option<(Arc<relay::Relay>, runtime_thread::RuntimeThread)>, String> {
    let relay_metrics = relay::RelayMetrics::register(metrics);
    let Some(listen) = config.relay.listen else {
        return Ok(None);
    };
    let token = match &config.relay.token_file {
        Some(path) => Some(
            config::read_token(path)
                .map_err(|e| format!("relay.token_file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    // Loaded before anything is bound: a relay asked for TLS never serves in the clear.
    let certs = match &config.relay.tls_cert {
        Some(path) => {
            let certs = Arc::new(proxy::tls::Certificates::new(None, Some(path.clone())));
            if certs.reload(&[], metrics) == 0 {
                return Err(format!(
                    "relay.tls_cert {}: not a certificate chain with its private key",
                    path.display()
                ));
            }
            Some(certs)
        }
        None => None,
    };
    let tls = match &certs {
        Some(certs) => {
            let config =
                proxy::tls::server_config(certs.clone(), false, &Default::default(), None)?;
            Some(tokio_rustls::TlsAcceptor::from(config))
        }
        None => None,
    };
    let thread = runtime_thread::RuntimeThread::start("relay".into(), || {})
        .map_err(|e| format!("relay thread: {e}"))?;
    let listener = {
        let _relay = thread.handle().enter();
        proxy::listeners::bind(listen).map_err(|e| format!("relay.listen {listen}: {e}"))?
    };
    let listen = listener.local_addr().map_err(|e| e.to_string())?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!("relay listening on {scheme}://{listen}");
    let relay = relay::Relay::new(
        relay::Settings {
            listen,
            token,
            max_subscribers: config.relay.max_subscribers,
            subscriber_queue: config.relay.subscriber_queue,
            max_disconnected: config.relay.max_disconnected,
            max_body_bytes: config.relay.max_body_bytes,
            keepalive: config.relay.keepalive_interval,
            timeouts: stall::Timeouts {
                header: config.relay.header_timeout,
                idle: config.relay.idle_timeout,
            },
        },
        relay_metrics,
        {
            let status = status.clone();
            Box::new(move || {
                use std::sync::atomic::Ordering::SeqCst;
                // In this order (`relay::Relay::observe`): the reads counted before a "not
                // connected" seen are all from before that loss; the loss's count is read last,
                // so a loss seen in between only makes the relay more careful.
                let reads = status.full_reads.load(SeqCst);
                let connected = status.source_connected();
                let reads_at_loss = status.reads_at_loss.load(SeqCst);
                relay::Source {
                    reads,
                    connected,
                    reads_at_loss,
                }
            })
        },
    );
    thread.spawn(relay.clone().serve(listener, tls));
    if let Some(certs) = certs {
        // Re-read as often as the HTTPS listeners' files, on the blocking pool (file reads);
        // one that stops loading keeps the last good certificate.
        let (metrics, interval) = (metrics.clone(), config.https.reload_interval);
        thread.spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let (certs, metrics) = (certs.clone(), metrics.clone());
                let _ = tokio::task::spawn_blocking(move || certs.reload(&[], &metrics)).await;
            }
        });
    }
    thread.spawn(relay.clone().follow());
    Ok(Some((relay, thread)))
}

fn admin_token(config: &Config) -> Result<Option<String>, String> {
    match &config.admin.token_file {
        Some(path) => config::read_token(path)
            .map(Some)
            .map_err(|e| format!("admin.token_file {}: {e}", path.display())),
        None => Ok(None),
    }
}

/// DNS on `dns.listen`: the UDP loop on its own thread, TCP on the data plane; both open once
/// this process serves (after an upgrade's handover). Its metric families exist whether DNS is
/// on or not, like every other family. The server, for reloads to tell it the zones served.
fn start_dns(
    config: &Config,
    ctx: &Arc<Context>,
) -> Result<Option<Arc<dns::server::DnsServer>>, String> {
    let dns_metrics = dns::metrics::DnsMetrics::registered(&ctx.metrics);
    let (Some(listen), Some(zone)) = (config.dns.listen, config.zone_config()) else {
        return Ok(None);
    };
    let (udp, tcp, bound) = bind_dns(listen)?;
    let udp = Arc::new(udp);
    upgrade::register(upgrade::Proto::Udp, listen, &udp);
    tracing::info!(zone = %config.dns.domain, "dns listening on {bound}");
    if let Some(public) = config.dns.unlimited_public_listener() {
        tracing::warn!(
            "dns: listening on the public address {public} with response rate limiting off: \
             anyone can reflect floods of answers at spoofed sources through it; set \
             [dns.rrl] responses_per_second, with the cluster's own ranges in exempt"
        );
    }
    let server = Arc::new(dns::server::DnsServer::new(
        ctx.store.clone(),
        dns_metrics,
        zone::Zone::pending(&zone),
        dns::server::Settings {
            upstreams: config.dns.upstreams.clone(),
            upstream_timeout: config.dns.upstream_timeout,
            recursion: config.dns.allow_recursion()?,
            rrl: config.dns.rrl.settings()?,
            zone_resolvers: config.dns.zone_resolvers(config.vip.enabled)?,
            tcp_idle_timeout: config.dns.tcp_idle_timeout,
            tcp_connections: config.dns.tcp_connections,
            tcp_connections_per_client: config.dns.tcp_connections_per_client,
            forwards_per_client: config.dns.forwards_per_transport(),
            forwards_per_domain: config.dns.forwards_per_domain,
            ipv6_client_prefix: config.dns.ipv6_client_prefix,
        },
    ));
    let (udp_server, runtime) = (server.clone(), tokio::runtime::Handle::current());
    let gate = ctx.clone();
    std::thread::Builder::new()
        .name("dns-udp".into())
        .spawn(move || {
            runtime.block_on(gate.serving.wait());
            udp_server.serve_udp(udp, runtime)
        })
        .map_err(|e| format!("dns thread: {e}"))?;
    let (gate, tcp_server) = (ctx.clone(), server.clone());
    tokio::spawn(async move {
        gate.serving.wait().await;
        tcp_server.serve_tcp(tcp).await
    });
    Ok(Some(server))
}

/// The cluster's source (the file, or Marathon) on the control plane; its events, and the
/// channel the reconciler asks it to re-fetch apps on.
#[allow(clippy::type_complexity)]
fn start_source(
    config: &Config,
    planes: &Planes,
    metrics: &Arc<Metrics>,
    resync: &Arc<Notify>,
) -> Result<
    (
        mpsc::Receiver<discovery::SourceEvent>,
        mpsc::Sender<crate::cluster::AppId>,
    ),
    String,
> {
    let (events_tx, events_rx) = mpsc::channel(SOURCE_QUEUE);
    let (refetch_tx, refetch_rx) = mpsc::channel(1024);
    let d = &config.discovery;
    if let Some(path) = &d.file {
        tracing::info!(file = %path.display(), "discovery: file source");
        let source = FileSource {
            path: path.clone(),
            interval: d.file_poll_interval,
            max_bytes: d.max_snapshot_bytes,
            events: events_tx,
            resync: resync.clone(),
            metrics: metrics.clone(),
        };
        planes.control.spawn(source.run());
        return Ok((events_rx, refetch_tx));
    }
    let token = match &d.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("discovery.token_file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let mut client = Client::new(
        d.basic_auth.as_deref(),
        token.as_deref(),
        d.connect_timeout,
        d.request_timeout,
    );
    if let Some(path) = &d.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("discovery.ca_file {}: {e}", path.display()))?;
        let connector = discovery::marathon::client::tls_connector(&pem)
            .map_err(|e| format!("discovery.ca_file {}: {e}", path.display()))?;
        client = client.with_tls(connector);
    }
    if let Some(path) = &d.service_account_file {
        let credentials = config::read_service_account(path, d.login_endpoint.as_deref())
            .map_err(|e| format!("discovery.service_account_file {}: {e}", path.display()))?;
        tracing::info!(uid = %credentials.uid, "discovery: DC/OS service-account login");
        client = client.with_service_account(credentials);
    }
    if !d.mesos.masters.is_empty() {
        let masters = d
            .mesos
            .masters
            .iter()
            .map(|m| discovery::mesos::parse_master(m))
            .collect::<Result<Vec<_>, _>>()?;
        tracing::info!(masters = ?d.mesos.masters, "discovery: Mesos");
        let source = discovery::mesos::MesosSource {
            masters,
            client: client.clone(),
            config: config.mesos_settings(),
            events: events_tx.clone(),
            metrics: metrics.clone(),
        };
        planes.control.spawn(source.run());
    }
    if d.marathon.is_empty() {
        return Ok((events_rx, refetch_tx));
    }
    let urls = d
        .marathon
        .iter()
        .map(|u| BaseUrl::parse(u))
        .collect::<Result<Vec<_>, _>>()?;
    tracing::info!(marathon = ?d.marathon, "discovery: Marathon");
    let source = MarathonSource {
        urls,
        client,
        config: config.marathon_settings(),
        events: events_tx,
        refetch: refetch_rx,
        resync: resync.clone(),
        metrics: metrics.clone(),
    };
    planes.control.spawn(source.run());
    Ok((events_rx, refetch_tx))
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
