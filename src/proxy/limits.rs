//! The one home of an app's request admission, for both HTTP codecs: the maintenance switch,
//! the rate limit (429 with `Retry-After`) and the concurrency limit (503 at once), checked in
//! that order once a request's service is known and before anything goes to a backend; and
//! the pending limit (503 at once), checked when a request would wait for a new backend
//! connection. The state is `backends::limits` (atomics shared by every worker); the answers
//! are written by `errors`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::Context;
use crate::backends::limits::{AppLimits, Slot};
use crate::metrics::LimitLabels;
use crate::routing::Service;

/// Why a request was answered without going to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Maintenance,
    /// Over the rate: one would pass after this long.
    Rate(Duration),
    Concurrency,
    Pending,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::Rate(_) => 429,
            _ => 503,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Refusal::Maintenance => "down for maintenance",
            Refusal::Rate(_) => "too many requests",
            Refusal::Concurrency => "too many requests in flight",
            Refusal::Pending => "too many requests waiting for a backend connection",
        }
    }

    /// `Retry-After` in whole seconds (at least 1), for a rate refusal.
    pub fn retry_after(self) -> Option<u64> {
        match self {
            Refusal::Rate(wait) => Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)),
            _ => None,
        }
        .map(|s| s.max(1))
    }
}

/// Admits one request to `service` from `client`: `Ok` holds its place among the requests in
/// flight (if the app limits them) until dropped.
pub fn admit(
    ctx: &Context,
    service: &Service,
    limits: Option<&Arc<AppLimits>>,
    client: IpAddr,
) -> Result<Option<Slot>, Refusal> {
    if service.edge.maintenance {
        ctx.metrics
            .limited
            .get_or_create(&LimitLabels {
                service: service.key.to_string(),
                reason: "maintenance",
            })
            .inc();
        return Err(Refusal::Maintenance);
    }
    let Some(limits) = limits else {
        return Ok(None);
    };
    if let Err(wait) = limits.rate(client) {
        limits.counters.rate.inc();
        return Err(Refusal::Rate(wait));
    }
    limits.enter().map_err(|_| {
        limits.counters.concurrency.inc();
        Refusal::Concurrency
    })
}

/// A place among the requests waiting for a new backend connection, held while it opens.
pub fn pending(limits: Option<&Arc<AppLimits>>) -> Result<Option<Slot>, Refusal> {
    let Some(limits) = limits else {
        return Ok(None);
    };
    limits.wait_for_connection().map_err(|_| {
        limits.counters.pending.inc();
        Refusal::Pending
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(
            Refusal::Rate(Duration::from_millis(1)).retry_after(),
            Some(1)
        );
        assert_eq!(
            Refusal::Rate(Duration::from_millis(1500)).retry_after(),
            Some(2)
        );
        assert_eq!(Refusal::Rate(Duration::ZERO).retry_after(), Some(1));
        assert_eq!(Refusal::Concurrency.retry_after(), None);
        assert_eq!(Refusal::Rate(Duration::ZERO).status(), 429);
        assert_eq!(Refusal::Pending.status(), 503);
    }
}
