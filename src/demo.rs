//! `switchyard demo`: small HTTP backends for every loopback task in the table, so the embedded
//! default answers `curl` with nothing else installed. Each says which task answered. Backends
//! appear as tasks are added to the file; they are never stopped (the table decides routing).
//!
//! It also gives the demo an admin token (see [`write_token`]), so the documented changes
//! (weights) can be tried: without one, the admin API refuses every change.

use std::collections::HashSet;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::snapshot::Store;

pub async fn run(store: Arc<Store>) {
    let mut generations = store.subscribe();
    let mut started: HashSet<SocketAddr> = HashSet::new();
    loop {
        let wanted: Vec<(SocketAddr, String)> = {
            let snapshot = store.load();
            snapshot
                .table
                .services
                .iter()
                .flat_map(|s| s.backends.iter())
                .filter(|b| b.addr.ip().is_loopback() && !started.contains(&b.addr))
                .map(|b| (b.addr, b.task_id.to_string()))
                .collect()
        };
        for (addr, task) in wanted {
            if !started.insert(addr) {
                continue;
            }
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => {
                    tracing::info!(%addr, task, "demo backend started");
                    tokio::spawn(serve(listener, task));
                }
                Err(e) => tracing::warn!(%addr, "demo backend not started: {e}"),
            }
        }
        if generations.changed().await.is_err() {
            return;
        }
    }
}

async fn serve(listener: tokio::net::TcpListener, task: String) {
    let addr = listener.local_addr().ok();
    let reply = Bytes::from(match addr {
        Some(addr) => format!("hello from task {task} at {addr}\n"),
        None => format!("hello from task {task}\n"),
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let reply = reply.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_req| {
                let reply = reply.clone();
                async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(reply))) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The demo's admin token file, beside the apps file it reads (`config/` for the embedded default).
pub const TOKEN_FILE: &str = "demo-admin-token";

/// Writes a fresh random admin token to `dir/demo-admin-token`, readable by this user only
/// (0600), and returns its path. The file is written beside and renamed over, never opened
/// through an existing name, so a symlink planted there is replaced, not followed. The caller
/// gives it to the admin listener only when that listens on loopback.
pub fn write_token(dir: &Path) -> std::io::Result<PathBuf> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 24];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| std::io::Error::other("no system randomness"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join(TOKEN_FILE);
    let partial = dir.join(format!(".{TOKEN_FILE}.{}", std::process::id()));
    let _ = std::fs::remove_file(&partial);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .and_then(|mut f| f.write_all(format!("{token}\n").as_bytes()));
    if let Err(e) = written.and_then(|()| std::fs::rename(&partial, &path)) {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    Ok(path)
}
