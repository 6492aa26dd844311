//! `switchyard demo`: small HTTP backends for every loopback task in the table, so the embedded
//! default answers `curl` with nothing else installed. Each says which task answered. Backends
//! appear as tasks are added to the file; they are never stopped (the table decides routing).

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
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
