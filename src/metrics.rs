//! Prometheus metrics. Families are registered once; hot paths hold pre-resolved handles, or
//! (per backend) plain atomics rendered when scraped (`backends::series`), so a connection or
//! request only touches atomics.

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ServiceLabels {
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct LimitLabels {
    pub service: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RouteLabels {
    pub route: String,
    pub app: String,
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    pub path: &'static str,
}

/// `switchyard_rollout_step{route}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RolloutLabels {
    pub route: String,
}

/// `switchyard_rollout_state{route,state}`: 1 for the rollout's state, 0 for the others.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RolloutStateLabels {
    pub route: String,
    pub state: &'static str,
}

/// `switchyard_table_hash{hash="…"} 1`: the live table's hash (`routing::digest`).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct HashLabels {
    pub hash: String,
    /// The version of the hashed text (`routing::digest::TEXT_VERSION`).
    pub text: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct KindLabels {
    pub kind: String,
}

/// `switchyard_http_client_failures_total{reason}`: one series per reason, made at start (not
/// per service: three more series for each of 50,000 services would be memory for little).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// The reasons of `http_client_failures_total`.
pub const CLIENT_FAILURE_REASONS: [&str; 3] = ["malformed_body", "stalled_body", "slow_upload"];

/// A label value as the text exposition format wants it: `\\`, `"` and line feeds escaped.
/// prometheus-client writes label values as they are, and ours carry outside text (an app id
/// from a file or a stand-in, a task's host): unescaped, a `"` or a newline in one would end
/// the value and write series of its own, or break the whole scrape.
pub struct Escaped<'a>(pub &'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        use std::fmt::Write;
        EscapingWriter(encoder).write_str(self.0)
    }
}

/// Writes through to `W`, escaping label value text on the way (see [`Escaped`]).
pub struct EscapingWriter<'a, W: std::fmt::Write>(pub &'a mut W);

impl<W: std::fmt::Write> std::fmt::Write for EscapingWriter<'_, W> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        let mut rest = text;
        while let Some(at) = rest.find(['\\', '"', '\n']) {
            self.0.write_str(&rest[..at])?;
            self.0.write_str(match rest.as_bytes()[at] {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                _ => "\\n",
            })?;
            rest = &rest[at + 1..];
        }
        self.0.write_str(rest)
    }
}

/// `EncodeLabelSet` for a struct of label fields, each written [`Escaped`], in field order.
macro_rules! label_set {
    ($name:ident { $($field:ident),+ }) => {
        impl EncodeLabelSet for $name {
            fn encode(&self, encoder: &mut LabelSetEncoder) -> std::fmt::Result {
                $(
                    prometheus_client::encoding::EncodeLabel::encode(
                        &(stringify!($field), Escaped(&self.$field)),
                        encoder.encode_label(),
                    )?;
                )+
                Ok(())
            }
        }
    };
}

label_set!(ServiceLabels { service });
label_set!(LimitLabels { service, reason });
label_set!(RouteLabels { route, app, source });
label_set!(RolloutLabels { route });
label_set!(RolloutStateLabels { route, state });
label_set!(HashLabels { hash, text });
label_set!(KindLabels { kind });
label_set!(ReasonLabels { reason });

pub struct Metrics {
    /// Families registered here at start; a subsystem that owns its metrics (DNS) adds its own
    /// with [`Metrics::register`].
    /// The per-backend series are not here: each backend's state holds its counters, and
    /// `backends::series` renders them when scraped.
    registry: Mutex<Registry>,
    pub no_backend: Family<ServiceLabels, Counter>,
    /// HTTP requests that failed on the client's side, or may have (reason: malformed_body
    /// 400, stalled_body 408, slow_upload: a close answered 502, or a backend's 5xx relayed):
    /// charged to no backend (`proxy::exchange`).
    pub client_failures: Family<ReasonLabels, Counter>,
    /// Backend connects that failed for this host's own shortage (descriptors, memory,
    /// ephemeral ports): charged to no backend (`proxy::local_shortage`).
    pub local_connect_failures: Counter,
    /// Requests an app's limit or maintenance switch answered itself (reason: rate,
    /// concurrency, pending, maintenance).
    pub limited: Family<LimitLabels, Counter>,
    pub events: Family<KindLabels, Counter>,
    pub malformed_events: Counter,
    /// Marathon sessions that ended in an error (refused, bad answer, stream cut or idle).
    pub source_errors: Counter,
    /// Full reads held back because they would remove most apps (`discovery::marathon::guard`),
    /// and 1 while one is held.
    pub snapshots_held: Counter,
    pub snapshot_held: Gauge,
    pub rejected_inputs: Family<KindLabels, Counter>,
    pub connections_refused: Family<KindLabels, Counter>,
    pub config_reloads: Family<KindLabels, Counter>,
    pub health_checks: Family<KindLabels, Counter>,
    pub retries: Family<KindLabels, Counter>,
    pub source_connected: Gauge,
    pub last_sync_timestamp: Gauge<f64, AtomicU64>,
    pub table_generation: Gauge,
    pub compile_seconds: Gauge<f64, AtomicU64>,
    /// Compiles told which apps changed whose audit found the list incomplete
    /// (`routing::compile::compile_changed`): each visited every app instead.
    pub compile_audit_failures: Counter,
    pub services: Gauge,
    pub backends: Gauge,
    /// Healthy-only DNS names answered with every running task because none is healthy.
    pub dns_fail_static: Gauge,
    pub dns_fail_static_total: Counter,
    pub listener_bind_failures: Counter,
    pub tls_handshake_failures: Counter,
    /// HTTP/2 connections ended for a control-frame flood, streams reset after a panic.
    pub http2_incidents: Family<KindLabels, Counter>,
    /// Edge connection rules (`proxy::proxy_protocol`, TLS passthrough, TLS to backends).
    pub proxy_protocol_errors: Family<KindLabels, Counter>,
    pub tls_passthrough: Family<KindLabels, Counter>,
    pub upstream_tls_failures: Family<KindLabels, Counter>,
    pub route_weight: Family<RouteLabels, Gauge>,
    /// A route's rollout: its step (1-based; 0 before the first is set) and its state.
    pub rollout_step: Family<RolloutLabels, Gauge>,
    pub rollout_state: Family<RolloutStateLabels, Gauge>,
    /// One series, value 1, labelled with the live table's hash.
    pub table_hash: Family<HashLabels, Gauge>,
    pub admin_requests: Family<PathLabels, Counter>,
    /// Admin connections admitted past `admin.max_connections` on a probe slot.
    pub admin_probe_only_connections: Counter,
    pub http_response_seconds: Family<ServiceLabels, Histogram, fn() -> Histogram>,
}

/// The `kind`s of `rejected_inputs`: where the input was refused (`ignored`: labels accepted
/// without effect).
pub const REJECTED_KINDS: &[&str] = &[
    "app",
    "event",
    "file",
    "snapshot",
    "compile",
    "ignored",
    "bind",
    "certificate",
];

/// 0.5 ms to about 8 s, doubling.
fn response_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("switchyard");
        let m = Metrics {
            no_backend: Family::default(),
            client_failures: Family::default(),
            local_connect_failures: Counter::default(),
            limited: Family::default(),
            events: Family::default(),
            malformed_events: Counter::default(),
            source_errors: Counter::default(),
            snapshots_held: Counter::default(),
            snapshot_held: Gauge::default(),
            rejected_inputs: Family::default(),
            connections_refused: Family::default(),
            config_reloads: Family::default(),
            health_checks: Family::default(),
            retries: Family::default(),
            source_connected: Gauge::default(),
            last_sync_timestamp: Gauge::default(),
            table_generation: Gauge::default(),
            compile_seconds: Gauge::default(),
            compile_audit_failures: Counter::default(),
            services: Gauge::default(),
            backends: Gauge::default(),
            dns_fail_static: Gauge::default(),
            dns_fail_static_total: Counter::default(),
            listener_bind_failures: Counter::default(),
            tls_handshake_failures: Counter::default(),
            http2_incidents: Family::default(),
            proxy_protocol_errors: Family::default(),
            tls_passthrough: Family::default(),
            upstream_tls_failures: Family::default(),
            route_weight: Family::default(),
            rollout_step: Family::default(),
            rollout_state: Family::default(),
            table_hash: Family::default(),
            admin_requests: Family::default(),
            admin_probe_only_connections: Counter::default(),
            http_response_seconds: Family::new_with_constructor(response_histogram),
            registry: Mutex::default(),
        };
        let r = &mut registry;
        r.register(
            "dns_fail_static_apps",
            "Healthy-only DNS apps answered with all running tasks because none is healthy",
            m.dns_fail_static.clone(),
        );
        r.register(
            "dns_fail_static",
            "Times a healthy-only DNS app fell back to all running tasks (none healthy)",
            m.dns_fail_static_total.clone(),
        );
        r.register(
            "no_backend",
            "Connections or requests refused because no backend was reachable",
            m.no_backend.clone(),
        );
        r.register(
            "http_client_failures",
            "HTTP requests that failed on the client's side, or may have, and did not count \
             towards a backend's ejection (reason: malformed_body 400, stalled_body 408, \
             slow_upload: a backend closed, or answered 5xx to, an upload whose client the \
             proxy had waited on for a second)",
            m.client_failures.clone(),
        );
        for reason in CLIENT_FAILURE_REASONS {
            let _ = m.client_failures.get_or_create(&ReasonLabels { reason });
        }
        r.register(
            "local_connect_failures",
            "Backend connects that failed for the proxy host's own shortage (file descriptors, \
             memory, ephemeral ports); no backend is charged and no other is tried",
            m.local_connect_failures.clone(),
        );
        r.register(
            "limited_requests",
            "Requests answered by an app's limit (reason: rate 429, concurrency and pending 503) \
             or its maintenance switch (503)",
            m.limited.clone(),
        );
        r.register(
            "source_events",
            "Marathon events received, by type",
            m.events.clone(),
        );
        r.register(
            "source_malformed_events",
            "Events that could not be parsed",
            m.malformed_events.clone(),
        );
        r.register(
            "source_errors",
            "Marathon sessions that ended in an error (then retried with backoff)",
            m.source_errors.clone(),
        );
        r.register(
            "source_snapshots_held",
            "Full reads of Marathon held back because they would remove all apps or more than \
             discovery.max_removal_fraction of them, until a second read confirmed or undid it",
            m.snapshots_held.clone(),
        );
        r.register(
            "source_snapshot_held",
            "1 while such a read is held (waiting for its confirming read)",
            m.snapshot_held.clone(),
        );
        r.register(
            "rejected_inputs",
            "Inputs skipped as invalid (apps, ports, labels, tasks, files; kind: where), and labels accepted without effect (kind: ignored); each counted once when it appears",
            m.rejected_inputs.clone(),
        );
        r.register(
            "connections_refused",
            "Client connections refused by a limit (kind: listener_limit, total_limit)",
            m.connections_refused.clone(),
        );
        r.register(
            "config_reloads",
            "Configuration reloads (kind: applied, rejected)",
            m.config_reloads.clone(),
        );
        r.register(
            "health_checks",
            "Active health check probes (kind: pass, fail)",
            m.health_checks.clone(),
        );
        r.register(
            "http_retries",
            "HTTP replays on another backend (kind: replayed, budget_exhausted)",
            m.retries.clone(),
        );
        r.register(
            "source_connected",
            "1 while the discovery source is connected",
            m.source_connected.clone(),
        );
        r.register(
            "last_sync_timestamp_seconds",
            "Unix time of the last successful full sync",
            m.last_sync_timestamp.clone(),
        );
        r.register(
            "table_generation",
            "Generation of the live routing table",
            m.table_generation.clone(),
        );
        r.register(
            "compile_duration_seconds",
            "Duration of the last compile",
            m.compile_seconds.clone(),
        );
        r.register(
            "compile_audit_failures",
            "Compiles told which apps changed whose audit found the list incomplete (every app visited instead)",
            m.compile_audit_failures.clone(),
        );
        r.register(
            "services",
            "Service ports in the live table",
            m.services.clone(),
        );
        r.register("backends", "Backends in the live table", m.backends.clone());
        r.register(
            "http2_incidents",
            "HTTP/2 connections sent GOAWAY(ENHANCE_YOUR_CALM) and closed for a control-frame \
             flood (kind: control_flood), streams reset (INTERNAL_ERROR) after a panic in the \
             proxy (kind: stream_panic), streams refused (REFUSED_STREAM) past a \
             connection's 16 unfinished uploads to backends (kind: upload_refused), and \
             connections sent GOAWAY(ENHANCE_YOUR_CALM) whose client reset most of its streams \
             before their answers (kind: rapid_reset)",
            m.http2_incidents.clone(),
        );
        r.register(
            "listener_bind_failures",
            "Service ports that could not be bound",
            m.listener_bind_failures.clone(),
        );
        r.register(
            "http_response_seconds",
            "Time from sending a request to a backend to its response headers, per app port",
            m.http_response_seconds.clone(),
        );
        r.register(
            "admin_requests",
            "Admin API requests, by endpoint",
            m.admin_requests.clone(),
        );
        r.register(
            "admin_probe_only_connections",
            "Admin connections admitted past admin.max_connections that may ask only a probe",
            m.admin_probe_only_connections.clone(),
        );
        r.register(
            "route_weight",
            "Each app's weight in its multi-app route (source: backends, label, default, override)",
            m.route_weight.clone(),
        );
        r.register(
            "rollout_step",
            "A route's canary rollout: the step it is at, counted from 1",
            m.rollout_step.clone(),
        );
        r.register(
            "rollout_state",
            "A route's canary rollout: 1 for its state (running, succeeded, failed, aborted, \
             refused), 0 for the others",
            m.rollout_state.clone(),
        );
        r.register(
            "table_hash",
            "The live routing table's hash as the label `hash` (value 1): instances following \
             the same Marathon with the same routing configuration show the same",
            m.table_hash.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            m.tls_handshake_failures.clone(),
        );
        r.register(
            "proxy_protocol_errors",
            "Connections closed for their PROXY protocol header (kind: missing, v1_syntax, v1_too_long, v1_address, v2_version, v2_command, v2_too_long, v2_length, timeout, untrusted_source)",
            m.proxy_protocol_errors.clone(),
        );
        r.register(
            "tls_passthrough",
            "HTTPS connections whose ClientHello was read (kind: passed, not_client_hello, sni_too_long, malformed, too_large, timeout, client_ca_unusable)",
            m.tls_passthrough.clone(),
        );
        r.register(
            "upstream_tls_failures",
            "TLS to backends that failed (kind: verify, handshake, config)",
            m.upstream_tls_failures.clone(),
        );
        // Every labelled family with a fixed set of kinds starts with each at zero, so the
        // families the documentation lists are on `/metrics` before anything happens.
        for (family, kinds) in [
            (&m.rejected_inputs, REJECTED_KINDS),
            (
                &m.connections_refused,
                &["listener_limit", "total_limit"][..],
            ),
            (&m.config_reloads, &["applied", "rejected"][..]),
            (&m.health_checks, &["pass", "fail"][..]),
            (&m.retries, &["replayed", "budget_exhausted"][..]),
            (
                &m.proxy_protocol_errors,
                &[
                    "missing",
                    "v1_syntax",
                    "v1_too_long",
                    "v1_address",
                    "v2_version",
                    "v2_command",
                    "v2_too_long",
                    "v2_length",
                    "timeout",
                    "untrusted_source",
                ][..],
            ),
            (
                &m.tls_passthrough,
                &[
                    "passed",
                    "not_client_hello",
                    "sni_too_long",
                    "malformed",
                    "too_large",
                    "timeout",
                    "client_ca_unusable",
                ][..],
            ),
            (
                &m.upstream_tls_failures,
                &["verify", "handshake", "config"][..],
            ),
            (
                &m.http2_incidents,
                &[
                    "control_flood",
                    "stream_panic",
                    "upload_refused",
                    "rapid_reset",
                ][..],
            ),
        ] {
            for kind in kinds {
                let _ = family.get_or_create(&KindLabels {
                    kind: (*kind).to_string(),
                });
            }
        }
        Metrics {
            registry: Mutex::new(registry),
            ..m
        }
    }

    /// Adds a subsystem's metric to what `/metrics` shows.
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry.lock().unwrap().register(name, help, metric);
    }

    /// Adds series rendered when scraped (`backends::series`).
    pub fn register_collector(&self, collector: impl prometheus_client::collector::Collector) {
        self.registry
            .lock()
            .unwrap()
            .register_collector(Box::new(collector));
    }

    /// The whole text at once, for tests (a scrape streams it: [`Metrics::encode_into`]).
    #[cfg(test)]
    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.encode_into(&mut out);
        out
    }

    /// The text of every family, written into `out` (a scrape writes it in chunks:
    /// `crate::bulk_text`).
    pub fn encode_into(&self, out: &mut impl std::fmt::Write) {
        prometheus_client::encoding::text::encode(out, &self.registry.lock().unwrap())
            .expect("the writers used cannot fail");
    }

    pub fn reject(&self, kind: &str) {
        self.rejected_inputs
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn refused(&self, kind: &str) {
        Self::count(&self.connections_refused, kind);
    }

    pub fn count(family: &Family<KindLabels, Counter>, kind: &str) {
        family
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn event(&self, kind: &str) {
        self.events
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .inc();
    }
}
