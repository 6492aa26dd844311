//! `compile`: the pure function from (cluster, config) to a routing table.
//!
//! Every label is read and every conflict resolved here, deterministically: apps are visited in
//! id order, so every instance given the same cluster builds the same table. What cannot be
//! served is skipped and reported as a [`Problem`]; it never stops the rest from compiling.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::{Backend, Balancer, Problem, RoutingTable, Service, ServiceKey, Severity, labels};
use crate::cluster::{App, Cluster, Networking, Protocol, Task};
use crate::config::Config;
use crate::dns::zone::ZoneConfig;
use crate::routing::HttpOptions;

/// The part of the configuration that `compile` reads.
#[derive(Debug, Clone)]
pub struct CompileConfig {
    pub group: String,
    pub serve_ungrouped: bool,
    pub strict_mode: bool,
    pub bind: IpAddr,
    /// switchyard's own listeners; a service port may not take one.
    pub reserved: Vec<SocketAddr>,
    /// Build the DNS zone, with these settings.
    pub dns: Option<ZoneConfig>,
    /// The app (its first port) that answers vhost requests no route matches.
    pub default_app: Option<String>,
}

impl CompileConfig {
    pub fn from_config(config: &Config) -> CompileConfig {
        CompileConfig {
            group: config.proxy.group.clone(),
            serve_ungrouped: config.proxy.serve_ungrouped,
            strict_mode: config.proxy.strict_mode,
            bind: config.proxy.bind,
            reserved: config.reserved_ports(),
            dns: config.dns.zone_config(),
            default_app: config.http.default_app.clone(),
        }
    }

    fn serves(&self, groups: Option<&[String]>) -> bool {
        if self.group == "*" {
            return true;
        }
        match groups {
            None => self.serve_ungrouped,
            Some(groups) => groups.iter().any(|g| g == "*" || *g == self.group),
        }
    }
}

pub fn compile(cluster: &Cluster, config: &CompileConfig) -> RoutingTable {
    let mut table = RoutingTable::default();
    let mut routes: Vec<(ServiceKey, Vec<String>, Vec<String>)> = Vec::new();
    let mut claimed: HashMap<u16, Vec<(IpAddr, ServiceKey)>> = HashMap::new();
    for addr in &config.reserved {
        let owner = ServiceKey {
            app_id: "switchyard".into(),
            port_index: 0,
        };
        claimed
            .entry(addr.port())
            .or_default()
            .push((addr.ip(), owner));
    }
    for app in cluster.apps.values() {
        for (n, port) in app.ports.iter().enumerate() {
            let mut problem = |severity, reason: String| {
                table.problems.push(Problem {
                    app_id: app.id.clone(),
                    port_index: Some(n),
                    severity,
                    reason,
                });
            };
            let labels = match labels::read(&app.labels, n) {
                Ok(l) => l,
                Err(reason) => {
                    problem(Severity::Skipped, reason);
                    continue;
                }
            };
            for notice in &labels.notices {
                problem(Severity::Ignored, notice.clone());
            }
            if !config.serves(labels.groups.as_deref()) {
                continue;
            }
            if config.strict_mode && labels.enabled != Some(true) {
                continue;
            }
            if labels.enabled == Some(false) {
                continue;
            }
            if port.protocol == Protocol::Udp {
                problem(
                    Severity::Ignored,
                    "UDP service ports are not proxied".into(),
                );
                continue;
            }
            let key = ServiceKey {
                app_id: app.id.clone(),
                port_index: n,
            };
            // The service port: none assigned, or taken, leaves the port served by vhost only.
            let service_port = labels.port.unwrap_or(port.service_port);
            let mut listen = (service_port != 0)
                .then(|| SocketAddr::new(labels.bind_addr.unwrap_or(config.bind), service_port));
            if let Some(addr) = listen {
                let claims = claimed.entry(service_port).or_default();
                if let Some((_, owner)) = claims.iter().find(|(ip, _)| overlaps(*ip, addr.ip())) {
                    let reason = if &*owner.app_id == "switchyard" {
                        format!(
                            "service port {service_port} collides with switchyard's own listener"
                        )
                    } else {
                        format!("service port {service_port} is already taken by {owner}")
                    };
                    problem(Severity::Skipped, reason);
                    listen = None;
                } else {
                    claims.push((addr.ip(), key.clone()));
                }
            }
            if listen.is_none() && labels.vhosts.is_empty() {
                continue; // nothing to listen on and no vhost: not served
            }
            table
                .ssl_certs
                .extend(labels.ssl_certs.iter().map(std::path::PathBuf::from));
            let backends = backends(cluster, app, n, &mut problem);
            let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
            let vhosts = labels
                .vhosts
                .iter()
                .flat_map(|h| {
                    let paths = if labels.paths.is_empty() {
                        vec![String::new()]
                    } else {
                        labels.paths.clone()
                    };
                    paths.into_iter().map(move |p| format!("{h}{p}"))
                })
                .collect();
            routes.push((key.clone(), labels.vhosts, labels.paths));
            table.services.push(Service {
                vhosts,
                key,
                listen,
                mode: labels.mode,
                balancer: Balancer::new(labels.balance, &weights),
                backends,
                http: HttpOptions {
                    redirect_to_https: labels.redirect_to_https,
                    hsts: labels.hsts,
                    sticky: labels.sticky,
                    acl: labels.acl,
                },
            });
        }
    }
    table.dns = config
        .dns
        .as_ref()
        .map(|dns| crate::dns::zone::build(cluster, dns));
    table.services.sort_by(|a, b| a.key.cmp(&b.key));
    table.by_listen = table
        .services
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some((s.listen?, i)))
        .collect();
    let index: HashMap<&ServiceKey, usize> = table
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| (&s.key, i))
        .collect();
    // Vhost routes, in app order: the first app to claim a host and path keeps it.
    routes.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, hosts, paths) in &routes {
        let service = index[key];
        let prefixes: Vec<&str> = if paths.is_empty() {
            vec![""]
        } else {
            paths.iter().map(String::as_str).collect()
        };
        for host in hosts {
            for prefix in &prefixes {
                if let Err(owner) = table.vhosts.insert(host, prefix, service) {
                    table.problems.push(Problem {
                        app_id: key.app_id.clone(),
                        port_index: Some(key.port_index),
                        severity: Severity::Skipped,
                        reason: format!(
                            "vhost {host}{prefix} is already routed to {}",
                            table.services[owner].key
                        ),
                    });
                }
            }
        }
        if key.port_index == 0 {
            table.by_app_id.insert(key.app_id.clone(), service);
        }
    }
    table.default_service = config
        .default_app
        .as_deref()
        .and_then(|id| table.by_app_id.get(id).copied());
    table
}

/// Two binds collide when they share a port and either is a wildcard or both are the same IP.
fn overlaps(a: IpAddr, b: IpAddr) -> bool {
    a == b || a.is_unspecified() || b.is_unspecified()
}

fn backends(
    cluster: &Cluster,
    app: &App,
    n: usize,
    problem: &mut impl FnMut(Severity, String),
) -> Vec<Backend> {
    let mut out = Vec::new();
    for task in app
        .tasks
        .values()
        .filter(|t| t.is_routable(app.health_checks))
    {
        match backend_addr(cluster, app, n, task) {
            Ok(addr) => out.push(Backend {
                addr,
                task_id: task.id.clone(),
                weight: 1,
            }),
            Err(reason) => problem(Severity::Skipped, format!("task {}: {reason}", task.id)),
        }
    }
    out.sort_by(|a, b| a.addr.cmp(&b.addr).then_with(|| a.task_id.cmp(&b.task_id)));
    out
}

fn backend_addr(cluster: &Cluster, app: &App, n: usize, task: &Task) -> Result<SocketAddr, String> {
    match app.networking {
        Networking::Container => {
            let ip = task.ip_addresses.first().ok_or("no container IP address")?;
            let port = app.ports[n]
                .container_port
                .filter(|&p| p != 0)
                .or_else(|| task.ports.get(n).copied())
                .ok_or("no container port")?;
            Ok(SocketAddr::new(*ip, port))
        }
        Networking::Host => {
            let port = *task
                .ports
                .get(n)
                .ok_or_else(|| format!("has no port {n}"))?;
            let ip = match task.host.parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => *cluster
                    .agents
                    .get(&task.host)
                    .ok_or_else(|| format!("agent host {:?} is not resolved", task.host))?,
            };
            Ok(SocketAddr::new(ip, port))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::{app, task};
    use crate::cluster::{ClusterUpdate, TaskState};

    fn config(group: &str) -> CompileConfig {
        CompileConfig {
            group: group.into(),
            serve_ungrouped: false,
            strict_mode: false,
            bind: "127.0.0.1".parse().unwrap(),
            reserved: vec!["127.0.0.1:9090".parse().unwrap()],
            dns: None,
            default_app: None,
        }
    }

    fn cluster(apps: Vec<App>) -> Cluster {
        let mut c = Cluster::default();
        c.apply(ClusterUpdate::Snapshot(apps));
        c
    }

    #[test]
    fn groups_select_apps() {
        let c = cluster(vec![
            app(
                "/ext",
                10000,
                &[("HAPROXY_GROUP", "external")],
                vec![task("e.1", 1)],
            ),
            app(
                "/int",
                10001,
                &[("HAPROXY_GROUP", "internal")],
                vec![task("i.1", 1)],
            ),
            app("/none", 10002, &[], vec![task("n.1", 1)]),
        ]);
        let ports = |t: RoutingTable| {
            t.services
                .iter()
                .map(|s| s.listen.unwrap().port())
                .collect::<Vec<_>>()
        };
        assert_eq!(ports(compile(&c, &config("external"))), vec![10000]);
        assert_eq!(ports(compile(&c, &config("*"))), vec![10000, 10001, 10002]);
        let mut ungrouped = config("external");
        ungrouped.serve_ungrouped = true;
        assert_eq!(ports(compile(&c, &ungrouped)), vec![10000, 10002]);
    }

    #[test]
    fn only_routable_tasks_become_backends() {
        let mut killing = task("a.2", 2);
        killing.state = TaskState::Killing;
        let mut staging = task("a.3", 3);
        staging.state = TaskState::Staging;
        let c = cluster(vec![app(
            "/a",
            10000,
            &[],
            vec![task("a.1", 1), killing, staging],
        )]);
        let t = compile(&c, &config("*"));
        let addrs: Vec<_> = t.services[0]
            .backends
            .iter()
            .map(|b| b.addr.port())
            .collect();
        assert_eq!(addrs, vec![1]);
    }

    #[test]
    fn port_conflicts_resolve_by_app_id_and_are_reported() {
        let c = cluster(vec![
            app("/b", 10000, &[], vec![task("b.1", 2)]),
            app("/a", 10000, &[], vec![task("a.1", 1)]),
            app("/c", 9090, &[], vec![task("c.1", 3)]),
        ]);
        let t = compile(&c, &config("*"));
        assert_eq!(t.services.len(), 1);
        assert_eq!(&*t.services[0].key.app_id, "/a");
        let reasons: Vec<_> = t.problems.iter().map(|p| p.to_string()).collect();
        assert!(
            reasons
                .iter()
                .any(|r| r.starts_with("/b") && r.contains("taken by /a:0"))
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.starts_with("/c") && r.contains("switchyard's own"))
        );
    }

    #[test]
    fn bad_labels_skip_only_that_port() {
        let mut two = app(
            "/two",
            10000,
            &[("HAPROXY_0_MODE", "banana")],
            vec![task("t.1", 1)],
        );
        two.ports.push(crate::cluster::PortSpec {
            service_port: 10001,
            ..Default::default()
        });
        two.tasks.get_mut("t.1").unwrap().ports.push(2);
        let c = cluster(vec![two, app("/ok", 10002, &[], vec![task("o.1", 5)])]);
        let t = compile(&c, &config("*"));
        let mut ports: Vec<_> = t
            .services
            .iter()
            .map(|s| s.listen.unwrap().port())
            .collect();
        ports.sort();
        assert_eq!(ports, vec![10001, 10002]);
        assert!(
            t.problems
                .iter()
                .any(|p| p.port_index == Some(0) && p.reason.contains("MODE"))
        );
    }

    #[test]
    fn port_and_bind_labels_and_strict_mode() {
        let labels = [
            ("HAPROXY_0_PORT", "12000"),
            ("HAPROXY_0_BIND_ADDR", "127.0.0.3"),
        ];
        let c = cluster(vec![
            app("/a", 10000, &labels, vec![task("a.1", 1)]),
            app(
                "/b",
                10001,
                &[("HAPROXY_0_ENABLED", "true")],
                vec![task("b.1", 1)],
            ),
        ]);
        let t = compile(&c, &config("*"));
        assert_eq!(
            t.services[0].listen,
            Some("127.0.0.3:12000".parse().unwrap())
        );
        assert_eq!(
            t.services[1].listen,
            Some("127.0.0.1:10001".parse().unwrap())
        );
        let mut strict = config("*");
        strict.strict_mode = true;
        let t = compile(&c, &strict);
        assert_eq!(t.services.len(), 1);
        assert_eq!(&*t.services[0].key.app_id, "/b");
    }

    #[test]
    fn container_networking_uses_task_ip_and_container_port() {
        let mut a = app("/c", 10000, &[], vec![task("c.1", 31000)]);
        a.networking = Networking::Container;
        a.ports[0].container_port = Some(8080);
        a.tasks.get_mut("c.1").unwrap().ip_addresses = vec!["9.0.0.7".parse().unwrap()];
        let t = compile(&cluster(vec![a]), &config("*"));
        assert_eq!(
            t.services[0].backends[0].addr,
            "9.0.0.7:8080".parse().unwrap()
        );
    }

    #[test]
    fn unresolved_agents_are_reported_and_resolved_ones_used() {
        let mut t1 = task("a.1", 31000);
        t1.host = "agent-1".into();
        let mut c = cluster(vec![app("/a", 10000, &[], vec![t1])]);
        let t = compile(&c, &config("*"));
        assert!(t.services[0].backends.is_empty());
        assert!(t.problems[0].reason.contains("not resolved"));
        c.agents
            .insert("agent-1".into(), "10.1.1.1".parse().unwrap());
        let t = compile(&c, &config("*"));
        assert_eq!(
            t.services[0].backends[0].addr,
            "10.1.1.1:31000".parse().unwrap()
        );
    }

    #[test]
    fn vhosts_route_to_services_and_first_claim_wins() {
        let c = cluster(vec![
            app(
                "/shop",
                10000,
                &[("HAPROXY_0_VHOST", "shop.example.com")],
                vec![task("s.1", 1)],
            ),
            app(
                "/api",
                10001,
                &[
                    ("HAPROXY_0_VHOST", "shop.example.com"),
                    ("HAPROXY_0_PATH", "/api"),
                ],
                vec![task("a.1", 2)],
            ),
            app(
                "/copy",
                10000,
                &[("HAPROXY_0_VHOST", "shop.example.com")],
                vec![task("c.1", 3)],
            ),
        ]);
        let mut config = config("*");
        config.default_app = Some("/api".into());
        let t = compile(&c, &config);
        let id = |i: usize| t.services[i].key.app_id.to_string();
        assert_eq!(
            id(t.vhosts.route("shop.example.com", "/").unwrap()),
            "/copy",
            "/copy sorts first"
        );
        assert_eq!(
            id(t.vhosts.route("shop.example.com", "/api/x").unwrap()),
            "/api"
        );
        assert_eq!(id(t.default_service.unwrap()), "/api");
        // /shop lost both its port (to /copy) and its vhost: reported, and still present with
        // neither, it is not served at all.
        assert!(
            t.problems
                .iter()
                .any(|p| &*p.app_id == "/shop" && p.reason.contains("already routed to /copy:0"))
        );
        let shop = t
            .services
            .iter()
            .find(|s| &*s.key.app_id == "/shop")
            .unwrap();
        assert_eq!(shop.listen, None, "its service port went to /copy");
        assert_eq!(shop.vhosts, vec!["shop.example.com"]);
    }

    #[test]
    fn compile_is_deterministic() {
        let apps: Vec<App> = (0..50)
            .map(|i| {
                app(
                    &format!("/app{i}"),
                    10000 + (i % 7),
                    &[],
                    vec![task("t", i)],
                )
            })
            .collect();
        let mut reversed = apps.clone();
        reversed.reverse();
        let a = compile(&cluster(apps), &config("*"));
        let b = compile(&cluster(reversed), &config("*"));
        let keys = |t: &RoutingTable| t.services.iter().map(|s| s.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&a), keys(&b));
        assert_eq!(a.problems, b.problems);
    }
}
