//! Configuration reload, on SIGHUP, `switchyard reload` (the admin API) or a change to the file:
//! a valid new configuration applies without dropping a connection; an invalid one is refused
//! with the reason and the running one stays. Keys that need new sockets or a new source
//! (listen addresses, the discovery source, workers) are reported, not applied: a binary upgrade
//! (`switchyard run --upgrade`) applies them without a refused connection.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::Context;
use crate::reconciler::Command;

/// What a reload did, for the log and the admin API.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Reloaded {
    /// Keys whose new values are live.
    pub applied: Vec<&'static str>,
    /// Keys that differ from the running process's and wait for a restart or an upgrade.
    pub restart_required: Vec<&'static str>,
}

pub type Request = oneshot::Sender<Result<Reloaded, String>>;

/// Every key group with whether it needs a restart, and its value (as text: to compare).
fn keys(c: &Config) -> Vec<(&'static str, bool, String)> {
    vec![
        ("discovery", true, format!("{:?}", c.discovery)),
        ("proxy", false, format!("{:?}", c.proxy)),
        ("http.listen", true, format!("{:?}", c.http.listen)),
        (
            "http.app_id_listen",
            true,
            format!("{:?}", c.http.app_id_listen),
        ),
        ("http.h2c", true, format!("{:?}", c.http.h2c)),
        (
            "http.default_app",
            false,
            format!("{:?}", c.http.default_app),
        ),
        ("http.access_log", false, format!("{:?}", c.http.access_log)),
        (
            "http.max_header_bytes",
            false,
            format!("{:?}", c.http.max_header_bytes),
        ),
        (
            "http.max_headers",
            false,
            format!("{:?}", c.http.max_headers),
        ),
        ("https", true, format!("{:?}", c.https)),
        ("dns.listen", true, format!("{:?}", c.dns.listen)),
        ("dns.upstreams", true, format!("{:?}", c.dns.upstreams)),
        (
            "dns.allow_recursion",
            true,
            format!("{:?}", c.dns.allow_recursion),
        ),
        (
            "dns.upstream_timeout",
            true,
            format!("{:?}", c.dns.upstream_timeout),
        ),
        ("dns.rrl", true, format!("{:?}", c.dns.rrl)),
        (
            "dns.tcp",
            true,
            format!(
                "{:?}",
                (c.dns.tcp_idle_timeout, c.dns.tcp_connections_per_client)
            ),
        ),
        (
            "dns.forwards_per_client",
            true,
            format!("{:?}", c.dns.forwards_per_client),
        ),
        (
            "dns.forwards_per_domain",
            true,
            format!("{:?}", c.dns.forwards_per_domain),
        ),
        (
            "dns.ipv6_client_prefix",
            true,
            format!("{:?}", c.dns.ipv6_client_prefix),
        ),
        (
            "dns.zone_resolvers",
            true,
            format!("{:?}", c.dns.zone_resolvers),
        ),
        (
            "dns.zone",
            false,
            format!(
                "{:?}",
                (
                    (&c.dns.domain, c.dns.ttl, &c.dns.ip_sources, c.dns.rfc952),
                    (c.dns.healthy_only, c.dns.healthy_ttl, c.dns.ptr)
                )
            ),
        ),
        ("vip", false, format!("{:?}", c.vip)),
        (
            "health_checks",
            false,
            format!("{:?}", {
                let mut h = c.health_checks.clone();
                h.concurrency = 0;
                h
            }),
        ),
        (
            "health_checks.concurrency",
            true,
            format!("{:?}", c.health_checks.concurrency),
        ),
        ("admin", true, format!("{:?}", c.admin)),
        ("relay", true, format!("{:?}", c.relay)),
        ("runtime.workers", true, format!("{:?}", c.runtime.workers)),
        (
            "runtime.upgrade_socket",
            true,
            format!("{:?}", c.runtime.upgrade_socket),
        ),
        (
            "runtime.config_watch_interval",
            false,
            format!("{:?}", c.runtime.config_watch_interval),
        ),
        ("rollout", true, format!("{:?}", c.rollout)),
        ("log", true, format!("{:?}", c.log)),
    ]
}

/// Which keys changed between `running` (as applied) and `new`, measured against `started`
/// for the keys only a restart applies.
pub fn diff(started: &Config, running: &Config, new: &Config) -> Reloaded {
    let (started, running, new) = (keys(started), keys(running), keys(new));
    let mut report = Reloaded::default();
    for ((key, restart, new), ((_, _, running), (_, _, started))) in
        new.into_iter().zip(running.into_iter().zip(started))
    {
        if restart && new != started {
            report.restart_required.push(key);
        } else if !restart && new != running {
            report.applied.push(key);
        }
    }
    report
}

pub struct Reloader {
    /// `None`: started on the embedded default, which has no file to re-read.
    pub path: Option<PathBuf>,
    pub started: Config,
    pub running: Config,
    pub ctx: Arc<Context>,
    pub commands: mpsc::Sender<Command>,
    pub metrics: Arc<Metrics>,
    /// The DNS server, when on: told the zones a new configuration serves.
    pub dns: Option<Arc<crate::dns::server::DnsServer>>,
}

impl Reloader {
    pub async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        let mut stamp = self.stamp();
        loop {
            let every = self.running.runtime.config_watch_interval;
            let watch = async {
                if every.is_zero() {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(every).await;
            };
            tokio::select! {
                request = requests.recv() => {
                    let Some(reply) = request else { return };
                    stamp = self.stamp();
                    let _ = reply.send(self.reload().await);
                }
                _ = watch => {
                    let now = self.stamp();
                    if now != stamp {
                        stamp = now;
                        let _ = self.reload().await;
                    }
                }
            }
        }
    }

    /// The file's modification time and length: a change to either is a change.
    fn stamp(&self) -> Option<(SystemTime, u64)> {
        let meta = std::fs::metadata(self.path.as_ref()?).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    }

    async fn reload(&mut self) -> Result<Reloaded, String> {
        let result = self.try_reload().await;
        match &result {
            Ok(report) => {
                Metrics::count(&self.metrics.config_reloads, "applied");
                tracing::info!(applied = ?report.applied,
                    restart_required = ?report.restart_required, "configuration reloaded");
            }
            Err(e) => {
                Metrics::count(&self.metrics.config_reloads, "rejected");
                tracing::warn!("configuration reload refused, the running one stays: {e}");
            }
        }
        result
    }

    async fn try_reload(&mut self) -> Result<Reloaded, String> {
        let Some(path) = &self.path else {
            return Err("started on the embedded default: there is no file to re-read".into());
        };
        let new = Config::load(path)?;
        let report = diff(&self.started, &self.running, &new);
        self.ctx.settings.store(Arc::new(new.proxy_settings()));
        self.ctx.pools.set_max_idle(new.proxy.max_idle_per_backend);
        // Keys that wait for a restart keep their running values in what compile sees: the
        // listeners they name are still the old ones.
        let mut effective = new.clone();
        effective.http.listen = self.started.http.listen.clone();
        effective.http.app_id_listen = self.started.http.app_id_listen;
        effective.https.listen = self.started.https.listen.clone();
        effective.dns.listen = self.started.dns.listen;
        effective.admin = self.started.admin.clone();
        effective.relay = self.started.relay.clone();
        let (reply, done) = oneshot::channel();
        let zone = effective.zone_config();
        // The served zones follow the configuration at once, before the table that builds
        // their contents: from here their names are never relayed (SERVFAIL until built). Like
        // the proxy settings above, kept if the table is late: the reconciler applies it then.
        if let (Some(dns), Some(zone)) = (&self.dns, &zone) {
            dns.serve_zones(zone);
        }
        let command = Command::Reconfigure {
            compile: Box::new(effective.compile_config()),
            zone,
            drain_timeout: new.proxy.drain_timeout,
            reply,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| "switchyard is stopping".to_string())?;
        match tokio::time::timeout(Duration::from_secs(30), done).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(e),
            _ => return Err("the new table was not published in 30s".into()),
        }
        self.running = new;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(extra: &str) -> Config {
        Config::parse(
            &format!("[discovery]\nfile = \"a.json\"\n{extra}"),
            Path::new("/"),
        )
        .unwrap()
    }

    #[test]
    fn a_diff_names_what_applies_and_what_waits_for_a_restart() {
        let started = parse("[proxy]\ngroup = \"a\"\n[http]\nlisten = [\"127.0.0.1:80\"]");
        let new = parse("[proxy]\ngroup = \"b\"\n[http]\nlisten = [\"127.0.0.1:81\"]");
        let report = diff(&started, &started, &new);
        assert_eq!(report.applied, vec!["proxy"]);
        assert_eq!(report.restart_required, vec!["http.listen"]);
        // Applied once, the group is no longer new; the listener still waits.
        let again = diff(&started, &new, &new);
        assert!(again.applied.is_empty());
        assert_eq!(again.restart_required, vec!["http.listen"]);
        assert_eq!(diff(&started, &started, &started), Reloaded::default());
        // Each DNS share names its own key.
        let plain = parse("");
        let prefix = parse("[dns]\nipv6_client_prefix = 128");
        let report = diff(&plain, &plain, &prefix);
        assert_eq!(report.restart_required, vec!["dns.ipv6_client_prefix"]);
    }
}
