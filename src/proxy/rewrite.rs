//! marathon-lb's path rewriting, once for both codecs: pure functions over a request's target,
//! its Host, and response header values. The rules, from marathon-lb's config.py templates:
//!
//! - `HAPROXY_{n}_HTTP_BACKEND_PROXYPASS_PATH` (`HTTP_BACKEND_PROXYPASS_GLUE`):
//!   `reqirep "^([^ :]*)\ {proxypath}/?(.*)" "\1\ /\2"` — a target starting with the path
//!   (without case) loses it and one `/` after it, and starts with `/` again; the backend is
//!   told `Host: {hostname}` (`http-request set-header Host {hostname}`).
//! - `HAPROXY_{n}_HTTP_BACKEND_REVPROXY_PATH` (`HTTP_BACKEND_REVPROXY_GLUE`):
//!   `rspirep "^Location: (https?://{hostname}(:[0-9]+)?)?(/.*)" "Location: {rootpath}"` —
//!   a `Location` that is a path, or a URL at the app's host, is answered under the root path.
//!   The template as shipped drops the matched path (`\3`) and keeps only `{rootpath}`; the
//!   label's documentation ("Set the URL in HTTP response headers sent from a reverse proxied
//!   server. It only updates Location, Content-Location and URL.") is what switchyard does:
//!   the path is kept under the root path, in `Location` and `Content-Location`.
//! - `HAPROXY_{n}_HTTP_BACKEND_REDIR` (`HTTP_BACKEND_REDIR`): `acl is_root path -i /`,
//!   `acl is_domain hdr(host) -i {hostname}`, `redirect code 301 location {redirpath} if
//!   is_domain is_root`.

use crate::routing::Rewrite;

/// The target the backend gets under `HTTP_BACKEND_PROXYPASS_PATH`: `None` when the target
/// does not start with the path (it goes unchanged).
pub fn strip_prefix(target: &str, proxy_path: &str) -> Option<String> {
    let head = target.as_bytes().get(..proxy_path.len())?;
    if proxy_path.is_empty() || !head.eq_ignore_ascii_case(proxy_path.as_bytes()) {
        return None;
    }
    let rest = &target[proxy_path.len()..];
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    Some(format!("/{rest}"))
}

/// A `Location` or `Content-Location` value under `HTTP_BACKEND_REVPROXY_PATH`: a path, or an
/// `http(s)://` URL at one of `hosts` (any port), comes back as `root` followed by its path.
/// `None`: left as the backend sent it (another host, or not a path).
pub fn reverse_location(value: &str, hosts: &[String], root: &str) -> Option<String> {
    let path = if value.starts_with('/') {
        value
    } else {
        let lower = value
            .get(..8)
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        let rest = if lower.starts_with("http://") {
            &value[7..]
        } else if lower.starts_with("https://") {
            &value[8..]
        } else {
            return None;
        };
        let end = rest.find('/')?;
        let authority = &rest[..end];
        let host = match authority.rsplit_once(':') {
            Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        };
        if !hosts.iter().any(|h| host_matches(h, host)) {
            return None;
        }
        &rest[end..]
    };
    Some(format!("{}{path}", root.trim_end_matches('/')))
}

/// Whether a request for `path` (without the query) at `host` (the Host header, port and all)
/// is redirected by `HTTP_BACKEND_REDIR`: the root of one of `hosts`.
pub fn redirects_root(path: &str, host: Option<&[u8]>, hosts: &[String]) -> bool {
    if path != "/" {
        return false;
    }
    let mut buf = [0u8; 256];
    let Some(host) = host.and_then(|h| crate::routing::vhosts::host_key(h, &mut buf)) else {
        return false;
    };
    hosts.iter().any(|h| host_matches(h, host))
}

/// `vhost` (lowercase, maybe `*.`) names `host` (any case).
fn host_matches(vhost: &str, host: &str) -> bool {
    match vhost.strip_prefix("*.") {
        Some(suffix) => host.len().checked_sub(suffix.len() + 1).is_some_and(|i| {
            host.as_bytes()[i] == b'.' && host[i + 1..].eq_ignore_ascii_case(suffix)
        }),
        None => vhost.eq_ignore_ascii_case(host),
    }
}

/// What a service's rewrites do to one request: the new target, if it changes, and the Host
/// the backend is told (the app's first vhost, as `set-header Host {hostname}`).
pub fn request<'r>(rewrite: &'r Rewrite, target: &str) -> (Option<String>, Option<&'r str>) {
    let Some(proxy_path) = rewrite.proxy_path.as_deref() else {
        return (None, None);
    };
    let host = rewrite.hosts.iter().find(|h| !h.starts_with("*."));
    (strip_prefix(target, proxy_path), host.map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn proxypass_strips_the_prefix_as_reqirep_does() {
        // marathon-lb's test_config_simple_app_proxypass renders
        // `reqirep  "^([^ :]*)\ /test//?(.*)" "\1\ /\2"` for HAPROXY_0_HTTP_BACKEND_PROXYPASS_PATH
        // = '/test/'.
        assert_eq!(
            strip_prefix("/test/a/b?x=1", "/test/").as_deref(),
            Some("/a/b?x=1")
        );
        assert_eq!(strip_prefix("/test//a", "/test/").as_deref(), Some("/a"));
        assert_eq!(strip_prefix("/test/", "/test/").as_deref(), Some("/"));
        assert_eq!(strip_prefix("/test", "/test/"), None);
        assert_eq!(strip_prefix("/api", "/api").as_deref(), Some("/"));
        assert_eq!(
            strip_prefix("/api/users", "/api").as_deref(),
            Some("/users")
        );
        assert_eq!(
            strip_prefix("/API/users", "/api").as_deref(),
            Some("/users"),
            "reqirep: no case"
        );
        // A prefix, not a segment: the regex has no boundary either.
        assert_eq!(strip_prefix("/apix", "/api").as_deref(), Some("/x"));
        assert_eq!(strip_prefix("/web", "/api"), None);
        assert_eq!(strip_prefix("/", ""), None);
    }

    #[test]
    fn revproxy_puts_locations_back_under_the_root() {
        let hosts = vec![
            "test.example.com".to_string(),
            "*.apps.example.com".to_string(),
        ];
        let r = |v: &str| reverse_location(v, &hosts, "/test");
        assert_eq!(r("/login").as_deref(), Some("/test/login"));
        assert_eq!(r("/").as_deref(), Some("/test/"));
        assert_eq!(
            r("http://test.example.com/a?b").as_deref(),
            Some("/test/a?b")
        );
        assert_eq!(
            r("HTTPS://Test.Example.com:8443/a").as_deref(),
            Some("/test/a")
        );
        assert_eq!(
            r("https://x.apps.example.com/a").as_deref(),
            Some("/test/a")
        );
        assert_eq!(r("http://elsewhere.org/a"), None, "another host");
        assert_eq!(r("http://test.example.com"), None, "(/.*) needs a path");
        assert_eq!(r("relative/path"), None);
        assert_eq!(
            reverse_location("/a", &hosts, "/root/").as_deref(),
            Some("/root/a")
        );
    }

    #[test]
    fn redir_only_at_the_root_of_the_apps_host() {
        let hosts = vec!["test.example.com".to_string()];
        assert!(redirects_root("/", Some(b"test.example.com"), &hosts));
        assert!(redirects_root("/", Some(b"TEST.example.com:80"), &hosts));
        assert!(!redirects_root("/x", Some(b"test.example.com"), &hosts));
        assert!(!redirects_root("/", Some(b"other.example.com"), &hosts));
        assert!(!redirects_root("/", None, &hosts));
    }

    proptest! {
        #[test]
        fn stripping_leaves_an_origin_form_target(target in "/[a-zA-Z0-9/?=&.]{0,20}", prefix in "/[a-zA-Z/]{0,6}") {
            if let Some(out) = strip_prefix(&target, &prefix) {
                prop_assert!(out.starts_with('/'));
                prop_assert!(out.len() <= target.len() + 1);
                // What remains is the target's own tail.
                prop_assert!(target.ends_with(out.trim_start_matches('/')));
            } else {
                prop_assert!(!target.to_ascii_lowercase().starts_with(&prefix.to_ascii_lowercase()));
            }
        }

        #[test]
        fn reversed_locations_are_under_the_root(path in "/[a-zA-Z0-9/?=&.]{0,20}", root in "/[a-z]{1,6}/?") {
            let hosts = vec!["a.example.com".to_string()];
            let out = reverse_location(&path, &hosts, &root).unwrap();
            prop_assert!(out.starts_with(root.trim_end_matches('/')));
            prop_assert!(out.ends_with(&path));
            let url = format!("http://a.example.com:81{path}");
            prop_assert_eq!(reverse_location(&url, &hosts, &root), Some(out));
        }
    }
}
