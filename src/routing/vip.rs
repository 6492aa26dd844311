//! Minuteman's VIPs: `VIP_{i}` port labels (`/name:port`, `name:port` or `ip:port`), and the
//! allocation of named-VIP addresses from a range.
//!
//! Allocation is a pure function of the sorted set of VIP names: every instance allocates the
//! same address for a name, whatever order it learned the names in. Each name hashes to a slot
//! of the range; a taken slot sends the name to the next free one (in name order). So adding or
//! removing a VIP never moves another VIP's address, except one that had been displaced by a
//! collision with the added or removed name.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use std::borrow::Cow;

use crate::cluster::mesos::MEMBER_PREFIX;
use crate::cluster::{App, AppId, Cluster};

/// The named-VIP domain of DC/OS: `{name}.marathon.l4lb.thisdcos.directory`.
pub const VIP_DOMAIN: &str = "l4lb.thisdcos.directory";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipRange {
    first: u128,
    /// Usable addresses (IPv4: the block less its network and broadcast addresses).
    size: u128,
    v6: bool,
}

impl VipRange {
    /// An IPv4 block (`11.0.0.0/8`, prefix 8..=30) or an IPv6 one (`fd01:b::/64`, 16..=120).
    pub fn parse(text: &str) -> Result<VipRange, String> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?}: expected address/length"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?}: not an address block"))?;
        let (bits, range) = match addr {
            IpAddr::V4(_) => (32u32, 8..=30),
            IpAddr::V6(_) => (128u32, 16..=120),
        };
        let prefix: u32 = prefix
            .parse()
            .ok()
            .filter(|p| range.contains(p))
            .ok_or_else(|| {
                format!(
                    "{text:?}: the prefix length must be {}..={}",
                    range.start(),
                    range.end()
                )
            })?;
        let host_bits = bits - prefix;
        let value = match addr {
            IpAddr::V4(v4) => u32::from(v4) as u128,
            IpAddr::V6(v6) => u128::from(v6),
        };
        let network = value & !((1u128 << host_bits) - 1);
        Ok(match addr {
            IpAddr::V4(_) => VipRange {
                first: network + 1,
                size: (1u128 << host_bits) - 2,
                v6: false,
            },
            IpAddr::V6(_) => VipRange {
                first: network + 1,
                size: (1u128 << host_bits) - 1,
                v6: true,
            },
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let value = match (ip, self.v6) {
            (IpAddr::V4(v4), false) => u32::from(v4) as u128,
            (IpAddr::V6(v6), true) => u128::from(v6),
            _ => return false,
        };
        value >= self.first && value - self.first < self.size
    }

    fn address(&self, slot: u128) -> IpAddr {
        let value = self.first + slot;
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(value))
        } else {
            IpAddr::V4(Ipv4Addr::from(value as u32))
        }
    }
}

/// What `compile` needs to serve VIPs.
#[derive(Debug, Clone)]
pub struct VipSettings {
    pub range: VipRange,
    /// The balancer of every VIP ...
    pub balance: crate::routing::Balance,
    /// ... but these named ones.
    pub balance_by_name: BTreeMap<String, crate::routing::Balance>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VipTarget {
    Named(String),
    Ip(IpAddr),
}

impl std::fmt::Display for VipTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VipTarget::Named(name) => write!(f, "{name}"),
            VipTarget::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// One label value: `/name:port`, `name:port` or `ip:port`, split at the last `:`.
pub fn parse_label(value: &str) -> Result<(VipTarget, u16), String> {
    let value = value.trim();
    let (target, port) = value
        .rsplit_once(':')
        .ok_or_else(|| format!("{value:?}: expected name:port"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| format!("{value:?}: bad port"))?;
    let bare = target.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok((VipTarget::Ip(ip), port));
    }
    let name = target.trim_start_matches('/');
    let valid = !name.is_empty()
        && name.split('/').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        });
    if !valid {
        return Err(format!("{value:?}: not a VIP name"));
    }
    Ok((VipTarget::Named(name.to_ascii_lowercase()), port))
}

/// The DNS label of a named VIP (`/a/b` → `a-b`... as Minuteman, `/` becomes nothing between
/// segments joined by `-`).
pub fn dns_label(name: &str) -> String {
    crate::cluster::names::label(
        &name.replace('/', "."),
        crate::cluster::names::LabelRule::Rfc1123,
    )
}

/// Every VIP the cluster's apps declare, with the app ports behind it, and the labels that did
/// not parse (app id, reason). VIPs are internal: no group filter applies.
/// A port label that declares a VIP (`VIP_n`, as dcos-net reads them).
fn is_vip_label(key: &str) -> bool {
    key.starts_with("VIP_") || key.starts_with("vip_")
}

/// Whether `app` declares a VIP on any of its ports (well-formed or not): a member of the VIP
/// services, or a problem of theirs.
pub fn declares(app: &App) -> bool {
    app.ports
        .iter()
        .any(|p| p.labels.keys().any(|k| is_vip_label(k)))
}

pub fn declared(cluster: &Cluster) -> (VipMembers, Vec<(AppId, usize, String)>) {
    let mut members = VipMembers::new();
    let mut bad = Vec::new();
    for app in cluster.apps.values() {
        for (n, port) in app.ports.iter().enumerate() {
            for (key, value) in &port.labels {
                if !is_vip_label(key) {
                    continue;
                }
                match parse_label(value) {
                    Ok(vip) => members.entry(vip).or_default().push((app.id.clone(), n)),
                    Err(reason) => bad.push((app.id.clone(), n, format!("{key}: {reason}"))),
                }
            }
        }
    }
    // Every other framework's tasks: `VIP_n` labels on their DiscoveryInfo ports, as dcos-net
    // reads them. Each task is a member of its own (`mesos:{task id}`, see `member_app`);
    // Marathon's tasks are Marathon's (its app ports carry the same labels).
    // Without a Mesos source there are none (and no set of every Marathon task is built).
    let owned = cluster.mesos.owned_by_marathon(&cluster.apps);
    for (task, _, _) in cluster.mesos.own_tasks(&owned) {
        let Some(discovery) = &task.discovery else {
            continue;
        };
        let id: AppId = format!("{MEMBER_PREFIX}{}", task.id).into();
        for (n, port) in discovery.ports.iter().enumerate() {
            for (key, value) in &port.labels {
                if !is_vip_label(key) {
                    continue;
                }
                match parse_label(value) {
                    Ok(vip) => members.entry(vip).or_default().push((id.clone(), n)),
                    Err(reason) => bad.push((id.clone(), n, format!("{key}: {reason}"))),
                }
            }
        }
    }
    (members, bad)
}

/// The app behind a VIP member: a Marathon app, or a Mesos task (`mesos:{task id}`) as a
/// one-task app whose ports are its DiscoveryInfo ports.
pub fn member_app<'a>(cluster: &'a Cluster, id: &AppId) -> Option<Cow<'a, App>> {
    if let Some(app) = cluster.apps.get(id) {
        return Some(Cow::Borrowed(app));
    }
    let task_id = id.strip_prefix(MEMBER_PREFIX)?;
    let task = cluster.mesos.tasks.get(task_id)?;
    let agent = cluster.mesos.agents.get(&task.agent_id);
    Some(Cow::Owned(task.as_app(id, agent)))
}

/// (VIP, port) → the app ports behind it.
pub type VipMembers = BTreeMap<(VipTarget, u16), Vec<(AppId, usize)>>;

/// The address of every VIP of `members`: its own for IP VIPs, allocated for named ones.
pub fn addresses(members: &VipMembers, range: &VipRange) -> BTreeMap<VipTarget, IpAddr> {
    let names: BTreeSet<String> = members
        .keys()
        .filter_map(|(t, _)| match t {
            VipTarget::Named(name) => Some(name.clone()),
            VipTarget::Ip(_) => None,
        })
        .collect();
    let allocated = allocate(&names, range);
    members
        .keys()
        .filter_map(|(target, _)| {
            let ip = match target {
                VipTarget::Named(name) => *allocated.get(name)?,
                VipTarget::Ip(ip) => *ip,
            };
            Some((target.clone(), ip))
        })
        .collect()
}

/// Addresses for named VIPs: a pure function of the set of names (see the module comment).
pub fn allocate(names: &BTreeSet<String>, range: &VipRange) -> BTreeMap<String, IpAddr> {
    let mut taken: HashSet<u128> = HashSet::with_capacity(names.len());
    let mut out = BTreeMap::new();
    if range.size == 0 {
        return out;
    }
    for name in names
        .iter()
        .take(range.size.min(usize::MAX as u128) as usize)
    {
        let mut slot = fnv(name) as u128 % range.size;
        while !taken.insert(slot) {
            slot = (slot + 1) % range.size;
        }
        out.insert(name.clone(), range.address(slot));
    }
    out
}

fn fnv(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        hash = (hash ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn labels() {
        assert_eq!(
            parse_label("/web:80"),
            Ok((VipTarget::Named("web".into()), 80))
        );
        assert_eq!(
            parse_label("Shop/API:8080"),
            Ok((VipTarget::Named("shop/api".into()), 8080))
        );
        assert_eq!(
            parse_label("10.1.2.3:53"),
            Ok((VipTarget::Ip("10.1.2.3".parse().unwrap()), 53))
        );
        assert_eq!(
            parse_label("[fd00::1]:53"),
            Ok((VipTarget::Ip("fd00::1".parse().unwrap()), 53))
        );
        assert!(parse_label("web").is_err());
        assert!(parse_label("web:0").is_err());
        assert!(parse_label("we b:80").is_err());
        assert_eq!(dns_label("shop/api"), "shop-api");
    }

    #[test]
    fn ranges() {
        let r = VipRange::parse("11.0.0.0/8").unwrap();
        assert!(
            r.contains("11.0.0.1".parse().unwrap()) && !r.contains("11.0.0.0".parse().unwrap())
        );
        assert!(VipRange::parse("11.0.0.0/31").is_err());
        assert!(VipRange::parse("11.0.0.0").is_err());
    }

    proptest! {
        /// The same names give the same addresses, whatever order they were learned in.
        #[test]
        fn order_does_not_matter(mut names in proptest::collection::vec("[a-z]{1,8}", 1..40)) {
            let range = VipRange::parse("11.0.0.0/24").unwrap();
            let a = allocate(&names.iter().cloned().collect(), &range);
            names.reverse();
            let b = allocate(&names.iter().cloned().collect(), &range);
            prop_assert_eq!(&a, &b);
            let distinct: HashSet<_> = a.values().collect();
            prop_assert_eq!(distinct.len(), a.len());
            prop_assert!(a.values().all(|ip| range.contains(*ip)));
        }

        /// Adding a name moves no other name's address unless it collided with the newcomer.
        #[test]
        fn adding_a_vip_moves_no_other(names in proptest::collection::btree_set("[a-z]{1,8}", 1..30), new in "[a-z]{9,12}") {
            let range = VipRange::parse("11.0.0.0/8").unwrap();
            let before = allocate(&names, &range);
            let mut more = names.clone();
            more.insert(new.clone());
            let after = allocate(&more, &range);
            let newcomer = after[&new];
            for (name, ip) in &before {
                // In a range of 16 million slots with no collision, nothing moves.
                if *ip != newcomer {
                    prop_assert_eq!(after[name], *ip, "{} moved", name);
                }
            }
        }
    }
}
