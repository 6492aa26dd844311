//! `compile`'s VIP services: a TCP and/or UDP service per declared VIP address and port, its
//! backends the union of every app port (and Mesos task) that declares it, claiming the VIP's
//! port as service ports claim theirs.

use super::*;

/// A TCP and/or UDP service per VIP and port, its backends the union of the app ports that
/// declare it.
pub(super) fn vip_services(
    cluster: &Cluster,
    settings: &VipSettings,
    health: Option<&HealthPolicy>,
    claimed: &mut Claims,
    table: &mut RoutingTable,
    services: &mut Vec<std::sync::Arc<Service>>,
    entries: &mut Vec<Entries>,
) {
    let (members, bad) = vip::declared(cluster);
    for (app_id, n, reason) in bad {
        std::sync::Arc::make_mut(&mut table.problems).push(Problem {
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
            std::sync::Arc::make_mut(&mut table.problems).push(Problem {
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
                    let protocol = vip::member_app(cluster, app_id)
                        .and_then(|a| a.ports.get(*n).map(|p| p.protocol));
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
                entries.push(Entries {
                    key: key.clone(),
                    // Its service is pushed below, next.
                    at: services.len(),
                    listens: crate::cluster::SmallList::from(&[listen][..]),
                    ..Entries::default()
                });
            }
            let mut backends_all = Vec::new();
            // UDP has nothing to probe; a TCP VIP takes its first app's check for the port.
            let probe = health.filter(|_| !udp).and_then(|h| {
                let (app_id, n) = members[0];
                let app = vip::member_app(cluster, app_id)?;
                h.probe(&app.probes, *n)
            });
            for (app_id, n) in members {
                let Some(app) = vip::member_app(cluster, app_id) else {
                    continue;
                };
                let (found, _) = backends(cluster, &app, *n, &mut |_, reason| {
                    problem(app_id, *n, reason)
                });
                backends_all.extend(found);
            }
            backends_all
                .sort_by(|a, b| a.addr.cmp(&b.addr).then_with(|| a.task_id.cmp(&b.task_id)));
            backends_all.dedup_by(|a, b| a.addr == b.addr);
            let weights: Vec<u32> = backends_all.iter().map(|b| b.weight).collect();
            services.push(std::sync::Arc::new(Service {
                key,
                listen: Some(listen),
                service_port: *port,
                mode: if udp { Mode::Udp } else { Mode::Tcp },
                balancer: Balancer::with_ids(balance, &weights, &ids(&backends_all)),
                backends: backends_all,
                http: HttpOptions::default(),
                vhosts: Vec::new(),
                weight: None,
                canary: None,
                rollout: None,
                deployment: Default::default(),
                upstream_h2: false,
                tcp_idle_timeout: None,
                edge: crate::routing::edge::Edge::shared_default(),
                connection: Default::default(),
                // UDP has nothing to probe; a TCP VIP takes its first app's check for the port.
                probe,
                held_back: Vec::new(),
            }));
        }
    }
}
