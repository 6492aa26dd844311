//! The L4 data plane against misbehaving peers and at scale: resets pass through as resets, a
//! clean close stays clean, stalled flows are released by the idle timeout, and what an idle
//! TCP connection or a UDP session costs in memory (reported; bounded with headroom).
//!
//! `L4_BENCH_BIN=/path/to/switchyard` runs the two memory tests against another build (for
//! before/after figures); by default they run against this one.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use support::marathon::{Marathon, app, task};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn start(name: &str, toml: String) -> Switchyard {
    match std::env::var_os("L4_BENCH_BIN") {
        None => Switchyard::start(name, &toml),
        Some(bin) => {
            let dir = temp_dir(name);
            let config = dir.join("switchyard.toml");
            let full = format!(
                "{toml}\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"info,switchyard=debug\"\n"
            );
            std::fs::write(&config, full).unwrap();
            let mut command = std::process::Command::new(bin);
            command.arg("--config").arg(&config).env_remove("RUST_LOG");
            Switchyard::spawn(dir, command)
        }
    }
}

/// Switchyard serving one TCP app on `port` with the given backend ports and labels.
async fn tcp_port(name: &str, port: u16, backend: u16, labels: Value) -> (Switchyard, PathBuf) {
    let dir = temp_dir(name);
    let file = dir.join("apps.json");
    let tasks = vec![task("/t", "t.0", backend)];
    write_apps(&file, vec![app("/t", port, labels, tasks)]);
    let toml = format!(
        "[discovery]\nfile = {:?}\nfile_poll_interval = \"20ms\"\n\
         [proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n",
        file.display().to_string()
    );
    let sy = start(name, toml);
    sy.wait_routes("tcp port", |r| has_service(r, port)).await;
    (sy, file)
}

/// Closes with a reset rather than a FIN.
fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
}

/// Reads to the end: the bytes, and how it ended.
async fn read_all(stream: &mut TcpStream) -> (usize, std::io::Result<()>) {
    let mut total = 0;
    let mut buf = vec![0u8; 65536];
    let end = tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => total += n,
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the stream ended");
    (total, end)
}

async fn active(sy: &Switchyard) -> f64 {
    sy.metric("switchyard_backend_active_connections", &[])
        .await
}

#[tokio::test]
async fn a_reset_on_either_side_reaches_the_other_as_a_reset_and_a_clean_close_stays_clean() {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = free_port();
    let (sy, _file) = tcp_port(
        "l4-reset",
        port,
        backend.local_addr().unwrap().port(),
        json!({}),
    )
    .await;
    let upload = vec![7u8; 256 * 1024];

    // A client that resets mid-upload: the backend must not see a complete upload (EOF).
    let mut client = wait_for("service port open", || async {
        TcpStream::connect(local(port)).await.ok()
    })
    .await;
    let (mut server, _) = backend.accept().await.unwrap();
    client.write_all(&upload).await.unwrap();
    reset(client);
    let (_, end) = read_all(&mut server).await;
    let error = end.expect_err("a reset, not a clean end of the upload");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");

    // A backend that resets mid-download: the client sees an error, not a clean end.
    let mut client = TcpStream::connect(local(port)).await.unwrap();
    let (mut server, _) = backend.accept().await.unwrap();
    server.write_all(&upload).await.unwrap();
    reset(server);
    let (_, end) = read_all(&mut client).await;
    let error = end.expect_err("an error, not a clean end of the download");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");

    // A clean close both ways, with a half-close in between, stays clean and complete.
    let mut client = TcpStream::connect(local(port)).await.unwrap();
    let (mut server, _) = backend.accept().await.unwrap();
    client.write_all(&upload).await.unwrap();
    client.shutdown().await.unwrap();
    let (got, end) = read_all(&mut server).await;
    assert!(end.is_ok() && got == upload.len(), "{got} bytes, {end:?}");
    server.write_all(&upload).await.unwrap();
    server.shutdown().await.unwrap();
    let (got, end) = read_all(&mut client).await;
    assert!(end.is_ok() && got == upload.len(), "{got} bytes, {end:?}");

    wait_for("no active backend connection", || async {
        (active(&sy).await == 0.0).then_some(())
    })
    .await;
}

/// Short exchanges whose last bytes arrive together with their FIN (the relay sends them with
/// that FIN in one segment): every byte arrives, then a clean end, each way, in either order
/// of the two closes.
#[tokio::test]
async fn last_bytes_and_their_fin_arrive_whole_and_clean() {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = free_port();
    let (sy, _file) = tcp_port(
        "l4-fin",
        port,
        backend.local_addr().unwrap().port(),
        json!({}),
    )
    .await;
    let _ = wait_for("service port open", || async {
        TcpStream::connect(local(port)).await.ok()
    })
    .await;
    let _ = backend.accept().await.unwrap();
    for round in 0..20 {
        let request = format!("request {round}\n").repeat(round + 1);
        let response = format!("response {round}\n").repeat(3 * round + 1);
        let mut client = TcpStream::connect(local(port)).await.unwrap();
        let (mut server, _) = backend.accept().await.unwrap();
        // Bytes and FIN in one go from the client; the backend answers after the request's end
        // (or, every other round, before it: the two closes in the other order).
        client.write_all(request.as_bytes()).await.unwrap();
        if round % 2 == 0 {
            client.shutdown().await.unwrap();
        }
        if round % 2 == 1 {
            server.write_all(response.as_bytes()).await.unwrap();
            server.shutdown().await.unwrap();
            let (got, end) = read_all(&mut client).await;
            assert!(end.is_ok() && got == response.len(), "{got} bytes, {end:?}");
            client.shutdown().await.unwrap();
            let (got, end) = read_all(&mut server).await;
            assert!(end.is_ok() && got == request.len(), "{got} bytes, {end:?}");
        } else {
            let (got, end) = read_all(&mut server).await;
            assert!(end.is_ok() && got == request.len(), "{got} bytes, {end:?}");
            server.write_all(response.as_bytes()).await.unwrap();
            server.shutdown().await.unwrap();
            let (got, end) = read_all(&mut client).await;
            assert!(end.is_ok() && got == response.len(), "{got} bytes, {end:?}");
        }
    }
    wait_for("no active backend connection", || async {
        (active(&sy).await == 0.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_stalled_backend_whose_client_left_is_released_by_the_idle_timeout() {
    // The backend accepts and never reads; its receive buffer is small, so the proxy's writes
    // to it block.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(16).unwrap();
    socket.set_nonblocking(true).unwrap();
    let backend = TcpListener::from_std(socket.into()).unwrap();
    let port = free_port();
    let (sy, _file) = tcp_port(
        "l4-stall",
        port,
        backend.local_addr().unwrap().port(),
        json!({ "SWITCHYARD_0_TCP_IDLE_TIMEOUT": "1s" }),
    )
    .await;
    for leaves_with_reset in [false, true] {
        let client = wait_for("service port open", || async {
            TcpStream::connect(local(port)).await.ok()
        })
        .await;
        let (mut server, _) = backend.accept().await.unwrap();
        // More than every buffer on the way holds: the upload stalls at the backend.
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let uploader = tokio::spawn(async move {
            let mut client = client;
            let chunk = vec![1u8; 1 << 20];
            tokio::select! {
                _ = async { while client.write_all(&chunk).await.is_ok() {} } => {}
                _ = stopped => {}
            }
            client
        });
        wait_for("the backend connection counted", || async {
            (active(&sy).await == 1.0).then_some(())
        })
        .await;
        // The client goes away while its upload is stuck.
        let _ = stop.send(());
        let client = uploader.await.unwrap();
        if leaves_with_reset {
            reset(client);
        } else {
            drop(client);
        }
        wait_for("the stalled backend connection released", || async {
            (active(&sy).await == 0.0).then_some(())
        })
        .await;
        // The backend, reading at last, finds the stream broken off, not complete.
        let (_, end) = read_all(&mut server).await;
        assert!(end.is_err(), "reset after the stall, not a clean end");
    }
    assert!(
        sy.log_lines("TCP_IDLE_TIMEOUT").is_empty(),
        "a good label raises no problem"
    );
}

/// Held by the tests that take thousands of this process's descriptors (10,000 TCP connections,
/// 5,000 UDP sessions) or count the proxy's own: the test harness runs a binary's tests side by
/// side, and one such test beside another ran this process out of descriptors under its hard
/// limit (its backend stopped accepting, so the proxy reset clients).
static FD_HUNGRY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Raises this process's open-file limit (switchyard inherits it); false when it cannot.
fn raise_fd_limit(want: u64) -> bool {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return false;
        }
        if limit.rlim_cur >= want {
            return true;
        }
        limit.rlim_cur = want;
        limit.rlim_max = limit.rlim_max.max(want);
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
    }
}

fn fds(sy: &Switchyard) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", sy.child.id()))
        .unwrap()
        .count()
}

/// The soft open-file limit under which the proxy has exactly `free` descriptor numbers left.
/// The limit bounds the numbers a new descriptor can take, not how many are open: one opened
/// before the limit was lowered can sit above it, and a closed one leaves a hole below.
fn limit_leaving_free(sy: &Switchyard, free: usize) -> u64 {
    let open: std::collections::HashSet<u64> =
        std::fs::read_dir(format!("/proc/{}/fd", sy.child.id()))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
    (0..)
        .filter(|n| !open.contains(n))
        .nth(free - 1)
        .expect("a free number")
        + 1
}

/// This process's open-file limits (soft, hard).
fn fd_limits() -> (u64, u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a plain system call on a local struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (limit.rlim_cur, limit.rlim_max)
}

const IDLE_CONNECTIONS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_tcp_connections_cost_a_few_kilobytes_each() {
    let _alone = FD_HUNGRY.lock().await;
    // Switchyard holds two sockets per connection, and so does this process (client and
    // backend). Where the hard limit is below what 10,000 take and cannot be raised, as many
    // as fit are measured (the figure is per connection), and the test says so.
    let slack = 1200;
    let connections = if raise_fd_limit(2 * IDLE_CONNECTIONS as u64 + slack) {
        IDLE_CONNECTIONS
    } else {
        let hard = fd_limits().1;
        raise_fd_limit(hard);
        let fit = (hard.saturating_sub(slack) / 2) as usize;
        if fit < 1000 {
            eprintln!("skipped: the open-file limit ({hard}) cannot be raised (RLIMIT_NOFILE)");
            return;
        }
        eprintln!(
            "the open-file limit cannot be raised to {} (hard limit {hard}): measuring {fit} \
             connections instead of {IDLE_CONNECTIONS}",
            2 * IDLE_CONNECTIONS as u64 + slack
        );
        fit
    };
    // An echo backend that keeps every connection.
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_port = backend.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let mut stream = match backend.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Said, so that a client reset that follows is explained.
                    eprintln!("the echo backend could not accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let port = free_port();
    let (sy, _file) = tcp_port("l4-idle", port, backend_port, json!({})).await;
    wait_for("service port open", || async {
        TcpStream::connect(local(port)).await.ok()
    })
    .await;
    wait_for("warm-up connection gone", || async {
        (active(&sy).await == 0.0).then_some(())
    })
    .await;
    let before = sy.rss_bytes();
    let mut clients = Vec::with_capacity(connections);
    for i in 0..connections {
        let mut stream = TcpStream::connect(local(port)).await.unwrap();
        // One exchange each, so that every direction has taken a buffer and given it back.
        let msg = (i as u64).to_be_bytes();
        stream.write_all(&msg).await.unwrap();
        let mut echo = [0u8; 8];
        tokio::time::timeout(DEADLINE, stream.read_exact(&mut echo))
            .await
            .expect("echoed")
            .unwrap();
        assert_eq!(echo, msg);
        clients.push(stream);
    }
    wait_for("every connection counted", || async {
        (active(&sy).await == connections as f64).then_some(())
    })
    .await;
    let after = sy.rss_bytes();
    let per = after.saturating_sub(before) as f64 / connections as f64;
    eprintln!(
        "RSS per idle proxied TCP connection: {:.0} bytes ({:.2} KiB) over {connections} \
         connections; RSS {:.1} MiB before, {:.1} MiB after; {} fds",
        per,
        per / 1024.0,
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        fds(&sy)
    );
    if std::env::var_os("L4_BENCH_BIN").is_none() {
        assert!(
            per <= 8.0 * 1024.0,
            "an idle connection costs {per:.0} bytes (goal: 8 KiB)"
        );
    }
    drop(clients);
    wait_for("every connection closed", || async {
        (active(&sy).await == 0.0).then_some(())
    })
    .await;
}

async fn udp_echo() -> u16 {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], peer).await;
        }
    });
    port
}

const UDP_SESSIONS: usize = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_udp_sessions_free_their_sockets_and_a_session_costs_a_few_kilobytes() {
    let _alone = FD_HUNGRY.lock().await;
    if !raise_fd_limit(2 * UDP_SESSIONS as u64 + 1024) {
        eprintln!("skipped: the open-file limit cannot be raised (RLIMIT_NOFILE)");
        return;
    }
    let port = udp_echo().await;
    let marathon = Marathon::start().await;
    let vip_port = free_port();
    let mut a = app("/echo", 0, json!({}), vec![task("/echo", "echo.1", port)]);
    a["portDefinitions"][0]["protocol"] = json!("udp");
    a["portDefinitions"][0]["labels"] = json!({ "VIP_0": format!("127.89.0.10:{vip_port}") });
    marathon.set_apps(vec![a]);
    let config = format!(
        "[discovery]\nmarathon = [\"{}\"]\n[proxy]\ngroup = \"external\"\n[vip]\n\
         udp_idle_timeout = \"8s\"\nudp_max_sessions = {}\n",
        marathon.url(),
        UDP_SESSIONS + 100
    );
    let sy = start("l4-udp", config);
    let vip: SocketAddr = format!("127.89.0.10:{vip_port}").parse().unwrap();
    let roundtrip = |socket: std::sync::Arc<tokio::net::UdpSocket>| async move {
        let mut buf = [0u8; 64];
        for _ in 0..50 {
            socket.send_to(b"ping", vip).await.unwrap();
            if let Ok(Ok((4, _))) =
                tokio::time::timeout(Duration::from_millis(200), socket.recv_from(&mut buf)).await
            {
                return true;
            }
        }
        false
    };
    let first = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    wait_for("the VIP answers", || {
        let first = first.clone();
        async move { roundtrip(first).await.then_some(()) }
    })
    .await;
    // The first session expires: what is left is the baseline.
    let baseline = wait_for("the first session's socket freed", || async {
        let live = active(&sy).await;
        (live == 0.0).then(|| fds(&sy))
    })
    .await;
    let before = sy.rss_bytes();
    let mut clients = Vec::with_capacity(UDP_SESSIONS);
    for _ in 0..UDP_SESSIONS {
        let socket = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        assert!(roundtrip(socket.clone()).await, "a session answers");
        clients.push(socket);
    }
    let during = fds(&sy);
    let after = sy.rss_bytes();
    let per = after.saturating_sub(before) as f64 / UDP_SESSIONS as f64;
    eprintln!(
        "RSS per UDP session: {:.0} bytes ({:.2} KiB) over {UDP_SESSIONS} sessions; \
         fds {baseline} before, {during} with the sessions",
        per,
        per / 1024.0
    );
    // (Give or take the admin connections the metric reads open.)
    assert!(
        during + 2 >= baseline + UDP_SESSIONS,
        "a socket per session: {during} fds, {baseline} before"
    );
    if std::env::var_os("L4_BENCH_BIN").is_none() {
        assert!(
            per <= 8.0 * 1024.0,
            "a session costs {per:.0} bytes (goal: 8 KiB)"
        );
    }
    // Nothing more arrives: the sessions expire and their sockets close, without a new flow or
    // a full table to make room.
    wait_for("expired sessions' sockets freed", || async {
        let now = fds(&sy);
        (now <= baseline + 2).then_some(())
    })
    .await;
    assert_eq!(active(&sy).await, 0.0);
}

/// Reads an HTTP head byte by byte (nothing past it).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(DEADLINE, stream.read_exact(&mut byte))
            .await
            .expect("a head")
            .unwrap();
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).to_string()
}

#[tokio::test]
async fn the_tunnel_of_an_upgrade_passes_resets_on_both_ways() {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = free_port();
    let (sy, _file) = tcp_port(
        "l4-tunnel",
        port,
        backend.local_addr().unwrap().port(),
        json!({ "HAPROXY_0_MODE": "http" }),
    )
    .await;
    let handshake = "GET /chat HTTP/1.1\r\nHost: ws.example.com\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\n\r\n";
    let upgraded = || async {
        let mut client = wait_for("service port open", || async {
            TcpStream::connect(local(port)).await.ok()
        })
        .await;
        client.write_all(handshake.as_bytes()).await.unwrap();
        let (mut server, _) = backend.accept().await.unwrap();
        read_head(&mut server).await;
        server
            .write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            )
            .await
            .unwrap();
        assert!(read_head(&mut client).await.starts_with("HTTP/1.1 101"));
        (client, server)
    };
    let data = vec![5u8; 128 * 1024];

    // The client resets mid-message: the backend sees a reset.
    let (mut client, mut server) = upgraded().await;
    client.write_all(&data).await.unwrap();
    reset(client);
    let (_, end) = read_all(&mut server).await;
    let error = end.expect_err("a reset, not a clean end");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");

    // The backend resets mid-message: the client sees an error.
    let (mut client, mut server) = upgraded().await;
    server.write_all(&data).await.unwrap();
    reset(server);
    let (_, end) = read_all(&mut client).await;
    assert!(end.is_err(), "an error, not a clean end");

    wait_for("no active backend connection", || async {
        (active(&sy).await == 0.0).then_some(())
    })
    .await;
}

/// Switchyard on one worker serving one TCP app on `port` with the given backends and labels:
/// every connection shares one worker's event loop.
async fn one_worker_tcp_port(name: &str, port: u16, backends: &[u16], labels: Value) -> Switchyard {
    let dir = temp_dir(name);
    let file = dir.join("apps.json");
    let tasks = backends
        .iter()
        .enumerate()
        .map(|(i, &b)| task("/t", &format!("t.{i}"), b))
        .collect();
    write_apps(&file, vec![app("/t", port, labels, tasks)]);
    let toml = format!(
        "[discovery]\nfile = {:?}\nfile_poll_interval = \"20ms\"\n\
         [proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n[runtime]\nworkers = 1\n",
        file.display().to_string()
    );
    let sy = start(name, toml);
    sy.wait_routes("tcp port", |r| has_service(r, port)).await;
    sy
}

/// An echo backend: every connection gets back what it sent, then the backend's FIN after the
/// client's.
async fn echo_backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    port
}

/// Many connections at once on one worker: each gets its own bytes back whole, in order, and
/// a clean end; none is left counted afterwards.
#[tokio::test]
async fn many_concurrent_connections_on_one_worker_each_get_their_own_bytes() {
    let backend = echo_backend().await;
    let port = free_port();
    let sy = one_worker_tcp_port("l4-many", port, &[backend], json!({})).await;
    let _ = wait_for("service port open", || async {
        TcpStream::connect(local(port)).await.ok()
    })
    .await;
    let clients: Vec<_> = (0..200u32)
        .map(|i| {
            tokio::spawn(async move {
                let mut client = TcpStream::connect(local(port)).await.unwrap();
                // Sizes from a few bytes to more than a copy buffer.
                let len = 1 + (i as usize * 7919) % (100 * 1024);
                let sent: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
                let (mut r, mut w) = client.split();
                let write = async {
                    w.write_all(&sent).await.unwrap();
                    w.shutdown().await.unwrap();
                };
                let mut got = Vec::new();
                let read = tokio::time::timeout(DEADLINE, r.read_to_end(&mut got));
                let ((), read) = tokio::join!(write, read);
                read.expect("the echo ended").expect("a clean end");
                assert!(
                    got == sent,
                    "connection {i}: {} bytes back of {len}",
                    got.len()
                );
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    wait_for("no active backend connection", || async {
        (active(&sy).await == 0.0).then_some(())
    })
    .await;
    assert_eq!(
        sy.metric("switchyard_backend_connections_total", &[]).await,
        201.0
    );
}

/// A backend that does not answer its SYNs: connecting to it runs into the app's connect
/// timeout, counted as its failure, and the connection goes on to the next backend.
#[tokio::test]
async fn a_connect_timeout_falls_through_to_the_next_backend() {
    // A backend whose accept queue is full and never drained: its SYNs are dropped.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(0).unwrap();
    let stuck = socket.local_addr().unwrap().as_socket().unwrap();
    let mut queued = Vec::new();
    loop {
        assert!(queued.len() < 16, "the accept queue never filled");
        let attempt = tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(stuck));
        match attempt.await {
            Ok(Ok(stream)) => queued.push(stream),
            _ => break,
        }
    }
    let good = echo_backend().await;
    let port = free_port();
    let labels = json!({ "SWITCHYARD_0_CONNECT_TIMEOUT": "200ms" });
    let sy = one_worker_tcp_port("l4-connect-timeout", port, &[stuck.port(), good], labels).await;
    // Round robin: of two connections, one is first offered to the stuck backend.
    for round in 0..4 {
        let mut client = wait_for("service port open", || async {
            TcpStream::connect(local(port)).await.ok()
        })
        .await;
        let message = format!("hello {round}");
        client.write_all(message.as_bytes()).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = String::new();
        tokio::time::timeout(DEADLINE, client.read_to_string(&mut got))
            .await
            .expect("an answer")
            .expect("a clean end");
        assert_eq!(got, message);
    }
    let failures = sy
        .metric(
            "switchyard_backend_connect_failures_total",
            &[&format!("127.0.0.1:{}", stuck.port())],
        )
        .await;
    assert!(failures >= 1.0, "{failures} connect failures counted");
    drop(queued);
}

/// Idle connections on one worker, with their timers in one heap: each one ends when nothing
/// has moved for the idle timeout, the backend side with a reset, and none is left counted.
#[tokio::test]
async fn idle_connections_on_one_worker_each_end_at_their_idle_timeout() {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = free_port();
    let labels = json!({ "SWITCHYARD_0_TCP_IDLE_TIMEOUT": "300ms" });
    let backend_port = backend.local_addr().unwrap().port();
    let sy = one_worker_tcp_port("l4-idle-many", port, &[backend_port], labels).await;
    let first = wait_for("service port open", || async {
        TcpStream::connect(local(port)).await.ok()
    })
    .await;
    let mut pairs = vec![(first, backend.accept().await.unwrap().0)];
    for _ in 1..20 {
        let client = TcpStream::connect(local(port)).await.unwrap();
        let (server, _) = backend.accept().await.unwrap();
        pairs.push((client, server));
    }
    for (mut client, mut server) in pairs {
        let (_, end) = read_all(&mut server).await;
        assert!(end.is_err(), "the backend side broken off, not a clean end");
        let (_, end) = read_all(&mut client).await;
        assert!(end.is_err(), "the client side broken off, not a clean end");
    }
    wait_for("no active backend connection", || async {
        (active(&sy).await == 0.0).then_some(())
    })
    .await;
}

/// Sets the soft open-file limit of another process of this user (its hard limit kept);
/// returns the soft limit it had.
fn set_soft_fd_limit_of(pid: u32, soft: u64) -> u64 {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: system calls on a child of this process with pointers to local structs.
    unsafe {
        let rc = libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old);
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
        let new = libc::rlimit {
            rlim_cur: soft.min(old.rlim_max),
            rlim_max: old.rlim_max,
        };
        let rc = libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut());
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    }
    old.rlim_cur
}

/// Out of file descriptors, a backend connect fails for the proxy's own want: the client is
/// reset, the shortage is counted as the proxy's (`switchyard_local_connect_failures_total`),
/// and no backend is charged for it — none counts a connect failure, none is ejected — so
/// clients holding the proxy's descriptors cannot get healthy backends taken out.
#[tokio::test]
async fn running_out_of_descriptors_is_not_charged_to_the_backends() {
    let _alone = FD_HUNGRY.lock().await;
    let backends = [echo_backend().await, echo_backend().await];
    let port = free_port();
    let sy = one_worker_tcp_port("l4-emfile", port, &backends, json!({})).await;
    let _ = wait_for("service port open", || async {
        TcpStream::connect(local(port)).await.ok()
    })
    .await;
    wait_for("the probe connection closed", || async {
        (active(&sy).await == 0.0).then_some(())
    })
    .await;
    // Seven descriptor numbers left free, then more clients than they can serve: each served
    // client takes two (its own and its backend's), so the one accepted with the last number
    // cannot have its backend socket made and is reset, which frees that number for the next
    // in the queue. If a descriptor in passing (an admin connection still closing, say) took
    // one when the limit was set, the count left is even and every accept after the served
    // clients fails instead; the limit is then set to leave exactly one number free, which the
    // next accept takes. The numbers are read once the count holds still.
    let pid = sy.child.id();
    let mut last = usize::MAX;
    let settled = wait_for("the proxy's descriptors settled", || {
        let now = fds(&sy);
        let same = now == last;
        last = now;
        async move { same.then_some(now) }
    })
    .await;
    let mut limit = limit_leaving_free(&sy, 7);
    let was = set_soft_fd_limit_of(pid, limit);
    let mut clients = Vec::new();
    for _ in 0..24 {
        if let Ok(Ok(client)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(local(port))).await
        {
            clients.push(client);
        }
    }
    let connected = clients.len();
    let mut reset = 0;
    let mut served = Vec::new();
    let mut waiting = Vec::new();
    for mut client in clients {
        if client.write_all(b"x").await.is_err() {
            reset += 1;
        } else {
            waiting.push(client);
        }
    }
    let mut rounds = Vec::new();
    for round in 0..4 {
        if round > 0 {
            if reset > 0 || waiting.is_empty() {
                break;
            }
            limit = limit_leaving_free(&sy, 1);
            set_soft_fd_limit_of(pid, limit);
        }
        // Every waiting client at once: a reset one reads an error or an end; a served one,
        // its byte back (and is kept open: a served client holds its descriptors to the end);
        // one still in the accept queue, nothing within the wait.
        let mut reads = tokio::task::JoinSet::new();
        for mut client in waiting {
            reads.spawn(async move {
                let mut byte = [0u8; 1];
                let read =
                    tokio::time::timeout(Duration::from_millis(500), client.read(&mut byte)).await;
                (client, read.map(|r| r.map_err(drop)))
            });
        }
        waiting = Vec::new();
        while let Some(done) = reads.join_next().await {
            match done.expect("a read task") {
                (client, Ok(Ok(1))) => served.push(client),
                (_, Ok(Ok(_) | Err(()))) => reset += 1,
                (client, Err(_)) => waiting.push(client),
            }
        }
        rounds.push((limit, fds(&sy), served.len(), reset, waiting.len()));
    }
    let echoed = served.len();
    drop((served, waiting));
    set_soft_fd_limit_of(pid, was);
    let seen = format!(
        "{connected} clients connected; descriptors settled at {settled}; \
         per round (limit, held, served, reset, waiting): {rounds:?}; \
         {} accept failures and {} local connect failures logged",
        sy.log_lines("accept failed").len(),
        sy.log_lines("for want of local resources").len()
    );
    assert!(echoed >= 1, "some clients were served: {seen}");
    assert!(reset >= 1, "some clients met the shortage: {seen}");
    for b in backends {
        let addr = format!("127.0.0.1:{b}");
        let failures = sy
            .metric("switchyard_backend_connect_failures_total", &[&addr])
            .await;
        let ejections = sy
            .metric("switchyard_backend_ejections_total", &[&addr])
            .await;
        assert_eq!(
            (failures, ejections),
            (0.0, 0.0),
            "backend {addr} charged for a local shortage"
        );
    }
    wait_for("the shortage counted", || async {
        let n = sy
            .metric("switchyard_local_connect_failures_total", &[])
            .await;
        (n >= 1.0).then_some(())
    })
    .await;
}

/// A TCP port whose app has no task resets its clients: a clean close would read as an empty
/// but complete answer.
#[tokio::test]
async fn a_tcp_port_without_backends_resets_its_clients() {
    let port = free_port();
    let sy = one_worker_tcp_port("l4-no-backend", port, &[], json!({})).await;
    let mut client = wait_for("service port open", || async {
        TcpStream::connect(local(port)).await.ok()
    })
    .await;
    // Nothing written: a write meeting the reset would take its error, and the read then see
    // a plain end.
    let (_, end) = read_all(&mut client).await;
    let kind = end.expect_err("a reset, not a clean end").kind();
    assert_eq!(kind, std::io::ErrorKind::ConnectionReset);
    assert!(
        sy.metric("switchyard_no_backend_total", &[]).await >= 1.0,
        "counted as no backend"
    );
}

/// A client that resets while its backend connect is under way ends its connection then: the
/// connect is given up, nothing is sent to the backend, nothing is charged to it. Here the
/// backend never answers its SYN and the connect timeout is far away, so only the client's
/// reset can free the connection's two descriptors.
#[tokio::test]
async fn a_client_reset_during_the_backend_connect_ends_the_connection_at_once() {
    // A backend whose accept queue is full and never drained: its SYNs are dropped.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(0).unwrap();
    let stuck = socket.local_addr().unwrap().as_socket().unwrap();
    let mut queued = Vec::new();
    loop {
        assert!(queued.len() < 16, "the accept queue never filled");
        let attempt = tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(stuck));
        match attempt.await {
            Ok(Ok(stream)) => queued.push(stream),
            _ => break,
        }
    }
    let port = free_port();
    let labels = json!({ "SWITCHYARD_0_CONNECT_TIMEOUT": "120s" });
    let sy = one_worker_tcp_port("l4-reset-connecting", port, &[stuck.port()], labels).await;
    // No probe connection: it would hang in its own connect. The kernel's table of TCP sockets
    // tells when the port listens.
    let listening = format!(":{port:04X} 00000000:0000 0A");
    wait_for("service port listening", || async {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        table.contains(&listening).then_some(())
    })
    .await;
    let before = fds(&sy);
    let client = TcpStream::connect(local(port)).await.unwrap();
    let during = wait_for("the backend connect under way", || async {
        let n = fds(&sy);
        (n >= before + 2).then_some(n)
    })
    .await;
    reset(client);
    wait_for("both descriptors freed at the client's reset", || async {
        (fds(&sy) + 2 <= during).then_some(())
    })
    .await;
    let failures = sy
        .metric(
            "switchyard_backend_connect_failures_total",
            &[&format!("127.0.0.1:{}", stuck.port())],
        )
        .await;
    assert_eq!(failures, 0.0, "the abandoned connect was charged");
    drop(queued);
}
