//! One request's trip through a service's backends, as both codecs make it: the candidates in
//! balancing order (outliers last), what a failure is and which status answers it, what is
//! charged to a backend's outlier record, and when a request is replayed on the next backend
//! within the retry budget. Each codec only sends and receives; every decision is here.

use std::sync::Arc;

use super::Context;
use super::trace::Trace;
use crate::backends::BackendState;
use crate::metrics::{Metrics, ServiceLabels};
use crate::routing::Service;

/// How an attempt to have a backend answer failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No connection could be made: nothing was sent.
    Connect,
    /// The request went out and the backend failed (closed, reset) before a response byte.
    Lost(String),
    /// The backend closed (or reset) before the client's body was whole, after the proxy had
    /// waited on the client for [`CLIENT_SILENCE_MS`] in all: 502, as any close, but charged
    /// to no backend, as the client's pace may be why (`http_client_failures_total`).
    LostAwaitingBody(String),
    /// No response head within the response timeout.
    TimedOut,
    /// The backend left the table while the request waited, and its drain ran out.
    Removed,
    /// The backend's response could not be relayed safely (malformed, ambiguous framing, a
    /// protocol switch nobody asked for).
    BadResponse(&'static str),
    /// The client's request body was malformed or cut short: the client's fault, never the
    /// backend's.
    Client,
    /// The client stopped sending its request body (past the client timeout): its fault too.
    ClientStalled,
    /// The client went away: nothing to answer.
    ClientGone,
    /// The app's `MAX_PENDING_REQUESTS` were already waiting for a backend connection: 503 at
    /// once, nothing tried further, nothing charged to a backend.
    Overloaded,
    /// No connection could be made for this host's own shortage (descriptors, memory,
    /// ephemeral ports: `super::local_shortage`): 503, nothing tried further, nothing charged
    /// to a backend.
    Local,
}

impl Failure {
    /// The status the client is answered with, if it is still there.
    pub fn status(&self) -> Option<u16> {
        match self {
            Failure::Connect
            | Failure::Lost(_)
            | Failure::LostAwaitingBody(_)
            | Failure::Removed
            | Failure::BadResponse(_) => Some(502),
            Failure::TimedOut => Some(504),
            Failure::Overloaded | Failure::Local => Some(503),
            Failure::Client => Some(400),
            Failure::ClientStalled => Some(408),
            Failure::ClientGone => None,
        }
    }

    /// Whether the failure counts against the backend (outlier ejection, error metrics).
    pub fn is_backends(&self) -> bool {
        !matches!(
            self,
            Failure::Client
                | Failure::LostAwaitingBody(_)
                | Failure::ClientStalled
                | Failure::ClientGone
                | Failure::Removed
                | Failure::Overloaded
                | Failure::Local
        )
    }

    /// The short text of the answer.
    pub fn text(&self) -> String {
        match self {
            Failure::Connect => "backend unreachable".into(),
            Failure::Lost(reason) => reason.clone(),
            Failure::LostAwaitingBody(reason) => {
                format!("{reason} (during a slow upload: the backend is not charged)")
            }
            Failure::TimedOut => "backend timed out".into(),
            Failure::Removed => "backend removed while waiting".into(),
            Failure::BadResponse(reason) => (*reason).into(),
            Failure::Client => "malformed request body".into(),
            Failure::ClientStalled => "request body timed out".into(),
            Failure::ClientGone => "client gone".into(),
            Failure::Overloaded => super::limits::Refusal::Pending.text().into(),
            Failure::Local => "proxy out of local resources".into(),
        }
    }
}

/// Where a client's request body stood when its exchange failed: what decides whether a
/// backend's close or timeout is its own failure or the client's ([`Failure::given`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyAt {
    /// Whole, or none at all, or cut by the backend's answer: what fails after is the
    /// backend's.
    Done,
    /// It broke off on the client's side: malformed, or cut short.
    BrokeOff,
    /// Still coming.
    Unfinished {
        /// How long (ms) the proxy had been waiting for the client's next bytes, if it was
        /// waiting (`None`: it had some in hand, or was writing them to the backend).
        quiet: Option<u64>,
        /// How long (ms) the proxy waited on the client over the whole body so far, `quiet`
        /// included.
        waited: u64,
    },
}

impl BodyAt {
    /// Whether the client's pace may be why the backend gave up: the proxy was waiting on the
    /// client right then, and had waited on it [`CLIENT_SILENCE_MS`] in all (this wait
    /// included). Not while the proxy held body the backend would not take: the backend was
    /// not waiting on the client then, however slow the client had been before.
    pub fn slow(&self) -> bool {
        matches!(self, BodyAt::Unfinished { quiet: Some(_), waited } if *waited >= CLIENT_SILENCE_MS)
    }
}

/// How long the proxy must have waited on a client's body for a backend's close to be laid at
/// the client's pace. Quiet this long when the backend closed, the client was timed out (408):
/// a backend's idle bound on an upload, as nginx's `client_body_timeout`. Waited on this long
/// in all, the client's pace may be why (a backend's bound on an upload's whole time or rate,
/// which a client sending a byte now and then meets; but also a large upload from a client
/// whose link is the bottleneck): a 502 charged to no backend ([`Failure::LostAwaitingBody`]).
/// A close while the body flowed, the proxy hardly ever waiting, is the backend's.
pub const CLIENT_SILENCE_MS: u64 = 1000;

/// A wait on the client shorter than this is the proxy's own turn (a poll's round trip, a
/// busy scheduler, hyper's handshake before each chunk it reads), not the client's pace: it is
/// not summed into [`BodyAt::Unfinished`]'s `waited`, or thousands of them would make any long
/// upload look slow.
pub const WAIT_FLOOR_MS: u64 = 20;

/// What one wait on the client of `ms` adds to a body's `waited` ([`WAIT_FLOOR_MS`]).
pub fn summed_wait(ms: u64) -> u64 {
    if ms >= WAIT_FLOOR_MS { ms } else { 0 }
}

impl Failure {
    /// The failure, given where the request body stood: one rule for every codec.
    /// - After the body broke off, a close or a timeout is the client's fault (400).
    /// - A close after [`CLIENT_SILENCE_MS`] of the client's quiet is its stall (408); a close
    ///   while the proxy waited on a client it had waited on that long in all
    ///   ([`BodyAt::slow`]) is a 502 charged to no backend.
    /// - A timeout while the proxy had been waiting on the client (for [`WAIT_FLOOR_MS`] at
    ///   least: not between two frames of a body that flows) is the client's stall (408): the
    ///   backend's response timeout ran out while the rest of the body was the client's to
    ///   send. One while the proxy held some of the body the backend would not take is the
    ///   backend's (504), however slow the client was before.
    /// - Anything else (a body that flowed, or ended, or was cut by the backend's answer)
    ///   stays the backend's failure.
    pub fn given(self, body: BodyAt) -> Failure {
        const S: u64 = CLIENT_SILENCE_MS;
        match (self, body) {
            (Failure::Lost(_) | Failure::TimedOut, BodyAt::BrokeOff) => Failure::Client,
            (Failure::Lost(_), BodyAt::Unfinished { quiet: Some(q), .. }) if q >= S => {
                Failure::ClientStalled
            }
            (Failure::Lost(reason), body) if body.slow() => Failure::LostAwaitingBody(reason),
            (Failure::TimedOut, BodyAt::Unfinished { quiet: Some(q), .. })
                if q >= WAIT_FLOOR_MS =>
            {
                Failure::ClientStalled
            }
            (failure, _) => failure,
        }
    }

    /// The `reason` label of `http_client_failures_total` for a failure that is the client's
    /// or may be ([`Failure::LostAwaitingBody`]).
    fn client_reason(&self) -> Option<&'static str> {
        match self {
            Failure::Client => Some("malformed_body"),
            Failure::ClientStalled => Some("stalled_body"),
            Failure::LostAwaitingBody(_) => Some("slow_upload"),
            _ => None,
        }
    }
}

/// One request's settings of its app, over the proxy's defaults: the timeouts
/// (`SWITCHYARD_{n}_CONNECT_TIMEOUT`, `_RESPONSE_TIMEOUT`, `_TUNNEL_TIMEOUT`) and the app's
/// limits, for the pending count while a backend connection opens.
#[derive(Clone, Copy)]
pub struct Policy<'a> {
    pub connect: std::time::Duration,
    pub response: std::time::Duration,
    pub tunnel: std::time::Duration,
    pub limits: Option<&'a Arc<crate::backends::limits::AppLimits>>,
}

impl<'a> Policy<'a> {
    pub fn of(
        service: &Service,
        settings: &super::Settings,
        limits: Option<&'a Arc<crate::backends::limits::AppLimits>>,
    ) -> Policy<'a> {
        let t = &service.edge.timeouts;
        Policy {
            connect: t.connect.unwrap_or(settings.connect_timeout),
            response: t.response.unwrap_or(settings.response_timeout),
            tunnel: t.tunnel.unwrap_or(settings.tunnel_idle_timeout),
            limits,
        }
    }
}

/// What the client hears when no backend answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unanswered {
    pub status: u16,
    pub text: String,
    /// The backend whose failure is reported, for its metrics and the access log.
    pub backend: Option<usize>,
    /// The request's trace (`Switchyard-Trace-Result`), when it asked for one.
    pub trace: Option<String>,
}

/// The attempts of one request on a service's backends.
pub struct Attempts<'a> {
    ctx: &'a Context,
    service: &'a Service,
    states: &'a [Arc<BackendState>],
    /// The request can be sent again (idempotent, its body not consumed, replays enabled).
    replayable: bool,
    replayed: bool,
    last: Option<(Failure, usize)>,
    /// The request's trace, when it asked for one (`trace`): each failed attempt is noted.
    trace: Option<Box<Trace>>,
}

impl<'a> Attempts<'a> {
    /// `replayable`: the request is idempotent and carries no body still to be read.
    pub fn new(
        ctx: &'a Context,
        service: &'a Service,
        states: &'a [Arc<BackendState>],
        replayable: bool,
        retry_enabled: bool,
    ) -> Attempts<'a> {
        let replayable = replayable && retry_enabled;
        if replayable {
            ctx.retry_budget.deposit();
        }
        Attempts {
            ctx,
            service,
            states,
            replayable,
            replayed: false,
            last: None,
            trace: None,
        }
    }

    /// Traces this request (`trace` came of a request that asked with the token): the service
    /// and its deferred backends now, then every attempt.
    pub fn traced(&mut self, trace: Option<Box<Trace>>) {
        self.trace = trace.map(|mut t| {
            t.service(self.service, self.states);
            t
        });
    }

    /// The trace's line when `b` (`None`: the proxy itself) answers; `None` when untraced.
    pub fn trace_value(&self, b: Option<usize>) -> Option<String> {
        let t = self.trace.as_ref()?;
        Some(t.value(b.map(|b| self.states[b].addr)))
    }

    /// A connect to `b` failed with `error`: [`Attempts::failed`] with `Failure::Connect`, the
    /// trace saying why.
    pub fn connect_failed(&mut self, b: usize, error: &std::io::Error) -> bool {
        if let Some(t) = &mut self.trace {
            t.failed(self.states[b].addr, &super::trace::connect_error(error));
        }
        let failure = if super::local_shortage(error) {
            Failure::Local
        } else {
            Failure::Connect
        };
        self.decide(b, failure)
    }

    /// The candidates in the order they are tried: the balancer's choice first, then the
    /// fall-through order, ejected and unhealthy backends last.
    pub fn candidates(
        &self,
        flow: crate::routing::balance::Flow,
    ) -> impl Iterator<Item = usize> + 'a {
        let states = self.states;
        crate::backends::outlier::ordered(
            states,
            self.service.balancer.candidates(flow, |i| states[i].load()),
        )
    }

    /// A backend answered with `status`, the request's body where `body` says. A `5xx` is
    /// charged to it (outlier ejection) unless it answered before the body was whole and the
    /// client had been slow with it ([`BodyAt::slow`]).
    pub fn answered(&mut self, b: usize, status: u16, body: BodyAt) {
        if status < 500 {
            self.states[b].outlier.success();
        } else if body.slow() {
            // Answered before the body was whole, the client slow with it: the client's pace
            // may be why (a body read timeout a backend answers 500 or 503), and a client must
            // not get a backend ejected that way.
            tracing::debug!(service = %self.service.key, backend = %self.states[b].addr, status, "a 5xx to a slow upload, not counted towards ejection");
            self.count_client_failure("slow_upload");
        } else {
            crate::backends::outlier::failure(self.states, b);
        }
    }

    fn count_client_failure(&self, reason: &'static str) {
        let labels = crate::metrics::ReasonLabels { reason };
        self.ctx
            .metrics
            .client_failures
            .get_or_create(&labels)
            .inc();
    }

    /// An attempt on `b` failed. Returns whether to go on with the next candidate: always
    /// when nothing was sent, once (within the budget) for a replayable request, never for a
    /// client's fault.
    pub fn failed(&mut self, b: usize, failure: Failure) -> bool {
        if let Some(t) = &mut self.trace {
            t.failed(self.states[b].addr, &super::trace::failure(&failure));
        }
        self.decide(b, failure)
    }

    fn decide(&mut self, b: usize, failure: Failure) -> bool {
        if failure.is_backends() {
            crate::backends::outlier::failure(self.states, b);
            tracing::debug!(service = %self.service.key, backend = %self.states[b].addr, "{}", failure.text());
        }
        if let Some(reason) = failure.client_reason() {
            self.count_client_failure(reason);
        }
        // Every attempt's failure is counted against the backend that failed it, as the answer
        // it would have given (502, 504), whether or not another backend then saved the client:
        // a canary's gate and the error metrics see its timeouts retried elsewhere. A refused
        // connection is counted where the connect failed (`connect_failures`).
        if (failure.is_backends() || failure == Failure::Removed)
            && failure != Failure::Connect
            && let Some(status) = failure.status()
        {
            self.states[b].metrics.response(
                http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY),
            );
        }
        let client = !failure.is_backends() && failure != Failure::Removed;
        let unsent = failure == Failure::Connect;
        self.last = Some((failure, b));
        if client {
            return false;
        }
        if unsent {
            return true;
        }
        if !self.replayable || self.replayed {
            if let Some(t) = &mut self.trace {
                t.stopped(if self.replayed {
                    "replayed once already"
                } else {
                    "request not replayable"
                });
            }
            return false;
        }
        if self.ctx.retry_budget.withdraw() {
            Metrics::count(&self.ctx.metrics.retries, "replayed");
            self.replayed = true;
            true
        } else {
            Metrics::count(&self.ctx.metrics.retries, "budget_exhausted");
            if let Some(t) = &mut self.trace {
                t.stopped("retry budget exhausted");
            }
            false
        }
    }

    /// Whether the last failure was the client's (nothing more is sent for this request).
    pub fn client_failed(&self) -> bool {
        matches!(self.last, Some((Failure::Client | Failure::ClientGone, _)))
    }

    /// The answer when no backend answered; `None` when the client is gone.
    pub fn unanswered(self) -> Option<Unanswered> {
        let trace = self.trace_value(None);
        match self.last {
            Some((Failure::Connect, _)) | None => {
                self.ctx
                    .metrics
                    .no_backend
                    .get_or_create(&ServiceLabels {
                        service: self.service.key.to_string(),
                    })
                    .inc();
                let empty = self.service.backends.is_empty();
                Some(Unanswered {
                    status: if empty { 503 } else { 502 },
                    text: if empty {
                        "no backend available".into()
                    } else {
                        "no backend reachable".into()
                    },
                    backend: None,
                    trace,
                })
            }
            Some((failure, b)) => {
                // Counted against `b` when it failed (`decide`).
                let status = failure.status()?;
                Some(Unanswered {
                    status,
                    text: failure.text(),
                    backend: Some(b),
                    trace,
                })
            }
        }
    }
}

/// Methods whose request may be sent again when a backend failed before answering (RFC 9110
/// §9.2.2).
pub fn is_idempotent(method: &[u8]) -> bool {
    matches!(
        method,
        b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
    )
}

/// The reason phrase of the statuses the proxy answers itself.
pub fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_backend_side_failures_are_charged() {
        for f in [
            Failure::Connect,
            Failure::Lost("x".into()),
            Failure::TimedOut,
            Failure::BadResponse("x"),
        ] {
            assert!(f.is_backends(), "{f:?}");
        }
        for f in [
            Failure::Client,
            Failure::ClientStalled,
            Failure::ClientGone,
            Failure::Removed,
        ] {
            assert!(!f.is_backends(), "{f:?}");
        }
        assert_eq!(Failure::TimedOut.status(), Some(504));
        assert_eq!(Failure::Client.status(), Some(400));
        assert_eq!(Failure::ClientGone.status(), None);
    }

    #[test]
    fn a_close_or_a_timeout_is_the_clients_only_when_its_body_held_the_backend() {
        const S: u64 = CLIENT_SILENCE_MS;
        let lost = || Failure::Lost("closed".into());
        let unfinished = |quiet, waited| BodyAt::Unfinished { quiet, waited };
        for failure in [lost(), Failure::TimedOut] {
            assert_eq!(failure.clone().given(BodyAt::BrokeOff), Failure::Client);
            assert_eq!(
                failure.clone().given(unfinished(Some(S), S)),
                Failure::ClientStalled
            );
            // Flowing (the proxy waited on the client for a few ms in all), ended, or
            // answered: the backend's.
            for at in [BodyAt::Done, unfinished(None, 0), unfinished(None, S - 1)] {
                assert_eq!(failure.clone().given(at), failure);
            }
        }
        // The proxy held some of the body the backend would not take: a timeout is the
        // backend's, however slow the client was before.
        assert_eq!(
            Failure::TimedOut.given(unfinished(None, 10 * S)),
            Failure::TimedOut
        );
        // A close soon after the client's last bytes, the client slow before: a 502, charged
        // to no one. The same close, the client never slow: the backend's.
        let paced = lost().given(unfinished(Some(S - 1), S));
        assert_eq!(paced, Failure::LostAwaitingBody("closed".into()));
        assert_eq!((paced.status(), paced.is_backends()), (Some(502), false));
        assert_eq!(lost().given(unfinished(Some(S - 1), S - 1)), lost());
        // The proxy held body the backend would not take: the backend's, however slow the
        // client was before.
        assert_eq!(lost().given(unfinished(None, 10 * S)), lost());
        // A timeout, seconds long, while the proxy had been waiting on the client: the
        // client's; caught between two frames of a flowing body, the backend's.
        assert_eq!(
            Failure::TimedOut.given(unfinished(Some(WAIT_FLOOR_MS), 0)),
            Failure::ClientStalled
        );
        assert_eq!(
            Failure::TimedOut.given(unfinished(Some(WAIT_FLOOR_MS - 1), 0)),
            Failure::TimedOut
        );
        // Slow: waiting on the client, after a second of it in all; what the close above and
        // a 5xx answered to an unfinished body are judged by.
        assert!(unfinished(Some(0), S).slow() && unfinished(Some(S), S).slow());
        assert!(!unfinished(Some(S - 1), S - 1).slow() && !unfinished(None, 10 * S).slow());
        assert!(!BodyAt::Done.slow() && !BodyAt::BrokeOff.slow());
        // What a wait adds to the sum: nothing under the floor, all of it from there.
        assert_eq!(
            (summed_wait(WAIT_FLOOR_MS - 1), summed_wait(WAIT_FLOOR_MS)),
            (0, WAIT_FLOOR_MS)
        );
        assert!(paced.text().contains("not charged"), "{}", paced.text());
        // Each failure charged to no backend for the client's sake has a reason of the
        // metric's, made at start, and every reason is one.
        let reasons: Vec<_> = [Failure::Client, Failure::ClientStalled, paced]
            .iter()
            .map(|f| f.client_reason().expect("a client's failure"))
            .collect();
        assert_eq!(reasons, crate::metrics::CLIENT_FAILURE_REASONS);
        assert_eq!(lost().client_reason(), None);
        // What is not a close or a timeout keeps its owner.
        for failure in [
            Failure::Connect,
            Failure::BadResponse("x"),
            Failure::Removed,
        ] {
            for at in [BodyAt::BrokeOff, unfinished(Some(S), S)] {
                assert_eq!(failure.clone().given(at), failure);
            }
        }
    }
}
