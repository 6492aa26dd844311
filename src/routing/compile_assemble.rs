//! The table assembled from every app's part (`compile_cache`'s parts, or parts made one at a
//! time by a fresh compile), in id order: port claims and their holders, entry points, routes
//! and their names, VIP services (`compile_vips.rs`), vhosts and the index maps, with the
//! sorts that make 50,000 ports cheap to order. What one app compiles to stays in `compile`.

use super::*;

/// The table from every app's part, in id order: port claims, entry points, routes, vhosts
/// and the index maps. The parts are the cache's, or made one at a time as they are reached
/// (`compile_fresh`): each is read once, in turn.
pub(super) fn assemble<P: std::borrow::Borrow<Part>>(
    parts: impl ExactSizeIterator<Item = P>,
    cluster: &Cluster,
    config: &CompileConfig,
) -> RoutingTable {
    let mut table = RoutingTable::default();
    // Gathered in vectors, then chunked (`crate::chunked`) once complete.
    // About one of each per app (one port, one route per service): sized once, not grown
    // (and copied) through every doubling.
    let apps = parts.len();
    let mut services: Vec<std::sync::Arc<Service>> = Vec::with_capacity(apps);
    let mut routes: Vec<std::sync::Arc<Route>> = Vec::with_capacity(apps);
    let mut entries: Vec<Entries> = Vec::with_capacity(apps);
    // Port → who holds it: (address, service, deployment group). Apps of one deployment group
    // share their ports; anyone else who asks for a held port is refused.
    let mut claimed: Claims = HashMap::with_capacity_and_hasher(apps, Default::default());
    // UDP service ports, claimed apart from TCP's (a port may carry both): switchyard's own
    // listeners are reserved in both (its DNS listens on UDP and TCP).
    let mut claimed_udp: Claims = HashMap::default();
    for addr in &config.reserved {
        let owner = ServiceKey {
            app_id: "switchyard".into(),
            port_index: 0,
        };
        for claims in [&mut claimed, &mut claimed_udp] {
            claims
                .entry(addr.port())
                .or_default()
                .push((addr.ip(), owner.clone(), None));
        }
    }
    // Every app has its part, and both maps are in id order.
    debug_assert_eq!(apps, cluster.apps.len());
    for part in parts {
        let part = part.borrow();
        let app = &part.app;
        extend_shared(&mut table.problems, &part.notices);
        for port in part.ports.iter() {
            extend_shared(&mut table.problems, &port.early);
            let Some(c) = &port.claim else {
                continue;
            };
            let problem = |table: &mut RoutingTable, reason: String| {
                std::sync::Arc::make_mut(&mut table.problems).push(Problem {
                    app_id: app.id.clone(),
                    port_index: Some(c.key.port_index),
                    severity: Severity::Skipped,
                    reason,
                });
            };
            let (ip, service_port, group) = (c.ip, c.service_port, &c.group);
            if let Some((udp, late)) = &c.udp {
                let claims = claimed_udp.entry(service_port).or_default();
                match claims.iter().find(|(held, _, _)| overlaps(*held, ip)) {
                    Some((_, owner, _)) => {
                        let reason = if &*owner.app_id == "switchyard" {
                            format!(
                                "UDP service port {service_port} collides with switchyard's \
                                 own listener"
                            )
                        } else {
                            format!(
                                "UDP service port {service_port} is already taken by {owner} \
                                 (UDP ports are not shared, not even by a deployment group)"
                            )
                        };
                        problem(&mut table, reason);
                    }
                    None => {
                        claims.push((ip, udp.key.clone(), group.clone()));
                        extend_shared(&mut table.problems, late);
                        services.push(udp.clone());
                    }
                }
            }
            let Some(tcp) = &c.tcp else {
                continue;
            };
            // At most the service port and the alternate port: gathered on the stack.
            let mut got = [SocketAddr::from(([0, 0, 0, 0], 0)); 2];
            let mut listened = 0;
            for (i, wanted) in [service_port].into_iter().chain(c.alt).enumerate() {
                if wanted == 0 {
                    continue;
                }
                let claims = claimed.entry(wanted).or_default();
                let holder = claims
                    .iter()
                    .find(|(held, _, g)| overlaps(*held, ip) && (g.is_none() || g != group));
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
                        problem(&mut table, reason);
                    }
                    None => {
                        claims.push((ip, c.key.clone(), group.clone()));
                        got[listened] = SocketAddr::new(ip, wanted);
                        listened += 1;
                    }
                }
            }
            let listens = &got[..listened];
            let listen = listens
                .first()
                .copied()
                .filter(|a| a.port() == service_port);
            if listens.is_empty() && tcp.hosts.is_empty() {
                continue; // nothing to listen on and no vhost: not served
            }
            if !tcp.ssl_certs.is_empty() {
                std::sync::Arc::make_mut(&mut table.ssl_certs)
                    .extend(tcp.ssl_certs.iter().cloned());
            }
            table.sni_rules |= tcp.sni_rules;
            extend_shared(&mut table.problems, &tcp.late);
            entries.push(Entries {
                key: c.key.clone(),
                at: services.len(),
                listens: crate::cluster::SmallList::from(listens),
                hosts: tcp.hosts.clone(),
                paths: tcp.paths.clone(),
                ignore_case: tcp.ignore_case,
                weight: tcp.weight,
            });
            // Another app holds its service port: this table's copy does not listen there.
            let service = if tcp.service.listen == listen {
                tcp.service.clone()
            } else {
                std::sync::Arc::new(tcp.service.relisten(listen))
            };
            services.push(service);
        }
    }
    if let Some(vip) = &config.vip {
        let health = config.health.as_ref();
        vips::vip_services(
            cluster,
            vip,
            health,
            &mut claimed,
            &mut table,
            &mut services,
            &mut entries,
        );
    }
    // Sorted by key through a permutation, which also tells each entry where its service went
    // (no map from key to index: at 50,000 services, hashing every key was a tenth of this).
    // Apps come in id order and their ports in index order, so without UDP or VIP services
    // (nearly always) they are sorted already: the stable sort's permutation is the identity,
    // and no list is permuted.
    let place: Vec<usize> = if services.is_sorted_by(|a, b| a.key <= b.key) {
        table.services = services.into();
        (0..table.services.len()).collect()
    } else {
        let mut order: Vec<usize> = (0..services.len()).collect();
        order.sort_by(|&a, &b| services[a].key.cmp(&services[b].key));
        let mut place = vec![0; order.len()];
        for (i, &o) in order.iter().enumerate() {
            place[o] = i;
        }
        let mut unsorted: Vec<Option<std::sync::Arc<Service>>> =
            services.into_iter().map(Some).collect();
        let sorted: Vec<std::sync::Arc<Service>> =
            order.iter().filter_map(|&o| unsorted[o].take()).collect();
        table.services = sorted.into();
        place
    };
    table.udp = std::sync::Arc::new(
        table
            .services
            .iter()
            .enumerate()
            .filter(|(_, s)| s.mode == Mode::Udp)
            .filter_map(|(i, s)| Some((s.listen?, i)))
            .collect(),
    );
    // Entry points and the services behind each, in app order: (listen address, service)
    // pairs, grouped by address below (a map with a list per port was 50,000 of each).
    let mut ports: Vec<(SocketAddr, usize)> = Vec::with_capacity(entries.len());
    // (host, prefix, ignore case) → (weight, services): of the apps claiming one rule, the
    // heaviest (`HAPROXY_{n}_BACKEND_WEIGHT`) take it; equal weights share it.
    let mut vhosts: BTreeMap<(String, String, bool), (i64, Vec<usize>)> = BTreeMap::new();
    let mut by_app_id =
        rustc_hash::FxHashMap::with_capacity_and_hasher(entries.len(), Default::default());
    for entry in &entries {
        let service = place[entry.at];
        debug_assert_eq!(table.services[service].key, entry.key);
        for listen in &entry.listens {
            ports.push((*listen, service));
        }
        // No path: the host's root (`[""]`), without a list made per entry.
        const ROOT: &[String] = &[String::new()];
        let prefixes: &[String] = if entry.paths.is_empty() {
            ROOT
        } else {
            &entry.paths
        };
        let ignore_case = entry.ignore_case && !entry.paths.is_empty();
        for host in entry.hosts.iter() {
            for prefix in prefixes {
                let key = (host.clone(), prefix.clone(), ignore_case);
                let (weight, services) = vhosts.entry(key).or_insert((entry.weight, Vec::new()));
                if entry.weight > *weight {
                    *weight = entry.weight;
                    services.clear();
                }
                if entry.weight == *weight {
                    services.push(service);
                }
            }
        }
        if entry.key.port_index == 0 {
            by_app_id.insert(entry.key.app_id.clone(), service);
        }
    }
    for (_, services) in vhosts.values_mut() {
        services.sort();
        services.dedup();
    }
    // By address, then service: each address's services sorted, as the map's lists were.
    sort_ports(&mut ports);
    ports.dedup();
    let mut named = Named {
        single: vec![usize::MAX; table.services.len()],
        many: HashMap::default(),
    };
    // Made unique once, not checked per route.
    let by_listen = std::sync::Arc::make_mut(&mut table.by_listen);
    by_listen.reserve(ports.len());
    let mut services = Vec::new();
    for group in ports.chunk_by(|a, b| a.0 == b.0) {
        let listen = group[0].0;
        services.clear();
        services.extend(group.iter().map(|&(_, s)| s));
        let route = route_for(
            &table.services,
            &mut routes,
            &mut named,
            &services,
            None,
            &config.weight_overrides,
        );
        by_listen.insert(listen, route);
    }
    let mut vhost_map = crate::routing::vhosts::Vhosts::default();
    for ((host, prefix, ignore_case), (weight, services)) in vhosts {
        let label = if ignore_case {
            format!("{host}{prefix} (-i)")
        } else {
            format!("{host}{prefix}")
        };
        let route = route_for(
            &table.services,
            &mut routes,
            &mut named,
            &services,
            Some(label),
            &config.weight_overrides,
        );
        let rule = crate::routing::vhosts::PathRule {
            prefix: prefix.into(),
            ignore_case,
            weight,
        };
        let inserted = vhost_map.insert_rule(&host, rule, route);
        debug_assert!(inserted.is_ok(), "one route per host and path");
    }
    table.routes = routes.into();
    table.vhosts = std::sync::Arc::new(vhost_map);
    table.default_service = config
        .default_app
        .as_deref()
        .and_then(|id| by_app_id.get(id).copied());
    table.by_app_id = std::sync::Arc::new(by_app_id);
    table.compiled_bind = Some(config.bind);
    table
}

/// Adds `items` to one of the table's shared lists; nothing to add (nearly always, per port)
/// does not touch the list: no check of its count for each of 50,000 ports.
fn extend_shared<T: Clone>(list: &mut std::sync::Arc<Vec<T>>, items: &[T]) {
    if !items.is_empty() {
        std::sync::Arc::make_mut(list).extend_from_slice(items);
    }
}

/// Sorts (listen address, service) pairs as `SocketAddr` and `usize` order them. With IPv4
/// addresses alone (nearly always) by one integer made of address, port and service:
/// comparing `SocketAddr`s was a tenth of a full compile's instructions.
pub(super) fn sort_ports(ports: &mut [(SocketAddr, usize)]) {
    let key = |&(addr, service): &(SocketAddr, usize)| match (addr, u32::try_from(service)) {
        (SocketAddr::V4(v4), Ok(service)) => Some(
            (u128::from(v4.ip().to_bits()) << 48)
                | (u128::from(v4.port()) << 32)
                | u128::from(service),
        ),
        _ => None,
    };
    // The keys sorted alone (no key made per comparison), then the pairs read back from them.
    match ports.iter().map(key).collect::<Option<Vec<u128>>>() {
        Some(mut keys) => {
            sort_keys_of_one_address(&mut keys);
            for (pair, key) in ports.iter_mut().zip(keys) {
                let addr = std::net::SocketAddrV4::new(
                    std::net::Ipv4Addr::from_bits((key >> 48) as u32),
                    (key >> 32) as u16,
                );
                *pair = (SocketAddr::V4(addr), key as u32 as usize);
            }
        }
        None => ports.sort_unstable(),
    }
}

/// Sorts `sort_ports`' keys (address, port, service). Many keys of one address (the bind
/// address: nearly every table) are counted into place by port, then sorted by service within
/// a port (one service each but for deployment groups): no comparison sort of 50,000 keys.
fn sort_keys_of_one_address(keys: &mut Vec<u128>) {
    const MANY: usize = 256;
    let one_address = keys.first().map(|&k| k >> 48);
    if keys.len() < MANY || keys.iter().any(|&k| Some(k >> 48) != one_address) {
        keys.sort_unstable();
        return;
    }
    let port = |k: u128| usize::from((k >> 32) as u16);
    // Where each port's keys start, then where the next of them goes.
    let mut next = vec![0u32; 1 << 16];
    for &k in keys.iter() {
        next[port(k)] += 1;
    }
    let mut at = 0;
    for slot in next.iter_mut() {
        let count = *slot;
        *slot = at;
        at += count;
    }
    let mut sorted = vec![0u128; keys.len()];
    for &k in keys.iter() {
        let slot = &mut next[port(k)];
        sorted[*slot as usize] = k;
        *slot += 1;
    }
    for same_port in sorted.chunk_by_mut(|a, b| port(*a) == port(*b)) {
        if same_port.len() > 1 {
            same_port.sort_unstable();
        }
    }
    *keys = sorted;
}

/// Port → who holds it.
type Claims = HashMap<u16, Holders>;

/// One holder of a port: (address, service, deployment group).
type Holder = (IpAddr, ServiceKey, Option<String>);

/// The holders of one port, in the order they claimed it: the first inline (nearly every
/// port has one holder, so a table of 50,000 ports makes no list per port).
#[derive(Default)]
struct Holders {
    first: Option<Holder>,
    rest: Vec<Holder>,
}

impl Holders {
    /// A concrete iterator (no destructor): a holder found is read while the list is pushed to.
    fn iter(
        &self,
    ) -> std::iter::Chain<std::option::Iter<'_, Holder>, std::slice::Iter<'_, Holder>> {
        self.first.iter().chain(&self.rest)
    }

    fn push(&mut self, holder: Holder) {
        match self.first {
            None => self.first = Some(holder),
            Some(_) => self.rest.push(holder),
        }
    }
}

/// The routes made so far, by their set of services (sorted): a set of one looked up by its
/// service's index, without hashing or a list per route.
#[derive(Default)]
struct Named {
    /// Service index → route, `usize::MAX` for none yet.
    single: Vec<usize>,
    many: HashMap<Vec<usize>, usize>,
}

impl Named {
    fn get(&self, services: &[usize]) -> Option<usize> {
        match services {
            [one] => self.single.get(*one).copied().filter(|&r| r != usize::MAX),
            _ => self.many.get(services).copied(),
        }
    }

    fn insert(&mut self, services: &[usize], route: usize) {
        match services {
            [one] => {
                if self.single.len() <= *one {
                    self.single.resize(*one + 1, usize::MAX);
                }
                self.single[*one] = route;
            }
            _ => {
                self.many.insert(services.to_vec(), route);
            }
        }
    }
}

/// `key.to_string()` (`{app id}:{port index}`), without the formatting machinery: one per
/// route, 50,000 in a table of 50,000 apps.
fn key_name(key: &ServiceKey) -> String {
    let mut name = String::with_capacity(key.app_id.len() + 3);
    name.push_str(&key.app_id);
    name.push(':');
    match u8::try_from(key.port_index) {
        Ok(n) if n < 10 => name.push(char::from(b'0' + n)),
        _ => name.push_str(&key.port_index.to_string()),
    }
    name
}

/// A service's entry points, gathered while services are built, for the routes built at the end.
#[derive(Debug, Default)]
struct Entries {
    key: ServiceKey,
    /// Where its service was pushed in the table's services, before they are sorted.
    at: usize,
    /// Its service port and alternate port, those it got: inline, no list per service.
    listens: crate::cluster::SmallList<SocketAddr, 2>,
    hosts: std::sync::Arc<[String]>,
    paths: std::sync::Arc<[String]>,
    /// The paths match without case (`-i`).
    ignore_case: bool,
    /// `HAPROXY_{n}_BACKEND_WEIGHT`.
    weight: i64,
}

/// The route for a set of services: one route per distinct set, named after their deployment
/// group when they share one, else after the vhost or the single service.
fn route_for(
    all: &crate::chunked::Chunked<std::sync::Arc<Service>>,
    routes: &mut Vec<std::sync::Arc<Route>>,
    named: &mut Named,
    services: &[usize],
    vhost: Option<String>,
    overrides: &Overrides,
) -> usize {
    if let Some(route) = named.get(services) {
        return route;
    }
    let first = &all[services[0]];
    let group = first.deployment.group.clone().filter(|g| {
        services
            .iter()
            .all(|&s| all[s].deployment.group.as_ref() == Some(g))
    });
    let name = match (group, vhost) {
        (Some(g), _) if first.key.port_index == 0 => g,
        (Some(g), _) => format!("{g}:{}", first.key.port_index),
        (None, Some(vhost)) if services.len() > 1 => vhost,
        (None, _) if services.len() == 1 => key_name(&first.key),
        (None, Some(vhost)) => vhost,
        (None, None) => key_name(&first.key),
    };
    routes.push(std::sync::Arc::new(Route::new(
        name, services, all, overrides,
    )));
    named.insert(services, routes.len() - 1);
    routes.len() - 1
}

/// Two binds collide when they share a port and either is a wildcard or both are the same IP.
fn overlaps(a: IpAddr, b: IpAddr) -> bool {
    a == b || a.is_unspecified() || b.is_unspecified()
}

#[path = "compile_vips.rs"]
mod vips;
