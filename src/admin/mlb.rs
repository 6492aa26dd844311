//! marathon-lb's admin endpoints' answers: the health check page, and the vhost and app maps
//! (`/_haproxy_getvhostmap`, `/_haproxy_getappmap`), in marathon-lb's shapes.

use std::collections::BTreeSet;

use crate::bulk_text::BulkBody;
use http::{Response, StatusCode, header};

use crate::routing::{Mode, RoutingTable, Service};

/// HAProxy's answer to `monitor-uri`.
pub const HEALTH_CHECK_BODY: &str = "<html><body><h1>200 OK</h1>\nService ready.\n</body></html>\n";

/// `send_map` in getmaps.lua / `send_response` in signalmlb.lua: 200, text/plain.
pub fn plain(body: &str) -> Response<BulkBody> {
    let mut r = Response::new(BulkBody::from(body.to_owned()));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}

/// marathon_lb.py: `backend = app.appId[1:].replace('/', '_') + '_' + str(app.servicePort)`.
pub fn backend_name(service: &Service) -> String {
    let id = service
        .key
        .app_id
        .strip_prefix('/')
        .unwrap_or(&service.key.app_id);
    format!("{}_{}", id.replace('/', "_"), service.service_port)
}

/// domain2backend.map: a vhost (without a path rule) and the backend serving it.
pub fn vhost_map(table: &RoutingTable) -> String {
    let lines: BTreeSet<String> = table
        .vhosts
        .entries()
        .filter(|(_, prefix, _)| prefix.is_empty())
        .filter_map(|(host, _, route)| {
            let member = table.routes.get(route)?.members.first()?;
            let service = table.services.get(member.service)?;
            Some(format!("{host} {}\n", backend_name(service)))
        })
        .collect();
    lines.into_iter().collect()
}

/// app2backend.map: each app's first HTTP-mode port (marathon-lb's
/// `apps_with_http_appid_backend`), by app id.
pub fn app_map(table: &RoutingTable) -> String {
    let mut seen = BTreeSet::new();
    table
        .services
        .iter()
        .filter(|s| s.mode == Mode::Http && !s.key.app_id.starts_with("vip:"))
        .filter(|s| seen.insert(s.key.app_id.clone()))
        .map(|s| format!("{} {}\n", s.key.app_id, backend_name(s)))
        .collect()
}
