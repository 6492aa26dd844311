//! A rollout's measurements: each backend's counters read from the live table (`samples`), and
//! what one side (the canary, the baseline) answered over a step (`Side`), the backends that
//! left the table during it included.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::Rollout;
use super::gate::{self, Sample, Verdict};
use crate::snapshot::Snapshot;

type Window = HashMap<SocketAddr, Sample>;

/// One side's measurement over a step: each backend's counters when the step began and at the
/// last evaluation, and what backends that have left the table since answered during the step —
/// a canary task Marathon killed for its errors takes its errors with it otherwise.
#[derive(Debug, Clone)]
pub(super) struct Side {
    start: Window,
    last: Window,
    gone: Sample,
}

impl Side {
    fn new(now: Window) -> Side {
        Side {
            start: now.clone(),
            last: now,
            gone: Sample::default(),
        }
    }

    /// What the side answered during the step, as of `now`.
    fn observe(&mut self, now: Window) -> Sample {
        for (addr, last) in &self.last {
            if !now.contains_key(addr) {
                self.gone.add(&match self.start.get(addr) {
                    Some(s) => last.since(s),
                    None => last.clone(),
                });
                self.start.remove(addr);
            }
        }
        let mut total = since(&now, &self.start);
        total.add(&self.gone);
        self.last = now;
        total
    }
}

/// A running rollout's step measured at `now` from the live counters of its canary's and its
/// baseline's services, and judged ([`gate::evaluate`]); `None`: the step's measurement begins
/// now.
pub(super) fn step(
    r: &mut Rollout,
    snapshot: &Snapshot,
    (canary, baseline): (usize, usize),
    now: u64,
) -> Option<Verdict> {
    let now_c = samples(snapshot, canary);
    let now_b = samples(snapshot, baseline);
    match &mut r.window {
        // The step's measurement begins now (a new step, a restart).
        None => {
            r.window = Some((Side::new(now_c), Side::new(now_b)));
            r.measured_since_unix_ms = now;
            None
        }
        Some((canary_side, baseline_side)) => {
            let held = now.saturating_sub(r.step_started_unix_ms) >= r.plan.hold.as_millis() as u64;
            let overdue =
                now.saturating_sub(r.measured_since_unix_ms) >= r.plan.max_wait.as_millis() as u64;
            let canary_sample = canary_side.observe(now_c);
            let baseline_sample = baseline_side.observe(now_b);
            Some(gate::evaluate(
                &r.plan,
                &canary_sample,
                &baseline_sample,
                held,
                overdue,
            ))
        }
    }
}

/// Each backend's counters of a service.
fn samples(snapshot: &Snapshot, service: usize) -> Window {
    let (Some(s), Some(states)) = (
        snapshot.table.services.get(service),
        snapshot.states.get(service),
    ) else {
        return Window::new();
    };
    s.backends
        .iter()
        .zip(states.iter())
        .map(|(b, st)| {
            let m = &st.metrics;
            // A connection the backend refused counts as a 5xx answer: the canary failed it,
            // whether or not a retry elsewhere saved the client.
            let refused = m.connect_failures();
            let requests = (1..=5).map(|c| m.responses(c)).sum::<u64>() + refused;
            (
                b.addr,
                Sample {
                    requests,
                    errors_5xx: m.responses(5) + refused,
                    latency: m
                        .latency()
                        .unwrap_or([0; crate::backends::latency::BUCKETS]),
                },
            )
        })
        .collect()
}

/// What a side answered since `start`: backends that joined since count from zero.
fn since(now: &Window, start: &Window) -> Sample {
    let mut total = Sample::default();
    for (addr, sample) in now {
        total.add(&match start.get(addr) {
            Some(s) => sample.since(s),
            None => sample.clone(),
        });
    }
    total
}

#[cfg(test)]
#[path = "side_tests.rs"]
mod side_tests;
