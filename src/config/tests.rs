use super::*;

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
    assert!(parse_duration("5").is_err());
    assert!(parse_duration("5 minutes").is_err());
    assert!(parse_duration("").is_err());
}

#[test]
fn embedded_default_is_valid() {
    let config = Config::embedded();
    let file = config.discovery.file.unwrap();
    assert!(
        file.is_absolute() && file.ends_with("config/apps.json"),
        "the same file as --config config/switchyard.toml: {}",
        file.display()
    );
}

#[test]
fn errors_name_the_key() {
    let base = Path::new(".");
    let err = Config::parse(
        "[discovery]\nfile = \"a.json\"\nresync_interval = \"5x\"",
        base,
    )
    .unwrap_err();
    assert!(err.contains("resync_interval"), "{err}");
    let err = Config::parse("[proxy]\ngroupp = \"x\"\n[discovery]\nfile=\"a\"", base).unwrap_err();
    assert!(err.contains("groupp"), "{err}");
    let err = Config::parse("[discovery]\nmarathon = [\"ftp://x\"]", base).unwrap_err();
    assert!(err.contains("discovery.marathon"), "{err}");
    let err = Config::parse("", base).unwrap_err();
    assert!(err.contains("no source"), "{err}");
    let err = Config::parse(
        "[discovery]\nfile = \"a\"\n[admin]\nloopback_reads_open = false",
        base,
    )
    .unwrap_err();
    assert!(err.contains("admin.loopback_reads_open"), "{err}");
    let err = Config::parse(
        "[discovery]\nfile = \"a\"\n[admin]\nsession_ttl = \"0s\"",
        base,
    )
    .unwrap_err();
    assert!(err.contains("admin.session_ttl"), "{err}");
    for bad in ["0", "65537"] {
        let err = Config::parse(
            &format!("[discovery]\nfile = \"a\"\n[admin]\nmax_connections = {bad}"),
            base,
        )
        .unwrap_err();
        assert!(err.contains("admin.max_connections"), "{err}");
    }
    for key in ["max_subscribers", "subscriber_queue"] {
        // 2^62 once passed and panicked the relay on every stream.
        for bad in ["0", "65537", "4611686018427387904"] {
            let err = Config::parse(
                &format!("[discovery]\nfile = \"a\"\n[relay]\n{key} = {bad}"),
                base,
            )
            .unwrap_err();
            assert!(err.contains(&format!("relay.{key}")), "{err}");
        }
        let top = format!("[discovery]\nfile = \"a\"\n[relay]\n{key} = 65536");
        assert!(Config::parse(&top, base).is_ok());
    }
    let ok = Config::parse(
            "[discovery]\nfile = \"a\"\n[admin]\ntoken_file = \"t\"\nloopback_reads_open = false\nsession_ttl = \"30m\"",
            base,
        )
        .unwrap();
    assert_eq!(ok.admin.session_ttl, Duration::from_secs(1800));
    assert_eq!(ok.admin.max_connections, 256, "the default");
}

#[test]
fn recursion_is_for_local_and_private_clients_by_default() {
    let base = Path::new(".");
    let config = Config::parse("[discovery]\nfile = \"a.json\"", base).unwrap();
    let blocks = config.dns.allow_recursion().unwrap();
    let allowed = |ip: &str| blocks.iter().any(|b| b.contains(ip.parse().unwrap()));
    for ip in [
        "127.0.0.1",
        "::1",
        "10.1.2.3",
        "172.31.0.1",
        "192.168.1.1",
        "fd00::1",
    ] {
        assert!(allowed(ip), "{ip}");
    }
    for ip in ["8.8.8.8", "172.32.0.1", "2001:db8::1"] {
        assert!(!allowed(ip), "{ip}");
    }
    assert_eq!(
        Config::embedded().dns.allow_recursion,
        config.dns.allow_recursion
    );
    let err = Config::parse(
        "[discovery]\nfile = \"a.json\"\n[dns]\nallow_recursion = [\"10.0.0.0/40\"]",
        base,
    )
    .unwrap_err();
    assert!(err.contains("dns.allow_recursion"), "{err}");
}

#[test]
fn rrl_and_zone_resolvers() {
    let base = Path::new(".");
    let parse = |dns: &str| Config::parse(&format!("[discovery]\nfile = \"a.json\"\n{dns}"), base);
    // Off by default.
    let config = parse("[dns]").unwrap();
    assert_eq!(config.dns.rrl.settings().unwrap(), None);
    assert!(!config.dns.ptr);
    let config = parse(
            "[dns]\nptr = true\n[dns.rrl]\nresponses_per_second = 10\nwindow = \"5s\"\nslip = 3\nipv6_prefix = 48",
        )
        .unwrap();
    let rrl = config.dns.rrl.settings().unwrap().unwrap();
    assert_eq!(
        (
            rrl.responses_per_second,
            rrl.window,
            rrl.slip,
            rrl.ipv4_prefix,
            rrl.ipv6_prefix
        ),
        (10, 5, 3, 24, 48)
    );
    assert!(config.dns.ptr);
    for (bad, key) in [
        ("[dns.rrl]\nslip = 11", "dns.rrl.slip"),
        ("[dns.rrl]\nipv4_prefix = 33", "ipv4_prefix"),
        ("[dns.rrl]\nexempt = [\"x\"]", "dns.rrl.exempt"),
        ("[dns.rrl]\ntable_size = 0", "dns.rrl.table_size"),
    ] {
        let err = parse(bad).unwrap_err();
        assert!(err.contains(key), "{bad}: {err}");
    }
    // Longest suffix first; the served zones are refused.
    let config = parse(
            "[dns.zone_resolvers]\n\"example.com\" = [\"127.0.0.1:5301\"]\n\"corp.example.com.\" = [\"127.0.0.1:5302\"]\n\"mesos.example\" = [\"127.0.0.1:5303\"]",
        )
        .unwrap();
    let zones: Vec<String> = config
        .dns
        .zone_resolvers(false)
        .unwrap()
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(zones[0], "corp.example.com.");
    for (bad, why) in [
        ("\"mesos\" = [\"127.0.0.1:53\"]", "served zone"),
        ("\"x.marathon.mesos\" = [\"127.0.0.1:53\"]", "served zone"),
        ("\"example.com\" = []", "no upstreams"),
    ] {
        let err = parse(&format!("[dns.zone_resolvers]\n{bad}")).unwrap_err();
        assert!(
            err.contains("dns.zone_resolvers") && err.contains(why),
            "{bad}: {err}"
        );
    }
    // The reverse zones are served only with ptr; the VIP zone only with VIPs.
    let rev = "[dns.zone_resolvers]\n\"10.in-addr.arpa\" = [\"127.0.0.1:53\"]";
    parse(rev).unwrap();
    let err = parse(&format!("[dns]\nptr = true\n{rev}")).unwrap_err();
    assert!(err.contains("in-addr.arpa"), "{err}");
    let vip = "[dns.zone_resolvers]\n\"l4lb.thisdcos.directory\" = [\"127.0.0.1:53\"]";
    assert!(parse(vip).is_err(), "VIPs are on by default");
    parse(&format!("[vip]\nenabled = false\n{vip}")).unwrap();
}

#[test]
fn an_upstream_that_is_our_own_dns_listener_is_refused() {
    let base = Path::new(".");
    let parse = |listen: &str, upstreams: &str| {
        Config::parse(
            &format!("[discovery]\nfile = \"a.json\"\n[dns]\nlisten = \"{listen}\"\n{upstreams}"),
            base,
        )
    };
    let ours = |listen: &str, upstream: &str| {
        let err = parse(listen, &format!("upstreams = [\"{upstream}\"]"));
        err.is_err_and(|e| e.contains("dns.upstreams") && e.contains("own DNS listener"))
    };
    for (listen, upstream) in [
        ("127.0.0.1:5353", "127.0.0.1:5353"),
        ("0.0.0.0:5353", "127.0.0.1:5353"),
        ("0.0.0.0:5353", "127.0.0.53:5353"),
        ("0.0.0.0:5353", "0.0.0.0:5353"),
        ("127.0.0.1:5353", "0.0.0.0:5353"),
        ("[::]:5353", "127.0.0.1:5353"),
        ("[::]:5353", "[::1]:5353"),
        ("[::]:5353", "[::ffff:127.0.0.1]:5353"),
        ("[::1]:5353", "[::1]:5353"),
    ] {
        assert!(ours(listen, upstream), "{listen} <- {upstream}");
    }
    for (listen, upstream) in [
        ("127.0.0.1:5353", "127.0.0.1:53"),
        ("127.0.0.1:5353", "127.0.0.2:5353"),
        ("0.0.0.0:5353", "[::1]:5353"),
        ("0.0.0.0:5353", "192.0.2.1:5353"),
    ] {
        parse(listen, &format!("upstreams = [\"{upstream}\"]"))
            .unwrap_or_else(|e| panic!("{listen} <- {upstream}: {e}"));
    }
    let err = parse(
        "0.0.0.0:5353",
        "[dns.zone_resolvers]\n\"example.com\" = [\"192.0.2.1:53\", \"127.0.0.1:5353\"]",
    )
    .unwrap_err();
    assert!(err.contains("dns.zone_resolvers"), "{err}");
}

#[test]
fn dns_tcp_and_relay_limits_are_checked() {
    let base = Path::new(".");
    let parse = |dns: &str| {
        Config::parse(
            &format!("[discovery]\nfile = \"a.json\"\n[dns]\n{dns}"),
            base,
        )
    };
    let config = parse("").unwrap();
    assert_eq!(config.dns.tcp_idle_timeout, Duration::from_secs(10));
    assert_eq!(config.dns.tcp_connections_per_client, 16);
    assert_eq!(config.dns.forwards_per_client, 64);
    assert_eq!(config.dns.forwards_per_domain, 64);
    // A public listener with RRL off is warned about; loopback, private ones or RRL on not.
    let public = |dns: &str| parse(dns).unwrap().dns.unlimited_public_listener();
    assert_eq!(
        public("listen = \"203.0.113.5:53\""),
        Some("203.0.113.5".parse().unwrap())
    );
    assert_eq!(
        public("listen = \"[2001:db8::5]:53\""),
        Some("2001:db8::5".parse().unwrap())
    );
    for quiet in [
        "listen = \"127.0.0.1:53\"",
        "listen = \"10.1.2.3:53\"",
        "listen = \"[fd00::1]:53\"",
        "listen = \"203.0.113.5:53\"\n[dns.rrl]\nresponses_per_second = 20",
    ] {
        assert_eq!(public(quiet), None, "{quiet}");
    }
    // A wildcard: whichever of this host's addresses is public (loopback never is).
    let wildcard = public("listen = \"0.0.0.0:53\"");
    assert!(wildcard.is_none_or(|ip| !ip.is_loopback() && ip.is_ipv4()));
    assert_eq!(
        parse("forwards_per_domain = 256")
            .unwrap()
            .dns
            .forwards_per_domain,
        256
    );
    assert_eq!(config.dns.ipv6_client_prefix, 64);
    // Valid before the relay slots were split per transport (512 in all): still valid, and
    // a share above a transport's 256 slots is all of them.
    let wide = parse("forwards_per_client = 512").unwrap();
    assert_eq!(wide.dns.forwards_per_transport(), 256);
    assert_eq!(config.dns.forwards_per_transport(), 64);
    assert_eq!(
        parse("ipv6_client_prefix = 128")
            .unwrap()
            .dns
            .ipv6_client_prefix,
        128
    );
    for (bad, key) in [
        ("tcp_idle_timeout = \"0s\"", "dns.tcp_idle_timeout"),
        ("tcp_idle_timeout = \"2h\"", "dns.tcp_idle_timeout"),
        (
            "tcp_connections_per_client = 0",
            "dns.tcp_connections_per_client",
        ),
        (
            "tcp_connections_per_client = 1025",
            "dns.tcp_connections_per_client",
        ),
        ("forwards_per_client = 0", "dns.forwards_per_client"),
        ("forwards_per_client = 513", "dns.forwards_per_client"),
        ("forwards_per_domain = 0", "dns.forwards_per_domain"),
        ("forwards_per_domain = 257", "dns.forwards_per_domain"),
        ("ipv6_client_prefix = 31", "dns.ipv6_client_prefix"),
        ("ipv6_client_prefix = 129", "dns.ipv6_client_prefix"),
    ] {
        let err = parse(bad).unwrap_err();
        assert!(err.contains(key), "{bad}: {err}");
    }
}

#[test]
fn group_is_one_or_several() {
    // marathon_lb.py: parser.add_argument("--group", help="[required] Only generate config
    // for apps which list the specified names. Use '*' to match all groups, including
    // those without a group specified.", action="append", default=list())
    let base = Path::new(".");
    let one = Config::parse("[discovery]\nfile = \"a\"\n[proxy]\ngroup = \"ext\"", base);
    assert_eq!(one.unwrap().proxy.group, ["ext"]);
    let more = "[discovery]\nfile = \"a\"\n[proxy]\ngroup = [\"ext\", \"int\"]";
    assert_eq!(
        Config::parse(more, base).unwrap().proxy.group,
        ["ext", "int"]
    );
    for bad in ["[]", "[\"\"]", "3"] {
        let text = format!("[discovery]\nfile = \"a\"\n[proxy]\ngroup = {bad}");
        let err = Config::parse(&text, base).unwrap_err();
        assert!(err.contains("group"), "{bad}: {err}");
    }
    let range = "[discovery]\nfile = \"a\"\n[proxy]\nmin_serv_port_ip_per_task = 9\n\
                     max_serv_port_ip_per_task = 8";
    assert!(
        Config::parse(range, base)
            .unwrap_err()
            .contains("ip_per_task")
    );
}

#[test]
fn relative_file_resolves_against_config_dir() {
    let config = Config::parse("[discovery]\nfile = \"apps.json\"", Path::new("/etc/sy")).unwrap();
    assert_eq!(
        config.discovery.file.unwrap(),
        Path::new("/etc/sy/apps.json")
    );
}
