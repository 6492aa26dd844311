//! `compile`: the pure function from (cluster, config) to a routing table.
//!
//! Every label is read and every conflict resolved here, deterministically: apps are visited in
//! id order, so every instance given the same cluster builds the same table. What cannot be
//! served is skipped and reported as a [`Problem`]; it never stops the rest from compiling.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use super::{Backend, Balancer, Problem, RoutingTable, Service, ServiceKey, Severity, labels};
use crate::cluster::{App, Cluster, Networking, Protocol, Task};
use crate::config::Config;
use crate::routing::HttpOptions;
use crate::routing::Mode;
use crate::routing::routes::{Overrides, Route};
use crate::routing::vip::{self, VipSettings};

/// The part of the configuration that `compile` reads.
#[derive(Debug, Clone)]
pub struct CompileConfig {
    pub group: String,
    pub serve_ungrouped: bool,
    pub strict_mode: bool,
    pub bind: IpAddr,
    /// switchyard's own listeners; a service port may not take one.
    pub reserved: Vec<SocketAddr>,
    /// The app (its first port) that answers vhost requests no route matches.
    pub default_app: Option<String>,
    /// Route weights set at runtime (admin API), by route name.
    pub weight_overrides: Overrides,
    /// VIPs: the range named VIPs get addresses from, and their balancer. `None`: no VIPs.
    pub vip: Option<VipSettings>,
}

impl CompileConfig {
    pub fn from_config(config: &Config) -> CompileConfig {
        CompileConfig {
            group: config.proxy.group.clone(),
            serve_ungrouped: config.proxy.serve_ungrouped,
            strict_mode: config.proxy.strict_mode,
            bind: config.proxy.bind,
            reserved: config.reserved_ports(),
            default_app: config.http.default_app.clone(),
            weight_overrides: Overrides::new(),
            vip: config.vip.settings(),
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
    let mut entries: Vec<Entries> = Vec::new();
    // Port → who holds it: (address, service, deployment group). Apps of one deployment group
    // share their ports; anyone else who asks for a held port is refused.
    let mut claimed: Claims = HashMap::new();
    for addr in &config.reserved {
        let owner = ServiceKey {
            app_id: "switchyard".into(),
            port_index: 0,
        };
        claimed
            .entry(addr.port())
            .or_default()
            .push((addr.ip(), owner, None));
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
            // The service port (and a blue-green alternate port): none assigned, or taken, leaves
            // the app port served by vhost only.
            let group = labels.deployment.group.clone();
            let ip = labels.bind_addr.unwrap_or(config.bind);
            let service_port = labels.port.unwrap_or(port.service_port);
            let mut listens = Vec::new();
            let alt = labels.deployment.alt_port.filter(|&p| p != service_port);
            for (i, wanted) in [service_port].into_iter().chain(alt).enumerate() {
                if wanted == 0 {
                    continue;
                }
                let claims = claimed.entry(wanted).or_default();
                let holder = claims
                    .iter()
                    .find(|(held, _, g)| overlaps(*held, ip) && (g.is_none() || *g != group));
                match holder {
                    Some((_, owner, _)) => {
                        let what = if i == 0 {
                            "service port"
                        } else {
                            "alternate port"
                        };
                        let reason = if &*owner.app_id == "switchyard" {
                            format!("{what} {wanted} collides with switchyard's own listener")
                        } else {
                            format!("{what} {wanted} is already taken by {owner}")
                        };
                        problem(Severity::Skipped, reason);
                    }
                    None => {
                        claims.push((ip, key.clone(), group.clone()));
                        listens.push(SocketAddr::new(ip, wanted));
                    }
                }
            }
            let listen = listens
                .first()
                .copied()
                .filter(|a| a.port() == service_port);
            if listens.is_empty() && labels.vhosts.is_empty() {
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
            entries.push((key.clone(), listens, labels.vhosts, labels.paths));
            table.services.push(Service {
                held_back: app
                    .tasks
                    .values()
                    .filter_map(|t| Some((t.id.clone(), t.held_back(app.health_checks)?)))
                    .collect(),
                vhosts,
                weight: labels.weight,
                canary: labels.canary_header,
                deployment: labels.deployment,
                key,
                listen,
                mode: labels.mode,
                balancer: Balancer::with_ids(labels.balance, &weights, &ids(&backends)),
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
    if let Some(vip) = &config.vip {
        vip_services(cluster, vip, &mut claimed, &mut table, &mut entries);
    }
    table.services.sort_by(|a, b| a.key.cmp(&b.key));
    table.udp = table
        .services
        .iter()
        .enumerate()
        .filter(|(_, s)| s.mode == Mode::Udp)
        .filter_map(|(i, s)| Some((s.listen?, i)))
        .collect();
    let index: HashMap<&ServiceKey, usize> = table
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| (&s.key, i))
        .collect();
    // Entry points and the services behind each, in app order.
    let mut ports: BTreeMap<SocketAddr, Vec<usize>> = BTreeMap::new();
    let mut vhosts: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (key, listens, hosts, paths) in &entries {
        let service = index[key];
        for listen in listens {
            ports.entry(*listen).or_default().push(service);
        }
        let prefixes: Vec<&str> = if paths.is_empty() {
            vec![""]
        } else {
            paths.iter().map(String::as_str).collect()
        };
        for host in hosts {
            for prefix in &prefixes {
                vhosts
                    .entry((host.clone(), prefix.to_string()))
                    .or_default()
                    .push(service);
            }
        }
        if key.port_index == 0 {
            table.by_app_id.insert(key.app_id.clone(), service);
        }
    }
    for services in ports.values_mut().chain(vhosts.values_mut()) {
        services.sort();
        services.dedup();
    }
    let mut named: HashMap<Vec<usize>, usize> = HashMap::new();
    for (listen, services) in ports {
        let route = route_for(
            &mut table,
            &mut named,
            services,
            None,
            &config.weight_overrides,
        );
        table.by_listen.insert(listen, route);
    }
    for ((host, prefix), services) in vhosts {
        let label = format!("{host}{prefix}");
        let route = route_for(
            &mut table,
            &mut named,
            services,
            Some(label),
            &config.weight_overrides,
        );
        let inserted = table.vhosts.insert(&host, &prefix, route);
        debug_assert!(inserted.is_ok(), "one route per host and path");
    }
    table.default_service = config
        .default_app
        .as_deref()
        .and_then(|id| table.by_app_id.get(id).copied());
    table
}

/// Port → who holds it: (address, service, deployment group).
type Claims = HashMap<u16, Vec<(IpAddr, ServiceKey, Option<String>)>>;

/// A service's entry points, gathered while services are built, for the routes built at the end:
/// (service, listen addresses, vhosts, paths).
type Entries = (ServiceKey, Vec<SocketAddr>, Vec<String>, Vec<String>);

/// The route for a set of services: one route per distinct set, named after their deployment
/// group when they share one, else after the vhost or the single service.
fn route_for(
    table: &mut RoutingTable,
    named: &mut HashMap<Vec<usize>, usize>,
    services: Vec<usize>,
    vhost: Option<String>,
    overrides: &Overrides,
) -> usize {
    if let Some(&route) = named.get(&services) {
        return route;
    }
    let first = &table.services[services[0]];
    let group = first.deployment.group.clone().filter(|g| {
        services
            .iter()
            .all(|&s| table.services[s].deployment.group.as_ref() == Some(g))
    });
    let name = match (group, vhost) {
        (Some(g), _) if first.key.port_index == 0 => g,
        (Some(g), _) => format!("{g}:{}", first.key.port_index),
        (None, Some(vhost)) if services.len() > 1 => vhost,
        (None, _) if services.len() == 1 => first.key.to_string(),
        (None, Some(vhost)) => vhost,
        (None, None) => first.key.to_string(),
    };
    table.routes.push(Route::new(
        name,
        services.clone(),
        &table.services,
        overrides,
    ));
    named.insert(services, table.routes.len() - 1);
    table.routes.len() - 1
}

/// One TCP service per VIP and port, its backends the union of the app ports that declare it.
fn vip_services(
    cluster: &Cluster,
    settings: &VipSettings,
    claimed: &mut Claims,
    table: &mut RoutingTable,
    entries: &mut Vec<Entries>,
) {
    let (members, bad) = vip::declared(cluster);
    for (app_id, n, reason) in bad {
        table.problems.push(Problem {
            app_id,
            port_index: Some(n),
            severity: Severity::Skipped,
            reason,
        });
    }
    let addresses = vip::addresses(&members, &settings.range);
    for ((target, port), apps) in &members {
        let balance = match target {
            vip::VipTarget::Named(name) => settings.balance_by_name.get(name).copied(),
            vip::VipTarget::Ip(_) => None,
        }
        .unwrap_or(settings.balance);
        let Some(&ip) = addresses.get(target) else {
            continue;
        };
        let listen = SocketAddr::new(ip, *port);
        let key = ServiceKey {
            app_id: format!("vip:{target}").into(),
            port_index: *port as usize,
        };
        let mut problem = |app_id: &crate::cluster::AppId, n: usize, reason: String| {
            table.problems.push(Problem {
                app_id: app_id.clone(),
                port_index: Some(n),
                severity: Severity::Skipped,
                reason,
            });
        };
        // TCP and UDP are separate services (and sockets) on the same address and port.
        for udp in [false, true] {
            let members: Vec<&(crate::cluster::AppId, usize)> = apps
                .iter()
                .filter(|(app_id, n)| {
                    let protocol = cluster.apps.get(app_id).map(|a| a.ports[*n].protocol);
                    match protocol {
                        Some(Protocol::TcpUdp) => true,
                        Some(Protocol::Udp) => udp,
                        Some(Protocol::Tcp) => !udp,
                        None => false,
                    }
                })
                .collect();
            if members.is_empty() {
                continue;
            }
            let key = if udp {
                ServiceKey {
                    app_id: format!("vip:{target}/udp").into(),
                    port_index: *port as usize,
                }
            } else {
                key.clone()
            };
            if !udp {
                let claims = claimed.entry(*port).or_default();
                if let Some((_, owner, _)) = claims.iter().find(|(held, _, _)| overlaps(*held, ip))
                {
                    let (app_id, n) = members[0];
                    problem(
                        app_id,
                        *n,
                        format!("VIP {target}:{port} collides with {owner}"),
                    );
                    continue;
                }
                claims.push((ip, key.clone(), None));
                entries.push((key.clone(), vec![listen], Vec::new(), Vec::new()));
            }
            let mut backends_all = Vec::new();
            for (app_id, n) in members {
                let Some(app) = cluster.apps.get(app_id) else {
                    continue;
                };
                backends_all.extend(backends(cluster, app, *n, &mut |_, reason| {
                    problem(app_id, *n, reason)
                }));
            }
            backends_all
                .sort_by(|a, b| a.addr.cmp(&b.addr).then_with(|| a.task_id.cmp(&b.task_id)));
            backends_all.dedup_by(|a, b| a.addr == b.addr);
            let weights: Vec<u32> = backends_all.iter().map(|b| b.weight).collect();
            table.services.push(Service {
                key,
                listen: Some(listen),
                mode: if udp { Mode::Udp } else { Mode::Tcp },
                balancer: Balancer::with_ids(balance, &weights, &ids(&backends_all)),
                backends: backends_all,
                http: HttpOptions::default(),
                vhosts: Vec::new(),
                weight: None,
                canary: None,
                deployment: Default::default(),
                held_back: Vec::new(),
            });
        }
    }
}

/// Stable backend ids for consistent hashing: their addresses.
fn ids(backends: &[Backend]) -> Vec<u64> {
    backends
        .iter()
        .map(|b| super::balance::maglev::id_of(b.addr))
        .collect()
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
            default_app: None,
            weight_overrides: Overrides::new(),
            vip: None,
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
    fn apps_sharing_a_vhost_form_one_route_and_ports_are_not_shared_across_groups() {
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
        let apps = |r: usize| {
            t.routes[r]
                .members
                .iter()
                .map(|m| m.app_id.to_string())
                .collect::<Vec<_>>()
        };
        let root = t.vhosts.route("shop.example.com", "/").unwrap();
        assert_eq!(apps(root), vec!["/copy", "/shop"]);
        assert_eq!(t.routes[root].name, "shop.example.com");
        assert_eq!(
            apps(t.vhosts.route("shop.example.com", "/api/x").unwrap()),
            vec!["/api"]
        );
        assert_eq!(&*t.services[t.default_service.unwrap()].key.app_id, "/api");
        // Without a shared deployment group, the service port stays with the first app.
        let shop = t
            .services
            .iter()
            .find(|s| &*s.key.app_id == "/shop")
            .unwrap();
        assert_eq!(shop.listen, None, "its service port went to /copy");
        assert!(
            t.problems
                .iter()
                .any(|p| &*p.app_id == "/shop" && p.reason.contains("taken by /copy:0"))
        );
    }

    #[test]
    fn a_deployment_group_shares_its_port_and_splits_by_weight() {
        let blue = [
            ("HAPROXY_DEPLOYMENT_GROUP", "shop"),
            ("HAPROXY_DEPLOYMENT_COLOUR", "blue"),
            ("SWITCHYARD_0_WEIGHT", "90"),
        ];
        let green = [
            ("HAPROXY_DEPLOYMENT_GROUP", "shop"),
            ("HAPROXY_DEPLOYMENT_COLOUR", "green"),
            ("HAPROXY_DEPLOYMENT_ALT_PORT", "10100"),
            ("SWITCHYARD_0_WEIGHT", "10"),
            ("SWITCHYARD_0_CANARY_HEADER", "X-Canary: on"),
        ];
        let c = cluster(vec![
            app(
                "/shop-blue",
                10000,
                &blue,
                vec![task("b.1", 1), task("b.2", 2), task("b.3", 3)],
            ),
            app("/shop-green", 10000, &green, vec![task("g.1", 4)]),
        ]);
        let mut config = config("*");
        let t = compile(&c, &config);
        assert!(
            t.problems.iter().all(|p| !p.reason.contains("taken")),
            "{:?}",
            t.problems
        );
        let route = t.route_at("127.0.0.1:10000".parse().unwrap()).unwrap();
        assert_eq!(route.name, "shop");
        let alt = t.route_at("127.0.0.1:10100".parse().unwrap()).unwrap();
        assert_eq!(alt.name, "shop", "the alternate port serves the same route");
        let picks: Vec<usize> = (0..1000)
            .map(|_| route.pick(None, &t.services).unwrap())
            .collect();
        let green_idx = t
            .services
            .iter()
            .position(|s| &*s.key.app_id == "/shop-green")
            .unwrap();
        let to_green = picks.iter().filter(|&&s| s == green_idx).count();
        assert!((99..=101).contains(&to_green), "90/10 is exact: {to_green}");
        let mut canary = http::HeaderMap::new();
        canary.insert("x-canary", "on".parse().unwrap());
        assert_eq!(route.pick(Some(&canary), &t.services), Some(green_idx));
        // A runtime override replaces the labels' weights.
        config.weight_overrides.insert(
            "shop".into(),
            [("/shop-blue".into(), 0), ("/shop-green".into(), 1)].into(),
        );
        let t = compile(&c, &config);
        let route = t.route_at("127.0.0.1:10000".parse().unwrap()).unwrap();
        assert!(route.overridden);
        assert!((0..10).all(|_| route.pick(None, &t.services) == Some(green_idx)));
    }

    fn vip_config() -> CompileConfig {
        let mut c = config("external");
        c.vip = Some(VipSettings {
            range: vip::VipRange::parse("11.0.0.0/8").unwrap(),
            balance: crate::routing::Balance::Maglev,
            balance_by_name: Default::default(),
        });
        c
    }

    fn with_vip(mut app: App, label: &str) -> App {
        app.ports[0].labels.insert("VIP_0".into(), label.into());
        app
    }

    #[test]
    fn two_instances_pick_the_same_backend_for_the_same_flow() {
        let tasks = |p: u16| (0..8).map(|i| task(&format!("t{p}.{i}"), p + i)).collect();
        let apps = vec![
            with_vip(app("/a", 0, &[], tasks(31000)), "/web:80"),
            with_vip(app("/b", 0, &[], tasks(32000)), "web:80"),
        ];
        let mut reversed = apps.clone();
        reversed.reverse();
        let (one, two) = (
            compile(&cluster(apps), &vip_config()),
            compile(&cluster(reversed), &vip_config()),
        );
        let pick = |t: &RoutingTable, flow: crate::routing::balance::Flow| {
            let s = t
                .services
                .iter()
                .find(|s| &*s.key.app_id == "vip:web")
                .unwrap();
            s.backends[s
                .balancer
                .candidates(flow, |_| Default::default())
                .next()
                .unwrap()]
            .addr
        };
        let web = one
            .services
            .iter()
            .find(|s| &*s.key.app_id == "vip:web")
            .unwrap();
        assert_eq!(web.backends.len(), 16, "the union of both apps");
        assert!(web.listen.unwrap().ip().to_string().starts_with("11."));
        for port in 0..1000u16 {
            let flow = crate::routing::balance::Flow {
                client: SocketAddr::from(([10, 0, (port / 250) as u8, 1], 40000 + port)),
                local: web.listen.unwrap(),
            };
            assert_eq!(pick(&one, flow), pick(&two, flow));
        }
    }

    #[test]
    fn malformed_vip_labels_are_reported_and_the_rest_served() {
        let c = cluster(vec![
            with_vip(app("/bad", 0, &[], vec![task("b.1", 1)]), "web"),
            with_vip(app("/good", 0, &[], vec![task("g.1", 2)]), "/good:81"),
        ]);
        let t = compile(&c, &vip_config());
        assert!(
            t.problems
                .iter()
                .any(|p| &*p.app_id == "/bad" && p.reason.contains("VIP_0"))
        );
        assert!(t.services.iter().any(|s| &*s.key.app_id == "vip:good"));
    }

    #[test]
    fn an_app_without_backends_gives_its_share_away() {
        let g = [
            ("HAPROXY_DEPLOYMENT_GROUP", "g"),
            ("SWITCHYARD_0_WEIGHT", "50"),
        ];
        let c = cluster(vec![
            app("/a", 10000, &g, vec![task("a.1", 1)]),
            app("/b", 10000, &g, vec![]),
        ]);
        let t = compile(&c, &config("*"));
        let route = t.route_at("127.0.0.1:10000".parse().unwrap()).unwrap();
        let a = t
            .services
            .iter()
            .position(|s| &*s.key.app_id == "/a")
            .unwrap();
        assert!((0..10).all(|_| route.pick(None, &t.services) == Some(a)));
        let c = cluster(vec![app("/b", 10000, &g, vec![])]);
        let t = compile(&c, &config("*"));
        assert_eq!(
            t.route_at("127.0.0.1:10000".parse().unwrap())
                .unwrap()
                .pick(None, &t.services),
            None
        );
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
