//! Secured clusters: Marathon and the Mesos master over HTTPS, verified against a CA bundle
//! (an rcgen test CA; a certificate from another CA is refused), and DC/OS service-account
//! login against a stand-in IAM endpoint: the RS256 login token checked there, the session
//! token sent as `Authorization: token=…`, renewed before it expires and on a 401, and a failed
//! login retried while the last good table keeps serving.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use support::marathon::{Marathon, app, task};
use support::mesos::{Master, agent, framework};
use support::pki::test_ca;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// TLS in front of a plain stand-in: accepts TLS, relays the bytes to `target`.
async fn tls_front(target: SocketAddr, config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

fn web(backend: &Backend, service_port: u16) -> Value {
    app(
        "/web",
        service_port,
        json!({"HAPROXY_GROUP": "external"}),
        vec![task("/web", "web.1", backend.port())],
    )
}

#[tokio::test]
async fn https_sources_are_verified_against_the_ca_bundle() {
    let ca = test_ca("switchyard test CA");
    let backend = Backend::start("web").await;
    let marathon = Marathon::start().await;
    let service_port = free_port();
    marathon.set_apps(vec![web(&backend, service_port)]);
    let mesos = Master::start(Duration::from_secs(1)).await;
    mesos.set_state(
        vec![framework("F-k", "kafka", "127.0.0.9")],
        vec![agent("S1", "127.0.0.1")],
        vec![],
    );
    let marathon_tls = tls_front(marathon.addr, ca.server.clone()).await;
    let mesos_tls = tls_front(mesos.addr, ca.server.clone()).await;

    let dir = temp_dir("https-sources-ca");
    std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
    let config = format!(
        "[discovery]\nmarathon = [\"https://{marathon_tls}\"]\nca_file = \"{}\"\n\
         [discovery.mesos]\nmasters = [\"https://{mesos_tls}\"]\n\
         [proxy]\ngroup = \"external\"\nbind = \"127.0.0.1\"\n",
        dir.join("ca.pem").display()
    );
    // `check` takes https URLs now (with a CA bundle).
    let path = dir.join("check.toml");
    std::fs::write(
        &path,
        format!("{config}\n[admin]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let sy = Switchyard::start("https-sources", &config);
    sy.wait_routes("served over verified HTTPS", |r| {
        backends(r, service_port).len() == 1 && r["mesos"]["connected"] == true
    })
    .await;
    assert_eq!(answers(service_port, 3).await, ["web"]);
    let routes = sy.routes().await;
    assert_eq!(
        routes["mesos"]["leader"],
        format!("https://{mesos_tls}"),
        "{}",
        routes["mesos"]
    );
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let ca = test_ca("the cluster's CA");
    let other = test_ca("someone else's CA");
    let marathon = Marathon::start().await;
    let marathon_tls = tls_front(marathon.addr, ca.server.clone()).await;
    let mesos = Master::start(Duration::from_secs(1)).await;
    let mesos_tls = tls_front(mesos.addr, ca.server.clone()).await;
    let dir = temp_dir("https-sources-other-ca");
    std::fs::write(dir.join("ca.pem"), &other.pem).unwrap();
    let config = format!(
        "[discovery]\nmarathon = [\"https://{marathon_tls}\"]\nca_file = \"{}\"\n\
         backoff_initial = \"50ms\"\nbackoff_max = \"200ms\"\n\
         [discovery.mesos]\nmasters = [\"https://{mesos_tls}\"]\n",
        dir.join("ca.pem").display()
    );
    let sy = Switchyard::start("https-sources-refused", &config);
    let routes = sy
        .wait_routes("both sources failing verification", |r| {
            let problems = r["problems"].to_string();
            r["mesos"]["last_error"].to_string().contains("certificate")
                && problems.contains("marathon https://")
                && problems.contains("certificate")
        })
        .await;
    assert_eq!(
        routes["ready"], false,
        "nothing is trusted, nothing is served"
    );
    assert_ne!(sy.get("/readyz").await.0, 200);
    assert!(
        marathon.requests().is_empty() && mesos.subscriptions() == 0,
        "no request crossed an unverified connection"
    );
}

/// The IAM stand-in: checks the login token's RS256 signature with the account's public key,
/// answers session tokens (JWT-shaped, with an `exp` claim) that Marathon then accepts.
struct Iam {
    addr: SocketAddr,
    logins: Arc<Mutex<Vec<String>>>,
    refuse: Arc<Mutex<bool>>,
}

const KEY: &str = include_str!("fixtures/service-account.pem");

async fn iam(marathon: Marathon, lifetime: Duration) -> Iam {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(KEY.as_bytes()).unwrap();
    let key = ring::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
    let public = key.public().as_ref().to_vec();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let iam = Iam {
        addr: listener.local_addr().unwrap(),
        logins: Arc::default(),
        refuse: Arc::default(),
    };
    let (logins, refuse) = (iam.logins.clone(), iam.refuse.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            let body = loop {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|l| l.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    assert!(head.starts_with("post /acs/api/v1/auth/login "), "{head}");
                    break Some(buf[end + 4..end + 4 + length].to_vec());
                }
            };
            let Some(body) = body else { continue };
            let login: Value = serde_json::from_slice(&body).unwrap();
            let token = login["token"].as_str().unwrap();
            let parts: Vec<&str> = token.split('.').collect();
            let signed = format!("{}.{}", parts[0], parts[1]);
            let valid = ring::signature::UnparsedPublicKey::new(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                &public,
            )
            .verify(
                signed.as_bytes(),
                &URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
            )
            .is_ok();
            let claims: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
            let good = valid && login["uid"] == "switchyard" && claims["uid"] == "switchyard";
            let reply = if good && !*refuse.lock().unwrap() {
                let exp = (SystemTime::now() + lifetime)
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_secs_f64();
                let n = logins.lock().unwrap().len();
                let session = format!(
                    "eyJhbGciOiJub25lIn0.{}.session-{n}",
                    URL_SAFE_NO_PAD.encode(json!({"uid": "switchyard", "exp": exp}).to_string())
                );
                logins.lock().unwrap().push(session.clone());
                marathon.accept_authorization(format!("token={session}"));
                let body = json!({ "token": session }).to_string();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
                    .to_string()
            };
            let _ = stream.write_all(reply.as_bytes()).await;
        }
    });
    iam
}

#[tokio::test]
async fn service_account_login_renews_before_expiry_and_on_401_and_retries_a_failed_login() {
    let backend = Backend::start("web").await;
    let marathon = Marathon::start().await;
    let service_port = free_port();
    marathon.set_apps(vec![web(&backend, service_port)]);
    marathon.require_authorization(&[]);
    let iam = iam(marathon.clone(), Duration::from_secs(4)).await;
    let dir = temp_dir("dcos-login");
    let credential = json!({
        "uid": "switchyard",
        "private_key": KEY,
        "login_endpoint": format!("http://{}/acs/api/v1/auth/login", iam.addr),
        "scheme": "RS256"
    });
    std::fs::write(dir.join("credential.json"), credential.to_string()).unwrap();
    let config = format!(
        "[discovery]\nmarathon = [\"{}\"]\nservice_account_file = \"{}\"\nresync_interval = \"1s\"\n\
         backoff_initial = \"50ms\"\nbackoff_max = \"200ms\"\n\
         [proxy]\ngroup = \"external\"\nbind = \"127.0.0.1\"\n",
        marathon.url(),
        dir.join("credential.json").display()
    );
    let sy = Switchyard::start("dcos-login", &config);
    sy.wait_routes("served with a session token", |r| {
        backends(r, service_port).len() == 1
    })
    .await;
    let first = iam.logins.lock().unwrap()[0].clone();
    assert!(
        marathon
            .requests()
            .iter()
            .any(|r| r.authorization.as_deref() == Some(&format!("token={first}"))),
        "the session token is sent as `token=…`"
    );

    // Renewed before it expires (4 s, renewed at four fifths), without a 401.
    wait_for("a renewal", || async {
        (iam.logins.lock().unwrap().len() >= 2).then_some(())
    })
    .await;
    assert_eq!(marathon.unauthorized(), 0, "renewed before any refusal");

    // Revoked: Marathon answers 401, switchyard logs in again and carries on.
    let before = iam.logins.lock().unwrap().len();
    marathon.require_authorization(&[]);
    wait_for("a login after the 401", || async {
        (marathon.unauthorized() >= 1 && iam.logins.lock().unwrap().len() > before).then_some(())
    })
    .await;
    assert_eq!(sy.get("/readyz").await.0, 200);

    // The login endpoint refuses: retried with backoff, the last good table keeps serving.
    *iam.refuse.lock().unwrap() = true;
    marathon.require_authorization(&[]);
    let routes = sy
        .wait_routes("the login failure shown", |r| {
            r["problems"].to_string().contains("DC/OS login")
        })
        .await;
    assert_eq!(
        backends(&routes, service_port).len(),
        1,
        "the last good table"
    );
    assert_eq!(answers(service_port, 3).await, ["web"]);
    *iam.refuse.lock().unwrap() = false;
    sy.wait_routes("recovered", |r| {
        !r["problems"].to_string().contains("DC/OS login")
    })
    .await;

    // Never logged: the key, the login token, the session tokens.
    let logs = sy.logs.lock().unwrap().join("\n");
    assert!(!logs.contains("PRIVATE KEY"), "the key was logged");
    for session in iam.logins.lock().unwrap().iter() {
        assert!(
            !logs.contains(session.as_str()),
            "a session token was logged"
        );
    }
    assert!(!logs.contains("session-"), "a session token was logged");
}
