//! DC/OS service-account login, as marathon-lb does it: a login token (a JWT, RS256-signed
//! with the account's private key, claims `{"uid": …, "exp": …}`) is POSTed with the uid to the
//! cluster's IAM login endpoint (`/acs/api/v1/auth/login`), which answers a session token; that
//! is sent as `Authorization: token=…` to Marathon and the Mesos master, renewed before it
//! expires (by its own `exp` claim) and whenever a request is answered 401.
//!
//! The credentials come from a file in DC/OS's service-account credential shape
//! (`{"uid": …, "private_key": "-----BEGIN PRIVATE KEY-----…", "login_endpoint": …}`) and are
//! never logged: errors name the endpoint and the status, not the key or any token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

/// How long a login token is valid (it is used at once).
const LOGIN_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// A session token whose expiry cannot be read is renewed after this long.
const DEFAULT_SESSION: Duration = Duration::from_secs(3600);

/// A service account: its uid, its signing key and where to log in.
pub struct Credentials {
    pub uid: String,
    key: RsaKeyPair,
    pub login_endpoint: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("uid", &self.uid)
            .field("login_endpoint", &self.login_endpoint)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct CredentialsJson {
    uid: String,
    private_key: String,
    #[serde(default)]
    login_endpoint: Option<String>,
    #[serde(default)]
    scheme: Option<String>,
}

impl Credentials {
    /// Parses a DC/OS service-account credential (JSON). `default_endpoint` is used when it
    /// names no `login_endpoint`.
    pub fn parse(text: &str, default_endpoint: Option<&str>) -> Result<Credentials, String> {
        let json: CredentialsJson = serde_json::from_str(text)
            // Position and class only: serde's messages may quote the input (the key).
            .map_err(|e| {
                format!(
                    "not a service-account credential ({:?} error at line {}, column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                )
            })?;
        if let Some(scheme) = json.scheme.as_deref()
            && scheme != "RS256"
        {
            return Err(format!("scheme {scheme:?}: only RS256 is supported"));
        }
        if json.uid.is_empty() {
            return Err("an empty uid".into());
        }
        let der = PrivateKeyDer::from_pem_slice(json.private_key.as_bytes())
            .map_err(|_| "private_key: not a PEM private key".to_string())?;
        let key = match &der {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => return Err("private_key: not an RSA key".into()),
        }
        .map_err(|e| format!("private_key: not a usable RSA key ({e})"))?;
        let login_endpoint = json
            .login_endpoint
            .or_else(|| default_endpoint.map(str::to_string))
            .ok_or("no login_endpoint")?;
        Ok(Credentials {
            uid: json.uid,
            key,
            login_endpoint,
        })
    }

    /// The login token: `header.claims.signature`, RS256 over the first two.
    pub fn login_token(&self, now: SystemTime) -> Result<String, String> {
        let exp = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| "clock before 1970")?
            .saturating_add(LOGIN_TOKEN_LIFETIME)
            .as_secs();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims =
            URL_SAFE_NO_PAD.encode(serde_json::json!({"uid": self.uid, "exp": exp}).to_string());
        let input = format!("{header}.{claims}");
        let mut signature = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| "signing the login token failed")?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    /// The login request's body.
    pub fn login_body(&self, now: SystemTime) -> Result<String, String> {
        Ok(serde_json::json!({"uid": self.uid, "token": self.login_token(now)?}).to_string())
    }

    /// The public key (DER `RSAPublicKey`), for verifying in tests.
    pub fn public_key(&self) -> Vec<u8> {
        self.key.public().as_ref().to_vec()
    }
}

/// When to renew a session token received at `now`: at four fifths of its life by its `exp`
/// claim (a JWT), else after an hour.
pub fn renew_after(token: &str, now: SystemTime) -> Duration {
    let exp = token
        .split('.')
        .nth(1)
        .and_then(|claims| URL_SAFE_NO_PAD.decode(claims.trim_end_matches('=')).ok())
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|claims| claims["exp"].as_f64());
    let now_s = now
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    match exp {
        Some(exp) if exp > now_s => Duration::from_secs_f64((exp - now_s) * 0.8),
        Some(_) => Duration::ZERO,
        None => DEFAULT_SESSION,
    }
}

/// The login endpoint's answer: `{"token": …}`.
pub fn parse_login_answer(body: &[u8]) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        token: String,
    }
    let answer: Answer =
        serde_json::from_slice(body).map_err(|_| "the login answer holds no token".to_string())?;
    if answer.token.is_empty()
        || answer
            .token
            .bytes()
            .any(|b| !(b.is_ascii_graphic() || b == b' '))
    {
        return Err("the login answer's token is not a header value".into());
    }
    Ok(answer.token)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2048-bit RSA key made for these tests only.
    pub const TEST_KEY: &str = include_str!("../../tests/fixtures/service-account.pem");

    fn credentials() -> Credentials {
        let json = serde_json::json!({
            "uid": "switchyard",
            "private_key": TEST_KEY,
            "login_endpoint": "https://leader.mesos/acs/api/v1/auth/login",
            "scheme": "RS256"
        });
        Credentials::parse(&json.to_string(), None).unwrap()
    }

    #[test]
    fn the_login_token_is_an_rs256_jwt_of_the_uid() {
        let c = credentials();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let token = c.login_token(now).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["uid"], "switchyard");
        assert_eq!(claims["exp"], 1_700_000_300);
        let key = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            c.public_key(),
        );
        let signed = format!("{}.{}", parts[0], parts[1]);
        key.verify(
            signed.as_bytes(),
            &URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
        )
        .expect("a valid RS256 signature");
        assert!(
            !format!("{c:?}").contains("PRIVATE"),
            "the key is never printed"
        );
    }

    #[test]
    fn bad_credentials_say_why_without_the_key() {
        let err = Credentials::parse(r#"{"uid":"a","private_key":"x"}"#, Some("e")).unwrap_err();
        assert!(err.contains("not a PEM private key"), "{err}");
        let json = serde_json::json!({"uid": "a", "private_key": TEST_KEY});
        assert!(
            Credentials::parse(&json.to_string(), None).is_err(),
            "no endpoint"
        );
        let json = serde_json::json!({"uid": "a", "private_key": TEST_KEY, "scheme": "HS256"});
        assert!(Credentials::parse(&json.to_string(), Some("e")).is_err());
        let err =
            Credentials::parse("{\"uid\": \"a\", \"private_key\": \"-----BEGIN", None).unwrap_err();
        assert!(!err.contains("BEGIN"), "{err}");
    }

    #[test]
    fn sessions_are_renewed_before_they_expire() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let claims = URL_SAFE_NO_PAD.encode(br#"{"uid":"a","exp":1100}"#);
        let token = format!("h.{claims}.s");
        assert_eq!(renew_after(&token, now), Duration::from_secs(80));
        assert_eq!(renew_after("opaque", now), DEFAULT_SESSION);
        let old = format!("h.{}.s", URL_SAFE_NO_PAD.encode(br#"{"exp":10}"#));
        assert_eq!(renew_after(&old, now), Duration::ZERO);
        assert_eq!(parse_login_answer(br#"{"token":"abc"}"#).unwrap(), "abc");
        assert!(parse_login_answer(b"{}").is_err());
        assert!(parse_login_answer(br#"{"token":"a\nb"}"#).is_err());
    }
}
