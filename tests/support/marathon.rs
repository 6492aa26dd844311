//! A Marathon stand-in: serves `/v2/apps` (all, and one app) and `/v2/events` in Marathon's
//! documented shapes, with its awkward parts on demand: 406 without `Accept: text/event-stream`,
//! a standby that answers 302 to the leader, raw stream bytes (keep-alive newlines, several
//! objects in one `data:` field), dropped streams. JSON answers are gzip-compressed when the
//! request asks for it (`Accept-Encoding: gzip`), as Marathon's are.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Ways the stand-in can misbehave, for fault-injection tests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// Every request: 500.
    ServerError,
    /// Every request: 200 with a body that is not JSON.
    Garbage,
    /// `/v2/apps`: 200 with a 50 MB body.
    Huge,
    /// `/v2/events`: a stream that sends a byte every 50 ms and never finishes a line.
    SlowDrip,
    /// Every request: a 302 to itself.
    RedirectLoop,
    /// Every connection is closed at once, as if Marathon were gone.
    Gone,
    /// `/v2/apps`: gzip (asked for or not) that decodes to 32 MiB from 32 KiB.
    GzipBomb,
    /// `/v2/apps`: gzip (asked for or not) of the real body, cut short.
    GzipTruncated,
}

#[derive(Default)]
struct State {
    fault: Option<Fault>,
    /// Shared with the requests being answered: each takes a reference, not a copy (a copy of
    /// a 10,000-app list costs the stand-in a second per request).
    apps: std::sync::Arc<Vec<Value>>,
    /// When set, this instance is a standby: every request is redirected to this base URL.
    leader: Option<String>,
    streams: Vec<mpsc::UnboundedSender<Option<Vec<u8>>>>,
    requests: Vec<Request>,
    /// When set, only these `Authorization` values are accepted; others get 401.
    accepted: Option<std::collections::HashSet<String>>,
    unauthorized: usize,
    /// What was answered: when, the request's path, and the bytes written (head and body).
    served: Vec<Served>,
    /// Answers uncompressed even when asked for gzip (a Marathon without it, for benchmarks).
    no_gzip: bool,
}

/// One answer the stand-in wrote (for the thundering-herd benchmark: what Marathon serves).
#[derive(Clone, Debug)]
pub struct Served {
    pub at: std::time::Instant,
    pub path: String,
    pub bytes: usize,
}

#[derive(Clone, Debug)]
pub struct Request {
    pub target: String,
    pub accept: Option<String>,
    pub authorization: Option<String>,
    pub accept_encoding: Option<String>,
}

#[derive(Clone)]
pub struct Marathon {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Marathon {
    pub async fn start() -> Marathon {
        Marathon::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(addr: SocketAddr) -> Marathon {
        let listener = TcpListener::bind(addr).await.expect("bind stand-in");
        let marathon = Marathon {
            addr: listener.local_addr().unwrap(),
            state: Arc::default(),
        };
        let state = marathon.state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, state.clone()));
            }
        });
        marathon
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Makes this instance a standby that redirects to `leader`.
    pub fn redirect_to(&self, leader: &Marathon) {
        self.state.lock().unwrap().leader = Some(leader.url());
    }

    /// Starts (`Some`) or ends (`None`) a misbehaviour; open event streams are dropped so that
    /// the next connection meets it.
    /// Whether JSON answers are gzip-compressed for a client that asks (on by default).
    pub fn serve_gzip(&self, on: bool) {
        self.state.lock().unwrap().no_gzip = !on;
    }

    pub fn fault(&self, fault: Option<Fault>) {
        self.state.lock().unwrap().fault = fault;
        self.drop_streams();
    }

    pub fn set_apps(&self, apps: Vec<Value>) {
        self.state.lock().unwrap().apps = apps.into();
    }

    pub fn update_app(&self, id: &str, f: impl FnOnce(&mut Value)) {
        let mut state = self.state.lock().unwrap();
        let app = std::sync::Arc::make_mut(&mut state.apps)
            .iter_mut()
            .find(|a| a["id"] == id)
            .expect("app exists");
        f(app);
    }

    pub fn remove_app(&self, id: &str) {
        std::sync::Arc::make_mut(&mut self.state.lock().unwrap().apps).retain(|a| a["id"] != id);
    }

    /// Accepts only requests authorized with one of these values (`token=…`) from now on.
    pub fn require_authorization(&self, accepted: &[String]) {
        self.state.lock().unwrap().accepted = Some(accepted.iter().cloned().collect());
    }

    /// Accepts one more authorization value.
    pub fn accept_authorization(&self, value: String) {
        let mut s = self.state.lock().unwrap();
        s.accepted
            .get_or_insert_with(Default::default)
            .insert(value);
    }

    /// Requests answered 401 so far.
    pub fn unauthorized(&self) -> usize {
        self.state.lock().unwrap().unauthorized
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Every answer written so far (events: each chunk of the stream).
    pub fn served(&self) -> Vec<Served> {
        self.state.lock().unwrap().served.clone()
    }

    /// Forgets what was served so far.
    pub fn clear_served(&self) {
        self.state.lock().unwrap().served.clear();
    }

    /// Makes this instance the leader again (it stops redirecting).
    pub fn lead(&self) {
        self.state.lock().unwrap().leader = None;
    }

    pub fn open_streams(&self) -> usize {
        let mut state = self.state.lock().unwrap();
        state.streams.retain(|s| !s.is_closed());
        state.streams.len()
    }

    /// Writes bytes as they are to every open event stream.
    pub fn send_raw(&self, bytes: &[u8]) {
        let mut state = self.state.lock().unwrap();
        state
            .streams
            .retain(|s| s.send(Some(bytes.to_vec())).is_ok());
    }

    /// Sends one event the way Marathon does.
    pub fn send_event(&self, event: Value) {
        let kind = event["eventType"].as_str().expect("eventType").to_string();
        self.send_raw(format!("event: {kind}\r\ndata: {event}\r\n\r\n").as_bytes());
    }

    /// Closes every open event stream, as Marathon does with slow consumers or on failover.
    pub fn drop_streams(&self) {
        let mut state = self.state.lock().unwrap();
        for s in state.streams.drain(..) {
            let _ = s.send(None);
        }
    }
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    let fault = state.lock().unwrap().fault;
    if fault == Some(Fault::Gone) {
        return;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let target = lines
        .next()
        .unwrap_or("")
        .split(' ')
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let header = |name: &str| {
        head.split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    let request = Request {
        target: target.clone(),
        accept: header("accept"),
        authorization: header("authorization"),
        accept_encoding: header("accept-encoding"),
    };
    let gzip = !state.lock().unwrap().no_gzip
        && request
            .accept_encoding
            .as_deref()
            .is_some_and(|e| e.split(',').any(|c| c.trim() == "gzip"));
    let (leader, apps, refused) = {
        let mut s = state.lock().unwrap();
        s.requests.push(request.clone());
        let refused = s.accepted.as_ref().is_some_and(|accepted| {
            !request
                .authorization
                .as_ref()
                .is_some_and(|a| accepted.contains(a))
        });
        if refused {
            s.unauthorized += 1;
        }
        (s.leader.clone(), s.apps.clone(), refused)
    };
    if refused {
        let _ = respond(&mut stream, "401 Unauthorized", "application/json", "{}").await;
        return;
    }
    if let Some(leader) = leader {
        let body = format!(
            "HTTP/1.1 302 Found\r\nLocation: {leader}{target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let _ = stream.write_all(body.as_bytes()).await;
        record(&state, "302", body.len());
        return;
    }
    let path = target.split('?').next().unwrap_or("");
    match fault {
        Some(Fault::ServerError) => {
            let _ = respond(&mut stream, "500 Server Error", "text/plain", "boom").await;
            return;
        }
        Some(Fault::Garbage) => {
            let body = "<html>{\"apps\": [ not json";
            let _ = respond(&mut stream, "200 OK", "application/json", body).await;
            return;
        }
        Some(Fault::RedirectLoop) => {
            let body = format!(
                "HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(body.as_bytes()).await;
            return;
        }
        Some(Fault::Huge) if path == "/v2/apps" => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{{\"apps\":[",
                50 << 20
            );
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let filler = vec![b' '; 1 << 20];
            for _ in 0..50 {
                if stream.write_all(&filler).await.is_err() {
                    return;
                }
            }
            return;
        }
        Some(Fault::GzipBomb) if path == "/v2/apps" => {
            static BOMB: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
            let bomb = BOMB.get_or_init(|| {
                let mut body = b"{\"apps\":[".to_vec();
                body.resize(32 << 20, b' ');
                body.extend_from_slice(b"]}");
                compress(&body)
            });
            let _ = respond_bytes(&mut stream, "200 OK", "application/json", bomb, true).await;
            return;
        }
        Some(Fault::GzipTruncated) if path == "/v2/apps" => {
            let body = compress(json!({ "apps": &*apps }).to_string().as_bytes());
            let cut = &body[..body.len() / 2];
            let _ = respond_bytes(&mut stream, "200 OK", "application/json", cut, true).await;
            return;
        }
        Some(Fault::SlowDrip) if path == "/v2/events" => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            // One byte of an endless `data:` line at a time, for at most a minute.
            for _ in 0..1200 {
                if stream.write_all(b"1\r\nx\r\n").await.is_err() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            return;
        }
        _ => {}
    }
    if path == "/v2/events" {
        if !request
            .accept
            .as_deref()
            .unwrap_or("")
            .contains("text/event-stream")
        {
            let _ = respond(&mut stream, "406 Not Acceptable", "text/plain", "").await;
            return;
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        state.lock().unwrap().streams.push(tx);
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        record(&state, path, head.len());
        while let Some(Some(bytes)) = rx.recv().await {
            let chunk = [
                format!("{:x}\r\n", bytes.len()).into_bytes(),
                bytes,
                b"\r\n".to_vec(),
            ]
            .concat();
            if stream.write_all(&chunk).await.is_err() {
                return;
            }
            record(&state, path, chunk.len());
        }
        // Dropped: close without the terminating chunk, as a failing server would.
        return;
    }
    if path == "/v2/apps" {
        let body = json!({ "apps": &*apps }).to_string().into_bytes();
        let body = if gzip { compress(&body) } else { body };
        let _ = respond_bytes(&mut stream, "200 OK", "application/json", &body, gzip).await;
        record(&state, path, body.len());
        return;
    }
    if let Some(id) = path.strip_prefix("/v2/apps") {
        match apps.iter().find(|a| a["id"] == id) {
            Some(app) => {
                let body = json!({ "app": app }).to_string().into_bytes();
                let body = if gzip { compress(&body) } else { body };
                let _ = respond_bytes(&mut stream, "200 OK", "application/json", &body, gzip).await;
                record(&state, path, body.len());
            }
            None => {
                let body = json!({ "message": format!("App '{id}' does not exist") }).to_string();
                let _ = respond(&mut stream, "404 Not Found", "application/json", &body).await;
            }
        }
        return;
    }
    let _ = respond(&mut stream, "404 Not Found", "text/plain", "").await;
}

fn record(state: &Mutex<State>, path: &str, bytes: usize) {
    state.lock().unwrap().served.push(Served {
        at: std::time::Instant::now(),
        path: path.to_string(),
        bytes,
    });
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    kind: &str,
    body: &str,
) -> std::io::Result<()> {
    respond_bytes(stream, status, kind, body.as_bytes(), false).await
}

async fn respond_bytes(
    stream: &mut TcpStream,
    status: &str,
    kind: &str,
    body: &[u8],
    gzip: bool,
) -> std::io::Result<()> {
    let encoding = if gzip {
        "Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n{encoding}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

/// gzip, as Marathon's server sends it.
pub fn compress(body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body).unwrap();
    encoder.finish().unwrap()
}

/// An app in Marathon's JSON shape with host networking and one service port.
pub fn app(id: &str, service_port: u16, labels: Value, tasks: Vec<Value>) -> Value {
    json!({
        "id": id,
        "labels": labels,
        "instances": tasks.len(),
        "portDefinitions": [{ "port": service_port, "protocol": "tcp", "name": "main" }],
        "healthChecks": [],
        "tasks": tasks,
        "deployments": [],
        "version": "2026-11-22T00:00:00.000Z"
    })
}

/// A running task on 127.0.0.1 at `port`.
pub fn task(app_id: &str, task_id: &str, port: u16) -> Value {
    json!({
        "id": task_id,
        "appId": app_id,
        "host": "127.0.0.1",
        "ports": [port],
        "ipAddresses": [{ "ipAddress": "127.0.0.1", "protocol": "IPv4" }],
        "state": "TASK_RUNNING",
        "startedAt": "2026-11-22T00:00:00.000Z",
        "slaveId": "agent-1",
        "version": "2026-11-22T00:00:00.000Z"
    })
}

/// `status_update_event` for a task.
pub fn status_update(app_id: &str, task_id: &str, port: u16, status: &str) -> Value {
    json!({
        "eventType": "status_update_event",
        "timestamp": "2026-11-22T00:00:01.000Z",
        "slaveId": "agent-1",
        "taskId": task_id,
        "taskStatus": status,
        "message": "",
        "appId": app_id,
        "host": "127.0.0.1",
        "ipAddresses": [{ "ipAddress": "127.0.0.1", "protocol": "IPv4" }],
        "ports": [port],
        "version": "2026-11-22T00:00:00.000Z"
    })
}
