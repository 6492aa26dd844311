//! The admin dashboard's session cookie, taken out of every request's `Cookie` on its way to a
//! backend, by the same rule on every codec (`headers`).

use http::header::{self, HeaderMap, HeaderValue};

/// Whether a `Cookie` value may hold the admin dashboard's session
/// ([`crate::access::SESSION_COOKIE`]). That pair is never forwarded: a browser sends a cookie
/// to every port of the host name it was set for, so where the dashboard and an app share a
/// name, the session would reach the app's backends, whose owner could replay it against the
/// admin API. A search for the name, ASCII case aside (over-matching only costs the exact
/// look of [`write_cookie_pairs`]); most values hold no `s` after a separator at all.
#[inline]
pub fn holds_session_cookie(value: &[u8]) -> bool {
    let name = crate::access::SESSION_COOKIE.as_bytes();
    value.len() >= name.len()
        && (0..=value.len() - name.len()).any(|at| {
            value[at] | 0x20 == name[0] && value[at..at + name.len()].eq_ignore_ascii_case(name)
        })
}

/// Writes the pairs of a `Cookie` value other than the admin session's, joined by `"; "`
/// (after `"; "` if `joined` says one was written before); returns whether one was written.
/// A pair is the session's when its name, spaces and case aside, is the cookie's: wider than
/// what the admin API accepts (the exact name), so nothing it would accept passes.
pub fn write_cookie_pairs(out: &mut Vec<u8>, value: &[u8], mut joined: bool) -> bool {
    let name = crate::access::SESSION_COOKIE.as_bytes();
    for pair in value.split(|&b| b == b';') {
        let pair = pair.trim_ascii();
        let pair_name = pair
            .split(|&b| b == b'=')
            .next()
            .unwrap_or(pair)
            .trim_ascii();
        if pair.is_empty() || pair_name.eq_ignore_ascii_case(name) {
            continue;
        }
        if std::mem::replace(&mut joined, true) {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(pair);
    }
    joined
}

/// Bytes codecs: a request's `Cookie` line without the admin session's pair; nothing when no
/// other pair is left.
pub fn write_cookie_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    let start = out.len();
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    if write_cookie_pairs(out, value, false) {
        out.extend_from_slice(b"\r\n");
    } else {
        out.truncate(start);
    }
}

/// Hyper codec: the request's `Cookie` fields without the admin session's pair (a field left
/// empty is removed).
pub fn strip_session_cookie(headers: &mut HeaderMap) {
    if !headers
        .get_all(header::COOKIE)
        .iter()
        .any(|v| holds_session_cookie(v.as_bytes()))
    {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| {
            let mut out = Vec::with_capacity(v.len());
            write_cookie_pairs(&mut out, v.as_bytes(), false)
                .then(|| HeaderValue::from_bytes(&out).ok())
                .flatten()
        })
        .collect();
    headers.remove(header::COOKIE);
    for value in kept {
        headers.append(header::COOKIE, value);
    }
}
