//! Who may read a listener of switchyard's own: the one token check shared by the admin API and
//! the relay (`relay/`). A token is presented as `Authorization: Bearer {token}` or, as DC/OS
//! and Marathon clients send it (`discovery.token_file`), `Authorization: token={token}`, and
//! compared in constant time.

use subtle::ConstantTimeEq;

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

#[cfg(test)]
mod tests {
    use super::*;

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
