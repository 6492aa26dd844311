//! The per-request trace (`Switchyard-Trace: <admin token>` in, `Switchyard-Trace-Result` out),
//! end to end with real clients on loopback: answered on the HTTP/1.1 fast path and on HTTP/2
//! with the token; ignored with a wrong token or none; never seen by a backend either way, nor
//! a client's forged result field; a backend's forged result field never reaches the client;
//! a refused backend's attempt and a weighted split's draw shown; the proxy's own 502 after
//! every attempt failed carries it too.

mod support;

use std::net::{IpAddr, SocketAddr};

use serde_json::{Value, json};
use support::marathon::{app, task};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const TOKEN: &str = "s3cret-admin-token";

/// A switchyard with the admin token set. Its vhost listener is either plain HTTP/1.1 (the
/// fast path serves it) or, with `h2`, also takes HTTP/2 with prior knowledge (h2c: the
/// general path, hyper, serves every request there).
struct Edge {
    _sy: Switchyard,
    http: SocketAddr,
    h2: bool,
}

impl Edge {
    /// One request on its own connection: HTTP/2 on an h2c edge, else HTTP/1.1.
    async fn get(&self, host: &str, path: &str, fields: &[(&str, &str)]) -> Answer {
        if self.h2 {
            h2_get(self.http, host, path, fields).await
        } else {
            get(self.http, host, path, fields).await
        }
    }
}

async fn edge(name: &str, apps: Vec<Value>, h2: bool) -> Edge {
    let name = &format!("{name}-{}", if h2 { "h2" } else { "h1" });
    let dir = temp_dir(name);
    let file = dir.join("apps.json");
    write_apps(&file, apps);
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let toml = format!(
        "[discovery]\nfile = {:?}\nfile_poll_interval = \"20ms\"\n\
         [proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n\
         [http]\nlisten = [\"{listen}\"]\nh2c = {h2}\n",
        file.display().to_string()
    );
    let admin = format!("token_file = {:?}\n", token_file.display().to_string());
    let sy = Switchyard::start_with_admin(name, &toml, &admin);
    wait_for("ready", || async {
        (sy.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    Edge {
        _sy: sy,
        http: listen,
        h2,
    }
}

fn vhost_app(id: &str, host: &str, mut labels: Value, ports: &[u16]) -> Value {
    labels["HAPROXY_0_VHOST"] = json!(host);
    let tasks = ports
        .iter()
        .enumerate()
        .map(|(i, p)| task(id, &format!("{id}.{i}"), *p))
        .collect();
    app(id, 0, labels, tasks)
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn trace(&self) -> Option<&str> {
        self.header("switchyard-trace-result")
    }
}

/// One HTTP/1.1 request on its own connection (the fast path serves it), with extra fields.
async fn get(addr: SocketAddr, host: &str, path: &str, fields: &[(&str, &str)]) -> Answer {
    get_from(lo(1), addr, host, path, fields).await
}

/// [`get`] from the address `from`.
async fn get_from(
    from: IpAddr,
    addr: SocketAddr,
    host: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> Answer {
    let mut stream = connect_from(from, addr).await;
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in fields {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// One HTTP/2 (h2c, prior knowledge) request on its own connection: the general path.
async fn h2_get(addr: SocketAddr, host: &str, path: &str, fields: &[(&str, &str)]) -> Answer {
    let mut sender = h2c_client(addr).await;
    let mut req = hyper::Request::get(format!("http://{host}{path}"));
    for (k, v) in fields {
        req = req.header(*k, *v);
    }
    let req = req
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(DEADLINE, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    }
}

/// A port nothing listens on: a connect to it is refused.
async fn refused_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// A backend that answers every request with a forged trace field of its own.
async fn forging_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nSwitchyard-Trace-Result: route=forged\r\n\
                          Content-Length: 6\r\nConnection: close\r\n\r\nforged",
                    )
                    .await;
            });
        }
    });
    addr
}

/// Both codecs: an h1-only edge (the fast path) and an h2c edge spoken to in HTTP/2 (hyper).
const CODECS: [bool; 2] = [false, true];

#[tokio::test]
async fn with_the_token_a_request_is_answered_with_its_trace_on_both_codecs() {
    let b = Backend::start("b").await;
    for h2 in CODECS {
        let e = edge(
            "trace-token",
            vec![vhost_app(
                "/web",
                "web.example.com",
                json!({"HAPROXY_0_BALANCE": "leastconn"}),
                &[b.port()],
            )],
            h2,
        )
        .await;
        wait_for("the route", || async {
            (e.get("web.example.com", "/", &[]).await.status == 200).then_some(())
        })
        .await;
        let a = e
            .get(
                "web.example.com",
                "/echo-headers",
                &[("Switchyard-Trace", TOKEN)],
            )
            .await;
        assert_eq!(a.status, 200, "h2: {h2}");
        let trace = a.trace().expect("a trace");
        assert!(trace.contains("app=/web:0"), "{trace}");
        assert!(trace.contains("balance=leastconn"), "{trace}");
        assert!(trace.contains("backends=1"), "{trace}");
        assert!(
            trace.ends_with(&format!("attempts=1; backend={}", b.addr)),
            "{trace}"
        );
        assert!(!trace.contains("failed="), "{trace}");
        assert!(
            !a.body.to_ascii_lowercase().contains("switchyard-trace"),
            "the backend saw the field: {}",
            a.body
        );
    }
}

#[tokio::test]
async fn a_wrong_token_or_none_is_ignored_and_the_fields_never_reach_the_backend() {
    let b = Backend::start("b").await;
    let forger = forging_backend().await;
    for h2 in CODECS {
        let e = edge(
            "trace-wrong",
            vec![
                vhost_app("/web", "web.example.com", json!({}), &[b.port()]),
                vhost_app("/forger", "forger.example.com", json!({}), &[forger.port()]),
            ],
            h2,
        )
        .await;
        wait_for("the routes", || async {
            let web = e.get("web.example.com", "/", &[]).await.status;
            let forger = e.get("forger.example.com", "/", &[]).await.status;
            (web == 200 && forger == 200).then_some(())
        })
        .await;
        let cases: [&[(&str, &str)]; 5] = [
            &[("Switchyard-Trace", "wrong-token")],
            &[("Switchyard-Trace", "s3cret-admin-toke")],
            &[("Switchyard-Trace", "")],
            &[("Switchyard-Trace-Result", "route=forged")],
            &[],
        ];
        for fields in cases {
            let a = e.get("web.example.com", "/echo-headers", fields).await;
            assert_eq!(a.status, 200, "{fields:?}");
            assert_eq!(a.trace(), None, "{fields:?}");
            assert!(
                !a.body.to_ascii_lowercase().contains("switchyard-trace"),
                "{fields:?}: the backend saw {}",
                a.body
            );
        }
        // A backend's own result field never passes, traced or not.
        for fields in [&[][..], &[("Switchyard-Trace", TOKEN)][..]] {
            let a = e.get("forger.example.com", "/", fields).await;
            assert_eq!(a.body, "forged");
            let all: Vec<_> = a
                .headers
                .iter()
                .filter(|(k, _)| k == "switchyard-trace-result")
                .collect();
            assert!(all.iter().all(|(_, v)| !v.contains("forged")), "{all:?}");
            assert_eq!(all.len(), fields.len(), "{all:?}");
        }
    }
}

/// A wrong token is a wrong guess of the admin token, counted with the admin API's: past its
/// limit an address is not traced even with the right token (else the trace would answer
/// yes or no to guesses as fast as the network carries them), and the admin API refuses it
/// too; another address is still traced.
#[tokio::test]
async fn wrong_tokens_count_as_guesses_of_the_admin_token() {
    let b = Backend::start("b").await;
    let e = edge(
        "trace-guesses",
        vec![vhost_app("/web", "web.example.com", json!({}), &[b.port()])],
        false,
    )
    .await;
    wait_for("the route", || async {
        (e.get("web.example.com", "/", &[]).await.status == 200).then_some(())
    })
    .await;
    let (guesser, other) = (lo(3), lo(4));
    let right = [("Switchyard-Trace", TOKEN)];
    // Before any guess, the right token is answered from the guesser's address.
    let a = get_from(guesser, e.http, "web.example.com", "/", &right).await;
    assert!(a.trace().is_some(), "traced before guessing");
    for i in 0..20 {
        let guess = format!("guess-{i}");
        let a = get_from(
            guesser,
            e.http,
            "web.example.com",
            "/",
            &[("Switchyard-Trace", &guess)],
        )
        .await;
        assert_eq!((a.status, a.trace()), (200, None), "guess {i}");
    }
    let a = get_from(guesser, e.http, "web.example.com", "/", &right).await;
    assert_eq!(a.status, 200, "the request itself is served");
    assert_eq!(a.trace(), None, "a refused address is not traced");
    let a = get_from(other, e.http, "web.example.com", "/", &right).await;
    assert!(a.trace().is_some(), "another address is");
    // The admin API counts the same guesses.
    let mut admin = connect_from(guesser, e._sy.admin).await;
    admin
        .write_all(
            format!(
                "POST /_mlb_signal/hup HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Authorization: Bearer {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, admin.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
}

#[tokio::test]
async fn a_refused_backend_and_the_retry_are_shown_and_a_502_carries_the_trace() {
    let b = Backend::start("b").await;
    let dead = refused_port().await;
    let (dead1, dead2) = (refused_port().await, refused_port().await);
    let asked = [("Switchyard-Trace", TOKEN)];
    for h2 in CODECS {
        let e = edge(
            "trace-refused",
            vec![
                vhost_app("/web", "web.example.com", json!({}), &[dead, b.port()]),
                vhost_app("/down", "down.example.com", json!({}), &[dead1, dead2]),
            ],
            h2,
        )
        .await;
        wait_for("the route", || async {
            (e.get("web.example.com", "/", &[]).await.status == 200).then_some(())
        })
        .await;
        // Round robin over two: within a few requests one starts on the dead backend (once it
        // is ejected, it is listed as deferred and tried last, so keep looking a few times).
        let mut seen = None;
        for _ in 0..6 {
            let a = e.get("web.example.com", "/", &asked).await;
            assert_eq!((a.status, a.body.as_str()), (200, "b"), "h2: {h2}");
            let trace = a.trace().expect("a trace").to_string();
            if trace.contains(&format!("failed=127.0.0.1:{dead} connect")) {
                seen = Some(trace);
                break;
            }
        }
        let trace = seen.unwrap_or_else(|| panic!("h2 {h2}: no attempt on the dead backend"));
        assert!(
            trace.ends_with(&format!("attempts=2; backend={}", b.addr)),
            "{trace}"
        );
        if !h2 {
            // The fast path knows why the connect failed; hyper's client says only that.
            assert!(trace.contains("connect refused"), "{trace}");
        }

        // Every backend refuses: the proxy's own 502 carries the trace.
        let a = e.get("down.example.com", "/", &asked).await;
        assert_eq!(a.status, 502);
        let trace = a.trace().expect("a trace on the 502");
        assert!(trace.ends_with("attempts=2; backend=none"), "{trace}");
        assert!(
            trace.contains(&format!("failed=127.0.0.1:{dead1}")),
            "{trace}"
        );
        assert!(
            trace.contains(&format!("failed=127.0.0.1:{dead2}")),
            "{trace}"
        );
        let plain = e.get("down.example.com", "/", &[]).await;
        assert_eq!((plain.status, plain.trace()), (502, None));
    }
}

#[tokio::test]
async fn a_weighted_split_shows_its_apps_weights_and_the_draw() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let asked = [("Switchyard-Trace", TOKEN)];
    for h2 in CODECS {
        let e = edge(
            "trace-split",
            vec![
                vhost_app(
                    "/shop-blue",
                    "shop.example.com",
                    json!({"SWITCHYARD_0_WEIGHT": "75"}),
                    &[blue.port()],
                ),
                vhost_app(
                    "/shop-green",
                    "shop.example.com",
                    json!({"SWITCHYARD_0_WEIGHT": "25"}),
                    &[green.port()],
                ),
            ],
            h2,
        )
        .await;
        wait_for("the split", || async {
            (e.get("shop.example.com", "/", &[]).await.status == 200).then_some(())
        })
        .await;
        let mut drawn = std::collections::BTreeSet::new();
        // 75/25 in smooth weighted rotation: any four requests in a row draw both apps.
        for _ in 0..4 {
            let a = e.get("shop.example.com", "/", &asked).await;
            assert_eq!(a.status, 200);
            let trace = a.trace().expect("a trace");
            assert!(trace.contains("route=shop.example.com"), "{trace}");
            assert!(
                trace.contains("split=/shop-blue:75 /shop-green:25")
                    || trace.contains("split=/shop-green:25 /shop-blue:75"),
                "{trace}"
            );
            // The draw names the app whose backend answered.
            let (app, backend) = if a.body == "blue" {
                ("/shop-blue:0", blue.addr)
            } else {
                ("/shop-green:0", green.addr)
            };
            assert!(trace.contains(&format!("draw={app}; app={app}")), "{trace}");
            assert!(trace.ends_with(&format!("backend={backend}")), "{trace}");
            drawn.insert(a.body);
        }
        assert_eq!(
            drawn.len(),
            2,
            "h2 {h2}: both apps drawn in 4 requests at 75/25"
        );
    }
}
