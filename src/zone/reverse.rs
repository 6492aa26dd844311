//! The reverse zones (`in-addr.arpa`, `ip6.arpa`, with `dns.ptr`): a PTR for every task's and
//! named VIP's address, built into the same compact zone as the forward names.

use super::*;

/// With `dns.ptr`: `in-addr.arpa` and `ip6.arpa`, each with an SOA (the cluster's serial) and
/// NS (`ns1.{domain}`), and a PTR record for every running task's address (as `dns.ip_sources`
/// gives it) naming its app's name, `{task}.marathon.{domain}` — the stable name that resolves
/// back to the address — and for every named VIP's address naming
/// `{name}.marathon.l4lb.thisdcos.directory`. An address several apps share (tasks on one
/// agent under host networking) has one PTR per app. Every task counts, healthy or not, as the
/// task's own name does. Returns the two apexes and their SOAs.
pub(super) fn ptr_zones(
    cluster: &Cluster,
    config: &ZoneConfig,
    b: &mut Builder,
    serial: u32,
) -> Vec<(LowerName, Record)> {
    let ttl = config.ttl;
    // The targets of each address in DNSSEC's canonical order, as the zone always listed them.
    let mut targets: std::collections::BTreeMap<IpAddr, std::collections::BTreeSet<Name>> =
        Default::default();
    for app in cluster.apps.values() {
        let task_label = label(&task_name(&app.id), config.label_rule);
        if task_label.is_empty() {
            continue;
        }
        let Ok(fqdn) = Name::from_ascii(format!("{task_label}.marathon.{}.", config.domain)) else {
            continue;
        };
        for task in app.tasks.values().filter(|t| t.state == TaskState::Running) {
            for &ip in task_addrs(cluster, app, task, &config.ip_sources).as_slice() {
                targets.entry(ip).or_default().insert(fqdn.clone());
            }
        }
    }
    if let Some(range) = &config.vip_range {
        use crate::routing::vip::{self, VIP_DOMAIN, VipTarget};
        let (members, _) = vip::declared(cluster);
        for (target, ip) in vip::addresses(&members, range) {
            let VipTarget::Named(name) = &target else {
                continue;
            };
            let fqdn = format!("{}.marathon.{VIP_DOMAIN}.", vip::dns_label(name));
            if let Ok(fqdn) = Name::from_ascii(fqdn) {
                targets.entry(ip).or_default().insert(fqdn);
            }
        }
    }
    for (ip, fqdns) in targets {
        let Some(owner) = b.names.from_name(&Name::from(ip)) else {
            continue;
        };
        b.touch(owner);
        for fqdn in fqdns {
            if let Some(target) = b.names.from_name(&fqdn) {
                b.add_ptr(owner, target, ttl);
            }
        }
        // The names between the apex and the owner exist (NODATA, not NXDOMAIN: RFC 8020).
        let mut parent = b.names.parent(owner);
        while b.names.labels(parent) > 2 {
            b.touch(parent);
            parent = b.names.parent(parent);
        }
    }
    let ns1 = b
        .names
        .parse(&format!("ns1.{}.", config.domain))
        .unwrap_or_else(|| b.names.intern(&[0]));
    REVERSE_ZONES
        .iter()
        .map(|apex| {
            let apex = b.names.parse(apex).expect("a valid name");
            let soa = zone_top(b, apex, ns1, serial, ttl, ttl);
            (LowerName::new(&b.names.name(apex)), soa)
        })
        .collect()
}
