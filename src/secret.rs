//! Comparing a presented secret with the one held, in time independent of where they differ:
//! the admin API's bearer token, its sessions' CSRF tokens, and the proxy's per-request trace
//! (`proxy::trace`), which is asked for with the same admin token.

use subtle::ConstantTimeEq;

/// Whether `presented` equals `secret`, in time independent of where they differ (a length
/// mismatch answers at once: the length is not the secret).
pub fn same_secret(presented: &str, secret: &str) -> bool {
    bool::from(presented.as_bytes().ct_eq(secret.as_bytes()))
}
