//! The answers the proxy writes itself when a request does not reach a backend's answer —
//! 502, 503 and 504 with the app's error page (`SWITCHYARD_{n}_ERROR_PAGE_*`) or the default
//! one (`http.error_page_*`), a limit's 429 with `Retry-After`, and a request routing could
//! not place (503, or 400 for an ambiguous path) — for both codecs: the fast
//! path writes the bytes, the general path a hyper response, from one [`Answer`].

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use super::upstream::ProxyBody;
use crate::routing::Service;
use crate::routing::edge::{ErrorPages, Page};
use crate::routing::resolve::Unrouted;

/// An answer the proxy writes itself.
pub struct Answer<'a> {
    pub status: u16,
    /// The plain-text body when there is no page.
    pub text: &'a str,
    pub page: Option<&'a Page>,
    pub retry_after: Option<u64>,
    /// The request's trace (`Switchyard-Trace-Result`), when it asked for one.
    pub trace: Option<&'a str>,
}

impl<'a> Answer<'a> {
    /// The answer for `status` about `service` (`None`: no service was found): its page,
    /// else the default page, else `text`.
    pub fn new(
        status: u16,
        text: &'a str,
        service: Option<&'a Service>,
        defaults: &'a ErrorPages,
    ) -> Answer<'a> {
        let page = service
            .and_then(|s| s.edge.pages.get(status))
            .or_else(|| defaults.get(status));
        Answer {
            status,
            text,
            page,
            retry_after: None,
            trace: None,
        }
    }

    /// The answer to a request routing found no target for (`resolve::Unrouted`): 503 when
    /// nothing serves it, 400 when its path is ambiguous (`routing::request_path`), the
    /// client's fault, charged to no backend.
    pub fn unrouted(why: Unrouted, defaults: &'a ErrorPages) -> Answer<'a> {
        match why {
            Unrouted::NoRoute => Answer::new(503, "no route for this request\n", None, defaults),
            Unrouted::AmbiguousPath => Answer::new(
                400,
                "ambiguous request path: read as some servers read it, it names another \
                 route\n",
                None,
                defaults,
            ),
        }
    }

    /// The answer with a request's trace, when it has one.
    pub fn trace(self, trace: Option<&'a str>) -> Answer<'a> {
        Answer { trace, ..self }
    }

    pub fn retry_after(self, seconds: Option<u64>) -> Answer<'a> {
        Answer {
            retry_after: seconds,
            ..self
        }
    }

    fn body(&self) -> (&str, &[u8]) {
        match self.page {
            Some(page) => (&page.content_type, &page.body),
            None => ("text/plain; charset=utf-8", self.text.as_bytes()),
        }
    }

    /// Fast path: the whole response as bytes.
    pub fn bytes(&self, close: bool) -> Vec<u8> {
        let (content_type, body) = self.body();
        let mut out = Vec::with_capacity(160 + body.len());
        let reason = super::exchange::reason(self.status);
        out.extend_from_slice(
            format!(
                "HTTP/1.1 {} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n",
                self.status,
                body.len()
            )
            .as_bytes(),
        );
        if let Some(seconds) = self.retry_after {
            out.extend_from_slice(format!("retry-after: {seconds}\r\n").as_bytes());
        }
        if let Some(trace) = self.trace {
            out.extend_from_slice(&super::trace::line(trace));
        }
        super::headers::write_date(&mut out);
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        out
    }

    /// General path: the response.
    pub fn response(&self) -> Response<ProxyBody> {
        let body = match self.page {
            Some(page) => page.body.clone(),
            None => Bytes::copy_from_slice(self.text.as_bytes()),
        };
        let mut response = Response::new(ProxyBody::Full(Full::new(body)));
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let content_type = self.body().0;
        let content_type = HeaderValue::from_str(content_type)
            .unwrap_or(HeaderValue::from_static("text/plain; charset=utf-8"));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(trace) = self.trace.and_then(|t| HeaderValue::from_str(t).ok()) {
            response.headers_mut().insert(
                const { http::HeaderName::from_static(super::headers::SWITCHYARD_TRACE_RESULT) },
                trace,
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_codecs_write_the_same_answer() {
        let mut pages = ErrorPages::default();
        pages.set(503, b"<h1>down</h1>", "text/html").unwrap();
        let answer = Answer::new(503, "no backend available\n", None, &pages).retry_after(Some(3));
        let bytes = String::from_utf8(answer.bytes(false)).unwrap();
        assert!(bytes.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(bytes.contains("content-type: text/html\r\n"));
        assert!(bytes.contains("retry-after: 3\r\n"));
        assert!(bytes.ends_with("\r\n\r\n<h1>down</h1>"));
        let response = answer.response();
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/html");
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        let plain = Answer::new(502, "no backend reachable\n", None, &pages);
        assert!(
            String::from_utf8(plain.bytes(true))
                .unwrap()
                .contains("text/plain")
        );
    }
}
