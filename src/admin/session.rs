//! Browser sessions for the dashboard. Beyond loopback every admin read needs the bearer token,
//! which a browser cannot send; `POST /v1/login` exchanges it for a session cookie instead:
//!
//! - the session id is 32 random bytes from the system's generator, kept server-side in a table
//!   of at most [`MAX_SESSIONS`] (a new one evicts the one expiring soonest) and looked up by
//!   comparing every entry in constant time;
//! - the cookie is `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page sends
//!   it), `Path=/`, with a `Max-Age` of the session's lifetime, and `Secure` when the request came
//!   over TLS (a TLS-terminating proxy in front saying `X-Forwarded-Proto: https`); the server
//!   refuses it after its expiry whatever the browser does;
//! - each session has its own CSRF token, which every change made with the cookie must carry in
//!   the `X-CSRF-Token` header, from a page of the same origin (`Origin` naming the `Host`).
//!
//! Nothing here is on the proxy's path.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// The session cookie's name.
pub const COOKIE: &str = crate::access::SESSION_COOKIE;
/// The header carrying a session's CSRF token on changes.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// At most this many sessions live at once.
pub const MAX_SESSIONS: usize = 64;

/// A live session, as the login answer and `/v1/session` describe it.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: String,
    pub csrf: String,
    pub expires: Instant,
    pub expires_unix_ms: u64,
}

pub struct Sessions {
    ttl: Duration,
    table: Mutex<Vec<Session>>,
    random: ring::rand::SystemRandom,
}

impl Sessions {
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            ttl,
            table: Mutex::new(Vec::new()),
            random: ring::rand::SystemRandom::new(),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Opens a session expiring `ttl` after `now`; `None` if the system generator fails.
    pub fn create(&self, now: Instant) -> Option<Session> {
        let session = Session {
            id: self.random_hex()?,
            csrf: self.random_hex()?,
            expires: now + self.ttl,
            expires_unix_ms: SystemTime::now()
                .checked_add(self.ttl)
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as u64),
        };
        let mut table = self.table.lock().unwrap();
        table.retain(|s| s.expires > now);
        if table.len() >= MAX_SESSIONS
            && let Some(soonest) = (0..table.len()).min_by_key(|&i| table[i].expires)
        {
            table.swap_remove(soonest);
        }
        table.push(session.clone());
        Some(session)
    }

    /// The live session with this id at `now`. Every entry is compared, in constant time.
    pub fn find(&self, id: &str, now: Instant) -> Option<Session> {
        let table = self.table.lock().unwrap();
        let mut found = None;
        for s in table.iter() {
            if same_secret(id, &s.id) {
                found = Some(s);
            }
        }
        found.filter(|s| s.expires > now).cloned()
    }

    /// Ends the session with this id (logout).
    pub fn remove(&self, id: &str) {
        self.table
            .lock()
            .unwrap()
            .retain(|s| !same_secret(id, &s.id));
    }

    pub fn live(&self) -> usize {
        self.table.lock().unwrap().len()
    }

    fn random_hex(&self) -> Option<String> {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; 32];
        self.random.fill(&mut bytes).ok()?;
        Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }
}

pub use crate::access::same_secret;

/// The session id a `Cookie` header carries, if any.
pub fn cookie_id(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then_some(value.trim())
        })
}

/// Whether the request arrived over TLS (at a proxy in front that says so): the cookie is then
/// marked `Secure`. The admin listener itself is plain HTTP.
pub fn over_tls(headers: &http::HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// `Set-Cookie` for a new session, or (`None`) one that clears it.
pub fn set_cookie(session: Option<(&Session, Duration)>, secure: bool) -> String {
    let (value, max_age) = match session {
        Some((s, ttl)) => (s.id.as_str(), ttl.as_secs().max(1)),
        None => ("", 0),
    };
    format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Whether the request's `Origin` names the host it was sent to (`Host`), scheme `http` or
/// `https`. `None` when there is no `Origin` header.
pub fn same_origin(headers: &http::HeaderMap) -> Option<bool> {
    let origin = headers.get(http::header::ORIGIN)?.to_str().ok();
    let host = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok());
    Some(match (origin, host) {
        (Some(origin), Some(host)) => origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|authority| authority.eq_ignore_ascii_case(host)),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    #[test]
    fn a_session_is_found_until_it_expires_and_not_after_logout() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let s = sessions.create(t0).unwrap();
        assert_eq!(s.id.len(), 64);
        assert_ne!(s.id, s.csrf);
        assert!(sessions.find(&s.id, t0 + Duration::from_secs(59)).is_some());
        assert!(
            sessions.find(&s.id, t0 + Duration::from_secs(60)).is_none(),
            "expired"
        );
        assert!(sessions.find("", t0).is_none());
        assert!(sessions.find(&s.id[..63], t0).is_none());
        sessions.remove(&s.id);
        assert!(sessions.find(&s.id, t0).is_none(), "logged out");
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_soonest_expiring() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let first = sessions.create(t0).unwrap();
        let mut last = None;
        for i in 1..=MAX_SESSIONS {
            last = sessions.create(t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(sessions.live(), MAX_SESSIONS);
        assert!(sessions.find(&first.id, t0).is_none(), "the oldest went");
        assert!(sessions.find(&last.unwrap().id, t0).is_some());
        // Expired ones are purged first.
        sessions.create(t0 + Duration::from_secs(3600)).unwrap();
        assert_eq!(sessions.live(), 1);
    }

    proptest::proptest! {
        /// Whatever other cookies surround it, the session's value is found as sent; arbitrary
        /// header text never panics and never yields a value holding a separator.
        #[test]
        fn the_session_cookie_is_found_among_others(
            before in proptest::collection::vec("[a-z_]{1,8}=[!-:<-~]{0,12}", 0..4),
            after in proptest::collection::vec("[a-z_]{1,8}=[!-:<-~]{0,12}", 0..4),
            id in "[0-9a-f]{64}",
            noise in ".{0,80}",
        ) {
            let others = |v: &Vec<String>| {
                v.iter().filter(|c| !c.starts_with("switchyard_session=")).cloned().collect::<Vec<_>>()
            };
            let mut all = others(&before);
            all.push(format!("{COOKIE}={id}"));
            all.extend(others(&after));
            let mut h = HeaderMap::new();
            h.insert(http::header::COOKIE, HeaderValue::from_str(&all.join("; ")).unwrap());
            proptest::prop_assert_eq!(cookie_id(&h), Some(id.as_str()));
            if let Ok(v) = HeaderValue::from_str(&noise) {
                let mut h = HeaderMap::new();
                h.insert(http::header::COOKIE, v.clone());
                h.insert(http::header::ORIGIN, v.clone());
                h.insert(http::header::HOST, v);
                if let Some(found) = cookie_id(&h) {
                    proptest::prop_assert!(!found.contains(';'));
                }
                let _ = same_origin(&h);
            }
        }
    }

    #[test]
    fn cookies_origins_and_secrets() {
        let mut h = HeaderMap::new();
        h.append(
            http::header::COOKIE,
            HeaderValue::from_static("a=b; switchyard_session=abc ; c=d"),
        );
        assert_eq!(cookie_id(&h), Some("abc"));
        assert_eq!(same_origin(&h), None);
        h.insert(
            http::header::HOST,
            HeaderValue::from_static("10.0.0.1:9090"),
        );
        h.insert(
            http::header::ORIGIN,
            HeaderValue::from_static("http://10.0.0.1:9090"),
        );
        assert_eq!(same_origin(&h), Some(true));
        h.insert(
            http::header::ORIGIN,
            HeaderValue::from_static("http://evil.example:9090"),
        );
        assert_eq!(same_origin(&h), Some(false));
        h.insert(http::header::ORIGIN, HeaderValue::from_static("null"));
        assert_eq!(same_origin(&h), Some(false));
        assert!(
            same_secret("abc", "abc") && !same_secret("abd", "abc") && !same_secret("ab", "abc")
        );
        let s = Sessions::new(Duration::from_secs(30))
            .create(Instant::now())
            .unwrap();
        let c = set_cookie(Some((&s, Duration::from_secs(30))), true);
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Max-Age=30")
        );
        assert!(c.ends_with("; Secure"));
        assert!(!set_cookie(None, false).contains("Secure"));
    }
}
