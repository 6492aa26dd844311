//! Who may read a listener of switchyard's own: the one token check shared by the admin API and
//! the relay (`relay/`). A token is presented as `Authorization: Bearer {token}` or, as DC/OS
//! and Marathon clients send it (`discovery.token_file`), `Authorization: token={token}`, and
//! compared in constant time.

use subtle::ConstantTimeEq;

/// The admin dashboard's session cookie (`admin::session`). Here, below both the admin API
/// and the proxy, because the proxy never forwards it (`proxy::headers`).
pub const SESSION_COOKIE: &str = "switchyard_session";

/// Whether `presented` equals `secret`, in time independent of where they differ.
pub fn same_secret(presented: &str, secret: &str) -> bool {
    bool::from(presented.as_bytes().ct_eq(secret.as_bytes()))
}

/// The token an `Authorization` header presents (`Bearer T` or `token=T`), if any.
pub fn presented(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("token="))
        .map(str::trim)
}

/// Whether the request presents `token`.
pub fn presents(headers: &http::HeaderMap, token: &str) -> bool {
    presented(headers).is_some_and(|p| same_secret(p, token))
}

/// Whether a request names this host by a loopback name: `localhost`, an address in
/// 127.0.0.0/8 or `::1` (with any port), in its `Host` header, or in its target when that is
/// absolute. Reads open to loopback clients without a token need it: a browser lets a page
/// read only what answers its own origin, and a page that rebinds its name's DNS to 127.0.0.1
/// is still that origin — its requests still carry its name, which no loopback name is (a
/// name that resolves to loopback in DNS is not one of them either). No `Host` at all is
/// not a loopback name.
pub fn names_loopback(uri: &http::Uri, headers: &http::HeaderMap) -> bool {
    let named = match uri.authority() {
        Some(authority) => Some(authority.as_str()),
        None => headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok()),
    };
    let Some(named) = named else {
        return false;
    };
    // An authority's host: `[v6]:port`, `[v6]`, `name:port` or `name` (no userinfo in a Host).
    let host = match named.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) if port.is_empty() || port.starts_with(':') => v6,
            _ => return false,
        },
        None => named.split(':').next().unwrap_or(""),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

/// The answer's body when [`names_loopback`] is false on a listener whose reads are open to
/// loopback clients.
pub const NOT_A_LOOPBACK_NAME: &str = "reads without a token answer requests to a loopback name \
     only (Host: localhost, 127.0.0.1 or [::1]); present the token to use another name\n";

/// Wrong secrets (a token, a login) per client address: past [`Guesses::LIMIT`] in a
/// [`Guesses::WINDOW`] the address is refused (429) until its window ends, whatever it presents,
/// so that a token cannot be guessed at the speed of the network. IPv6 clients are counted per
/// /64 (one host holds a whole /64).
///
/// An address is only ever refused for its own wrong guesses: a flood of other addresses never
/// locks out a client that presents the right token (an earlier shared overflow count did, so
/// 4,096 addresses guessing wrong shut the relay and the admin API to everyone). The table is
/// bounded at [`Guesses::CAPACITY`] addresses; once full, the ones whose window has passed are
/// forgotten and then the longest-counted ones (first in, first out). Only addresses that
/// guessed wrong are in it, so what an eviction forgets is a guesser's count, and guessing past
/// the limit then takes more than `CAPACITY` addresses; evictions are counted
/// ([`Guesses::evicted`]) and logged once, as the sign of such a flood. The defence against
/// guessing from that many addresses is the token's length, not this table.
pub struct Guesses {
    table: std::sync::Mutex<Table>,
    evicted: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Table {
    counts: std::collections::HashMap<std::net::IpAddr, Count>,
    /// Addresses in the order their counts began (an entry whose `since` no longer matches its
    /// count's is stale and skipped), so that eviction is first in, first out without a scan.
    order: std::collections::VecDeque<(std::net::IpAddr, std::time::Instant)>,
}

#[derive(Clone, Copy)]
struct Count {
    failures: u32,
    since: std::time::Instant,
}

impl Default for Guesses {
    fn default() -> Self {
        Guesses {
            table: std::sync::Mutex::new(Table::default()),
            evicted: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

/// The answer's body for an address refused by [`Guesses`] (with [`retry_after`]).
pub const TOO_MANY_GUESSES: &str = "too many wrong tokens from this address; try again later\n";

/// `Retry-After` for an address refused for `left` more (whole seconds, at least 1).
pub fn retry_after(left: std::time::Duration) -> http::HeaderValue {
    http::HeaderValue::from(left.as_secs().max(1))
}

impl Guesses {
    pub const LIMIT: u32 = 20;
    pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
    pub const CAPACITY: usize = 65_536;

    fn key(ip: std::net::IpAddr) -> std::net::IpAddr {
        match ip {
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.into(),
                None => {
                    let s = v6.segments();
                    std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0).into()
                }
            },
            v4 => v4,
        }
    }

    /// How long `ip` is still refused, if it is.
    pub fn refused(
        &self,
        ip: std::net::IpAddr,
        now: std::time::Instant,
    ) -> Option<std::time::Duration> {
        let table = self.table.lock().unwrap();
        let count = table.counts.get(&Self::key(ip))?;
        let left = Self::WINDOW.checked_sub(now.saturating_duration_since(count.since))?;
        (count.failures >= Self::LIMIT && !left.is_zero()).then_some(left)
    }

    /// `ip` presented a wrong secret.
    pub fn failed(&self, ip: std::net::IpAddr, now: std::time::Instant) {
        let mut guard = self.table.lock().unwrap();
        let table = &mut *guard;
        let key = Self::key(ip);
        // Full: the counts that began first go first (they are at the front of `order`, which
        // is in time order) — those whose window has passed simply, live ones as evictions.
        // Each failure pops at most what earlier failures pushed: no scan of the table.
        while !table.counts.contains_key(&key) && table.counts.len() >= Self::CAPACITY {
            let Some((oldest, since)) = table.order.pop_front() else {
                break;
            };
            if table.counts.get(&oldest).is_none_or(|c| c.since != since) {
                continue; // stale: that count restarted or is gone
            }
            table.counts.remove(&oldest);
            if now.saturating_duration_since(since) < Self::WINDOW
                && self
                    .evicted
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    == 0
            {
                tracing::warn!(
                    capacity = Self::CAPACITY,
                    "more addresses than the wrong-token table holds are presenting wrong \
                     tokens; the longest-counted are forgotten"
                );
            }
        }
        let count = table.counts.entry(key).or_insert(Count {
            failures: 0,
            since: now,
        });
        if now.saturating_duration_since(count.since) >= Self::WINDOW {
            *count = Count {
                failures: 0,
                since: now,
            };
        }
        // A count that begins (new, or its window restarted) takes its place in the order.
        if count.failures == 0 {
            table.order.push_back((key, count.since));
        }
        count.failures = count.failures.saturating_add(1);
        // Stale order entries (counts restarted or forgotten) are dropped once they outnumber
        // the live ones, so the queue stays within twice the table.
        if table.order.len() > 2 * Self::CAPACITY.max(table.counts.len()) {
            let counts = &table.counts;
            table
                .order
                .retain(|(ip, since)| counts.get(ip).is_some_and(|c| c.since == *since));
        }
    }

    /// Addresses forgotten because the table was full (a flood of wrong guesses).
    pub fn evicted(&self) -> u64 {
        self.evicted.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_past_the_limit_are_refused_until_the_window_ends() {
        let g = Guesses::default();
        let t0 = std::time::Instant::now();
        let ip: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..Guesses::LIMIT - 1 {
            g.failed(ip, t0);
        }
        assert_eq!(g.refused(ip, t0), None);
        g.failed(ip, t0);
        assert!(g.refused(ip, t0).is_some());
        // Another address is not affected; the same /64 is.
        assert_eq!(g.refused("192.0.2.8".parse().unwrap(), t0), None);
        let v6a: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        for _ in 0..Guesses::LIMIT {
            g.failed(v6a, t0);
        }
        assert!(g.refused("2001:db8::ffff".parse().unwrap(), t0).is_some());
        assert_eq!(g.refused("2001:db8:0:1::1".parse().unwrap(), t0), None);
        // The window passes: counted afresh.
        let later = t0 + Guesses::WINDOW;
        assert_eq!(g.refused(ip, later), None);
        g.failed(ip, later);
        assert_eq!(g.refused(ip, later), None);
    }

    #[test]
    fn a_flood_of_wrong_guesses_never_refuses_an_address_that_did_not_guess() {
        let g = Guesses::default();
        let t0 = std::time::Instant::now();
        // Far more guessing addresses than the table holds; the first and the last past the
        // limit.
        let flood = Guesses::CAPACITY as u32 + 5_000;
        let nth = |i: u32| -> std::net::IpAddr { std::net::Ipv4Addr::from(0x0a00_0000 + i).into() };
        for _ in 1..Guesses::LIMIT {
            g.failed(nth(0), t0);
        }
        for i in 0..flood {
            g.failed(nth(i), t0);
        }
        for _ in 1..Guesses::LIMIT {
            g.failed(nth(flood - 1), t0);
        }
        {
            let table = g.table.lock().unwrap();
            assert!(table.counts.len() <= Guesses::CAPACITY);
            assert!(table.order.len() <= 2 * Guesses::CAPACITY + 1);
        }
        assert_eq!(g.evicted(), 5_000);
        // An address that never guessed is not refused, whatever the flood did.
        assert_eq!(g.refused("198.51.100.1".parse().unwrap(), t0), None);
        // The latest guessers are still refused; the first ones were forgotten.
        assert!(g.refused(nth(flood - 1), t0).is_some());
        assert_eq!(g.refused(nth(0), t0), None);
        // Once their windows pass, the old entries make room again: not counted as evictions.
        let later = t0 + Guesses::WINDOW;
        for i in 0..100 {
            let newcomer: std::net::IpAddr = std::net::Ipv4Addr::from(0xc633_6400 + i).into();
            g.failed(newcomer, later);
            assert_eq!(g.refused(newcomer, later), None);
        }
        assert!(g.table.lock().unwrap().counts.len() <= Guesses::CAPACITY);
        assert_eq!(g.evicted(), 5_000);
    }

    #[test]
    fn a_count_that_restarts_keeps_its_place_in_the_order_bounded() {
        let g = Guesses::default();
        let mut t = std::time::Instant::now();
        let ip: std::net::IpAddr = "192.0.2.9".parse().unwrap();
        for _ in 0..1_000 {
            g.failed(ip, t);
            t += Guesses::WINDOW;
        }
        let table = g.table.lock().unwrap();
        assert_eq!(table.counts.len(), 1);
        assert!(table.order.len() <= 2 * Guesses::CAPACITY);
        assert!(
            table
                .order
                .iter()
                .any(|(_, s)| *s == table.counts[&ip].since)
        );
    }

    #[test]
    fn loopback_names_are_localhost_and_loopback_addresses_only() {
        let named = |host: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::HOST, host.parse().unwrap());
            names_loopback(&"/v1/routes".parse().unwrap(), &h)
        };
        for yes in [
            "localhost",
            "LocalHost:9090",
            "localhost.:9090",
            "127.0.0.1:9090",
            "127.1.2.3",
            "[::1]:9090",
            "[::1]",
            "[::ffff:127.0.0.1]:9090",
        ] {
            assert!(named(yes), "{yes}");
        }
        for no in [
            "evil.example:9090",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "10.0.0.1:9090",
            "[::2]:9090",
            "[::1]x",
            "",
        ] {
            assert!(!named(no), "{no}");
        }
        assert!(!names_loopback(
            &"/v1/routes".parse().unwrap(),
            &http::HeaderMap::new()
        ));
        // An absolute target names the host, whatever the Host header says.
        let mut h = http::HeaderMap::new();
        h.insert(http::header::HOST, "localhost".parse().unwrap());
        let absolute = "http://evil.example/v1/routes".parse().unwrap();
        assert!(!names_loopback(&absolute, &h));
    }

    #[test]
    fn tokens_in_either_form_compare_whole() {
        let mut h = http::HeaderMap::new();
        assert!(!presents(&h, "abc"));
        h.insert(http::header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert!(presents(&h, "abc") && !presents(&h, "abcd") && !presents(&h, "ab"));
        h.insert(http::header::AUTHORIZATION, "token=abc".parse().unwrap());
        assert!(presents(&h, "abc"));
        h.insert(http::header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert!(!presents(&h, "abc"));
        assert!(same_secret("abc", "abc") && !same_secret("abd", "abc"));
    }
}
