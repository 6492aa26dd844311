//! An HTTP/1 request head from the network, routed the way the proxy routes it: Host to a vhost
//! key, host and path through a compiled table (exact, wildcard, longest prefix, default app),
//! `X-Marathon-App-Id`, a service port, then the route's app choice (weights, canary header),
//! the service's ACL and its balancer.
#![no_main]
use std::net::SocketAddr;
use std::sync::OnceLock;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use switchyard::cluster::{Cluster, ClusterUpdate};
use switchyard::discovery::marathon::api;
use switchyard::proxy::headers::strip_hop_by_hop;
use switchyard::routing::resolve::{Entry, Request, Target};
use switchyard::routing::balance::{Flow, Load};
use switchyard::routing::{CompileConfig, RoutingTable, compile};

const CLIENT: &str = "10.1.2.3:40000";
const LISTEN: &str = "127.0.0.1:10000";

fn table() -> &'static RoutingTable {
    static TABLE: OnceLock<RoutingTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let body = br#"{"apps":[
          {"id":"/shop/web","portDefinitions":[{"port":10000}],
           "labels":{"HAPROXY_0_MODE":"http","HAPROXY_0_VHOST":"shop.example.com,*.example.com",
             "HAPROXY_0_PATH":"/ /api","HAPROXY_DEPLOYMENT_GROUP":"shop","SWITCHYARD_0_WEIGHT":"90"},
           "tasks":[{"id":"w.1","host":"10.0.0.1","ports":[31000]},{"id":"w.2","host":"10.0.0.2","ports":[31000]}]},
          {"id":"/shop/canary","portDefinitions":[{"port":10000}],
           "labels":{"HAPROXY_0_MODE":"http","HAPROXY_0_VHOST":"shop.example.com,*.example.com",
             "HAPROXY_0_PATH":"/ /api","HAPROXY_DEPLOYMENT_GROUP":"shop","SWITCHYARD_0_WEIGHT":"10",
             "SWITCHYARD_0_CANARY_HEADER":"X-Canary: on"},
           "tasks":[{"id":"c.1","host":"10.0.0.3","ports":[31000]}]},
          {"id":"/api/v2","portDefinitions":[{"port":0}],
           "labels":{"HAPROXY_0_MODE":"http","HAPROXY_0_VHOST":"shop.example.com","HAPROXY_0_PATH":"/api/v2",
             "HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL":"10.0.0.0/8, fd00::/8","HAPROXY_0_STICKY":"true",
             "HAPROXY_0_BALANCE":"source"},
           "tasks":[{"id":"v.1","host":"10.0.1.1","ports":[31000]},{"id":"v.2","host":"10.0.1.2","ports":[31000]}]},
          {"id":"/eu/web","portDefinitions":[{"port":0}],
           "labels":{"HAPROXY_0_MODE":"http","HAPROXY_0_VHOST":"*.eu.example.com",
             "HAPROXY_0_REDIRECT_TO_HTTPS":"true","HAPROXY_0_BALANCE":"leastconn"},
           "tasks":[{"id":"e.1","host":"10.0.2.1","ports":[31000]}]},
          {"id":"/empty","portDefinitions":[{"port":0}],
           "labels":{"HAPROXY_0_MODE":"http","HAPROXY_0_VHOST":"empty.example.com"},"tasks":[]},
          {"id":"/default","portDefinitions":[{"port":10001}],"labels":{"HAPROXY_0_MODE":"http"},
           "tasks":[{"id":"d.1","host":"10.0.3.1","ports":[31000]}]}]}"#;
        let parsed = api::parse_apps(body).unwrap();
        let mut cluster = Cluster::default();
        cluster.apply(ClusterUpdate::Snapshot(parsed.apps));
        let config = CompileConfig {
            default_app: Some("/default".into()),
            ..CompileConfig::group("*", "127.0.0.1".parse().unwrap())
        };
        let table = compile(&cluster, &config);
        assert!(!table.vhosts.is_empty() && table.default_service.is_some());
        table
    })
}

fn serve(table: &RoutingTable, target: Option<(Target, impl Sized)>, headers: &HeaderMap) {
    let index = match target.map(|(t, _)| t) {
        None => return,
        Some(Target::Service(index)) => index,
        Some(Target::Route(route)) => {
            let route = &table.routes[route];
            match route.pick(Some(headers), &table.services) {
                Some(index) => index,
                None => {
                    let _ = &table.services[route.first()];
                    return;
                }
            }
        }
    };
    let service = &table.services[index];
    let client: SocketAddr = CLIENT.parse().unwrap();
    let _ = service.http.acl.iter().any(|c| c.contains(client.ip()));
    let flow = Flow {
        client,
        local: LISTEN.parse().unwrap(),
    };
    let candidates: Vec<usize> = service
        .balancer
        .candidates(flow, |_| Load::default())
        .collect();
    assert_eq!(candidates.len(), service.backends.len());
    assert!(candidates.iter().all(|&b| b < service.backends.len()));
}

fuzz_target!(|data: &[u8]| {
    let mut slots = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut slots);
    let Ok(httparse::Status::Complete(_)) = req.parse(data) else {
        return;
    };
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return;
    };
    // What `http` refuses, hyper answers with 400 before routing.
    if http::Method::from_bytes(method.as_bytes()).is_err() {
        return;
    }
    let Ok(uri) = path.parse::<http::Uri>() else {
        return;
    };
    let mut headers = HeaderMap::new();
    for h in req.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return;
        };
        headers.append(name, value);
    }
    let table = table();

    // The proxy's one resolution, for each kind of listener.
    let request = Request {
        host: headers
            .get(header::HOST)
            .map(HeaderValue::as_bytes)
            .or(uri.host().map(str::as_bytes)),
        path: uri.path(),
        app_id: headers.get("x-marathon-app-id").map(HeaderValue::as_bytes),
    };
    for entry in [
        Entry::Vhost { https: false },
        Entry::AppId,
        Entry::Port(LISTEN.parse().unwrap()),
    ] {
        serve(table, table.resolve(entry, request).ok(), &headers);
    }

    strip_hop_by_hop(&mut headers);
});
