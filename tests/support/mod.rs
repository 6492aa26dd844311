//! Shared by the end-to-end tests: the switchyard binary as a child process, real backends on
//! loopback, a tiny HTTP client, and waiting on conditions with a deadline (never sleeping).

#![allow(dead_code)]

pub mod browser;
pub mod edge;
pub mod marathon;
pub mod mesos;
pub mod pki;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const DEADLINE: Duration = Duration::from_secs(15);

/// Polls `check` until it returns `Some`, or panics with `what` after [`DEADLINE`].
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes a Marathon-shaped apps file atomically (a rename), as editors and config tools do.
/// A response stream without the `date` lines the proxy adds (RFC 9110 §6.6.1), so that tests
/// can compare the rest byte for byte; the number of lines taken out.
#[allow(dead_code)]
pub fn undated(bytes: &[u8]) -> (Vec<u8>, usize) {
    const LINE: usize = "\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT".len();
    let mut out = Vec::with_capacity(bytes.len());
    let mut removed = 0;
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() >= LINE
            && rest[..8].eq_ignore_ascii_case(b"\r\ndate: ")
            && rest[LINE - 4..LINE] == *b" GMT"
        {
            removed += 1;
            at += LINE;
            continue;
        }
        out.push(bytes[at]);
        at += 1;
    }
    (out, removed)
}

pub fn write_apps(path: &std::path::Path, apps: Vec<Value>) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::json!({ "apps": apps }).to_string()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `127.0.0.1:port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A port that was free a moment ago, for listeners whose port is named in a label or a config.
/// Taken from below the kernel's ephemeral range (32768 and up), so no outgoing connection of a
/// parallel test can take it in between; calls in one process move on through the range from a
/// start that depends on the pid, so parallel test processes rarely meet, and a port is only
/// handed out when TCP and UDP both bind it.
pub fn free_port() -> u16 {
    const LOW: usize = 20_000;
    const SPAN: usize = 12_000;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let start = std::process::id() as usize * 7_919 % SPAN;
    for _ in 0..SPAN {
        let port = (LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        let free = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if free {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN)
}

pub fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "switchyard-test-{}-{}-{}",
        name,
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The switchyard binary running with a generated config; killed on drop.
pub struct Switchyard {
    pub child: Child,
    pub admin: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
    pub dir: PathBuf,
}

impl Switchyard {
    /// Starts switchyard with `discovery` and extra TOML appended. Admin binds port 0; the
    /// bound address is read from the log.
    pub fn start(name: &str, toml: &str) -> Switchyard {
        Switchyard::start_with_admin(name, toml, "")
    }

    /// As [`Switchyard::start`], with more keys for the `[admin]` section.
    pub fn start_with_admin(name: &str, toml: &str, admin: &str) -> Switchyard {
        Switchyard::start_with_env(name, toml, admin, &[])
    }

    /// As [`Switchyard::start_with_admin`], with environment variables for the process.
    pub fn start_with_env(name: &str, toml: &str, admin: &str, env: &[(&str, &str)]) -> Switchyard {
        let dir = temp_dir(name);
        let config = dir.join("switchyard.toml");
        let full = format!(
            "{toml}\n[admin]\nlisten = \"127.0.0.1:0\"\n{admin}\n[log]\nlevel = \"info,switchyard=debug\"\n"
        );
        std::fs::write(&config, full).unwrap();
        let mut command = Switchyard::command(&config, &[]);
        command.envs(env.iter().copied());
        Switchyard::spawn(dir, command)
    }

    /// Runs switchyard on an existing configuration file with more arguments; `dir` is removed
    /// when it stops.
    pub fn launch(dir: PathBuf, config: &std::path::Path, args: &[&str]) -> Switchyard {
        Switchyard::spawn(dir, Switchyard::command(config, args))
    }

    /// The binary on `config` with more arguments, not yet started.
    fn command(config: &std::path::Path, args: &[&str]) -> Command {
        // `SWITCHYARD_BIN`: another build of the binary (a benchmark's before and after).
        let binary = std::env::var_os("SWITCHYARD_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_switchyard").into());
        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(config)
            .args(args)
            .env_remove("RUST_LOG");
        command
    }

    /// Runs a prepared command that ends in switchyard (`sh -c "... && exec ./switchyard ..."`
    /// as Marathon runs an app's `cmd`); the admin address is read from its log.
    pub fn spawn(dir: PathBuf, mut command: Command) -> Switchyard {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // A binary copied just before (a sandbox, a systemd root) can be "busy" for a moment:
        // another test thread that forked while the copy was open holds it until its exec.
        let mut tries = 0;
        let mut child = loop {
            match command.spawn() {
                Err(e) if e.raw_os_error() == Some(26 /* ETXTBSY */) && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                spawned => break spawned.expect("start switchyard"),
            }
        };
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("admin listening on ").nth(1) {
                    let _ = tx.send(addr.trim().parse::<SocketAddr>().unwrap());
                }
                if std::env::var_os("SWITCHYARD_TEST_LOG").is_some() {
                    eprintln!("[switchyard] {line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        let admin = rx
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("switchyard did not start: {:?}", logs.lock().unwrap()));
        Switchyard {
            child,
            admin,
            logs,
            dir,
        }
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path).await.expect("admin answers")
    }

    /// The first response-time p50 in the dashboard's history (`/v1/history`, read without a
    /// token), if any sample has one yet.
    pub async fn history_p50_ms(&self) -> Option<f64> {
        let (status, body) = self.get("/v1/history").await;
        assert_eq!(status, 200, "{body}");
        let history: Value = serde_json::from_str(&body).unwrap();
        history["routes"]
            .as_array()?
            .iter()
            .flat_map(|r| r["versions"].as_array().into_iter().flatten())
            .flat_map(|v| v["points"].as_array().into_iter().flatten())
            .find_map(|p| p["p50_ms"].as_f64())
    }

    pub async fn routes(&self) -> Value {
        let (status, body) = self.get("/v1/routes").await;
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until the live table satisfies `check`.
    pub async fn wait_routes(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        wait_for(what, || async {
            let routes = self.routes().await;
            check(&routes).then_some(routes)
        })
        .await
    }

    /// One metric sample's value, summed over series whose line contains every `needle`.
    pub async fn metric(&self, name: &str, needles: &[&str]) -> f64 {
        let (_, body) = self.get("/metrics").await;
        body.lines()
            .filter(|l| l.starts_with(name) && needles.iter().all(|n| l.contains(n)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Resident memory, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb * 1024
    }

    /// Waits for the process to exit; its status code.
    pub async fn exited(&mut self) -> Option<i32> {
        wait_for("switchyard to exit", || {
            let status = self.child.try_wait().unwrap();
            async move { status.map(|s| s.code()) }
        })
        .await
    }
}

impl Drop for Switchyard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Backend addresses of the service listening on `port`, sorted.
pub fn backends(routes: &Value, port: u16) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = routes["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["listen"].as_str().unwrap().ends_with(&format!(":{port}")))
        .flat_map(|s| s["backends"].as_array().unwrap().iter())
        .map(|b| b["address"].as_str().unwrap().parse().unwrap())
        .collect();
    out.sort();
    out
}

pub fn has_service(routes: &Value, port: u16) -> bool {
    routes["services"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["listen"].as_str().unwrap().ends_with(&format!(":{port}")))
}

/// An HTTP/2 client connection (h2c, prior knowledge) to `addr`, driven on a task of its own.
pub async fn h2c_client<B>(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

/// A minimal HTTP/1.1 GET over a fresh connection (`Connection: close`): status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let fut = async {
        let mut stream = TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        let (head, body) = http_message(&buf);
        let body = body.ok_or_else(|| std::io::Error::other("a chunked body broken off"))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
        Ok((status, body))
    };
    tokio::time::timeout(DEADLINE, fut)
        .await
        .map_err(|_| std::io::Error::other("timed out"))?
}

/// A whole response read to the close: its head, and its body (its chunks joined when it came
/// chunked, as the admin API's large answers do), as text; `None` for a chunked body that
/// is broken off or malformed.
fn http_message(raw: &[u8]) -> (String, Option<String>) {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (
            String::from_utf8_lossy(raw).to_string(),
            Some(String::new()),
        );
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let body = &raw[split + 4..];
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    if !chunked {
        return (head, Some(String::from_utf8_lossy(body).to_string()));
    }
    let joined = switchyard::cli::dechunked(body);
    (
        head,
        joined.map(|joined| String::from_utf8_lossy(&joined).to_string()),
    )
}

/// One HTTP/1.1 request over a fresh connection with extra headers and a body: status, response
/// headers (lowercase names) and body.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let fut = async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(DEADLINE, fut)
        .await
        .expect("answer in time")
        .expect("admin answers");
    let (head, body) = http_message(&buf);
    let body = body.unwrap_or_else(|| panic!("a chunked body broken off after {head:?}"));
    let text = &head;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// An HTTP backend that answers every request with its name, counting connections accepted.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let reply: Arc<str> = name.into();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                let reply = reply.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let body = if req.uri().path() == "/echo-headers" {
                                format!("{:?}", req.headers())
                            } else {
                                reply.to_string()
                            };
                            let slow = req.uri().path() == "/slow";
                            async move {
                                if slow {
                                    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
                                }
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from(body)),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend {
            addr,
            name: name.to_string(),
            connections,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP echo backend.
pub async fn echo_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, task)
}

/// GETs `/` through a service port until the answer set covers `names` (round robin visits
/// every backend); returns the answers seen.
pub async fn answers(port: u16, rounds: usize) -> Vec<String> {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut out = Vec::new();
    for _ in 0..rounds {
        if let Ok((200, body)) = http_get(addr, "/").await {
            out.push(body);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Connects to `to` from `from` (any address of 127.0.0.0/8): tests of what is counted or
/// trusted per client address speak from addresses of their own.
pub async fn connect_from(from: std::net::IpAddr, to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// 127.0.0.`last`.
pub fn lo(last: u8) -> std::net::IpAddr {
    std::net::IpAddr::from([127, 0, 0, last])
}
