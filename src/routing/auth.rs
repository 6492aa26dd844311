//! `HAPROXY_{n}_AUTH`: marathon-lb's HTTP basic auth label, read into what the proxy checks
//! (`proxy::basic_auth` does the checking).
//!
//! marathon-lb's Longhelp.md: "Ex: `HAPROXY_0_AUTH = realm:username:encryptedpassword`", read by
//! config.py's `x.authRealm, x.authUser, x.authPasswd = v.split(':')` — exactly three fields, so
//! one user per port — and written into an HAProxy `userlist` as `user {user} password {passwd}`
//! and `http-request auth realm "{realm}"`. HAProxy hands `password` hashes to crypt(3); of the
//! formats crypt(3) takes, MD5-crypt (`$1$`), SHA-256-crypt (`$5$`) and SHA-512-crypt (`$6$`) are
//! supported here. Anything else (DES, bcrypt `$2*$`, yescrypt `$y$`, …) is refused, and a refused
//! label takes the port out of service: never open.

use http::HeaderValue;

/// The crypt(3) formats verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptKind {
    /// `$1$salt$hash`: MD5-crypt (legacy, weak; accepted because marathon-lb's users have it).
    Md5,
    /// `$5$[rounds=N$]salt$hash`
    Sha256,
    /// `$6$[rounds=N$]salt$hash`
    Sha512,
}

/// The most rounds a SHA-crypt hash may ask for. glibc's default is 5,000; a label asking for
/// more than this is refused rather than let one request cost seconds of CPU.
pub const MAX_ROUNDS: u32 = 200_000;
/// glibc raises fewer rounds to 1,000; the verifier rejects them instead, so they are refused
/// here with a clear reason rather than never matching.
const MIN_ROUNDS: u32 = 1_000;

/// One port's basic auth: the realm, the one user, and the user's crypt(3) hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub realm: String,
    pub user: String,
    /// The crypt(3) string as given, e.g. `$6$salt$…`.
    pub hash: String,
    pub kind: CryptKind,
    /// `Basic realm="…"`, the 401's `WWW-Authenticate` value, made once.
    pub challenge: HeaderValue,
}

impl BasicAuth {
    /// Reads a label value; the error says what is wrong (never the hash itself).
    pub fn parse(value: &str) -> Result<BasicAuth, String> {
        let fields: Vec<&str> = value.split(':').collect();
        let [realm, user, hash] = fields[..] else {
            return Err(format!(
                "expected realm:username:encryptedpassword (3 fields), got {}",
                fields.len()
            ));
        };
        // The realm goes inside a quoted string (HAProxy's config and the challenge header):
        // quotes, backslashes and control characters could not round-trip.
        if realm.is_empty()
            || realm
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            return Err(format!(
                "realm {realm:?} must be non-empty, without quotes, backslashes or control characters"
            ));
        }
        // HAProxy's userlist takes the user as one config word.
        if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("username must be non-empty, without spaces".into());
        }
        let kind = crypt_kind(hash)?;
        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{realm}\""))
            .map_err(|_| format!("realm {realm:?} is not valid in a header"))?;
        Ok(BasicAuth {
            realm: realm.into(),
            user: user.into(),
            hash: hash.into(),
            kind,
            challenge,
        })
    }
}

/// The characters of crypt(3)'s base-64 alphabet.
fn is_crypt64(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
}

/// Checks the hash's shape (not its value) and names its algorithm: a hash the verifier would
/// choke on is refused when the label is read, not discovered on the first request.
fn crypt_kind(hash: &str) -> Result<CryptKind, String> {
    let Some(rest) = hash.strip_prefix('$') else {
        return Err(if hash.len() == 13 {
            "unsupported password hash: traditional DES crypt; use $6$ (SHA-512-crypt)".into()
        } else {
            "password is not a crypt(3) hash ($1$, $5$ or $6$)".into()
        });
    };
    let (id, rest) = rest.split_once('$').unwrap_or((rest, ""));
    let (kind, hash_len, max_salt) = match id {
        "1" => (CryptKind::Md5, 22, 8),
        "5" => (CryptKind::Sha256, 43, 16),
        "6" => (CryptKind::Sha512, 86, 16),
        other => {
            let other: String = other.chars().take(12).collect();
            return Err(format!(
                "unsupported password hash algorithm ${other}$; supported: $1$ (MD5), $5$ (SHA-256), $6$ (SHA-512)"
            ));
        }
    };
    let mut fields: Vec<&str> = rest.split('$').collect();
    if kind != CryptKind::Md5
        && let Some(rounds) = fields.first().and_then(|f| f.strip_prefix("rounds="))
    {
        let rounds: u32 = rounds
            .parse()
            .map_err(|_| format!("${id}$ hash: rounds={rounds:?} is not a number"))?;
        if !(MIN_ROUNDS..=MAX_ROUNDS).contains(&rounds) {
            return Err(format!(
                "${id}$ hash: rounds={rounds} outside the supported {MIN_ROUNDS}..={MAX_ROUNDS}"
            ));
        }
        fields.remove(0);
    }
    let [salt, digest] = fields[..] else {
        return Err(format!("${id}$ hash: expected ${id}$salt$hash"));
    };
    if salt.len() > max_salt || !is_crypt64(salt) {
        return Err(format!(
            "${id}$ hash: the salt must be at most {max_salt} characters of [./0-9A-Za-z]"
        ));
    }
    if digest.len() != hash_len || !is_crypt64(digest) {
        return Err(format!(
            "${id}$ hash: the hash part must be {hash_len} characters of [./0-9A-Za-z]"
        ));
    }
    Ok(kind)
}

/// crypt(3) hashes of [`PASSWORD`](test_vectors::PASSWORD), made with glibc's crypt(3) (what
/// HAProxy calls), e.g. Python's `crypt.crypt('open sesame', '$6$switchyard0$')`, and the same
/// from `openssl passwd -1|-5|-6 -salt switchyard0 'open sesame'`: independent of the crates
/// that verify them.
#[cfg(test)]
pub(crate) mod test_vectors {
    pub const PASSWORD: &str = "open sesame";
    pub const MD5: &str = "$1$switchya$yY1V60ehSY6oynLpj4ryX.";
    pub const SHA256: &str = "$5$switchyard0$DtZbIcYr1DSPtHdHXu7x9f7sXO/sygp.FINx5FkONC/";
    pub const SHA512: &str = "$6$switchyard0$jApw9FuFGvSIkilGJa5HO9NeHs.vR0pa1Jds8R6IY.QF7Rkg3f3q.717LBLlPcZ7WlGrWsWzKgPTB5ztCE6rP1";
}

#[cfg(test)]
mod tests {
    use super::test_vectors::{MD5, SHA256, SHA512};
    use super::*;

    #[test]
    fn marathon_lb_format() {
        // Longhelp.md: "Ex: `HAPROXY_0_AUTH = realm:username:encryptedpassword`"
        for (hash, kind) in [
            (MD5, CryptKind::Md5),
            (SHA256, CryptKind::Sha256),
            (SHA512, CryptKind::Sha512),
        ] {
            let a = BasicAuth::parse(&format!("Staff only:alice:{hash}")).unwrap();
            assert_eq!((a.realm.as_str(), a.user.as_str()), ("Staff only", "alice"));
            assert_eq!((a.hash.as_str(), a.kind), (hash, kind));
            assert_eq!(a.challenge, "Basic realm=\"Staff only\"");
        }
        // Drepper's SHA-crypt specification, test vector with rounds.
        let a = BasicAuth::parse(
            "r:u:$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA",
        )
        .unwrap();
        assert_eq!(a.kind, CryptKind::Sha256);
    }

    #[test]
    fn refused() {
        for (value, why) in [
            ("alice:$6$x$y", "3 fields"),
            (&format!("r:alice:bob:{SHA512}"), "3 fields"),
            (&format!(":alice:{SHA512}"), "realm"),
            (&format!("say \"hi\":alice:{SHA512}"), "realm"),
            (&format!("r::{SHA512}"), "username"),
            ("r:alice:open-sesame", "not a crypt(3) hash"),
            ("r:alice:abJnggxhB/yWI", "DES"),
            (
                "r:alice:$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
                "unsupported password hash algorithm $2b$",
            ),
            (
                "r:alice:$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7",
                "$y$",
            ),
            ("r:alice:$6$salt$short", "86 characters"),
            (
                "r:alice:$6$waytoolongsaltstring$jApw9FuFGvSIkilGJa5HO9NeHs.vR0pa1Jds8R6IY.QF7Rkg3f3q.717LBLlPcZ7WlGrWsWzKgPTB5ztCE6rP1",
                "salt",
            ),
            (
                "r:alice:$6$rounds=999999999$s$jApw9FuFGvSIkilGJa5HO9NeHs.vR0pa1Jds8R6IY.QF7Rkg3f3q.717LBLlPcZ7WlGrWsWzKgPTB5ztCE6rP1",
                "rounds",
            ),
            (
                "r:alice:$5$rounds=10$s$DtZbIcYr1DSPtHdHXu7x9f7sXO/sygp.FINx5FkONC/",
                "rounds",
            ),
        ] {
            let err = BasicAuth::parse(value).unwrap_err();
            assert!(err.contains(why), "{value}: {err}");
            assert!(
                !err.contains("jApw9Fu"),
                "errors never echo the hash: {err}"
            );
        }
    }
}
