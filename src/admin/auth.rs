//! Who may do what on the admin API: probes are open; a read needs the token, a live session,
//! or a loopback listener with `admin.loopback_reads_open` and a request naming a loopback
//! host; a change always needs the token (or a session with its CSRF token and a same-origin
//! `Origin`). Wrong guesses are counted per client (`access::Guesses`). Also the dashboard's
//! way in: `POST /v1/login`, `GET /v1/session`, `POST /v1/logout`.

use super::*;

/// 429 for a client that guessed wrong too often: until its window ends.
fn too_many_guesses(left: std::time::Duration) -> Response<BulkBody> {
    let mut r = text(
        StatusCode::TOO_MANY_REQUESTS,
        crate::access::TOO_MANY_GUESSES.into(),
    );
    let retry = crate::access::retry_after(left);
    r.headers_mut().insert(header::RETRY_AFTER, retry);
    r
}

impl Admin {
    /// Health and readiness are open to probes; reading needs the token (or a session) when the
    /// listener is reachable beyond loopback, or the request names a host that is not a
    /// loopback one ([`Admin::open_read`]); changing always does, and a change made with a
    /// session cookie needs its CSRF token and a same-origin `Origin` too.
    pub(super) fn authorized(
        &self,
        req: &Request<Incoming>,
        loopback: bool,
        client: std::net::IpAddr,
    ) -> Option<Response<BulkBody>> {
        let path = req.uri().path();
        // marathon-lb's signals answer any method, GET included, and make the process work (a
        // full resync): a change, whatever the method. Any page a browser shows can send a GET
        // to 127.0.0.1 (an image's address), and the Host check below does not stop that (the
        // page cannot read the answer, but the resync happens); SIGHUP is the way in without a
        // token.
        let signal = path.starts_with("/_mlb_signal/");
        // A plan (`POST /v1/plan`) changes nothing but shows the configuration: a read.
        let plan = path == "/v1/plan" && req.method() == Method::POST;
        let change = !(matches!(*req.method(), Method::GET | Method::HEAD) || plan) || signal;
        let probe = is_probe(path);
        // The dashboard page itself holds no data: it is what shows the login form.
        let page = matches!(path, "/" | "/dashboard");
        if !change && (probe || page || self.open_read(req, loopback)) {
            return None;
        }
        let Some(token) = &self.token else {
            let why = if !change {
                // Open to loopback, but named otherwise: a page whose name rebinds to 127.0.0.1.
                crate::access::NOT_A_LOOPBACK_NAME
            } else if signal {
                "changes need admin.token_file to be set (without one, send the process SIGHUP \
                 for a resync)\n"
            } else {
                "changes need admin.token_file to be set\n"
            };
            return Some(text(StatusCode::FORBIDDEN, why.into()));
        };
        let now = std::time::Instant::now();
        if let Some(left) = self.guesses.refused(client, now) {
            return Some(too_many_guesses(left));
        }
        // Compared in constant time: the token is a secret.
        if crate::access::presents(req.headers(), token) {
            return None;
        }
        // A wrong token or an unknown session id is a guess at a secret.
        let cookie = session::cookie_id(req.headers());
        let session = cookie.and_then(|id| self.sessions.find(id, now));
        if req.headers().contains_key(header::AUTHORIZATION)
            || (cookie.is_some() && session.is_none())
        {
            self.guesses.failed(client, now);
        }
        if let Some(s) = session {
            if !change {
                return None;
            }
            // A cookie goes with every request the browser makes: a change also needs proof
            // that this origin's page made it.
            if session::same_origin(req.headers()) != Some(true) {
                return Some(text(
                    StatusCode::FORBIDDEN,
                    "cross-origin change refused (Origin must name this host)\n".into(),
                ));
            }
            let csrf = req
                .headers()
                .get(session::CSRF_HEADER)
                .and_then(|v| v.to_str().ok());
            if csrf.is_some_and(|c| session::same_secret(c, &s.csrf)) {
                return None;
            }
            if csrf.is_some() {
                self.guesses.failed(client, now);
            }
            return Some(text(
                StatusCode::FORBIDDEN,
                "missing or wrong X-CSRF-Token\n".into(),
            ));
        }
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "bearer token or session required (the dashboard: log in at /)\n".into(),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        Some(r)
    }

    /// `POST /v1/login` with `{"token": "..."}`: a session cookie and the session's CSRF token.
    pub(super) async fn login(
        &self,
        req: Request<Incoming>,
        client: std::net::IpAddr,
    ) -> Response<BulkBody> {
        use http_body_util::BodyExt;
        if req.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only POST\n".into());
        }
        // A login from another site's page would log the browser in as us (login CSRF).
        if session::same_origin(req.headers()) == Some(false) {
            return text(
                StatusCode::FORBIDDEN,
                "cross-origin login refused (Origin must name this host)\n".into(),
            );
        }
        let Some(token) = &self.token else {
            return text(
                StatusCode::FORBIDDEN,
                "no admin.token_file is set: nothing to log in with\n".into(),
            );
        };
        if let Some(left) = self.guesses.refused(client, std::time::Instant::now()) {
            return too_many_guesses(left);
        }
        let secure = session::over_tls(req.headers());
        let body = http_body_util::Limited::new(req.into_body(), 4096);
        let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
            return text(
                StatusCode::BAD_REQUEST,
                "body unreadable or over 4 KiB\n".into(),
            );
        };
        #[derive(serde::Deserialize)]
        struct Login {
            token: String,
        }
        let Ok(login) = serde_json::from_slice::<Login>(&body) else {
            return text(
                StatusCode::BAD_REQUEST,
                "expected {\"token\": \"...\"}\n".into(),
            );
        };
        if !session::same_secret(login.token.trim(), token) {
            self.guesses.failed(client, std::time::Instant::now());
            return text(StatusCode::UNAUTHORIZED, "wrong token\n".into());
        }
        let Some(s) = self.sessions.create(std::time::Instant::now()) else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "no random session id available\n".into(),
            );
        };
        let mut r = json_response(
            StatusCode::OK,
            serde_json::json!({"csrf_token": s.csrf, "expires_unix_ms": s.expires_unix_ms}),
        );
        let cookie = session::set_cookie(Some((&s, self.sessions.ttl())), secure);
        r.headers_mut().insert(
            header::SET_COOKIE,
            header::HeaderValue::from_str(&cookie).expect("hex and ASCII"),
        );
        r
    }

    /// `GET /v1/session`: the cookie's session (its CSRF token, for a reloaded page), or 401.
    pub(super) fn session(&self, req: &Request<Incoming>) -> Response<BulkBody> {
        match session::cookie_id(req.headers())
            .and_then(|id| self.sessions.find(id, std::time::Instant::now()))
        {
            Some(s) => json_response(
                StatusCode::OK,
                serde_json::json!({"csrf_token": s.csrf, "expires_unix_ms": s.expires_unix_ms}),
            ),
            None => json_response(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({"error": "no session", "login": self.token.is_some()}),
            ),
        }
    }

    /// `POST /v1/logout` (authorized as a change: the session's CSRF token): ends the session
    /// and clears the cookie.
    pub(super) fn logout(&self, req: &Request<Incoming>) -> Response<BulkBody> {
        if req.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only POST\n".into());
        }
        if let Some(id) = session::cookie_id(req.headers()) {
            self.sessions.remove(id);
        }
        let mut r = text(StatusCode::OK, "logged out\n".into());
        let cookie = session::set_cookie(None, session::over_tls(req.headers()));
        r.headers_mut().insert(
            header::SET_COOKIE,
            header::HeaderValue::from_str(&cookie).expect("ASCII"),
        );
        r
    }

    /// Whether a read needs no token: on a loopback listener with `admin.loopback_reads_open`,
    /// by a request that names a loopback host (`access::names_loopback`: not a page that
    /// rebinds its own name to 127.0.0.1).
    pub(super) fn open_read(&self, req: &Request<Incoming>, loopback: bool) -> bool {
        loopback
            && self.loopback_reads_open
            && crate::access::names_loopback(req.uri(), req.headers())
    }

    /// Whether the caller may read the admin API: an open read ([`Admin::open_read`]), the
    /// token, or a live session. Counts no guess (that is [`Admin::authorized`]'s).
    pub(super) fn may_read(&self, req: &Request<Incoming>, loopback: bool) -> bool {
        if self.open_read(req, loopback) {
            return true;
        }
        let Some(token) = &self.token else {
            return false;
        };
        crate::access::presents(req.headers(), token)
            || session::cookie_id(req.headers())
                .is_some_and(|id| self.sessions.find(id, std::time::Instant::now()).is_some())
    }
}
