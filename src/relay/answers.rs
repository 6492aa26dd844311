//! The relay's answers: each request checked (its token, method and path, the relay's
//! freshness) and answered in Marathon's shapes: the `/v2/apps` and `/v2/tasks` bodies (built
//! once per model and encoding), an app, `/v2/info`, `/v2/leader`, `/ping`, the opening of an
//! event stream (`subscribe`), and the plain-text refusals.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::json;
use tokio::sync::{Notify, mpsc};

use crate::cluster::AppId;
use crate::discovery::marathon::gzip;
use crate::discovery::marathon::render::{self, Embed};
use crate::metrics::{KindLabels, PathLabels};

use super::admission::Ticket;
use super::events::{SseBody, Subscriber};
use super::{ENDPOINTS, Encoding, Relay, Served};

impl Relay {
    pub(super) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        (loopback, client): (bool, std::net::IpAddr),
        cut: Arc<Notify>,
        ticket: &Ticket,
    ) -> Response<BoxBody<Bytes, Infallible>> {
        let path = req.uri().path();
        let endpoint = if path.starts_with("/v2/apps/") {
            "/v2/apps/{id}"
        } else {
            ENDPOINTS
                .into_iter()
                .find(|e| *e == path)
                .unwrap_or("other")
        };
        self.metrics
            .requests
            .get_or_create(&PathLabels { path: endpoint })
            .inc();
        // Every request, loopback or not, presents the token when one is set; without one the
        // listener is loopback (the configuration sees to it).
        let now = std::time::Instant::now();
        if self.settings.token.is_some()
            && let Some(left) = self.guesses.refused(client, now)
        {
            let mut r = text(
                StatusCode::TOO_MANY_REQUESTS,
                crate::access::TOO_MANY_GUESSES,
            );
            let retry = crate::access::retry_after(left);
            r.headers_mut().insert(header::RETRY_AFTER, retry);
            return r;
        }
        let allowed = match &self.settings.token {
            Some(token) => {
                let ok = crate::access::presents(req.headers(), token);
                if !ok && req.headers().contains_key(header::AUTHORIZATION) {
                    self.guesses.failed(client, now);
                }
                ok
            }
            // Open to loopback clients that name a loopback host: not to a browser's page whose
            // name was rebound to 127.0.0.1 (as the admin API's open reads).
            None if loopback && !crate::access::names_loopback(req.uri(), req.headers()) => {
                return text(StatusCode::FORBIDDEN, crate::access::NOT_A_LOOPBACK_NAME);
            }
            None => loopback,
        };
        if !allowed {
            let mut r = text(StatusCode::UNAUTHORIZED, "relay token required\n");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            // Not another guess on the same connection.
            r.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return r;
        }
        // From now on it is never evicted to make room (`admission`).
        ticket.authenticated();
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return text(StatusCode::METHOD_NOT_ALLOWED, "the relay is read-only\n");
        }
        if endpoint == "other" {
            return text(StatusCode::NOT_FOUND, "not a path the relay serves\n");
        }
        let current = self.observe(std::time::Instant::now());
        if self.stale.load(Ordering::Relaxed) {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "relay lost Marathon for longer than relay.max_disconnected\n",
            );
        }
        let Some(served) = self.state.load_full() else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "relay not synced with Marathon yet\n",
            );
        };
        // What starts a follower on this relay (its stream, its snapshot) waits for a current
        // model; an app's re-fetch after an event is a follower's that is on it already.
        if !current && matches!(endpoint, "/v2/apps" | "/v2/tasks" | "/v2/events") {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "relay lost Marathon: no new snapshot or stream until it serves a model read \
                 after reconnecting\n",
            );
        }
        let query = req.uri().query().unwrap_or("");
        let encoding = match req.headers().get(header::ACCEPT_ENCODING) {
            Some(v) if gzip::accepts_gzip(v.to_str().unwrap_or("")) => Encoding::Gzip,
            _ => Encoding::Identity,
        };
        let mut response = match endpoint {
            // Built on the blocking pool, once per model and encoding: a big cluster's body
            // takes a while, and every follower (and every slow reader) shares the one copy.
            "/v2/apps" => {
                let embed = Embed::from_query(query);
                let served = served.clone();
                let built = tokio::task::spawn_blocking(move || served.apps_body(embed, encoding));
                match built.await {
                    Ok(Some(body)) => prepared(body, encoding),
                    Ok(None) => over_budget(),
                    Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
                }
            }
            "/v2/apps/{id}" => {
                let id = path["/v2/apps".len()..].trim_end_matches('/');
                let mut embed = Embed::from_query(query);
                // Marathon embeds an app's tasks unless told what to embed.
                embed.tasks |= !query.contains("embed=");
                match served.cluster.apps.get(&AppId::from(id)) {
                    Some(app) => {
                        json_value(StatusCode::OK, json!({"app": render::app(app, embed)}))
                    }
                    None => json_value(
                        StatusCode::NOT_FOUND,
                        json!({"message": format!("App '{id}' does not exist")}),
                    ),
                }
            }
            "/v2/tasks" => {
                let served = served.clone();
                match tokio::task::spawn_blocking(move || served.tasks_body(encoding)).await {
                    Ok(Some(body)) => prepared(body, encoding),
                    Ok(None) => over_budget(),
                    Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
                }
            }
            "/v2/leader" => json_value(
                StatusCode::OK,
                json!({"leader": self.settings.listen.to_string()}),
            ),
            "/v2/info" => json_value(
                StatusCode::OK,
                json!({
                    "name": "switchyard-relay",
                    "version": env!("CARGO_PKG_VERSION"),
                    "leader": self.settings.listen.to_string(),
                    "elected": true,
                }),
            ),
            "/ping" => text(StatusCode::OK, "pong\n"),
            _ => return self.subscribe(&req, cut),
        };
        response.headers_mut().insert(
            "x-switchyard-relay-generation",
            header::HeaderValue::from(served.generation),
        );
        response
    }

    /// `/v2/events`: registered before the 200 goes out (see the module's ordering note).
    fn subscribe(
        &self,
        req: &Request<Incoming>,
        cut: Arc<Notify>,
    ) -> Response<BoxBody<Bytes, Infallible>> {
        let accepts = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
        if !accepts {
            return text(
                StatusCode::NOT_ACCEPTABLE,
                "/v2/events needs Accept: text/event-stream\n",
            );
        }
        let kinds = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|p| p.strip_prefix("event_type="))
            .map(str::to_string)
            .collect();
        let (queue, rx) = mpsc::channel(self.settings.subscriber_queue.max(1));
        {
            let mut subscribers = self.subscribers.lock().unwrap();
            subscribers.retain(|s| !s.queue.is_closed());
            if subscribers.len() >= self.settings.max_subscribers {
                self.metrics
                    .refused
                    .get_or_create(&KindLabels {
                        kind: "stream".into(),
                    })
                    .inc();
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "relay.max_subscribers streams are open\n",
                );
            }
            subscribers.push(Subscriber {
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                queue,
                kinds,
                cut,
            });
            self.metrics.subscribers.set(subscribers.len() as i64);
        }
        let mut r = Response::new(SseBody { rx }.boxed());
        let headers = r.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-cache"),
        );
        r
    }
}

impl Served {
    /// `/v2/tasks`, built once per model (and compressed once, when asked for so); `None`:
    /// not built, past the body budget.
    fn tasks_body(&self, encoding: Encoding) -> Option<Bytes> {
        let cell = match encoding {
            Encoding::Gzip => &self.tasks_gzip,
            Encoding::Identity => &self.tasks,
        };
        if let Some(body) = cell.get() {
            return Some(body.clone());
        }
        if !self.budget.room() {
            return None;
        }
        let plain = || {
            let tasks: Vec<_> = self
                .cluster
                .apps
                .values()
                .flat_map(|a| a.tasks.values().map(|t| render::task(&a.id, t)))
                .collect();
            let body = serde_json::to_vec(&json!({ "tasks": tasks })).expect("serializes");
            self.budget.count(body)
        };
        let plain = self.tasks.get_or_init(plain).clone();
        Some(match encoding {
            Encoding::Identity => plain,
            Encoding::Gzip => self
                .tasks_gzip
                .get_or_init(|| self.budget.count(gzip::gzip(&plain)))
                .clone(),
        })
    }

    /// `/v2/apps` in one `embed` form and encoding, built once per model (the gzip body from
    /// the plain one); `None`: not built, past the body budget.
    fn apps_body(&self, embed: Embed, encoding: Encoding) -> Option<Bytes> {
        // Held while building: a thousand followers asking at once build it once.
        let mut bodies = self.bodies.lock().unwrap();
        if let Some(body) = bodies.get(&(embed, encoding)) {
            return Some(body.clone());
        }
        if !self.budget.room() {
            return None;
        }
        let plain = match bodies.get(&(embed, Encoding::Identity)) {
            Some(plain) => plain.clone(),
            None => {
                let plain = self.render_apps(embed);
                bodies.insert((embed, Encoding::Identity), plain.clone());
                plain
            }
        };
        if encoding == Encoding::Identity {
            return Some(plain);
        }
        let compressed = self.budget.count(gzip::gzip(&plain));
        bodies.insert((embed, encoding), compressed.clone());
        Some(compressed)
    }

    fn render_apps(&self, embed: Embed) -> Bytes {
        let mut out = Vec::with_capacity(64 << 10);
        out.extend_from_slice(b"{\"apps\":[");
        for (i, app) in self.cluster.apps.values().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, &render::app(app, embed))
                .expect("a JSON value serializes");
        }
        out.extend_from_slice(b"]}");
        self.budget.count(out)
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<BoxBody<Bytes, Infallible>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}

/// Whether an answer is an event stream (`subscribe`'s).
pub(super) fn is_stream<B>(response: &Response<B>) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"text/event-stream")
}

/// A body not built: too many older ones are still being read (`budget`).
fn over_budget() -> Response<BoxBody<Bytes, Infallible>> {
    let mut r = text(
        StatusCode::SERVICE_UNAVAILABLE,
        "relay.max_body_bytes of answers are being read; try again\n",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    r
}

fn json_bytes(status: StatusCode, body: Bytes) -> Response<BoxBody<Bytes, Infallible>> {
    let mut r = Response::new(Full::new(body).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A prepared body (`/v2/apps`, `/v2/tasks`) in the encoding the client asked for.
fn prepared(body: Bytes, encoding: Encoding) -> Response<BoxBody<Bytes, Infallible>> {
    let mut r = json_bytes(StatusCode::OK, body);
    let headers = r.headers_mut();
    headers.insert(
        header::VARY,
        header::HeaderValue::from_static("accept-encoding"),
    );
    if encoding == Encoding::Gzip {
        headers.insert(
            header::CONTENT_ENCODING,
            header::HeaderValue::from_static("gzip"),
        );
    }
    r
}

fn json_value(status: StatusCode, body: serde_json::Value) -> Response<BoxBody<Bytes, Infallible>> {
    json_bytes(status, Bytes::from(body.to_string()))
}
