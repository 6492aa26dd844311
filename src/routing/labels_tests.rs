//! Unit tests of reading labels (`labels::read`) and of the label names (`known_labels`).

use super::*;
use crate::routing::known_labels::app_notices;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults() {
    let given = labels(&[]);
    let l = read(&given, 0).unwrap();
    assert_eq!(l.groups, None);
    assert_eq!(l.mode, None);
    assert_eq!(mode(&l, &[], 0), Mode::Tcp);
    assert_eq!(l.balance, Balance::RoundRobin);
    assert!(l.notices.is_empty());
}

#[test]
fn per_port_overrides_app_wide() {
    let l = labels(&[
        ("HAPROXY_GROUP", "external,internal"),
        ("HAPROXY_1_GROUP", "internal"),
        ("HAPROXY_1_MODE", "HTTP"),
        ("HAPROXY_1_PORT", "8080"),
        ("HAPROXY_1_BIND_ADDR", "127.0.0.2"),
        ("HAPROXY_1_BALANCE", "leastconn"),
    ]);
    let p0 = read(&l, 0).unwrap();
    fn groups_of<'a>(l: &PortLabels<'a>) -> Option<Vec<&'a str>> {
        l.groups.map(|g| groups(g).collect())
    }
    assert_eq!(groups_of(&p0), Some(vec!["external", "internal"]));
    let p1 = read(&l, 1).unwrap();
    assert_eq!(groups_of(&p1), Some(vec!["internal"]));
    assert_eq!(p1.mode, Some(Mode::Http));
    assert_eq!(p1.port, Some(8080));
    assert_eq!(p1.bind_addr, Some("127.0.0.2".parse().unwrap()));
    assert_eq!(p1.balance, Balance::LeastConn);
}

#[test]
fn unparseable_values_are_errors_naming_the_label() {
    for (k, v) in [
        ("HAPROXY_0_MODE", "udp"),
        ("HAPROXY_0_PORT", "70000"),
        ("HAPROXY_0_BIND_ADDR", "localhost"),
        ("HAPROXY_0_ENABLED", "maybe"),
        ("HAPROXY_0_STICKY", "sometimes"),
    ] {
        let err = read(&labels(&[(k, v)]), 0).unwrap_err();
        assert!(err.contains(k), "{err}");
    }
}

#[test]
fn templates_and_later_labels_are_noticed() {
    let l = labels(&[
        ("HAPROXY_0_BACKEND_HEAD", "x"),
        ("HAPROXY_0_SSL_CERT", "/etc/ssl/a.pem,/etc/ssl/b.pem"),
        ("HAPROXY_0_BALANCE", "uri"),
    ]);
    let p = read(&l, 0).unwrap();
    assert_eq!(p.notices.len(), 2, "{:?}", p.notices);
    assert_eq!(p.ssl_certs, vec!["/etc/ssl/a.pem", "/etc/ssl/b.pem"]);
    for unsupported in ["hdr(host)", "fastest", "rdp-cookie"] {
        let given = labels(&[("HAPROXY_0_BALANCE", unsupported)]);
        let p = read(&given, 0).unwrap();
        assert_eq!(p.balance, Balance::RoundRobin);
        assert!(
            p.notices[0].contains("HAPROXY_0_BALANCE"),
            "{:?}",
            p.notices
        );
    }
}

#[test]
fn unknown_switchyard_labels_are_reported_and_restricting_ones_close_the_port() {
    // A misspelt label that changes nothing about access: noticed, the port served.
    let given = labels(&[("SWITCHYARD_0_WIEGHT", "10")]);
    let p = read(&given, 0).unwrap();
    assert!(
        p.notices
            .iter()
            .any(|n| n.contains("SWITCHYARD_0_WIEGHT") && n.contains("misspelt")),
        "{:?}",
        p.notices
    );
    // Every label some reader reads is known: no notice.
    for known in [
        "WEIGHT",
        "ROLLOUT",
        "RATE_LIMIT",
        "CLIENT_CA",
        "BACKEND_TLS_KEY",
        "REQUEST_HEADER_SET_X_A",
    ] {
        let key = format!("SWITCHYARD_0_{known}");
        assert!(is_switchyard_port_label(known), "{key}");
        if let Ok(p) = read(&labels(&[(key.as_str(), "1")]), 0) {
            assert!(
                p.notices
                    .iter()
                    .all(|n| !n.contains("not a label switchyard knows")),
                "{:?}",
                p.notices
            );
        }
    }
    // A misspelt access rule, on the port or for the whole app: the port is not served.
    for key in [
        "SWITCHYARD_0_CLIENT_CERT_CA",
        "SWITCHYARD_0_ALLOW_CIDR",
        "SWITCHYARD_AUTH",
    ] {
        let err = read(&labels(&[(key, "x")]), 0).unwrap_err();
        assert!(err.contains(key) && err.contains("not served"), "{err}");
    }
    // Another port's labels are that port's business.
    let l = labels(&[("SWITCHYARD_1_ALLOW_CIDR", "10.0.0.0/8")]);
    assert!(read(&l, 0).is_ok());
    assert!(read(&l, 1).is_err());
    // App-wide: a label for a port the app lacks, an unknown one; known ones are quiet.
    let l = labels(&[
        ("SWITCHYARD_3_WEIGHT", "1"),
        ("SWITCHYARD_COLOR", "blue"),
        ("SWITCHYARD_DNS_HEALTHY_ONLY", "true"),
        ("SWITCHYARD_0_WEIGHT", "1"),
    ]);
    let notices = app_notices(&l, 1);
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert!(notices[0].contains("SWITCHYARD_3_WEIGHT") && notices[0].contains("no port 3"));
    assert!(notices[1].contains("SWITCHYARD_COLOR"));
}

#[test]
fn tcp_idle_timeout_label_and_a_bad_one_noticed_with_the_default() {
    let given = labels(&[("SWITCHYARD_0_TCP_IDLE_TIMEOUT", "1m30s")]);
    let p = read(&given, 0).unwrap();
    assert_eq!(p.tcp_idle_timeout, Some(std::time::Duration::from_secs(90)));
    assert!(p.notices.is_empty(), "{:?}", p.notices);
    assert_eq!(read(&labels(&[]), 0).unwrap().tcp_idle_timeout, None);
    for bad in ["30", "0s", "soon", "-5s", ""] {
        let given = labels(&[("SWITCHYARD_0_TCP_IDLE_TIMEOUT", bad)]);
        let p = read(&given, 0).unwrap();
        assert_eq!(p.tcp_idle_timeout, None, "{bad:?}");
        assert!(
            p.notices.len() == 1 && p.notices[0].contains("SWITCHYARD_0_TCP_IDLE_TIMEOUT"),
            "{bad:?}: {:?}",
            p.notices
        );
    }
}

#[test]
fn deployment_and_canary_labels() {
    let l = labels(&[
        ("HAPROXY_DEPLOYMENT_GROUP", "shop"),
        ("HAPROXY_DEPLOYMENT_COLOUR", "green"),
        ("HAPROXY_DEPLOYMENT_ALT_PORT", "10101"),
        ("HAPROXY_DEPLOYMENT_TARGET_INSTANCES", "3"),
        ("SWITCHYARD_0_WEIGHT", "10"),
        ("SWITCHYARD_0_CANARY_HEADER", "X-Canary: on"),
    ]);
    let p = read(&l, 0).unwrap();
    assert_eq!(p.deployment.group.as_deref(), Some("shop"));
    assert_eq!(p.deployment.alt_port, Some(10101));
    assert_eq!(p.deployment.target_instances, Some(3));
    assert_eq!(p.weight, Some(10));
    assert_eq!(p.canary_header, Some(("x-canary".into(), "on".into())));
    assert_eq!(read(&l, 1).unwrap().weight, None, "weights are per port");
    for (k, v) in [
        ("SWITCHYARD_0_WEIGHT", "-1"),
        ("SWITCHYARD_0_CANARY_HEADER", "nocolon"),
        ("HAPROXY_DEPLOYMENT_ALT_PORT", "0"),
    ] {
        assert!(read(&labels(&[(k, v)]), 0).unwrap_err().contains(k));
    }
}

#[test]
fn vhost_labels() {
    let l = labels(&[
        (
            "HAPROXY_0_VHOST",
            "Shop.Example.com:8080, *.apps.example.com,api.example.com.",
        ),
        ("HAPROXY_0_PATH", "/api v2"),
        ("HAPROXY_0_REDIRECT_TO_HTTPS", "true"),
        ("HAPROXY_0_USE_HSTS", "true"),
        ("HAPROXY_0_STICKY", "true"),
        (
            "HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL",
            "10.0.0.0/8 192.168.1.1",
        ),
    ]);
    let p = read(&l, 0).unwrap();
    assert_eq!(
        p.vhosts,
        vec!["shop.example.com", "*.apps.example.com", "api.example.com"]
    );
    assert_eq!(p.paths, vec!["/api", "/v2"]);
    assert!(p.redirect_to_https && p.hsts && p.sticky);
    assert_eq!(p.acl.len(), 2);
    let bad = labels(&[("HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL", "10.0.0.0/99")]);
    assert!(read(&bad, 0).unwrap_err().contains("ACL"));
    let bad = labels(&[("HAPROXY_0_VHOST", "a b")]);
    assert!(read(&bad, 0).unwrap_err().contains("VHOST"));
}

/// The port's labels as they were gathered before the one walk (`PortKeys::of`): a B-tree range
/// search per prefix, a lookup per app-wide name.
fn by_range<'a>(labels: &'a BTreeMap<String, String>, prefix: &str) -> Vec<(&'a str, &'a str)> {
    use std::ops::Bound;
    labels
        .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (&k[prefix.len()..], v.as_str()))
        .collect()
}

/// Label maps with keys near the prefixes the walk tells apart: `HAPROXY_1_X` and
/// `HAPROXY_10_X`, `HAPROXY_01_X`, `HAPROXY_0_` alone, app-wide names and their look-alikes,
/// non-ASCII text, empty values.
fn label_maps() -> impl proptest::strategy::Strategy<Value = BTreeMap<String, String>> {
    use proptest::prelude::*;
    let prefix = prop_oneof![
        Just("HAPROXY_0_"),
        Just("HAPROXY_1_"),
        Just("HAPROXY_10_"),
        Just("HAPROXY_01_"),
        Just("HAPROXY_"),
        Just("HAPROXY_GROUP"),
        Just("HAPROXY_DEPLOYMENT_"),
        Just("SWITCHYARD_0_"),
        Just("SWITCHYARD_1_"),
        Just("SWITCHYARD_"),
        Just("SWITCHYARD"),
        Just("haproxy_0_"),
        Just(""),
    ];
    let rest = prop_oneof![
        Just(String::new()),
        Just("GROUP".to_string()),
        Just("MODE".to_string()),
        Just("COLOUR".to_string()),
        Just("WEIGHT".to_string()),
        Just("AUTH".to_string()),
        "[A-Z0-9_éß]{0,6}",
    ];
    let key = (prefix, rest).prop_map(|(p, r)| format!("{p}{r}"));
    proptest::collection::btree_map(key, "[ -~ü]{0,5}", 0..12)
}

proptest::proptest! {
    #[test]
    fn one_walk_gathers_what_the_range_searches_did(labels in label_maps(), n in 0usize..12) {
        use crate::routing::known_labels::{APP_WIDE, PortKeys, keys_with_prefix};
        let keys = PortKeys::of(&labels, n);
        proptest::prop_assert_eq!(&keys.haproxy(), &by_range(&labels, &format!("HAPROXY_{n}_")));
        proptest::prop_assert_eq!(&keys.own, &by_range(&labels, &format!("SWITCHYARD_{n}_")));
        for name in APP_WIDE {
            proptest::prop_assert_eq!(keys.app_wide(name), labels.get(*name).map(String::as_str));
        }
        proptest::prop_assert_eq!(keys.any_switchyard, !by_range(&labels, "SWITCHYARD_").is_empty());
        for prefix in ["HAPROXY_", "SWITCHYARD_"] {
            let walked: Vec<_> = keys_with_prefix(&labels, prefix).map(|(_, rest)| rest).collect();
            let ranged: Vec<_> = by_range(&labels, prefix).into_iter().map(|(rest, _)| rest).collect();
            proptest::prop_assert_eq!(walked, ranged);
        }
    }
}
