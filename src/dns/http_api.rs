//! Mesos-DNS's HTTP API, in its JSON shapes, from the published zone: `/v1/version`,
//! `/v1/config`, `/v1/hosts/{host}`, `/v1/services/{service}`, `/v1/enumerate`. The admin
//! listener routes these paths here.

use hickory_proto::rr::{LowerName, Name, RData, Record};
use serde_json::{Value, json};

use crate::zone::{IpSource, Zone};

/// The paths served here: exact ones, then prefixes.
pub const EXACT: [&str; 3] = ["/v1/version", "/v1/config", "/v1/enumerate"];
pub const PREFIXES: [&str; 2] = ["/v1/hosts/", "/v1/services/"];

/// Whether `path` is one of Mesos-DNS's.
pub fn serves(path: &str) -> bool {
    EXACT.contains(&path) || PREFIXES.iter().any(|p| path.starts_with(p))
}

/// The answer to `path` (one of [`serves`]'s): `Err` when DNS is off (no zone). Health checks
/// poll `/v1/version`, which answers either way.
pub fn respond(zone: Option<&Zone>, path: &str) -> Result<Value, &'static str> {
    if path == "/v1/version" {
        return Ok(version());
    }
    let zone = zone.ok_or("DNS is off (set dns.listen)")?;
    Ok(match path {
        "/v1/config" => config(zone),
        "/v1/enumerate" => enumerate(zone),
        _ => match path.strip_prefix("/v1/hosts/") {
            Some(host) => hosts(zone, host),
            None => services(zone, path.strip_prefix("/v1/services/").unwrap_or("")),
        },
    })
}

/// `{"Service", "URL", "Version"}`.
pub fn version() -> Value {
    json!({
        "Service": "switchyard",
        "URL": option_env!("CARGO_PKG_REPOSITORY").filter(|u| !u.is_empty()).unwrap_or("https://github.com/mesosphere/mesos-dns"),
        "Version": env!("CARGO_PKG_VERSION"),
    })
}

/// Mesos-DNS's configuration keys, with switchyard's values where it has one: no masters or
/// ZooKeeper (names come from Marathon's event stream, so `RefreshSeconds` is 0), `Resolvers`
/// the upstreams (`ip`, or `ip:port` when not 53), `Timeout` their timeout in seconds.
pub fn config(zone: &Zone) -> Value {
    let c = &zone.config;
    let resolvers: Vec<String> = c
        .served
        .upstreams
        .iter()
        .map(|u| {
            if u.port() == 53 {
                u.ip().to_string()
            } else {
                u.to_string()
            }
        })
        .collect();
    let ip_sources: Vec<&str> = c
        .ip_sources
        .iter()
        .map(|s| match s {
            IpSource::Auto => "auto",
            IpSource::NetInfo => "netinfo",
            IpSource::Host => "host",
        })
        .collect();
    let listen = c.served.listen;
    json!({
        "Masters": null,
        "Zk": "",
        "RefreshSeconds": 0,
        "TTL": c.ttl,
        "Port": listen.map_or(0, |l| l.port()),
        "Domain": c.domain,
        "Resolvers": resolvers,
        "ZoneResolvers": c.served.zone_resolvers,
        "Timeout": c.served.upstream_timeout.as_secs(),
        "Email": format!("root.ns1.{}.", c.domain),
        "Mname": format!("ns1.{}.", c.domain),
        "SOAMname": format!("ns1.{}.", c.domain),
        "SOARname": format!("root.ns1.{}.", c.domain),
        "Listener": listen.map_or_else(String::new, |l| l.ip().to_string()),
        "DnsOn": listen.is_some(),
        "HttpOn": true,
        "ExternalOn": !resolvers.is_empty(),
        "IPSources": ip_sources,
        "EnforceRFC952": c.label_rule == crate::cluster::names::LabelRule::Rfc952,
    })
}

fn lookup(name: &str) -> Option<LowerName> {
    let fqdn = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    Name::from_ascii(fqdn).ok().map(|n| LowerName::new(&n))
}

fn ip(record: &Record) -> Option<String> {
    match &record.data {
        RData::A(a) => Some(a.0.to_string()),
        RData::AAAA(a) => Some(a.0.to_string()),
        _ => None,
    }
}

/// `[{"host": "...", "ip": "..."}]`; Mesos-DNS answers one empty entry for an unknown name.
pub fn hosts(zone: &Zone, host: &str) -> Value {
    let name = lookup(host);
    let node = name.as_ref().and_then(|n| zone.names.get(n));
    let fqdn = name.map(|n| n.to_string()).unwrap_or_default();
    let entries: Vec<Value> = node
        .into_iter()
        .flat_map(|n| n.a.into_iter().chain(n.aaaa))
        .filter_map(|r| Some(json!({"host": fqdn, "ip": ip(&r)?})))
        .collect();
    if entries.is_empty() {
        json!([{"host": "", "ip": ""}])
    } else {
        Value::Array(entries)
    }
}

/// `[{"service": "...", "host": "...", "ip": "...", "port": "..."}]`.
pub fn services(zone: &Zone, service: &str) -> Value {
    let name = lookup(service);
    let node = name.as_ref().and_then(|n| zone.names.get(n));
    let fqdn = name.map(|n| n.to_string()).unwrap_or_default();
    let mut entries = Vec::new();
    for record in node.into_iter().flat_map(|n| n.srv) {
        let RData::SRV(srv) = &record.data else {
            continue;
        };
        let target = zone.names.get(&LowerName::new(&srv.target));
        for addr in target
            .into_iter()
            .flat_map(|t| t.a.into_iter().chain(t.aaaa))
        {
            entries.push(json!({
                "service": fqdn,
                "host": srv.target.to_ascii(),
                "ip": ip(&addr),
                "port": srv.port.to_string(),
            }));
        }
    }
    if entries.is_empty() {
        json!([{"service": "", "host": "", "ip": "", "port": ""}])
    } else {
        Value::Array(entries)
    }
}

/// `{"frameworks": [{"name": "marathon", "tasks": [{"name", "id", "records": [{"name",
/// "host", "rtype"}]}]}]}`: every running task with its A/AAAA names (the app's, its own, the
/// agent's) and the SRV records that target it (`host` is `target:port`).
pub fn enumerate(zone: &Zone) -> Value {
    let domain = &zone.config.domain;
    let rtype = |r: &Record| {
        if matches!(r.data, RData::AAAA(_)) {
            "AAAA"
        } else {
            "A"
        }
    };
    let mut tasks = Vec::new();
    for app in &zone.listed {
        let app_name = format!("{}.marathon.{domain}.", app.label);
        let slave_name = format!("{}.marathon.slave.{domain}.", app.label);
        for task in &app.tasks {
            let mut records = Vec::new();
            let target_name = zone.names.table().name(task.target);
            let own = zone.names.get(&LowerName::new(&target_name));
            let target = target_name.to_ascii();
            for r in own.into_iter().flat_map(|n| n.a.into_iter().chain(n.aaaa)) {
                let Some(host) = ip(&r) else { continue };
                records.push(json!({"name": app_name, "host": host, "rtype": rtype(&r)}));
                records.push(json!({"name": target, "host": host, "rtype": rtype(&r)}));
            }
            if let Some(agent) = task.agent {
                let kind = if agent.is_ipv4() { "A" } else { "AAAA" };
                records.push(json!({"name": slave_name, "host": agent.to_string(), "rtype": kind}));
            }
            for &service in &app.services {
                let service = zone.names.table().name(service);
                let node = zone.names.get(&LowerName::new(&service));
                for r in node.into_iter().flat_map(|n| n.srv) {
                    if let RData::SRV(srv) = &r.data
                        && srv.target == target_name
                    {
                        records.push(json!({
                            "name": service.to_ascii(),
                            "host": format!("{target}:{}", srv.port),
                            "rtype": "SRV",
                        }));
                    }
                }
            }
            tasks.push(json!({"name": app.name, "id": &*task.id, "records": records}));
        }
    }
    json!({"frameworks": [{"name": "marathon", "tasks": tasks}]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enumerate_lists_each_task_with_its_records() {
        let zone = crate::zone::fixtures::api_zone(2, Vec::new());
        let all = enumerate(&zone);
        let tasks = all["frameworks"][0]["tasks"].as_array().unwrap();
        assert_eq!(all["frameworks"][0]["name"], "marathon");
        assert_eq!(tasks.len(), 2);
        let first = &tasks[0];
        assert_eq!(first["name"], "api.prod");
        assert_eq!(first["id"], "api.0");
        let records = first["records"].as_array().unwrap();
        let kinds: Vec<(&str, &str)> = records
            .iter()
            .map(|r| (r["name"].as_str().unwrap(), r["rtype"].as_str().unwrap()))
            .collect();
        assert!(
            kinds.contains(&("api-prod.marathon.mesos.", "A")),
            "{kinds:?}"
        );
        assert!(kinds.contains(&("api-prod.marathon.slave.mesos.", "A")));
        assert!(kinds.contains(&("_api-prod._tcp.marathon.mesos.", "SRV")));
        let srv = records.iter().find(|r| r["rtype"] == "SRV").unwrap();
        assert!(
            srv["host"]
                .as_str()
                .unwrap()
                .ends_with(".marathon.mesos.:31000")
        );
        assert_eq!(
            records.iter().filter(|r| r["rtype"] == "SRV").count(),
            1,
            "only the SRV record that targets this task"
        );
    }

    #[test]
    fn version_answers_without_a_zone_and_the_rest_need_one() {
        assert_eq!(
            respond(None, "/v1/version").unwrap()["Service"],
            "switchyard"
        );
        assert!(respond(None, "/v1/config").is_err());
        let zone = crate::zone::fixtures::api_zone(1, Vec::new());
        let config = respond(Some(&zone), "/v1/config").unwrap();
        assert_eq!(
            (config["Domain"].as_str(), config["TTL"].as_u64()),
            (Some("mesos"), Some(60))
        );
        assert!(serves("/v1/hosts/x") && serves("/v1/enumerate") && !serves("/v1/routes"));
    }
}
