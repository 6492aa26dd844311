//! The wiring `run` (lib.rs) does, subsystem by subsystem: each one's listeners bound, its
//! settings built from the configuration, and its tasks started on the plane it belongs to
//! ([`Planes`]). Only the crate root calls these, in the order `run` gives.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{Notify, mpsc};

use crate::config::{self, Config};
use crate::discovery::file::FileSource;
use crate::discovery::marathon::MarathonSource;
use crate::discovery::marathon::client::{BaseUrl, Client};
use crate::metrics::Metrics;
use crate::proxy::Context;
use crate::{
    discovery, dns, proxy, reconciler, relay, runtime_thread, stall, upgrade, workers, zone,
};

const SOURCE_QUEUE: usize = 4096;

/// Where each task runs (one rule): accept loops and connections on the data plane's workers;
/// everything that reads the cluster, files or serves operators (sources, compile, the admin
/// API, health checks, reloads, the certificate watcher, the demo's backends) on the control
/// plane's thread; the DNS UDP loop and the relay (`start_relay`) on threads of their own.
pub(crate) struct Planes {
    pub(crate) control: runtime_thread::RuntimeThread,
    pub(crate) workers: Arc<workers::Workers>,
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

/// The shared listeners: plain vhosts (and h2c), the app-id listener, HTTPS vhosts with their
/// certificates (watched for changes on the control plane).
pub(crate) fn serve_vhosts(
    config: &Config,
    planes: &Planes,
    ctx: &Arc<Context>,
) -> Result<(), String> {
    let workers = &planes.workers;
    for addr in &config.http.listen {
        let listener = bind_logged(*addr, "http.listen", "http vhost")?;
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
        let listener = bind_logged(addr, "http.app_id_listen", "http app-id")?;
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
        let listener = bind_logged(*addr, "https.listen", "https vhost")?;
        let timeout = config.https.handshake_timeout;
        proxy::listeners::serve_https(workers, listener, (&tls, timeout), ctx)
            .map_err(|e| format!("https.listen {addr}: {e}"))?;
    }
    // Reading certificate files is the control plane's work, not a data-plane worker's.
    let store = ctx.store.clone();
    planes.control.spawn(proxy::tls::watch(
        certs,
        move || store.load().table.ssl_certs.iter().cloned().collect(),
        ctx.metrics.clone(),
        config.https.reload_interval,
    ));
    Ok(())
}

/// A vhost listener bound on `addr` (an error names the key that asked for it) and logged with
/// the address it got.
fn bind_logged(
    addr: SocketAddr,
    key: &str,
    what: &str,
) -> Result<Arc<tokio::net::TcpListener>, String> {
    let listener = proxy::listeners::bind(addr).map_err(|e| format!("{key} {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!("{what} listener on {bound}");
    Ok(listener)
}

/// The relay (`[relay]`), when configured: its listener bound and served, and its models diffed
/// into events, on a thread of its own (returned: it runs until dropped), so that followers
/// reading 30 MiB snapshots never hold up the control plane's swaps, admin API or probes.
pub(crate) fn start_relay(
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
        Some(path) => Some(
            proxy::tls::Certificates::single(path, metrics)
                .map_err(|e| format!("relay.tls_cert {}: {e}", path.display()))?,
        ),
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
        // Re-read as often as the HTTPS listeners' files; no paths besides its own file.
        let interval = config.https.reload_interval;
        thread.spawn(proxy::tls::watch(
            certs,
            Vec::new,
            metrics.clone(),
            interval,
        ));
    }
    thread.spawn(relay.clone().follow());
    Ok(Some((relay, thread)))
}

pub(crate) fn admin_token(config: &Config) -> Result<Option<String>, String> {
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
pub(crate) fn start_dns(
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
pub(crate) fn start_source(
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
