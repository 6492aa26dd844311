//! HTTP basic auth for services with `HAPROXY_{n}_AUTH` (`routing::auth` reads the label): the
//! check the general path makes right after the network ACL, and the 401 it answers.
//!
//! Hashing a password is the expensive part (SHA-512-crypt: 5,000 rounds by default, a few
//! milliseconds), so:
//! - verdicts are cached per credential: a digest of (the label's user and hash, the presented
//!   `Authorization` value) in fixed-size tables, one for accepted credentials and one for refused
//!   ones, so a flood of repeated requests, good or bad, hashes each credential once, and refused
//!   credentials cannot push accepted ones out;
//! - a wrong user name is refused without hashing; an `Authorization` value longer than
//!   [`MAX_CREDENTIAL`] is refused unread;
//! - hashing runs off the data plane's threads (the blocking pool), at most [`hashing_slots`] at a
//!   time across the process, so a flood of unique wrong passwords costs at most that many cores
//!   however many connections carry it; a request that gives up does not free its slot before its
//!   hash is done.
//!
//! Comparisons are in constant time: the user (`subtle`), the hash (inside `sha-crypt` and
//! `pwhash`) and the cache keys.
//!
//! Like HAProxy (`http-request auth` with an `http_auth(userlist)` ACL, which only reads the
//! header), the `Authorization` header of an accepted request is forwarded to the backend
//! unchanged: backends behind marathon-lb may read it.

use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::{HeaderMap, Response, StatusCode, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use super::upstream::ProxyBody;
use crate::routing::auth::{BasicAuth, CryptKind};

/// An `Authorization` value longer than this is refused without decoding or hashing: it leaves
/// room for a 350-byte password, and hashing cost grows with the password's length.
pub const MAX_CREDENTIAL: usize = 512;
/// Accepted credentials remembered (only a valid credential can enter).
const GOOD_SLOTS: usize = 1024;
/// Refused credentials remembered (after hashing; a wrong user or a malformed header costs
/// nothing to refuse again).
const BAD_SLOTS: usize = 4096;

/// `None`: the request carries the service's credentials and goes on; `Some`: the 401 to answer.
pub async fn check(auth: &Arc<BasicAuth>, headers: &HeaderMap) -> Option<Response<ProxyBody>> {
    if verified(auth, headers).await {
        None
    } else {
        Some(challenge(auth))
    }
}

/// The 401: `WWW-Authenticate: Basic realm="…"`, as HAProxy's `http-request auth realm`.
pub fn challenge(auth: &BasicAuth) -> Response<ProxyBody> {
    let mut response = super::http::plain(StatusCode::UNAUTHORIZED, "unauthorized\n");
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, auth.challenge.clone());
    response
}

async fn verified(auth: &Arc<BasicAuth>, headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    // Exactly one Authorization header: two could be read differently by the backend.
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let value = value.as_bytes();
    if value.len() > MAX_CREDENTIAL {
        return false;
    }
    let Some((user, password)) = decode(value) else {
        return false;
    };
    // A wrong user costs no hashing. Like HAProxy, which finds the user before calling crypt(3),
    // this lets timing tell whether a user name is the right one; the password is the secret.
    if !bool::from(user.ct_eq(auth.user.as_bytes())) {
        return false;
    }
    let cache = cache();
    let key = key(auth, value);
    if let Some(verdict) = cache.verdict(&key) {
        return verdict;
    }
    let Ok(permit) = cache.hashing.clone().acquire_owned().await else {
        return false;
    };
    // Another request with the same credential may have hashed it while this one waited.
    if let Some(verdict) = cache.verdict(&key) {
        return verdict;
    }
    let auth = auth.clone();
    let hashed = tokio::task::spawn_blocking(move || {
        let ok = matches(&auth, &password);
        cache.remember(&key, ok);
        drop(permit); // held until the hash is done, even if the request went away
        ok
    });
    hashed.await.unwrap_or(false)
}

/// `Basic <base64(user:password)>` → (user, password).
fn decode(value: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, credentials) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let mut decoded = LENIENT.decode(credentials.trim()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let password = decoded.split_off(colon + 1);
    decoded.truncate(colon);
    Some((decoded, password))
}

/// Whether `password` hashes to the label's hash (the crates compare in constant time).
fn matches(auth: &BasicAuth, password: &[u8]) -> bool {
    match auth.kind {
        CryptKind::Md5 => pwhash::md5_crypt::verify(password, &auth.hash),
        CryptKind::Sha256 | CryptKind::Sha512 => {
            use sha_crypt::PasswordVerifier;
            sha_crypt::ShaCrypt::default()
                .verify_password(password, auth.hash.as_str())
                .is_ok()
        }
    }
}

type Key = [u8; 32];

/// The cache key of a presented credential for a label: a change of the label's user or hash
/// is a different key, so no verdict outlives the password it was made for.
fn key(auth: &BasicAuth, presented: &[u8]) -> Key {
    let mut h = Sha256::new();
    for part in [auth.user.as_bytes(), auth.hash.as_bytes(), presented] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// How many passwords may be hashed at once, process-wide: half the cores, at least one.
pub fn hashing_slots() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// Verdicts by key, in two direct-mapped tables (a key has one slot; a newcomer replaces the
/// slot's holder): bounded memory, no eviction bookkeeping.
struct Cache {
    good: Box<[Mutex<Key>]>,
    bad: Box<[Mutex<Key>]>,
    hashing: Arc<Semaphore>,
}

/// A slot that holds nothing (no SHA-256 output is all zeros in practice).
const EMPTY: Key = [0; 32];

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| {
        let slots = |n| (0..n).map(|_| Mutex::new(EMPTY)).collect();
        Cache {
            good: slots(GOOD_SLOTS),
            bad: slots(BAD_SLOTS),
            hashing: Arc::new(Semaphore::new(hashing_slots())),
        }
    })
}

impl Cache {
    fn slot<'a>(table: &'a [Mutex<Key>], key: &Key) -> &'a Mutex<Key> {
        let n = u64::from_le_bytes(key[..8].try_into().expect("8 bytes"));
        &table[(n % table.len() as u64) as usize]
    }

    fn holds(table: &[Mutex<Key>], key: &Key) -> bool {
        let held = *Self::slot(table, key)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        bool::from(held.ct_eq(key))
    }

    fn verdict(&self, key: &Key) -> Option<bool> {
        if Self::holds(&self.good, key) {
            Some(true)
        } else if Self::holds(&self.bad, key) {
            Some(false)
        } else {
            None
        }
    }

    fn remember(&self, key: &Key, ok: bool) {
        let table = if ok { &self.good } else { &self.bad };
        *Self::slot(table, key)
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = *key;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::auth::test_vectors::{MD5, PASSWORD, SHA256, SHA512};
    use http::HeaderValue;

    fn basic(user: &str, password: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
        );
        headers
    }

    #[tokio::test]
    async fn each_hash_kind_checks_the_password() {
        for hash in [MD5, SHA256, SHA512] {
            let auth = Arc::new(BasicAuth::parse(&format!("Staff:alice:{hash}")).unwrap());
            assert!(
                check(&auth, &basic("alice", PASSWORD)).await.is_none(),
                "{hash}"
            );
            // Twice: the second answer comes from the cache.
            assert!(
                check(&auth, &basic("alice", PASSWORD)).await.is_none(),
                "{hash}"
            );
            for (user, password) in [("alice", "open sesame!"), ("bob", PASSWORD), ("alice", "")] {
                let denied = check(&auth, &basic(user, password)).await.expect("401");
                assert_eq!(denied.status(), 401);
                assert_eq!(
                    denied.headers()[header::WWW_AUTHENTICATE],
                    "Basic realm=\"Staff\""
                );
            }
        }
    }

    #[tokio::test]
    async fn malformed_or_missing_credentials_are_refused() {
        let auth = Arc::new(BasicAuth::parse(&format!("r:alice:{SHA512}")).unwrap());
        assert!(check(&auth, &HeaderMap::new()).await.is_some());
        let good = basic("alice", PASSWORD);
        let encoded = good[header::AUTHORIZATION].to_str().unwrap()["Basic ".len()..].to_owned();
        let mut lowercase = HeaderMap::new();
        lowercase.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("basic  {}", encoded.trim_end_matches('='))).unwrap(),
        );
        assert!(
            check(&auth, &lowercase).await.is_none(),
            "scheme case, padding"
        );
        for bad in [
            format!("Bearer {encoded}"),
            "Basic !!!".into(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("alice")
            ),
            format!("Basic {encoded}{}", "A".repeat(MAX_CREDENTIAL)),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&bad).unwrap());
            assert!(check(&auth, &headers).await.is_some(), "{bad}");
        }
        let mut twice = good.clone();
        twice.append(header::AUTHORIZATION, good[header::AUTHORIZATION].clone());
        assert!(
            check(&auth, &twice).await.is_some(),
            "two Authorization headers"
        );
    }

    #[test]
    fn keys_depend_on_the_label() {
        let a = BasicAuth::parse(&format!("r:alice:{SHA512}")).unwrap();
        let b = BasicAuth::parse(&format!("r:alice:{SHA256}")).unwrap();
        assert_ne!(key(&a, b"Basic x"), key(&b, b"Basic x"));
        assert_ne!(key(&a, b"Basic x"), key(&a, b"Basic y"));
        assert_eq!(key(&a, b"Basic x"), key(&a, b"Basic x"));
    }
}
