//! The pure half of a rollout: which app is the canary and which the baseline, and a step's
//! verdict from what each side answered over the step. No clock, no sockets: tested alone.

use serde::Serialize;

use crate::backends::latency::{self, BUCKETS};
use crate::cluster::AppId;
use crate::routing::rollout::Plan;

/// What one side answered over a step: responses, the 5xx among them, response times.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub requests: u64,
    pub errors_5xx: u64,
    pub latency: [u64; BUCKETS],
}

impl Default for Sample {
    fn default() -> Self {
        Sample {
            requests: 0,
            errors_5xx: 0,
            latency: [0; BUCKETS],
        }
    }
}

impl Sample {
    /// `self - earlier`, per counter (a counter that went back counts from zero).
    pub fn since(&self, earlier: &Sample) -> Sample {
        Sample {
            requests: self.requests.saturating_sub(earlier.requests),
            errors_5xx: self.errors_5xx.saturating_sub(earlier.errors_5xx),
            latency: std::array::from_fn(|i| self.latency[i].saturating_sub(earlier.latency[i])),
        }
    }

    pub fn add(&mut self, other: &Sample) {
        self.requests += other.requests;
        self.errors_5xx += other.errors_5xx;
        for (a, b) in self.latency.iter_mut().zip(other.latency.iter()) {
            *a += b;
        }
    }

    fn rate_5xx(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors_5xx as f64 / self.requests as f64)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every gate held over the whole hold: on to the next step.
    Pass,
    /// A gate failed: the canary's weight goes to 0.
    Fail,
    /// Too few responses yet, or the hold is not over.
    Wait,
}

/// A verdict with the numbers it was taken on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub outcome: Outcome,
    pub why: String,
    pub canary_requests: u64,
    pub baseline_requests: u64,
    pub canary_5xx_rate: Option<f64>,
    pub baseline_5xx_rate: Option<f64>,
    pub canary_p99_ms: Option<f64>,
    pub baseline_p99_ms: Option<f64>,
    pub p99_ratio: Option<f64>,
}

/// The verdict on a step so far. The p99 ratio divides by the baseline's p99 or the plan's
/// `p99_floor_ms`, whichever is more: sub-millisecond latencies differ by noise. A gate fails as soon as the side it reads has `min_requests`
/// responses (so a failing canary is stopped within one evaluation, not at the end of the
/// hold); a pass needs both sides' `min_requests` and the hold over (`held`). Once the step has
/// been measured for the plan's `max_wait` (`overdue`) without `min_requests` on each side, it
/// fails: a canary that gets no traffic (no backends, nothing routed to it) is never promoted and
/// never waited on forever.
pub fn evaluate(
    plan: &Plan,
    canary: &Sample,
    baseline: &Sample,
    held: bool,
    overdue: bool,
) -> Verdict {
    let canary_p99 = latency::quantile_ms(&canary.latency, 0.99);
    let baseline_p99 = latency::quantile_ms(&baseline.latency, 0.99);
    let enough_canary = canary.requests >= plan.min_requests;
    let enough_baseline = baseline.requests >= plan.min_requests;
    let ratio = match (canary_p99, baseline_p99) {
        (Some(c), Some(b)) if enough_canary && enough_baseline => {
            Some(c / b.max(plan.p99_floor_ms).max(0.001))
        }
        _ => None,
    };
    let mut v = Verdict {
        outcome: Outcome::Wait,
        why: String::new(),
        canary_requests: canary.requests,
        baseline_requests: baseline.requests,
        canary_5xx_rate: canary.rate_5xx(),
        baseline_5xx_rate: baseline.rate_5xx(),
        canary_p99_ms: canary_p99,
        baseline_p99_ms: baseline_p99,
        p99_ratio: ratio,
    };
    let rate = canary.rate_5xx().unwrap_or(0.0);
    if enough_canary && rate > plan.max_5xx_rate {
        v.outcome = Outcome::Fail;
        v.why = format!(
            "canary 5xx rate {:.2}% ({} of {}) is over the limit {:.2}%",
            rate * 100.0,
            canary.errors_5xx,
            canary.requests,
            plan.max_5xx_rate * 100.0
        );
    } else if let Some(r) = ratio.filter(|&r| r > plan.max_p99_ratio) {
        v.outcome = Outcome::Fail;
        v.why = format!(
            "canary p99 {:.1} ms is {r:.2} times the baseline's {:.1} ms (limit {})",
            canary_p99.unwrap_or(0.0),
            baseline_p99.unwrap_or(0.0),
            plan.max_p99_ratio
        );
    } else if (!enough_canary || !enough_baseline) && overdue {
        v.outcome = Outcome::Fail;
        v.why = format!(
            "no verdict within max_wait {}: {} responses needed on each side, canary {}, \
             baseline {}",
            crate::routing::rollout::written_duration(plan.max_wait),
            plan.min_requests,
            canary.requests,
            baseline.requests
        );
    } else if !enough_canary || !enough_baseline {
        v.why = format!(
            "waiting for {} responses on each side (canary {}, baseline {})",
            plan.min_requests, canary.requests, baseline.requests
        );
    } else if !held {
        v.why = "gates hold; the step's hold time is not over".into();
    } else {
        v.outcome = Outcome::Pass;
        v.why = "gates held over the step".into();
    }
    v
}

/// One app of a route, as the choice of canary and baseline sees it.
pub struct Candidate<'a> {
    pub app_id: &'a AppId,
    /// `HAPROXY_DEPLOYMENT_STARTED_AT`: when its deployment started (RFC 3339).
    pub started_at: Option<&'a str>,
    /// It carries a `SWITCHYARD_{n}_ROLLOUT` label.
    pub labelled: bool,
}

/// The canary and the baseline of a plan on a route, or why they cannot be told apart.
/// Canary: the plan's `canary`, else the app carrying the plan label, else the route's newest
/// version (the latest `HAPROXY_DEPLOYMENT_STARTED_AT`, which every app of the route must have,
/// and no two equal). Baseline: the plan's `baseline`, else the route's one other app.
pub fn resolve(plan: &Plan, members: &[Candidate<'_>]) -> Result<(AppId, AppId), String> {
    if members.len() < 2 {
        return Err("the route has one app: a rollout needs a canary and a baseline".into());
    }
    let member = |id: &AppId, what: &str| -> Result<AppId, String> {
        members
            .iter()
            .find(|m| m.app_id == id)
            .map(|m| m.app_id.clone())
            .ok_or_else(|| format!("{what} {id} is not an app of the route"))
    };
    let canary = if let Some(c) = &plan.canary {
        member(c, "canary")?
    } else {
        let labelled: Vec<_> = members.iter().filter(|m| m.labelled).collect();
        match labelled.as_slice() {
            [one] => one.app_id.clone(),
            [_, _, ..] => {
                return Err(
                    "more than one app of the route carries a rollout plan label: name the \
                     canary"
                        .into(),
                );
            }
            [] => {
                let Some(dates) = members
                    .iter()
                    .map(|m| m.started_at.map(|s| (s, m.app_id)))
                    .collect::<Option<Vec<_>>>()
                else {
                    return Err("name the canary: not every app of the route has \
                                HAPROXY_DEPLOYMENT_STARTED_AT to tell the newest"
                        .into());
                };
                let newest = dates.iter().map(|(s, _)| *s).max().expect("two or more");
                let mut at_newest = dates.iter().filter(|(s, _)| *s == newest);
                let first = at_newest.next().expect("the max is there");
                if at_newest.next().is_some() {
                    return Err(format!(
                        "name the canary: two apps started their deployment at {newest}"
                    ));
                }
                first.1.clone()
            }
        }
    };
    let baseline = match &plan.baseline {
        Some(b) => member(b, "baseline")?,
        None => {
            let others: Vec<_> = members.iter().filter(|m| *m.app_id != canary).collect();
            match others.as_slice() {
                [one] => one.app_id.clone(),
                _ => {
                    return Err(format!(
                        "name the baseline: the route has {} apps besides the canary",
                        others.len()
                    ));
                }
            }
        }
    };
    if canary == baseline {
        return Err("canary and baseline are the same app".into());
    }
    Ok((canary, baseline))
}

/// The weights of a step: the canary its share, the baseline the rest (apps left out: 0).
pub fn weights(
    canary: &AppId,
    baseline: &AppId,
    share: u32,
) -> std::collections::BTreeMap<AppId, u32> {
    [
        (canary.clone(), share.min(100)),
        (baseline.clone(), 100 - share.min(100)),
    ]
    .into_iter()
    .collect()
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
