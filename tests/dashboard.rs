//! The dashboard in a real browser (Debian's headless Chromium): the page loads, shows a
//! deployed app and its backends, and reflects a scale-up while it stays open (no reload); shows
//! a backend ejected as an outlier and the problem count; logs in beyond loopback with the
//! token. And the session rules (cookie, CSRF token, Origin, expiry) with a plain HTTP client.

mod support;

use std::process::{Command, Stdio};

use serde_json::json;
use support::browser::{self, Browser};
use support::marathon::{app, task};
use support::*;

#[tokio::test]
async fn the_dashboard_shows_an_app_and_follows_a_scale_up_live() {
    if Command::new("chromium").arg("--version").output().is_err() {
        eprintln!("chromium not installed: skipped (.ci/run installs it)");
        return;
    }
    let (b1, b2) = (Backend::start("one").await, Backend::start("two").await);
    let dir = temp_dir("dashboard");
    let file = dir.join("apps.json");
    let write = |backends: &[&Backend]| {
        let tasks = backends
            .iter()
            .enumerate()
            .map(|(i, b)| task("/shop", &format!("shop.{i}"), b.port()))
            .collect();
        let apps = json!({"apps": [app("/shop", free_port(), json!({"HAPROXY_0_VHOST": "shop.example.com"}), tasks)]});
        std::fs::write(file.with_extension("tmp"), apps.to_string()).unwrap();
        std::fs::rename(file.with_extension("tmp"), &file).unwrap();
    };
    write(&[&b1]);
    let toml = format!(
        "[discovery]\nfile = {:?}\nfile_poll_interval = \"20ms\"\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n",
        file.display().to_string()
    );
    let sy = Switchyard::start("dashboard", &toml);
    wait_for("ready", || async {
        (sy.get("/readyz").await.0 == 200).then_some(())
    })
    .await;

    // One page load, left polling for 600 s of virtual time (about a second of real time,
    // the polls being the only work), then its DOM is printed.
    let profile = dir.join("chromium-profile");
    let url = format!("http://{}/", sy.admin);
    let browser = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=600000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(&url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    // The page has rendered the first table once it asks for the swap history.
    wait_for("the page polling", || async {
        (sy.metric("switchyard_admin_requests_total", &["/v1/swaps"])
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    write(&[&b1, &b2]);
    sy.wait_routes("scaled up", |r| {
        r["services"][0]["backends"].as_array().unwrap().len() == 2
    })
    .await;
    let dom = tokio::task::spawn_blocking(move || browser.wait_with_output().unwrap())
        .await
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout).to_string();
    assert!(dom.contains("/shop"), "the deployed app is shown: {dom}");
    assert!(
        dom.contains(&b1.addr.to_string()) && dom.contains(&b2.addr.to_string()),
        "both backends: {dom}"
    );
    assert!(dom.contains("shop.example.com"));
    // The page saw generation 1 and then generation 2 without being reloaded.
    assert!(
        dom.contains("data-generation=\"1\"") && dom.contains("data-generation=\"2\""),
        "{dom}"
    );
}

/// An HTTP app on `port` of `backends`, with `labels` beside HTTP mode and a vhost.
fn http_app(port: u16, backends: &[u16], labels: serde_json::Value) -> serde_json::Value {
    let tasks = backends
        .iter()
        .enumerate()
        .map(|(i, p)| task("/shop", &format!("shop.{i}"), *p))
        .collect();
    let mut all = json!({"HAPROXY_0_MODE": "http", "HAPROXY_0_VHOST": "shop.example.com"});
    for (k, v) in labels.as_object().unwrap() {
        all[k] = v.clone();
    }
    app("/shop", port, all, tasks)
}

fn file_config(dir: &std::path::Path, apps: serde_json::Value) -> String {
    let file = dir.join("apps.json");
    std::fs::write(&file, json!({ "apps": [apps] }).to_string()).unwrap();
    format!(
        "[discovery]\nfile = {:?}\nfile_poll_interval = \"20ms\"\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n",
        file.display().to_string()
    )
}

/// A backend that fails is shown ejected, with until when, and the problems are counted in the
/// header: what the page shows in a real browser, waited on in its DOM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_an_ejected_backend_and_counts_the_problems() {
    if !browser::available() {
        eprintln!("chromium not installed: skipped (.ci/run installs it)");
        return;
    }
    let good = Backend::start("good").await;
    // A port nothing listens on: every connect to it fails.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = temp_dir("dashboard-ejected");
    let port = free_port();
    // A balance the proxy cannot do: round robin instead, and a problem naming the app.
    let apps = http_app(
        port,
        &[dead.port(), good.port()],
        json!({"HAPROXY_0_BALANCE": "hdr(host)"}),
    );
    let sy = Switchyard::start("dashboard-ejected", &file_config(&dir, apps));
    let routes = sy
        .wait_routes("both backends", |r| support::backends(r, port).len() == 2)
        .await;
    let problems = routes["problems"].as_array().unwrap().len();
    assert!(problems >= 1, "{routes:#}");
    // Five failed connects in a row eject the dead backend (for 30 s).
    wait_for("the dead backend ejected", || async {
        let _ = http_get(local(port), "/").await;
        let ejected = sy
            .metric(
                "switchyard_backend_ejections_total",
                &[&format!(":{}", dead.port())],
            )
            .await;
        (ejected >= 1.0).then_some(())
    })
    .await;
    let routes = sy.routes().await;
    let dead_view = routes["services"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == json!(dead.to_string()))
        .unwrap()
        .clone();
    assert_eq!(dead_view["state"], "ejected", "{dead_view:#}");
    assert!(dead_view["ejected_until_unix_ms"].as_u64().unwrap() > 0);
    assert!(dead_view["connect_failures"].as_u64().unwrap() >= 5);
    assert!(dead_view["errors"].as_u64().unwrap() >= 5);

    // Swaps that change nothing (a resync re-reads the same file) are one line on the page:
    // three resyncs (SIGHUP: marathon-lb's signal needs a token), each waited for.
    let generation = |routes: serde_json::Value| routes["generation"].as_u64().unwrap();
    for _ in 0..3 {
        let before = generation(sy.routes().await);
        sy.signal("HUP");
        sy.wait_routes("the resync's swap", |r| generation(r.clone()) > before)
            .await;
    }
    let (_, swaps) = sy.get("/v1/swaps").await;
    let swaps: serde_json::Value = serde_json::from_str(&swaps).unwrap();
    let quiet = swaps
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .take_while(|w| w["unchanged"] == json!(true))
        .count();
    assert!(quiet >= 3, "{swaps:#}");

    let mut page = Browser::open(&dir.join("profile"), &format!("http://{}/", sy.admin));
    // At least those: a SIGHUP also reloads the configuration, whose swap (unchanged too) may
    // land after the count above was read.
    page.wait(
        "the quiet swaps collapsed",
        &format!(
            "(() => {{ const m = document.getElementById('swaps').textContent
                          .match(/(\\d+) swaps without change/);
                      return m && Number(m[1]) >= {quiet}; }})()"
        ),
    );
    let ejected = page.wait(
        "the ejected backend on the page",
        &format!(
            "(() => {{ const e = document.querySelector('li[data-state=\"ejected\"][data-address=\"{dead}\"]');
                      return e && e.textContent.includes('ejected until') ? e.textContent : null; }})()"
        ),
    );
    let ejected = ejected.as_str().unwrap();
    assert!(ejected.contains("error"), "its errors are shown: {ejected}");
    let count = page.wait(
        "the problem count in the header",
        "document.getElementById('problem-count').dataset.count",
    );
    assert_eq!(count, json!(problems.to_string()));
    let header = page.eval("document.querySelector('h1').textContent");
    let expected = if problems == 1 {
        "1 problem".to_string()
    } else {
        format!("{problems} problems")
    };
    assert!(header.as_str().unwrap().contains(&expected), "{header}");
    // Problems come before the routes on the page.
    let order = page.eval(
        "[...document.querySelectorAll('h2')].map(h => h.textContent).indexOf('Problems') === 0",
    );
    assert_eq!(order, json!(true));
    let problem = page.eval("document.getElementById('problems').textContent");
    assert!(problem.as_str().unwrap().contains("/shop"), "{problem}");
    // The good backend served every request the dead one could not: its total, not "idle".
    page.screenshot_if_asked("dashboard-ejected");
    let split = page.eval("document.getElementById('routes').textContent");
    assert!(!split.as_str().unwrap().contains("idle"), "{split}");
}

const TOKEN: &str = "s3cret-token-for-the-dashboard-test";

/// A switchyard whose admin API treats every client as beyond loopback
/// (`admin.loopback_reads_open = false`: the token or a session is needed to read, as it is on a
/// non-loopback listener; the traffic itself stays on loopback).
async fn guarded(name: &str, extra_admin: &str) -> (Switchyard, Backend) {
    let backend = Backend::start("one").await;
    let dir = temp_dir(name);
    let token = dir.join("admin-token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let toml = file_config(&dir, http_app(free_port(), &[backend.port()], json!({})));
    let admin = format!(
        "token_file = {:?}\nloopback_reads_open = false\n{extra_admin}",
        token.display().to_string()
    );
    let sy = Switchyard::start_with_admin(name, &toml, &admin);
    wait_for("ready", || async {
        (sy.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    (sy, backend)
}

async fn bearer_routes(sy: &Switchyard) -> serde_json::Value {
    let auth = format!("Bearer {TOKEN}");
    let (status, _, body) = http_request(
        sy.admin,
        "GET",
        "/v1/routes",
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Beyond loopback a browser logs in with the token (typed into the dashboard's form), gets
/// the live table, changes a route's weights from the page (its CSRF token and Origin), and
/// logs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_logs_in_beyond_loopback_with_the_token() {
    if !browser::available() {
        eprintln!("chromium not installed: skipped (.ci/run installs it)");
        return;
    }
    let (sy, _backend) = guarded("dashboard-login", "").await;
    assert_eq!(sy.get("/v1/routes").await.0, 401, "reads need the token");
    let route = bearer_routes(&sy).await["routes"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();

    let mut page = Browser::open(&sy.dir.join("profile"), &format!("http://{}/", sy.admin));
    page.wait("the login form", "!document.getElementById('login').hidden");
    page.eval("document.getElementById('token').focus(), true");
    page.type_text(TOKEN);
    page.eval("document.getElementById('login-button').click(), true");
    page.wait(
        "logged in, the table shown",
        "document.getElementById('session').textContent.includes('logged in') \
         && document.getElementById('routes').textContent.includes('/shop') \
         && document.getElementById('problem-count').dataset.count !== undefined",
    );
    assert_eq!(
        page.eval("document.getElementById('login').hidden"),
        json!(true)
    );
    assert_eq!(
        page.eval("document.cookie.includes('switchyard_session')"),
        json!(false),
        "the session cookie is HttpOnly"
    );
    page.screenshot_if_asked("dashboard-logged-in");
    // A change from the page: the session's CSRF token in a header, the browser's Origin.
    page.eval(&format!(
        "setWeights({route:?}, {{\"/shop\": 7}}).then(() => true)"
    ));
    let routes = bearer_routes(&sy).await;
    assert_eq!(routes["routes"][0]["overridden"], json!(true), "{routes:#}");
    assert_eq!(routes["routes"][0]["members"][0]["weight"], json!(7));
    // Logging out ends the session: the page asks for the token again.
    page.eval("document.getElementById('logout').click(), true");
    page.wait(
        "the login form again",
        "!document.getElementById('login').hidden",
    );
}

fn set_cookie(headers: &[(String, String)]) -> String {
    headers
        .iter()
        .find(|(k, _)| k == "set-cookie")
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// The session rules with a plain HTTP client: the login's cookie, reads with it, and every
/// change made with it refused without the CSRF token or from another origin.
#[tokio::test]
async fn sessions_need_the_csrf_token_and_the_same_origin_for_changes() {
    let (sy, _backend) = guarded("dashboard-csrf", "").await;
    let admin = sy.admin;
    let origin = format!("http://{admin}");
    let login = |token: &'static str, headers: Vec<(&'static str, String)>| async move {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        http_request(
            admin,
            "POST",
            "/v1/login",
            &h,
            &json!({ "token": token }).to_string(),
        )
        .await
    };
    assert_eq!(login("wrong", vec![]).await.0, 401);
    assert_eq!(
        login(TOKEN, vec![("Origin", "http://evil.example".into())])
            .await
            .0,
        403,
        "a login from another site's page"
    );
    let (status, headers, body) = login(TOKEN, vec![("Origin", origin.clone())]).await;
    assert_eq!(status, 200, "{body}");
    let cookie = set_cookie(&headers);
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "cache-control" && v == "no-store"),
        "the CSRF token is not cached: {headers:?}"
    );
    // The page that can make changes may not be framed by another site.
    let (status, page, _) = http_request(admin, "GET", "/", &[], "").await;
    assert_eq!(
        status, 200,
        "the page itself is open: it is where one logs in"
    );
    assert!(
        page.iter()
            .any(|(k, v)| k == "x-frame-options" && v == "DENY")
    );
    let csrf = serde_json::from_str::<serde_json::Value>(&body).unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_string();
    let session = cookie.split(';').next().unwrap().to_string();
    // Behind a TLS-terminating proxy the cookie is Secure.
    let (_, tls, _) = login(TOKEN, vec![("X-Forwarded-Proto", "https".into())]).await;
    assert!(set_cookie(&tls).contains("; Secure"));

    // Reads with the cookie.
    let get = |path: &'static str, cookie: String| async move {
        http_request(admin, "GET", path, &[("Cookie", &cookie)], "").await
    };
    assert_eq!(get("/v1/routes", session.clone()).await.0, 200);
    assert_eq!(get("/metrics", session.clone()).await.0, 200);
    let (status, _, body) = get("/v1/session", session.clone()).await;
    assert_eq!(status, 200);
    assert!(body.contains(&csrf));
    assert_eq!(
        get("/v1/routes", "switchyard_session=forged".into())
            .await
            .0,
        401
    );

    // Changes with the cookie.
    let route = bearer_routes(&sy).await["routes"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/routes/{route}/weights");
    let put = |headers: Vec<(&'static str, String)>| {
        let path = path.clone();
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http_request(admin, "PUT", &path, &h, r#"{"/shop": 3}"#).await
        }
    };
    let cookie_h = ("Cookie", session.clone());
    let (status, _, body) = put(vec![cookie_h.clone(), ("Origin", origin.clone())]).await;
    assert_eq!(status, 403, "missing CSRF token: {body}");
    let (status, _, body) = put(vec![
        cookie_h.clone(),
        ("Origin", origin.clone()),
        ("X-CSRF-Token", "0".repeat(64)),
    ])
    .await;
    assert_eq!(status, 403, "wrong CSRF token: {body}");
    let (status, _, body) = put(vec![
        cookie_h.clone(),
        ("Origin", "http://evil.example".into()),
        ("X-CSRF-Token", csrf.clone()),
    ])
    .await;
    assert_eq!(status, 403, "cross-origin: {body}");
    let (status, _, body) = put(vec![cookie_h.clone(), ("X-CSRF-Token", csrf.clone())]).await;
    assert_eq!(status, 403, "no Origin: {body}");
    assert_eq!(
        bearer_routes(&sy).await["routes"][0]["overridden"],
        json!(false)
    );
    let (status, _, body) = put(vec![
        cookie_h.clone(),
        ("Origin", origin.clone()),
        ("X-CSRF-Token", csrf.clone()),
    ])
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        bearer_routes(&sy).await["routes"][0]["overridden"],
        json!(true)
    );

    // Logging out ends the session and clears the cookie.
    let (status, headers, _) = http_request(
        admin,
        "POST",
        "/v1/logout",
        &[
            ("Cookie", &session),
            ("Origin", &origin),
            ("X-CSRF-Token", &csrf),
        ],
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert!(set_cookie(&headers).contains("Max-Age=0"));
    assert_eq!(get("/v1/routes", session.clone()).await.0, 401);
}

/// A session's cookie is refused once `admin.session_ttl` has passed, whatever the browser
/// keeps.
#[tokio::test]
async fn an_expired_session_cookie_is_refused() {
    let (sy, _backend) = guarded("dashboard-expiry", "session_ttl = \"1s\"").await;
    let (status, headers, _) = http_request(
        sy.admin,
        "POST",
        "/v1/login",
        &[],
        &json!({ "token": TOKEN }).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    let cookie = set_cookie(&headers);
    assert!(cookie.contains("Max-Age=1"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_string();
    wait_for("the session to expire", || async {
        let (status, _, _) =
            http_request(sy.admin, "GET", "/v1/routes", &[("Cookie", &session)], "").await;
        (status == 401).then_some(())
    })
    .await;
    let (status, _, _) =
        http_request(sy.admin, "GET", "/v1/session", &[("Cookie", &session)], "").await;
    assert_eq!(status, 401);
}

/// A backend removed from the table while a connection through it is open is shown draining
/// under its service, until when, with its totals, in `/v1/routes`.
#[tokio::test]
async fn a_removed_backend_with_an_open_connection_is_shown_draining() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (one, _one) = echo_backend().await;
    let (two, _two) = echo_backend().await;
    let dir = temp_dir("dashboard-draining");
    let file = dir.join("apps.json");
    let port = free_port();
    let tcp = |p: u16| {
        app(
            "/echo",
            port,
            json!({}),
            vec![task("/echo", &format!("echo.{p}"), p)],
        )
    };
    write_apps(&file, vec![tcp(one.port())]);
    let toml = format!(
        "[discovery]\nfile = {:?}\nfile_poll_interval = \"20ms\"\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\ndrain_timeout = \"60s\"\n",
        file.display().to_string()
    );
    let sy = Switchyard::start("dashboard-draining", &toml);
    sy.wait_routes("served", |r| support::backends(r, port) == vec![one])
        .await;
    let mut client = tokio::net::TcpStream::connect(local(port)).await.unwrap();
    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(DEADLINE, client.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    write_apps(&file, vec![tcp(two.port())]);
    let routes = sy
        .wait_routes("one draining", |r| {
            r["services"][0]["draining"]
                .as_array()
                .is_some_and(|d| d.len() == 1)
        })
        .await;
    let service = &routes["services"][0];
    assert_eq!(service["backends"][0]["address"], json!(two.to_string()));
    assert_eq!(service["backends"][0]["state"], "up");
    let draining = &service["draining"][0];
    assert_eq!(draining["address"], json!(one.to_string()), "{routes:#}");
    assert_eq!(draining["state"], "draining");
    assert_eq!(draining["active"], 1);
    assert_eq!(draining["total"], 1);
    let until = draining["drain_until_unix_ms"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(until > now, "a wall-clock time ahead: {until} vs {now}");
    // Its app gone from the table, its backends drain on, listed apart under the service they
    // belonged to.
    let other = app(
        "/other",
        free_port(),
        json!({}),
        vec![task("/other", "other.1", two.port())],
    );
    write_apps(&file, vec![other]);
    let routes = sy
        .wait_routes("the app gone, its backends draining", |r| {
            r["services"][0]["app_id"] == "/other"
                && r["draining"].as_array().is_some_and(|d| d.len() == 2)
        })
        .await;
    let gone = routes["draining"].as_array().unwrap();
    assert!(
        gone.iter()
            .all(|d| d["app_id"] == "/echo" && d["state"] == "draining")
    );
    let first = gone
        .iter()
        .find(|d| d["address"] == json!(one.to_string()))
        .unwrap_or_else(|| panic!("{routes:#}"));
    assert_eq!(first["active"], 1);
    assert_eq!(routes["services"][0]["draining"], json!([]));
}

/// Two colours of one app sharing a service port (a route of two apps, 90/10), a token for
/// changes, reads open on loopback, and the history sampled every `interval`.
async fn canary(name: &str, interval: &str) -> (Switchyard, u16, Vec<Backend>) {
    let pool = vec![
        Backend::start("blue-0").await,
        Backend::start("blue-1").await,
        Backend::start("green-0").await,
    ];
    let dir = temp_dir(name);
    let port = free_port();
    let colour = |id: &str, colour: &str, weight: u32, backends: &[&Backend]| {
        let tasks = backends
            .iter()
            .enumerate()
            .map(|(i, b)| task(id, &format!("{colour}.{i}"), b.port()))
            .collect();
        app(
            id,
            port,
            json!({
                "HAPROXY_0_MODE": "http",
                "HAPROXY_0_VHOST": "shop.example.com",
                "HAPROXY_DEPLOYMENT_GROUP": "shop",
                "HAPROXY_DEPLOYMENT_COLOUR": colour,
                "SWITCHYARD_0_WEIGHT": weight.to_string(),
            }),
            tasks,
        )
    };
    let file = dir.join("apps.json");
    write_apps(
        &file,
        vec![
            colour("/shop-blue", "blue", 90, &[&pool[0], &pool[1]]),
            colour("/shop-green", "green", 10, &[&pool[2]]),
        ],
    );
    let token = dir.join("admin-token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let toml = format!(
        "[discovery]\nfile = {:?}\nfile_poll_interval = \"20ms\"\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n",
        file.display().to_string()
    );
    let admin = format!(
        "token_file = {:?}\nhistory_interval = \"{interval}\"\n",
        token.display().to_string()
    );
    let sy = Switchyard::start_with_admin(name, &toml, &admin);
    sy.wait_routes("both colours routed", |r| {
        support::backends(r, port).len() == 3
            && r["routes"].as_array().is_some_and(|routes| {
                routes
                    .iter()
                    .any(|r| r["members"].as_array().is_some_and(|m| m.len() == 2))
            })
    })
    .await;
    (sy, port, pool)
}

/// Requests to `port` one after another until the returned flag is set.
fn traffic(port: u16) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = http_get(local(port), "/").await;
        }
    });
    stop
}

async fn set_weights(sy: &Switchyard, route: &str, weights: serde_json::Value) {
    let auth = format!("Bearer {TOKEN}");
    let (status, _, body) = http_request(
        sy.admin,
        "PUT",
        &format!("/v1/routes/{route}/weights"),
        &[("Authorization", &auth)],
        &weights.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// The route of two apps, by name, from `/v1/routes`.
async fn canary_route(sy: &Switchyard) -> String {
    let routes = sy.routes().await;
    routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["members"].as_array().unwrap().len() == 2)
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The charts in a real browser: they exist for the route, have data points once traffic
/// flows, move (new samples drawn) without a reload, and mark a change of the split.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_charts_fill_with_traffic_and_move_without_a_reload() {
    if !browser::available() {
        eprintln!("chromium not installed: skipped (.ci/run installs it)");
        return;
    }
    // Asked for a screenshot (the README's), it runs a minute and a half first, so that the
    // charts have a history to show.
    let screenshot = std::env::var_os("SWITCHYARD_TEST_SCREENSHOT").is_some();
    let interval = if screenshot { "1s" } else { "250ms" };
    let (sy, port, _pool) = canary("dashboard-charts", interval).await;
    let route = canary_route(&sy).await;
    let stop = traffic(port);
    let mut page = Browser::open(&sy.dir.join("profile"), &format!("http://{}/", sy.admin));
    // A mark on the page's window: gone if the page were reloaded.
    page.wait(
        "the page loaded",
        "document.getElementById('charts') !== null",
    );
    page.eval("window.notReloaded = true");
    let kinds = [
        "rps",
        "errors",
        "latency",
        "share",
        "active",
        "ejections",
        "health",
    ];
    for kind in kinds {
        page.wait(
            &format!("the {kind} chart with data points"),
            &format!(
                "(() => {{ const c = document.querySelector('.chart-route svg.chart[data-chart=\"{kind}\"]');
                          return c !== null && Number(c.dataset.points) >= 2; }})()"
            ),
        );
    }
    // Traffic shows: the requests/s and latency lines are above zero somewhere.
    page.wait(
        "requests drawn",
        "document.querySelectorAll('.chart-route svg.chart[data-chart=\"rps\"] polyline').length >= 1",
    );
    let last = page.eval(
        "Number(document.querySelector('.chart-route svg.chart[data-chart=\"rps\"]').dataset.last)",
    );
    let last = last.as_f64().unwrap();
    page.wait(
        "a newer sample drawn without a reload",
        &format!(
            "window.notReloaded === true && Number(document.querySelector('.chart-route svg.chart[data-chart=\"rps\"]').dataset.last) > {last}"
        ),
    );
    if screenshot {
        tokio::time::sleep(std::time::Duration::from_secs(45)).await;
    }
    // A change of the split is marked on the share chart.
    set_weights(&sy, &route, json!({"/shop-blue": 50, "/shop-green": 50})).await;
    let marks = page.wait(
        "the split's change marked",
        "(() => { const c = document.querySelector('.chart-route svg.chart[data-chart=\"share\"]');
                  const m = c && c.querySelector('line.mark title');
                  return m ? m.textContent : null; })()",
    );
    assert!(
        marks.as_str().unwrap().contains("/shop-green 10")
            && marks.as_str().unwrap().contains("/shop-green 50"),
        "{marks}"
    );
    assert_eq!(page.eval("window.notReloaded === true"), json!(true));
    if screenshot {
        tokio::time::sleep(std::time::Duration::from_secs(45)).await;
    }
    page.screenshot_if_asked("dashboard-charts");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// `/v1/history` with a plain client: the token (or a session) beyond loopback, as every read;
/// rates after traffic; at most `points_max` samples per series however long it runs; a weight
/// change recorded with before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_endpoint_is_bounded_and_guarded_like_the_other_reads() {
    let (sy, _backend) = guarded("dashboard-history", "history_interval = \"10ms\"").await;
    let auth = format!("Bearer {TOKEN}");
    let history = |query: &'static str| {
        let auth = auth.clone();
        let admin = sy.admin;
        async move {
            let (status, _, body) = http_request(
                admin,
                "GET",
                &format!("/v1/history{query}"),
                &[("Authorization", &auth)],
                "",
            )
            .await;
            assert_eq!(status, 200, "{body}");
            serde_json::from_str::<serde_json::Value>(&body).unwrap()
        }
    };
    assert_eq!(sy.get("/v1/history").await.0, 401, "reads need the token");
    let (status, _, _) = http_request(
        sy.admin,
        "GET",
        "/v1/history",
        &[("Authorization", "Bearer wrong")],
        "",
    )
    .await;
    assert_eq!(status, 401);
    let routes = bearer_routes(&sy).await;
    let port = routes["services"][0]["listen"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    let stop = traffic(port);
    let points = |h: &serde_json::Value| -> Vec<serde_json::Value> {
        h["routes"][0]["versions"][0]["points"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let first = wait_for("requests/s after traffic", || async {
        let h = history("").await;
        points(&h)
            .iter()
            .any(|p| p["rps"].as_f64().unwrap_or(0.0) > 0.0 && p["p50_ms"].is_number())
            .then_some(h)
    })
    .await;
    let max = first["points_max"].as_u64().unwrap() as usize;
    assert_eq!(max, 180);
    assert_eq!(first["interval_ms"], json!(10));
    let backend = &first["routes"][0]["versions"][0]["backends"][0];
    assert!(
        backend["points"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["state"] == "up"),
        "{backend:#}"
    );
    // Full, then still full (never more) samples later.
    let full = wait_for("the ring full", || async {
        let h = history("").await;
        (points(&h).len() == max).then_some(h)
    })
    .await;
    let at = full["last_sample_unix_ms"].as_u64().unwrap();
    let later = wait_for("more samples", || async {
        let h = history("").await;
        (h["last_sample_unix_ms"].as_u64().unwrap() > at + 100).then_some(h)
    })
    .await;
    let p = points(&later);
    assert_eq!(p.len(), max, "bounded");
    assert!(p[0]["t"].as_u64().unwrap() > points(&full)[0]["t"].as_u64().unwrap());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // `since` answers only what is newer; an unknown route nothing.
    let since = history_since(&sy, &auth, at).await;
    assert!(points(&since).iter().all(|p| p["t"].as_u64().unwrap() > at));
    assert_eq!(
        history("?route=nothing-by-this-name").await["routes"],
        json!([])
    );
    // A weight change is a mark with the weights before and after.
    let route = routes["routes"][0]["name"].as_str().unwrap().to_string();
    set_weights(&sy, &route, json!({"/shop": 7})).await;
    let marks = wait_for("the change recorded", || async {
        let h = history("").await;
        let m = h["routes"][0]["share_changes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (!m.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(marks[0]["route"], json!(route));
    assert_eq!(marks[0]["after"], json!({"/shop": 7}));
    assert_ne!(marks[0]["before"], marks[0]["after"]);
}

async fn history_since(sy: &Switchyard, auth: &str, since: u64) -> serde_json::Value {
    let (status, _, body) = http_request(
        sy.admin,
        "GET",
        &format!("/v1/history?since={since}"),
        &[("Authorization", auth)],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// `/v1/routes` without parameters is the whole table as before; with `offset`/`limit` a page
/// (and only the services its routes use), with `filter` the routes whose name or app matches.
#[tokio::test]
async fn routes_answers_pages_and_filters() {
    let backend = Backend::start("one").await;
    let dir = temp_dir("routes-pages");
    let file = dir.join("apps.json");
    let apps: Vec<_> = (0..5)
        .map(|i| {
            let id = format!("/app{i}");
            app(
                &id,
                free_port(),
                json!({}),
                vec![task(&id, &format!("app{i}.0"), backend.port())],
            )
        })
        .collect();
    write_apps(&file, apps);
    let toml = format!(
        "[discovery]\nfile = {:?}\nfile_poll_interval = \"20ms\"\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n",
        file.display().to_string()
    );
    let sy = Switchyard::start("routes-pages", &toml);
    let all = sy
        .wait_routes("five routes", |r| {
            r["routes"].as_array().unwrap().len() == 5
        })
        .await;
    assert!(all.get("page").is_none(), "the whole table: no page object");
    assert_eq!(all["services"].as_array().unwrap().len(), 5);
    let get = |path: &'static str| {
        let admin = sy.admin;
        async move {
            let (status, body) = http_get(admin, path).await.unwrap();
            assert_eq!(status, 200, "{body}");
            serde_json::from_str::<serde_json::Value>(&body).unwrap()
        }
    };
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    };
    let first = get("/v1/routes?offset=0&limit=2").await;
    assert_eq!(names(&first), names(&all)[..2].to_vec());
    assert_eq!(first["services"].as_array().unwrap().len(), 2);
    assert_eq!(
        first["page"],
        json!({"offset": 0, "limit": 2, "total": 5, "routes_total": 5})
    );
    let last = get("/v1/routes?offset=4&limit=2").await;
    assert_eq!(names(&last), names(&all)[4..].to_vec());
    let beyond = get("/v1/routes?offset=9&limit=2").await;
    assert_eq!(beyond["routes"], json!([]));
    assert_eq!(beyond["services"], json!([]));
    let filtered = get("/v1/routes?filter=app3").await;
    assert_eq!(filtered["routes"].as_array().unwrap().len(), 1);
    assert!(
        names(&filtered)[0].contains("app3")
            || filtered["routes"][0]["members"][0]["app_id"] == "/app3"
    );
    assert_eq!(filtered["page"]["total"], json!(1));
    assert_eq!(filtered["services"][0]["app_id"], json!("/app3"));
    // The same generation and problems either way.
    assert_eq!(filtered["generation"], all["generation"]);
    assert_eq!(filtered["problems"], all["problems"]);
}

/// The admin API's large answers — a scrape, the whole table — are streamed as they are
/// written (`bulk_text`): over more than one chunk they arrive whole, every backend's series
/// and entry in them.
#[tokio::test]
async fn large_answers_are_streamed_and_arrive_whole() {
    const TASKS: usize = 1000;
    let dir = temp_dir("bulk-answers");
    let file = dir.join("apps.json");
    let tasks = (0..TASKS)
        .map(|i| task("/big", &format!("big.{i}"), 20_000 + i as u16))
        .collect();
    write_apps(
        &file,
        vec![app(
            "/big",
            free_port(),
            json!({"HAPROXY_0_MODE": "http"}),
            tasks,
        )],
    );
    let toml = format!(
        "[discovery]\nfile = {:?}\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n",
        file.display().to_string()
    );
    let sy = Switchyard::start("bulk-answers", &toml);
    sy.wait_routes("every backend", |r| {
        r["services"][0]["backends"]
            .as_array()
            .is_some_and(|b| b.len() == TASKS)
    })
    .await;
    for path in ["/metrics", "/v1/routes"] {
        // A HEAD: the head alone.
        let (status, _, body) = http_request(sy.admin, "HEAD", path, &[], "").await;
        assert_eq!((status, body.as_str()), (200, ""), "HEAD {path}");
        let (status, headers, body) = http_request(sy.admin, "GET", path, &[], "").await;
        assert_eq!(status, 200, "{path}");
        assert!(body.len() > 256 * 1024, "{path}: {} bytes", body.len());
        // Streamed as written: its length is not known before, so chunked.
        let coding = headers.iter().find(|(k, _)| k == "transfer-encoding");
        assert_eq!(coding.map(|(_, v)| v.as_str()), Some("chunked"), "{path}");
        if path == "/metrics" {
            assert!(body.ends_with("# EOF\n"), "{path}");
            let series = body
                .lines()
                .filter(|l| l.starts_with("switchyard_backend_connections_total{"))
                .count();
            assert_eq!(series, TASKS, "{path}");
        } else {
            let routes: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(
                routes["services"][0]["backends"].as_array().unwrap().len(),
                TASKS
            );
        }
    }
}

/// `admin.backend_series = "used"`: `/metrics` has per-backend series only for backends that
/// were used, from their first request; the per-service families are there from the start.
#[tokio::test]
async fn backend_series_can_be_kept_to_the_backends_used() {
    let (one, two) = (Backend::start("one").await, Backend::start("two").await);
    let port = free_port();
    let dir = temp_dir("used-series");
    let toml = file_config(&dir, http_app(port, &[one.port(), two.port()], json!({})));
    let sy = Switchyard::start_with_admin("used-series", &toml, "backend_series = \"used\"");
    sy.wait_routes("both backends", |r| support::backends(r, port).len() == 2)
        .await;
    let backend_lines = |metrics: &str, family: &str| -> Vec<String> {
        metrics
            .lines()
            .filter(|l| l.starts_with(&format!("switchyard_{family}{{")))
            .map(str::to_string)
            .collect()
    };
    let (_, before) = sy.get("/metrics").await;
    assert_eq!(
        backend_lines(&before, "backend_connections_total"),
        Vec::<String>::new()
    );
    assert_eq!(
        backend_lines(&before, "no_backend_total").len(),
        1,
        "{before}"
    );
    let (status, body) = http_get(local(port), "/").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (_, after) = sy.get("/metrics").await;
    let used = backend_lines(&after, "backend_connections_total");
    assert_eq!(used.len(), 1, "{after}");
    let served = if body.contains("one") { &one } else { &two };
    assert!(
        used[0].contains(&format!("backend=\"{}\"", served.addr)) && used[0].ends_with(" 1"),
        "{used:?}"
    );
    assert_eq!(backend_lines(&after, "http_responses_total").len(), 5);
    assert_eq!(backend_lines(&after, "backend_active_connections").len(), 1);
}

/// A status from the admin listener to a request sent from `source` (any 127/8 address is this
/// host's: another client address on loopback).
async fn status_from(
    source: std::net::IpAddr,
    admin: std::net::SocketAddr,
    request: &str,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::new(source, 0)).unwrap();
    let mut stream = socket.connect(admin).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .unwrap();
    String::from_utf8_lossy(&answer).to_string()
}

#[tokio::test]
async fn wrong_tokens_from_one_address_are_refused_for_a_while() {
    let (sy, _backend) = guarded("dashboard-guesses", "").await;
    let login = |token: &str| {
        let body = json!({ "token": token }).to_string();
        format!(
            "POST /v1/login HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            sy.admin,
            body.len()
        )
    };
    let guesser: std::net::IpAddr = "127.0.0.3".parse().unwrap();
    // Twenty wrong guesses, by login and by bearer token, are answered as wrong.
    for i in 0..20 {
        let request = if i % 2 == 0 {
            login("wrong")
        } else {
            format!(
                "GET /v1/routes HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAuthorization: Bearer wrong{i}\r\n\r\n",
                sy.admin
            )
        };
        let answer = status_from(guesser, sy.admin, &request).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    // Then even the right token is refused from that address for the rest of the minute...
    let answer = status_from(guesser, sy.admin, &login(TOKEN)).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: "),
        "{answer}"
    );
    let bearer = format!(
        "GET /v1/routes HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\r\n",
        sy.admin
    );
    let answer = status_from(guesser, sy.admin, &bearer).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    // ... while another address is served, and probes stay open.
    let other: std::net::IpAddr = "127.0.0.4".parse().unwrap();
    let answer = status_from(other, sy.admin, &bearer).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let probe = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        sy.admin
    );
    let answer = status_from(guesser, sy.admin, &probe).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// A route's rollout line in a real browser: running with its step and share, then, after an
/// abort through the API, shown as a bad line with why — without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_routes_rollout_and_its_abort_live() {
    if !browser::available() {
        eprintln!("chromium not installed: skipped (.ci/run installs it)");
        return;
    }
    let (sy, _port, _pool) = canary("dashboard-rollout", "250ms").await;
    let route = canary_route(&sy).await;
    let auth = format!("Bearer {TOKEN}");
    let rollout = format!("/v1/routes/{route}/rollout");
    let (status, _, body) = http_request(
        sy.admin,
        "PUT",
        &rollout,
        &[("Authorization", &auth)],
        r#"{"steps": [10, 100], "hold": "1h", "canary": "/shop-green"}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let mut page = Browser::open(&sy.dir.join("profile"), &format!("http://{}/", sy.admin));
    page.wait(
        "the running rollout's line",
        "(() => { const l = document.querySelector('.rollout');
                 return l !== null && !l.classList.contains('bad')
                   && l.textContent.includes('rollout running, step 1/2: /shop-green at 10%'); })()",
    );
    page.eval("window.notReloaded = true");
    let (status, _, body) = http_request(
        sy.admin,
        "DELETE",
        &rollout,
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let line = page.wait(
        "the aborted rollout's line",
        "(() => { const l = document.querySelector('.bad.rollout');
                 return l !== null && l.textContent.includes('rollout aborted') && l.textContent; })()",
    );
    let line = line.as_str().unwrap().to_string();
    assert!(line.contains("/shop-green at 0%"), "{line}");
    assert!(line.contains("aborted through the admin API"), "{line}");
    assert_eq!(page.eval("window.notReloaded === true"), json!(true));
}
