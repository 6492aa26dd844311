//! `POST /v1/plan` and `switchyard plan`: what a change of app definitions would do to the
//! table, before it is deployed. The live cluster plus the given apps (an app with an existing
//! id replaces it) is compiled with the pure `routing::compile`, beside the live cluster
//! compiled the same way, and the two are compared ([`diff`], pure): services, service ports
//! and VIP addresses, routes and weights, vhosts, DNS names, problems. A change that would
//! break something — a service no longer served, a port out of service, backends lost, a new
//! conflict or refused label, an app definition that does not parse — is listed in `breaking`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::cluster::{App, Cluster};
use crate::routing::{CompileConfig, RoutingTable, Severity, compile, digest};
use crate::zone::ZoneConfig;

/// One side of the comparison: a table and the DNS names served beside it.
pub struct Side<'a> {
    pub table: &'a RoutingTable,
    pub dns: BTreeSet<String>,
}

/// One difference. `kind`: `service`, `vip`, `listen`, `mode`, `balance`, `backends`,
/// `vhosts`, `http`, `route`, `member`, `weight`, `vhost`, `dns`, `problem`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub kind: &'static str,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Plan {
    pub table_hash_before: String,
    pub table_hash_after: String,
    /// The apps given, by id, and whether each replaces a live one.
    pub apps: Vec<PlannedApp>,
    pub changes: Vec<Change>,
    /// App definitions that did not parse: `(app id, reason)`; each is also breaking.
    pub rejected: Vec<(String, String)>,
    /// Why the change would break something; empty: nothing would.
    pub breaking: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct PlannedApp {
    pub id: String,
    pub replaces: bool,
    /// The definition had no tasks: the live app's tasks were kept.
    pub kept_tasks: bool,
}

fn change(kind: &'static str, change: &'static str, name: String) -> Change {
    Change {
        kind,
        change,
        name,
        before: None,
        after: None,
    }
}

fn changed(kind: &'static str, name: String, before: String, after: String) -> Change {
    Change {
        kind,
        change: "changed",
        name,
        before: Some(before),
        after: Some(after),
    }
}

/// What is compared of one service, field by field.
fn service_fields(table: &RoutingTable, s: usize) -> Vec<(&'static str, String)> {
    let s = &table.services[s];
    let h = &s.http;
    vec![
        (
            "listen",
            s.listen
                .map_or("none (vhost only)".into(), |a| a.to_string()),
        ),
        ("mode", format!("{:?}", s.mode).to_lowercase()),
        ("balance", format!("{:?}", s.balancer.kind())),
        ("backends", s.backends.len().to_string()),
        ("vhosts", s.vhosts.join(" ")),
        (
            "http",
            format!(
                "redirect_to_https={} hsts={} sticky={} acl={} auth={} h2={}",
                h.redirect_to_https,
                h.hsts,
                h.sticky,
                h.acl.len(),
                h.auth.is_some(),
                s.upstream_h2
            ),
        ),
    ]
}

fn is_vip(table: &RoutingTable, s: usize) -> bool {
    table.services[s].key.app_id.starts_with("vip:")
}

/// Host and path → route name.
fn vhost_map(table: &RoutingTable) -> BTreeMap<String, String> {
    table
        .vhosts
        .entries()
        .map(|(h, p, r)| (format!("{h}{p}"), table.routes[r].name.clone()))
        .collect()
}

/// The differences from `before` to `after`, and what in them would break something.
pub fn diff(before: &Side, after: &Side) -> (Vec<Change>, Vec<String>) {
    let (b, a) = (before.table, after.table);
    let mut out = Vec::new();
    let mut breaking = Vec::new();
    let index = |t: &RoutingTable| -> BTreeMap<String, usize> {
        t.services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.key.to_string(), i))
            .collect()
    };
    let (bs, as_) = (index(b), index(a));
    for (key, &i) in &bs {
        let kind = if is_vip(b, i) { "vip" } else { "service" };
        match as_.get(key) {
            None => {
                let mut c = change(kind, "removed", key.clone());
                c.before = b.services[i].listen.map(|l| l.to_string());
                out.push(c);
                breaking.push(format!("{key} would no longer be served"));
            }
            Some(&j) => {
                let fields = service_fields(b, i).into_iter().zip(service_fields(a, j));
                for ((field, was), (_, now)) in fields {
                    if was == now {
                        continue;
                    }
                    let field = if kind == "vip" && field == "listen" {
                        "vip"
                    } else {
                        field
                    };
                    if field == "listen" || field == "vip" {
                        breaking.push(format!("{key}: {was} would go out of service (now {now})"));
                    }
                    if field == "backends" && now == "0" {
                        breaking.push(format!("{key} would be left without a backend"));
                    }
                    out.push(changed(field, key.clone(), was, now));
                }
            }
        }
    }
    for (key, &j) in &as_ {
        if !bs.contains_key(key) {
            let kind = if is_vip(a, j) { "vip" } else { "service" };
            let mut c = change(kind, "added", key.clone());
            c.after = a.services[j].listen.map(|l| l.to_string());
            out.push(c);
        }
    }
    // Routes: their apps and weights.
    let (br, ar) = (b.route_weights(), a.route_weights());
    for (name, members) in &br {
        let Some(now) = ar.get(name) else {
            out.push(change("route", "removed", name.clone()));
            continue;
        };
        for (app, w) in members {
            match now.get(app) {
                None => {
                    out.push(change("member", "removed", format!("{name} {app}")));
                }
                Some(n) if n != w => out.push(changed(
                    "weight",
                    format!("{name} {app}"),
                    w.to_string(),
                    n.to_string(),
                )),
                Some(_) => {}
            }
        }
        for (app, w) in now {
            if !members.contains_key(app) {
                let mut c = change("member", "added", format!("{name} {app}"));
                c.after = Some(w.to_string());
                out.push(c);
            }
        }
    }
    for name in ar.keys().filter(|n| !br.contains_key(*n)) {
        out.push(change("route", "added", name.clone()));
    }
    // Vhosts.
    let (bv, av) = (vhost_map(b), vhost_map(a));
    for (vhost, route) in &bv {
        match av.get(vhost) {
            None => {
                let mut c = change("vhost", "removed", vhost.clone());
                c.before = Some(route.clone());
                out.push(c);
            }
            Some(r) if r != route => {
                out.push(changed("vhost", vhost.clone(), route.clone(), r.clone()))
            }
            Some(_) => {}
        }
    }
    for (vhost, route) in av.iter().filter(|(v, _)| !bv.contains_key(*v)) {
        let mut c = change("vhost", "added", vhost.clone());
        c.after = Some(route.clone());
        out.push(c);
    }
    // DNS names.
    for name in before.dns.difference(&after.dns) {
        out.push(change("dns", "removed", name.clone()));
    }
    for name in after.dns.difference(&before.dns) {
        out.push(change("dns", "added", name.clone()));
    }
    // Problems: conflicts, labels ignored or refused.
    let problems = |t: &RoutingTable| -> BTreeSet<(Severity, String)> {
        t.problems
            .iter()
            .map(|p| (p.severity, p.to_string()))
            .collect()
    };
    let (bp, ap) = (problems(b), problems(a));
    for (severity, p) in bp.difference(&ap) {
        let mut c = change("problem", "removed", p.clone());
        c.before = Some(format!("{severity:?}").to_lowercase());
        out.push(c);
    }
    for (severity, p) in ap.difference(&bp) {
        let mut c = change("problem", "added", p.clone());
        c.after = Some(format!("{severity:?}").to_lowercase());
        out.push(c);
        if *severity == Severity::Skipped {
            breaking.push(format!("new problem: {p}"));
        }
    }
    (out, breaking)
}

/// The live cluster with `apps` put in: an app with an existing id replaces it, keeping the
/// live app's tasks when the definition has none (a definition to deploy carries none).
pub fn apply(cluster: &Cluster, apps: Vec<App>) -> (Cluster, Vec<PlannedApp>) {
    let mut next = cluster.clone();
    let mut planned = Vec::new();
    for mut app in apps {
        let live = cluster.apps.get(&app.id);
        let kept_tasks = app.tasks.is_empty() && live.is_some_and(|l| !l.tasks.is_empty());
        if kept_tasks {
            app.tasks = live.expect("checked").tasks.clone();
        }
        planned.push(PlannedApp {
            id: app.id.to_string(),
            replaces: live.is_some(),
            kept_tasks,
        });
        next.apps.insert(app.id.clone(), std::sync::Arc::new(app));
    }
    (next, planned)
}

fn dns_names(cluster: &Cluster, zone: Option<&ZoneConfig>) -> BTreeSet<String> {
    zone.map(|config| {
        crate::zone::build(cluster, config)
            .names
            .keys()
            .map(|n| n.to_string())
            .collect()
    })
    .unwrap_or_default()
}

/// The whole dry run: `body` is a Marathon apps document (`{"apps": […]}` or an array).
pub fn plan(
    cluster: &Cluster,
    config: &CompileConfig,
    zone: Option<&ZoneConfig>,
    body: &[u8],
) -> Result<Plan, String> {
    let parsed = crate::discovery::marathon::api::parse_apps(body)?;
    let (next, apps) = apply(cluster, parsed.apps);
    let before = compile(cluster, config);
    let after = compile(&next, config);
    let (changes, mut breaking) = diff(
        &Side {
            table: &before,
            dns: dns_names(cluster, zone),
        },
        &Side {
            table: &after,
            dns: dns_names(&next, zone),
        },
    );
    for (id, reason) in &parsed.rejected {
        breaking.push(format!("{id}: the definition is refused: {reason}"));
    }
    Ok(Plan {
        table_hash_before: digest::hex(before.hash()),
        table_hash_after: digest::hex(after.hash()),
        apps,
        changes,
        rejected: parsed.rejected,
        breaking,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::{app, task};

    fn cluster(apps: Vec<App>) -> Cluster {
        let mut c = Cluster::default();
        for a in apps {
            c.apps.insert(a.id.clone(), std::sync::Arc::new(a));
        }
        c
    }

    fn config() -> CompileConfig {
        CompileConfig::group("*", "127.0.0.1".parse().unwrap())
    }

    /// The plan's changes as `kind change name [before -> after]` lines, and its breaking list.
    fn run(live: Vec<App>, given: Vec<App>) -> (Vec<String>, Vec<String>) {
        let live = cluster(live);
        let (next, _) = apply(&live, given);
        let (b, a) = (compile(&live, &config()), compile(&next, &config()));
        let side = |t| Side {
            table: t,
            dns: BTreeSet::new(),
        };
        let (changes, breaking) = diff(&side(&b), &side(&a));
        let lines = changes
            .iter()
            .map(|c| {
                let mut l = format!("{} {} {}", c.kind, c.change, c.name);
                if let (Some(x), Some(y)) = (&c.before, &c.after) {
                    l += &format!(" {x} -> {y}");
                }
                l
            })
            .collect();
        (lines, breaking)
    }

    fn web(labels: &[(&str, &str)]) -> App {
        app("/web", 10001, labels, vec![task("web.1", 31001)])
    }

    #[test]
    fn the_same_definition_changes_nothing() {
        let (changes, breaking) = run(vec![web(&[])], vec![web(&[])]);
        assert!(changes.is_empty(), "{changes:?}");
        assert!(breaking.is_empty());
    }

    #[test]
    fn a_new_app_adds_its_service_and_route() {
        let api = app("/api", 10002, &[], vec![task("api.1", 31002)]);
        let (changes, breaking) = run(vec![web(&[])], vec![api]);
        assert_eq!(
            changes,
            vec!["service added /api:0", "route added /api:0"],
            "{changes:?}"
        );
        assert!(breaking.is_empty());
    }

    #[test]
    fn a_definition_without_tasks_keeps_the_live_tasks() {
        let bare = app("/web", 10001, &[("HAPROXY_0_BALANCE", "leastconn")], vec![]);
        let (changes, breaking) = run(vec![web(&[])], vec![bare]);
        assert_eq!(
            changes,
            vec!["balance changed /web:0 RoundRobin -> LeastConn"]
        );
        assert!(breaking.is_empty(), "{breaking:?}");
    }

    #[test]
    fn a_new_vhost_is_listed() {
        let (changes, breaking) = run(
            vec![web(&[])],
            vec![web(&[("HAPROXY_0_VHOST", "web.example.com")])],
        );
        assert!(
            changes.contains(&"vhosts changed /web:0  -> web.example.com/".to_string())
                || changes
                    .iter()
                    .any(|c| c.starts_with("vhosts changed /web:0")),
            "{changes:?}"
        );
        assert!(
            changes
                .iter()
                .any(|c| c.starts_with("vhost added web.example.com")),
            "{changes:?}"
        );
        assert!(breaking.is_empty());
    }

    #[test]
    fn taking_a_held_port_is_a_conflict_and_breaks() {
        // /api asks for /web's service port. Apps are visited in id order, so /api takes it
        // and /web is refused: the live app would lose its port, and the plan says so.
        let api = app("/api", 10001, &[], vec![task("api.1", 31002)]);
        let (changes, breaking) = run(vec![web(&[])], vec![api]);
        assert_eq!(
            changes,
            vec![
                "service removed /web:0",
                "service added /api:0",
                "route removed /web:0",
                "route added /api:0",
                "problem added /web port 0: service port 10001 is already taken by /api:0",
            ]
        );
        assert_eq!(
            breaking,
            vec![
                "/web:0 would no longer be served",
                "new problem: /web port 0: service port 10001 is already taken by /api:0",
            ]
        );
    }

    #[test]
    fn moving_the_service_port_puts_the_old_one_out_of_service() {
        let moved = app("/web", 10009, &[], vec![task("web.1", 31001)]);
        let (changes, breaking) = run(vec![web(&[])], vec![moved]);
        assert!(
            changes.contains(&"listen changed /web:0 127.0.0.1:10001 -> 127.0.0.1:10009".into()),
            "{changes:?}"
        );
        assert_eq!(breaking.len(), 1, "{breaking:?}");
        assert!(breaking[0].contains("out of service"));
    }

    #[test]
    fn leaving_the_served_group_leaves_the_app_unserved() {
        let mut config = config();
        config.group = vec!["external".into()];
        let live = cluster(vec![web(&[("HAPROXY_GROUP", "external")])]);
        let (next, _) = apply(&live, vec![web(&[("HAPROXY_GROUP", "internal")])]);
        let (b, a) = (compile(&live, &config), compile(&next, &config));
        let side = |t| Side {
            table: t,
            dns: BTreeSet::new(),
        };
        let (changes, breaking) = diff(&side(&b), &side(&a));
        assert!(changes.contains(&Change {
            kind: "service",
            change: "removed",
            name: "/web:0".into(),
            before: Some("127.0.0.1:10001".into()),
            after: None,
        }));
        assert_eq!(breaking, vec!["/web:0 would no longer be served"]);
    }

    #[test]
    fn a_weight_label_changes_the_split() {
        let group = ("HAPROXY_DEPLOYMENT_GROUP", "shop");
        let blue = app(
            "/shop-blue",
            10005,
            &[group, ("HAPROXY_DEPLOYMENT_ALT_PORT", "10006")],
            vec![task("b.1", 31005)],
        );
        let green = |w: &'static str| {
            app(
                "/shop-green",
                10005,
                &[
                    group,
                    ("HAPROXY_DEPLOYMENT_ALT_PORT", "10006"),
                    ("SWITCHYARD_0_WEIGHT", w),
                ],
                vec![task("g.1", 31006)],
            )
        };
        let live = vec![blue.clone(), green("10")];
        let (changes, _) = run(live, vec![green("50")]);
        assert!(
            changes.iter().any(|c| c.starts_with("weight changed")
                && c.contains("/shop-green")
                && c.ends_with("10 -> 50")),
            "{changes:?}"
        );
    }

    #[test]
    fn a_definition_that_does_not_parse_is_breaking() {
        let plan = plan(
            &cluster(vec![web(&[])]),
            &config(),
            None,
            br#"{"apps": [{"id": "relative"}]}"#,
        )
        .unwrap();
        assert_eq!(plan.rejected.len(), 1);
        assert_eq!(plan.breaking.len(), 1, "{:?}", plan.breaking);
        assert_eq!(plan.table_hash_before, plan.table_hash_after);
    }
}
