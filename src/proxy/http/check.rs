//! The general path's check of a request head hyper (or the HTTP/2 codec) parsed, by
//! `message`'s rules as the fast path judges its own: the authority it is for, the framing to
//! write again, an upgrade.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Version};

use super::super::message;

/// What the proxy needs of a request head, checked by `message`'s rules for HTTP/1 (an
/// HTTP/2 request's framing and pseudo-headers were checked by the h2 codec; its method against
/// its target by `message::check_method`, as HTTP/1's).
pub struct Checked {
    /// The authority the request is for.
    pub host: Option<Host>,
    /// HTTP/1 only: the framing as checked, written again for the backend.
    pub body: Option<message::RequestBody>,
    pub upgrade: Option<HeaderValue>,
}

/// The authority a request is for, as `Checked` keeps it: an HTTP/2 request's shares the bytes
/// of its head (a reference count, not a copy per stream); an HTTP/1 one's is copied out of the
/// head `message` checked.
pub enum Host {
    Authority(http::uri::Authority),
    Field(HeaderValue),
    Copied(Bytes),
}

impl std::ops::Deref for Host {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Host::Authority(authority) => authority.as_str().as_bytes(),
            Host::Field(value) => value.as_bytes(),
            Host::Copied(bytes) => bytes,
        }
    }
}

/// The general path's check of a head hyper parsed (public for the differential fuzz target,
/// which must judge hyper's heads exactly as the proxy does).
pub fn check<B>(req: &Request<B>) -> Result<Checked, message::Refusal> {
    let authority = req.uri().authority().map(|a| a.as_str().as_bytes());
    if req.version() == Version::HTTP_2 {
        // The path, not the URI: an HTTP/2 request's URI has its scheme and authority too,
        // and would never equal "*".
        let target = if req.uri().path() == "*" {
            message::Target::Asterisk
        } else {
            message::Target::Origin
        };
        message::check_method(req.method().as_str().as_bytes(), target)?;
        // Without `:authority`, Host names the host (RFC 9113 §8.3.1), under HTTP/1's rule.
        let host = match req.uri().authority() {
            Some(authority) => Some(Host::Authority(authority.clone())),
            None => req.headers().get(header::HOST).cloned().map(Host::Field),
        };
        if let Some(h) = &host
            && !message::valid_authority(h)
        {
            return Err(message::Refusal {
                status: 400,
                reason: "invalid Host",
            });
        }
        return Ok(Checked {
            host,
            body: None,
            upgrade: None,
        });
    }
    // hyper takes any URI; the target forms are `message`'s (RFC 9112 §3.2): absolute-form is
    // http or https, authority-form is CONNECT's (refused there with 405).
    let connect = req.method() == http::Method::CONNECT;
    let target = match (req.uri().scheme_str(), authority) {
        (Some(scheme), Some(authority))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            message::Target::Absolute(authority)
        }
        (Some(_), _) | (None, Some(_)) if !connect => {
            return Err(message::Refusal {
                status: 400,
                reason: "unsupported request target",
            });
        }
        _ if req.uri() == "*" => message::Target::Asterisk,
        _ => message::Target::Origin,
    };
    let checked = message::check_request(
        req.version() == Version::HTTP_10,
        req.method().as_str().as_bytes(),
        target,
        req.headers()
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
    )?;
    Ok(Checked {
        host: checked
            .host
            .map(|h| Host::Copied(Bytes::copy_from_slice(h))),
        body: Some(checked.body),
        upgrade: checked
            .upgrade
            .and_then(|u| HeaderValue::from_bytes(u).ok()),
    })
}
