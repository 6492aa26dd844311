//! Switchyard: a service-discovery load balancer for Marathon/Mesos clusters.
//!
//! The flow is `discovery → cluster → routing::compile → routing::store → proxy / admin`.
//! [`run`] wires it together.

pub mod admin;
pub mod backends;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod dns;
pub mod metrics;
pub mod outlier;
pub mod proxy;
pub mod reconciler;
pub mod routing;

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
use crate::routing::CompileConfig;
use crate::routing::store::Store;

const SOURCE_QUEUE: usize = 4096;

/// Runs switchyard until SIGTERM or SIGINT; `demo` also starts the demo backends.
pub async fn run(config: Config, demo: bool) -> Result<(), String> {
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(Store::new());
    let status = Arc::new(Status::default());
    let ctx = Arc::new(Context {
        store: store.clone(),
        metrics: metrics.clone(),
        connect_timeout: config.proxy.connect_timeout,
        response_timeout: config.proxy.response_timeout,
        client_header_timeout: config.proxy.client_header_timeout,
        max_header_bytes: config.http.max_header_bytes,
        max_headers: config.http.max_headers,
        access_log: config.http.access_log,
        retry_idempotent: config.proxy.retry_idempotent,
        udp_idle_timeout: config.vip.udp_idle_timeout,
        udp_max_sessions: config.vip.udp_max_sessions,
        shutdown: Default::default(),
    });

    let admin_listener = proxy::listeners::bind(config.admin.listen)
        .map_err(|e| format!("admin.listen {}: {e}", config.admin.listen))?;
    let admin_addr = admin_listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!("admin listening on {admin_addr}");

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
        tokio::spawn(proxy::listeners::accept_http(
            listener,
            entry,
            protocol,
            ctx.clone(),
        ));
    }
    if let Some(addr) = config.http.app_id_listen {
        let listener =
            proxy::listeners::bind(addr).map_err(|e| format!("http.app_id_listen {addr}: {e}"))?;
        tracing::info!(
            "http app-id listener on {}",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        let (entry, protocol) = (proxy::http::Entry::AppId, proxy::http::Protocol::Http1);
        tokio::spawn(proxy::listeners::accept_http(
            listener,
            entry,
            protocol,
            ctx.clone(),
        ));
    }
    if !config.https.listen.is_empty() {
        let certs = Arc::new(proxy::tls::Certificates::new(
            config.https.certs.clone(),
            config.https.default_cert.clone(),
        ));
        let loaded = certs.reload(&[], &metrics);
        tracing::info!(certificates = loaded, "TLS certificates loaded");
        let tls = tokio_rustls::TlsAcceptor::from(proxy::tls::server_config(
            certs.clone(),
            config.https.h2,
        )?);
        for addr in &config.https.listen {
            let listener =
                proxy::listeners::bind(*addr).map_err(|e| format!("https.listen {addr}: {e}"))?;
            tracing::info!(
                "https vhost listener on {}",
                listener.local_addr().map_err(|e| e.to_string())?
            );
            let timeout = config.https.handshake_timeout;
            tokio::spawn(proxy::listeners::accept_https(
                listener,
                tls.clone(),
                timeout,
                ctx.clone(),
            ));
        }
        tokio::spawn(proxy::tls::watch(
            certs,
            store.clone(),
            metrics.clone(),
            config.https.reload_interval,
        ));
    }
    let listeners = Listeners::new(ctx.clone());
    let (commands_tx, commands_rx) = mpsc::channel(64);
    let token = match &config.admin.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("admin.token_file {}: {e}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let admin = Arc::new(admin::Admin {
        token,
        commands: commands_tx,
        store: store.clone(),
        metrics: metrics.clone(),
        status: status.clone(),
        bind_failures: listeners.failures(),
    });
    tokio::spawn(admin.serve(admin_listener));

    if let Some(listen) = config.dns.listen {
        let udp = std::net::UdpSocket::bind(listen)
            .map_err(|e| format!("dns.listen {listen} (UDP): {e}"))?;
        let tcp = proxy::listeners::bind(listen)
            .map_err(|e| format!("dns.listen {listen} (TCP): {e}"))?;
        tracing::info!(zone = %config.dns.domain, "dns listening on {}", udp.local_addr().map_err(|e| e.to_string())?);
        let server = Arc::new(dns::server::DnsServer::new(
            store.clone(),
            metrics.dns.clone(),
            config.dns.upstreams.clone(),
            config.dns.upstream_timeout,
        ));
        let (udp_server, runtime) = (server.clone(), tokio::runtime::Handle::current());
        std::thread::Builder::new()
            .name("dns-udp".into())
            .spawn(move || udp_server.serve_udp(udp, runtime))
            .map_err(|e| format!("dns thread: {e}"))?;
        tokio::spawn(server.serve_tcp(tcp));
    }

    let (events_tx, events_rx) = mpsc::channel(SOURCE_QUEUE);
    let (refetch_tx, refetch_rx) = mpsc::channel(1024);
    let resync = Arc::new(Notify::new());
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
        tokio::spawn(source.run());
    } else {
        let token = match &d.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("discovery.token_file {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let urls = d
            .marathon
            .iter()
            .map(|u| BaseUrl::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        tracing::info!(marathon = ?d.marathon, "discovery: Marathon");
        let source = MarathonSource {
            urls,
            client: Client::new(
                d.basic_auth.as_deref(),
                token.as_deref(),
                d.connect_timeout,
                d.request_timeout,
            ),
            config: d.clone(),
            events: events_tx,
            refetch: refetch_rx,
            resync: resync.clone(),
            metrics: metrics.clone(),
        };
        tokio::spawn(source.run());
    }

    let registry = backends::Registry::new(
        metrics.clone(),
        config.proxy.drain_timeout,
        config.proxy.max_idle_per_backend,
    );
    let reconciler = Reconciler::new(
        CompileConfig::from_config(&config),
        d.debounce,
        registry,
        store.clone(),
        listeners,
        metrics.clone(),
        status,
        refetch_tx,
        ctx.clone(),
        config.dns.zone_config().map(|mut zone| {
            zone.vip_range = config.vip.settings().map(|vip| vip.range);
            zone
        }),
    );
    let reconciler = tokio::spawn(reconciler.run(events_rx, commands_rx));
    if demo {
        tokio::spawn(demo::run(store.clone()));
    }

    wait_for_signals(&resync).await;
    tracing::info!(
        open = ctx.shutdown.open(),
        "stopping: no longer accepting, draining"
    );
    ctx.shutdown.begin();
    let _ = reconciler.await; // closes every listener on its way out
    let drained = tokio::time::timeout(config.proxy.drain_timeout, ctx.shutdown.idle()).await;
    match drained {
        Ok(()) => tracing::info!("drained, exiting"),
        Err(_) => tracing::warn!(open = ctx.shutdown.open(), "drain timeout, exiting"),
    }
    Ok(())
}

async fn wait_for_signals(resync: &Notify) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: full resync");
                resync.notify_one();
            }
            _ = term.recv() => return,
            _ = int.recv() => return,
        }
    }
}
