//! Zero-downtime binary upgrade end to end: under a steady load of new connections, a second
//! switchyard takes the listening sockets over (`run --upgrade`), the first drains a connection
//! it holds and exits 0, and not one connection is refused or request failed.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::json;
use support::marathon::{app, task};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_new_process_takes_the_sockets_over_without_refusing_a_connection() {
    let web = Backend::start("web").await;
    let (echo, _echo_task) = echo_backend().await;
    let (http_port, tcp_port, vhost_port, dns_port) =
        (free_port(), free_port(), free_port(), free_port());
    let dir = temp_dir("upgrade-apps");
    let file = dir.join("apps.json");
    let apps = json!({"apps": [
        app("/web", http_port,
            json!({"HAPROXY_0_MODE": "http", "HAPROXY_0_VHOST": "web.example.com"}),
            vec![task("/web", "web.1", web.port())]),
        app("/echo", tcp_port, json!({}), vec![task("/echo", "echo.1", echo.port())]),
    ]});
    std::fs::write(&file, apps.to_string()).unwrap();
    let socket = dir.join("upgrade.sock");
    let toml = format!(
        "[discovery]\nfile = {:?}\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n\
         drain_timeout = \"10s\"\n[http]\nlisten = [\"127.0.0.1:{vhost_port}\"]\n\
         [dns]\nlisten = \"127.0.0.1:{dns_port}\"\n[runtime]\nupgrade_socket = {:?}\n",
        file.display().to_string(),
        socket.display().to_string()
    );
    let mut old = Switchyard::start("upgrade-old", &toml);
    old.wait_routes("served", |r| {
        has_service(r, http_port) && has_service(r, tcp_port)
    })
    .await;
    wait_for("upgrade socket", || async { socket.exists().then_some(()) }).await;

    // A TCP connection that lives through the hand-over, served by the old process.
    let mut long_lived = TcpStream::connect(local(tcp_port)).await.unwrap();
    let mut buf = [0u8; 5];
    long_lived.write_all(b"hello").await.unwrap();
    long_lived.read_exact(&mut buf).await.unwrap();

    // Load: new connections, one request each, on the service port and the vhost listener.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for target in [local(http_port), local(vhost_port)] {
        for _ in 0..2 {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            load.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match vhost_get(target).await {
                        Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!("failed: {other:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            }));
        }
    }
    wait_for("load running", || async {
        (ok.load(Ordering::Relaxed) > 100).then_some(())
    })
    .await;

    let config = old.dir.join("switchyard.toml");
    let mut new = Switchyard::launch(temp_dir("upgrade-new"), &config, &["--upgrade"]);
    wait_for("the old process hands over", || async {
        (!old.log_lines("the new process is ready").is_empty()).then_some(())
    })
    .await;
    // The old process drains: the connection it holds still works ...
    long_lived.write_all(b"again").await.unwrap();
    long_lived.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"again");
    assert!(old.alive(), "the old process waits for its connection");
    // ... and once it is closed, the old process exits cleanly.
    drop(long_lived);
    assert_eq!(old.exited().await, Some(0));

    // The new process serves everything on the same sockets: HTTP, TCP, DNS.
    let served_before = ok.load(Ordering::Relaxed);
    wait_for("load served by the new process", || async {
        (ok.load(Ordering::Relaxed) > served_before + 200).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let mut stream = TcpStream::connect(local(tcp_port)).await.unwrap();
    stream.write_all(b"after").await.unwrap();
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"after");
    let query = std::process::Command::new("dig")
        .args(["+short", "+tries=1", "+time=2", "-p", &dns_port.to_string()])
        .args(["@127.0.0.1", "web.marathon.mesos"])
        .output();
    if let Ok(out) = query {
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "127.0.0.1");
    }
    eprintln!(
        "requests during the upgrade: {} served, {} failed",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(new.alive());
    assert!(
        new.metric("switchyard_backend_connections_total", &[])
            .await
            > 0.0
    );
}

/// One request on a new connection, with the vhost's Host: the status.
async fn vhost_get(addr: SocketAddr) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut response))
        .await
        .map_err(|_| std::io::Error::other("timeout"))??;
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {text:?}")))
}
