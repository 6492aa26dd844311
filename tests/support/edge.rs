//! An edge switchyard for the HTTP tests, and a raw HTTP/1.1 client that shows exactly what came
//! back. The edge reads its apps from a file (polled every 20 ms, so a test changes the cluster by
//! rewriting it) and serves one vhost listener on a free loopback port; each test file adds its
//! own keys per section instead of carrying its own copy of the whole setup.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{DEADLINE, Switchyard, free_port, local, temp_dir, wait_for, write_apps};

/// A running edge: the process, its apps file and its vhost listener.
pub struct Edge {
    pub sy: Switchyard,
    pub file: PathBuf,
    pub http: SocketAddr,
}

/// More TOML for the edge's sections, appended to what every edge has.
#[derive(Default, Clone, Copy)]
pub struct Sections<'a> {
    pub proxy: &'a str,
    pub http: &'a str,
    pub admin: &'a str,
}

impl Edge {
    /// Starts an edge serving `apps` and waits until it is ready.
    pub async fn start(name: &str, apps: Vec<Value>, sections: Sections<'_>) -> Edge {
        let dir = temp_dir(name);
        let file = dir.join("apps.json");
        write_apps(&file, apps);
        let http = local(free_port());
        let toml = format!(
            "[discovery]\nfile = {:?}\nfile_poll_interval = \"20ms\"\n\
             [proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n{}\n\
             [http]\nlisten = [\"{http}\"]\n{}\n",
            file.display().to_string(),
            sections.proxy,
            sections.http,
        );
        let sy = Switchyard::start_with_admin(name, &toml, sections.admin);
        wait_for("ready", || async {
            (sy.get("/readyz").await.0 == 200).then_some(())
        })
        .await;
        Edge { sy, file, http }
    }
}

/// One raw HTTP/1.1 request (`head` without its blank line; `Connection: close` is added) on its
/// own connection: status, headers (lowercased names, in order) and body as text.
pub async fn raw_request(addr: SocketAddr, head: &str) -> (u16, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status.parse().unwrap(), headers, body.to_string())
}

/// The first value of the header `name` (lowercase) in what [`raw_request`] returned.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
