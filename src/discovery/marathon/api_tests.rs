use super::*;
use serde_json::json;

#[test]
fn the_three_port_shapes() {
    let body = br#"{"apps":[
          {"id":"/host","portDefinitions":[{"port":10000,"protocol":"tcp","name":"http","labels":{"VIP_0":"/web:80"}}],
           "tasks":[{"id":"host.1","host":"10.0.0.1","ports":[31000],"state":"TASK_RUNNING"}]},
          {"id":"/bridge","container":{"type":"DOCKER","docker":{"network":"BRIDGE",
             "portMappings":[{"containerPort":80,"hostPort":0,"servicePort":10001,"protocol":"tcp"}]}}},
          {"id":"/ucr","networks":[{"mode":"container","name":"dcos"}],
           "container":{"type":"MESOS","portMappings":[{"containerPort":8080,"servicePort":10002,"protocol":"udp,tcp"}]},
           "tasks":[{"id":"ucr.1","host":"10.0.0.2","ipAddresses":[{"ipAddress":"9.0.0.5","protocol":"IPv4"}]}]}
        ]}"#;
    let parsed = parse_apps(body).unwrap();
    assert!(parsed.rejected.is_empty());
    let [host, bridge, ucr] = &parsed.apps[..] else {
        panic!()
    };
    assert_eq!(host.ports[0].service_port, 10000);
    assert_eq!(host.ports[0].name.as_deref(), Some("http"));
    assert_eq!(host.ports[0].labels["VIP_0"], "/web:80");
    assert_eq!(host.networking, Networking::Host);
    assert_eq!(bridge.ports[0].service_port, 10001);
    assert_eq!(bridge.ports[0].container_port, Some(80));
    assert_eq!(bridge.networking, Networking::Host);
    assert_eq!(ucr.ports[0].service_port, 10002);
    assert_eq!(ucr.ports[0].protocol, Protocol::TcpUdp);
    assert_eq!(ucr.networking, Networking::Container);
    assert_eq!(
        ucr.tasks["ucr.1"].ip_addresses.as_slice(),
        ["9.0.0.5".parse::<IpAddr>().unwrap()]
    );
}

#[test]
fn a_snapshots_tasks_on_one_agent_share_its_host() {
    let body = br#"{"apps":[
          {"id":"/a","tasks":[{"id":"a.1","host":"agent-1","ports":[31000]},
                              {"id":"a.2","host":"10.0.0.2","ports":[31001]}]},
          {"id":"/b","tasks":[{"id":"b.1","host":"agent-1","ports":[31002]},
                              {"id":"b.2","host":"10.0.0.2","ports":[31003]}]}
        ]}"#;
    let parsed = parse_apps(body).unwrap();
    let (a, b) = (&parsed.apps[0].tasks, &parsed.apps[1].tasks);
    assert!(a["a.1"].host.shares(&b["b.1"].host));
    assert!(a["a.2"].host.shares(&b["b.2"].host));
    assert!(!a["a.1"].host.shares(&a["a.2"].host));
    assert_eq!(b["b.2"].host.ip(), Some("10.0.0.2".parse().unwrap()));
    assert_eq!(b["b.1"].host.as_str(), "agent-1");
}

#[test]
fn legacy_ports_and_ip_per_task_apps_without_service_ports() {
    // utils.py get_service_ports: "ports = app.get('ports', [])
    //     if 'portDefinitions' in app: ports = ... p.get('port', None) ..."
    // and "# This supports legacy ip-per-container for Marathon 1.4.x and prior
    //     if not ports and mode == "container" and self.can_assign and len(app['tasks']) > 0"
    let body = br#"{"apps":[
          {"id":"/legacy","ports":[10005,10006]},
          {"id":"/both","ports":[1],"portDefinitions":[{"port":10007}]},
          {"id":"/ippt","ipAddress":{"discovery":{"ports":[{"number":8080,"name":"http","protocol":"tcp"}]}},
           "tasks":[{"id":"ippt.1","host":"10.0.0.2","ipAddresses":[{"ipAddress":"9.0.0.5"}]}]},
          {"id":"/user","container":{"docker":{"network":"USER","portMappings":[{"containerPort":80}]}}},
          {"id":"/bridge","container":{"docker":{"network":"BRIDGE","portMappings":[{"containerPort":80}]}}},
          {"id":"/given","ipAddress":{},"container":{"docker":{"network":"USER","portMappings":[{"containerPort":80,"servicePort":10008}]}}}
        ]}"#;
    let parsed = parse_apps(body).unwrap();
    assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
    let by_id = |id: &str| parsed.apps.iter().find(|a| &*a.id == id).unwrap();
    let ports = |id: &str| {
        by_id(id)
            .ports
            .iter()
            .map(|p| (p.service_port, p.container_port))
            .collect::<Vec<_>>()
    };
    assert_eq!(ports("/legacy"), [(10005, None), (10006, None)]);
    assert!(!by_id("/legacy").assign_service_ports);
    assert_eq!(ports("/both"), [(10007, None)], "portDefinitions win");
    assert_eq!(ports("/ippt"), [(0, Some(8080))]);
    assert!(by_id("/ippt").assign_service_ports);
    assert_eq!(by_id("/ippt").ports[0].name.as_deref(), Some("http"));
    assert_eq!(ports("/user"), [(0, Some(80))]);
    assert!(by_id("/user").assign_service_ports);
    assert!(
        !by_id("/bridge").assign_service_ports,
        "bridge: not IP-per-task"
    );
    assert!(!by_id("/given").assign_service_ports);
}

#[test]
fn one_bad_app_does_not_reject_the_rest() {
    let body = br#"{"apps":[{"id":"/good"},{"id":"/bad","labels":{"A":1}},{"id":"relative"}]}"#;
    let parsed = parse_apps(body).unwrap();
    assert_eq!(parsed.apps.len(), 1);
    assert_eq!(parsed.rejected.len(), 2);
    assert_eq!(parsed.rejected[0].0, "/bad");
    assert!(parse_apps(b"{\"apps\": 3}").is_err());
    assert!(parse_apps(b"nonsense").is_err());
}

#[test]
fn app_ids_follow_marathons_rule() {
    for good in ["/a", "/web", "/a7", "/prod/shop-blue", "/x.y/z-1.b", "/0/1"] {
        assert_eq!(check_app_id(good), Ok(()), "{good}");
    }
    for bad in [
        "relative",
        "/",
        "/Web",
        "/a b",
        "/a//b",
        "/a/",
        "/-a",
        "/a-",
        "/a/../b",
        "/a/./b",
        "/a..b",
        "/a_b",
        "/evil\"} 1",
        "/a\nb",
        "/caf\u{e9}",
    ] {
        assert!(check_app_id(bad).is_err(), "{bad:?}");
    }
    let body = br#"{"apps":[{"id":"/ok"},{"id":"/evil\"} 1\nx"},{"id":"/Upper"}]}"#;
    let parsed = parse_apps(body).unwrap();
    assert_eq!(parsed.apps.len(), 1);
    assert_eq!(parsed.apps[0].id.as_ref(), "/ok");
    assert_eq!(parsed.rejected.len(), 2);
}

#[test]
fn health_results_aggregate() {
    let body = br#"{"apps":[{"id":"/a","healthChecks":[{},{}],"tasks":[
            {"id":"a.1","host":"h","healthCheckResults":[{"alive":true},{"alive":false}]},
            {"id":"a.2","host":"h","healthCheckResults":[{"alive":true},{"alive":true}]},
            {"id":"a.3","host":"h"}]}]}"#;
    let app = &parse_apps(body).unwrap().apps[0];
    assert_eq!(app.health_checks, 2);
    assert_eq!(app.tasks["a.1"].healthy, Some(false));
    assert_eq!(app.tasks["a.2"].healthy, Some(true));
    assert_eq!(app.tasks["a.3"].healthy, None);
}

#[test]
fn readiness_results_gate_tasks() {
    let body = br#"{"apps":[{"id":"/a","tasks":[{"id":"a.1","host":"h"},{"id":"a.2","host":"h"}],
            "readinessCheckResults":[{"name":"r","taskId":"a.1","ready":false,"lastResponse":null},
                                     {"name":"r","taskId":"a.2","ready":true}]}]}"#;
    let app = &parse_apps(body).unwrap().apps[0];
    assert_eq!(app.tasks["a.1"].ready, Some(false));
    assert_eq!(app.tasks["a.2"].ready, Some(true));
}

#[test]
fn events() {
    let v = serde_json::json!({"eventType":"status_update_event","appId":"/a","taskId":"a.1",
            "taskStatus":"TASK_KILLING","host":"h","ports":[1],"timestamp":"x"});
    let (kind, ev) = parse_event(v).unwrap();
    assert_eq!(kind, "status_update_event");
    let Some(Event::Update(ClusterUpdate::TaskStatus { task, .. })) = ev else {
        panic!()
    };
    assert_eq!(task.state, TaskState::Killing);

    let wrong_type = serde_json::json!({"eventType":"status_update_event","appId":5});
    assert!(parse_event(wrong_type).is_err());
    let unknown = serde_json::json!({"eventType":"framework_message_event"});
    assert!(parse_event(unknown).unwrap().1.is_none());
    let post = serde_json::json!({"eventType":"api_post_event","appDefinition":{"id":"/x"}});
    assert!(matches!(parse_event(post).unwrap().1, Some(Event::RefetchApp(id)) if id == "/x"));
    let deploy = serde_json::json!({"eventType":"deployment_success","id":"d"});
    assert!(matches!(
        parse_event(deploy).unwrap().1,
        Some(Event::Resync)
    ));
}

#[test]
fn marathon_timestamps() {
    assert_eq!(timestamp_ms("1970-01-01T00:00:00.000Z"), Some(0));
    assert_eq!(
        timestamp_ms("2015-09-25T15:13:48.343Z"),
        Some(1_443_194_028_343)
    );
    assert_eq!(
        timestamp_ms("2015-09-25T15:13:48Z"),
        Some(1_443_194_028_000)
    );
    assert_eq!(
        timestamp_ms("2015-09-25T17:13:48.3+02:00"),
        Some(1_443_194_028_300)
    );
    assert_eq!(
        timestamp_ms("2024-02-29T00:00:00Z"),
        Some(1_709_164_800_000)
    );
    for bad in [
        "x",
        "",
        "2015-09-25",
        "2015-13-01T00:00:00Z",
        "2015-09-25T15:13:48.Z",
        "1969-12-31T23:59:59Z",
        "2015-09-25T15:13:48+0200",
    ] {
        assert_eq!(timestamp_ms(bad), None, "{bad}");
    }
}

#[test]
fn changes_carry_their_timestamps() {
    let v = json!({"eventType":"status_update_event","appId":"/a","taskId":"a.1",
            "taskStatus":"TASK_KILLED","timestamp":"2015-09-25T15:13:48.343Z"});
    let Some(Event::Update(ClusterUpdate::TaskStatus { task, .. })) = parse_event(v).unwrap().1
    else {
        panic!()
    };
    assert_eq!(task.changed_ms, 1_443_194_028_343);
    let v =
        json!({"eventType":"app_terminated_event","appId":"/a","timestamp":"2015-09-25T15:13:49Z"});
    assert!(matches!(
        parse_event(v).unwrap().1,
        Some(Event::Update(ClusterUpdate::AppRemoved {
            at_ms: 1_443_194_029_000,
            ..
        }))
    ));
    let apps = parse_apps(
        br#"{"apps":[{"id":"/a","version":"2015-09-25T15:00:00Z","tasks":[
            {"id":"a.1","stagedAt":"2015-09-25T15:01:00Z","startedAt":"2015-09-25T15:02:00Z"}]}]}"#,
    )
    .unwrap()
    .apps;
    assert_eq!(apps[0].version_ms, 1_443_193_200_000);
    assert_eq!(
        apps[0].tasks.values().next().unwrap().changed_ms,
        1_443_193_320_000
    );
}

#[test]
fn marathon_checks_become_probes_with_marathon_defaults() {
    let http = probe_from_marathon(&json!({"protocol": "MESOS_HTTP", "path": "/health",
            "portIndex": 1, "intervalSeconds": 5, "maxConsecutiveFailures": 2}))
    .unwrap();
    assert_eq!(
        http.kind,
        ProbeKind::Http {
            path: "/health".into()
        }
    );
    assert_eq!(
        (http.port_index, http.interval, http.max_failures),
        (1, std::time::Duration::from_secs(5), 2)
    );
    assert_eq!(http.timeout, std::time::Duration::from_secs(20));
    assert_eq!(http.grace, std::time::Duration::from_secs(300));
    let tcp = probe_from_marathon(&json!({"protocol": "TCP"})).unwrap();
    assert_eq!((tcp.kind, tcp.port_index), (ProbeKind::Tcp, 0));
    assert!(
        probe_from_marathon(&json!({"protocol": "COMMAND", "command": {"value": "true"}}))
            .is_none()
    );
    assert!(probe_from_marathon(&json!({"protocol": "HTTP", "port": 8080})).is_none());
    // A path that would break the request line falls back to /.
    let odd = probe_from_marathon(&json!({"path": "/a b\r\nX: y"})).unwrap();
    assert_eq!(odd.kind, ProbeKind::Http { path: "/".into() });
}

/// What the relay writes (`render`) reads back as the app it was written from, for every shape
/// the parser knows: ports in each place Marathon keeps them, IP-per-task with and without
/// service ports, checks switchyard probes and those it does not, health and readiness results,
/// task states and times.
#[test]
fn rendered_apps_read_back_as_themselves() {
    let body = br#"{"apps":[
          {"id":"/host","version":"2026-11-22T10:11:12.345Z","labels":{"HAPROXY_GROUP":"external"},
           "portDefinitions":[{"port":10000,"protocol":"tcp","name":"http","labels":{"VIP_0":"/web:80"}},
                              {"port":10001,"protocol":"udp"}],
           "healthChecks":[{"protocol":"MESOS_HTTP","path":"/health","portIndex":1,"intervalSeconds":5,
                            "timeoutSeconds":3,"maxConsecutiveFailures":2,"gracePeriodSeconds":30},
                           {"protocol":"COMMAND","command":{"value":"true"}},
                           {"protocol":"TCP","port":8080},{"protocol":"HTTP","port":0,"path":"/zero"},
                           {"protocol":"HTTP","port":"x","path":"/named"},{"protocol":"HTTPS"},{}],
           "tasks":[{"id":"host.1","host":"10.0.0.1","ports":[31000,31001],"state":"TASK_RUNNING",
                     "startedAt":"2026-11-22T10:11:13.000Z","stagedAt":"2026-11-22T10:11:12.000Z",
                     "healthCheckResults":[{"alive":true},{"alive":true}]},
                    {"id":"host.2","host":"agent-7.example","ports":[31002],"state":"TASK_STAGING",
                     "healthCheckResults":[{"alive":true},{"alive":false}]},
                    {"id":"host.3","host":"10.0.0.3","state":"TASK_FINISHED"}],
           "readinessCheckResults":[{"taskId":"host.1","ready":true},{"taskId":"host.2","ready":false}]},
          {"id":"/bridge","container":{"type":"DOCKER","docker":{"network":"BRIDGE",
             "portMappings":[{"containerPort":80,"hostPort":0,"servicePort":10002,"protocol":"tcp"},
                             {"containerPort":81}]}}},
          {"id":"/ucr","networks":[{"mode":"container","name":"dcos"}],
           "container":{"type":"MESOS","portMappings":[{"containerPort":8080,"servicePort":10003,"protocol":"udp,tcp"}]},
           "tasks":[{"id":"ucr.1","host":"10.0.0.2","ipAddresses":[{"ipAddress":"9.0.0.5","protocol":"IPv4"},
                                                                  {"ipAddress":"fd00::5","protocol":"IPv6"}]}]},
          {"id":"/legacy","ports":[10005,10006]},
          {"id":"/ippt","ipAddress":{"discovery":{"ports":[{"number":8080,"name":"http","protocol":"tcp"}]}},
           "tasks":[{"id":"ippt.1","host":"10.0.0.2","ipAddresses":[{"ipAddress":"9.0.0.5"}]}]},
          {"id":"/user","container":{"docker":{"network":"USER","portMappings":[{"containerPort":80}]}}},
          {"id":"/given","ipAddress":{},"container":{"docker":{"network":"USER","portMappings":[{"containerPort":80,"servicePort":10008}]}}},
          {"id":"/hostippt","networks":[{}],"portDefinitions":[{"name":"x"}]},
          {"id":"/none"}
        ]}"#;
    let parsed = parse_apps(body).unwrap();
    assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
    // `port: 0` names no port (probed, by index); `port: "x"` names one (not probed).
    let probed: Vec<_> = parsed.apps[0]
        .probes
        .iter()
        .map(|p| format!("{:?}", p.kind))
        .collect();
    assert_eq!(probed.len(), 4, "{probed:?}");
    assert!(probed[1].contains("/zero"), "{probed:?}");
    assert!(!probed.iter().any(|p| p.contains("/named")), "{probed:?}");
    let embed = crate::discovery::marathon::render::Embed::from_query(
        "embed=apps.tasks&embed=apps.deployments&embed=apps.readiness",
    );
    let rendered = json!({
        "apps": parsed.apps.iter().map(|a| crate::discovery::marathon::render::app(a, embed)).collect::<Vec<_>>()
    });
    let again = parse_apps(rendered.to_string().as_bytes()).unwrap();
    assert!(again.rejected.is_empty(), "{:?}", again.rejected);
    for (before, after) in parsed.apps.iter().zip(&again.apps) {
        assert_eq!(before, after, "{}", before.id);
    }
    assert_eq!(parsed.apps.len(), again.apps.len());
    // One app, as `/v2/apps/{id}` answers it.
    let one =
        json!({"app": crate::discovery::marathon::render::app(&parsed.apps[0], embed)}).to_string();
    assert_eq!(parse_single_app(one.as_bytes()).unwrap(), parsed.apps[0]);
}

proptest::proptest! {
    /// Marathon's time format written by the relay reads back to the same millisecond.
    #[test]
    fn rendered_times_read_back(ms in 0u64..253_402_300_799_999) {
        proptest::prop_assert_eq!(timestamp_ms(&crate::discovery::marathon::render::iso8601(ms)), Some(ms));
    }
}
