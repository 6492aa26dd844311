//! A canary rollout plan: the canary's share step by step, how long each step holds, and the
//! gates the canary must pass against the baseline before the next. One parser and one set of
//! rules for both ways in — the admin API's body (`PUT /v1/routes/{route}/rollout`) and the
//! `SWITCHYARD_{n}_ROLLOUT` label — so a plan is refused for the same reasons whichever way it
//! comes. Pure: the controller that runs plans is `crate::rollout`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cluster::AppId;

/// At most this many steps; a longer list is refused, not cut.
pub const MAX_STEPS: usize = 20;
/// The longest hold a step may ask for.
pub const MAX_HOLD: Duration = Duration::from_secs(24 * 3600);
/// The longest `max_wait` a plan may ask for (3 × [`MAX_HOLD`], the default's largest).
pub const MAX_WAIT: Duration = Duration::from_secs(72 * 3600);
/// The shortest default `max_wait`: a short hold is not a reason to give up on a quiet route.
pub const MIN_DEFAULT_WAIT: Duration = Duration::from_secs(10 * 60);

/// `max_wait` when the plan does not give it: three holds, at least [`MIN_DEFAULT_WAIT`].
pub fn default_max_wait(hold: Duration) -> Duration {
    (hold * 3).clamp(MIN_DEFAULT_WAIT, MAX_WAIT)
}

/// A duration as the plan's keys are written (`1h30m`, `10m`, `45s`, `1500ms`).
pub fn written_duration(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let (h, m, s) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out += &format!("{n}{unit}");
        }
    }
    if out.is_empty() { "0s".into() } else { out }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The app whose share grows; `None`: the route's newest version (see `crate::rollout`).
    pub canary: Option<AppId>,
    /// The app it is measured against, which takes the rest; `None`: the route's other app.
    pub baseline: Option<AppId>,
    /// The canary's share at each step, in percent: increasing, the last 100.
    pub steps: Vec<u32>,
    /// How long each step lasts at least before its verdict.
    #[serde(rename = "hold_ms", serialize_with = "millis")]
    pub hold: Duration,
    /// How long a step may be measured without `min_requests` on each side before the
    /// rollout fails (a canary that gets no traffic is never promoted, nor waited on forever).
    #[serde(rename = "max_wait_ms", serialize_with = "millis")]
    pub max_wait: Duration,
    /// The canary fails when more than this fraction of its responses over the step are 5xx.
    pub max_5xx_rate: f64,
    /// The canary fails when its p99 latency over the step is more than this many times the
    /// baseline's.
    pub max_p99_ratio: f64,
    /// The baseline's p99 counts as at least this (ms) in the ratio: below it, latency is
    /// noise (a first connection, a scheduler hiccup), not a regression.
    pub p99_floor_ms: f64,
    /// Responses each side needs over the step before any verdict (pass or fail).
    pub min_requests: u64,
}

/// Its numbers are checked finite (no NaN) by [`Plan::parse`], the only way to make one.
impl Eq for Plan {}

pub const DEFAULT_MAX_5XX_RATE: f64 = 0.01;
pub const DEFAULT_MAX_P99_RATIO: f64 = 1.5;
pub const DEFAULT_MIN_REQUESTS: u64 = 100;
pub const DEFAULT_P99_FLOOR_MS: f64 = 10.0;

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// The plan as written (JSON body or label): every field checked by [`Plan::parse`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Written {
    canary: Option<String>,
    baseline: Option<String>,
    steps: Option<Vec<serde_json::Value>>,
    hold: Option<String>,
    max_wait: Option<String>,
    max_5xx_rate: Option<f64>,
    max_p99_ratio: Option<f64>,
    p99_floor_ms: Option<f64>,
    min_requests: Option<u64>,
}

impl Plan {
    /// A plan from JSON (`{"steps": [1, 5, 25, 50, 100], "hold": "30s", …}`) or, for a label,
    /// the same keys as `key=value` pairs separated by `;` or spaces
    /// (`steps=1,5,25,50,100; hold=30s; max_5xx_rate=0.01`). Anything unknown, missing
    /// (`steps`, `hold`) or out of range is refused with why; nothing is guessed.
    pub fn parse(text: &str) -> Result<Plan, String> {
        let text = text.trim();
        if text.len() > 4096 {
            return Err("plan over 4 KiB".into());
        }
        let written: Written = if text.starts_with('{') {
            serde_json::from_str(text).map_err(|e| format!("plan is not valid JSON: {e}"))?
        } else {
            pairs(text)?
        };
        Plan::check(written)
    }

    fn check(w: Written) -> Result<Plan, String> {
        let steps = w
            .steps
            .ok_or("plan needs \"steps\" (the canary's share in percent)")?;
        if steps.is_empty() || steps.len() > MAX_STEPS {
            return Err(format!(
                "steps: 1 to {MAX_STEPS} shares, got {}",
                steps.len()
            ));
        }
        let steps = steps
            .iter()
            .map(|s| {
                s.as_u64()
                    .filter(|p| (1..=100).contains(p))
                    .map(|p| p as u32)
                    .ok_or_else(|| format!("steps: {s} is not a whole percent from 1 to 100"))
            })
            .collect::<Result<Vec<u32>, String>>()?;
        if steps.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!("steps must increase: {steps:?}"));
        }
        if steps.last() != Some(&100) {
            return Err(format!(
                "the last step must be 100 (the canary takes all): {steps:?}"
            ));
        }
        let hold_text = w
            .hold
            .ok_or("plan needs \"hold\" (each step's hold time, e.g. \"5m\")")?;
        let hold = super::labels::duration(&hold_text)
            .ok_or_else(|| format!("hold: {hold_text:?} is not a duration (\"30s\", \"5m\")"))?;
        if hold > MAX_HOLD {
            return Err(format!("hold: {hold_text:?} is over 24h"));
        }
        let max_wait = match w.max_wait {
            None => default_max_wait(hold),
            Some(text) => {
                let wait = super::labels::duration(&text).ok_or_else(|| {
                    format!("max_wait: {text:?} is not a duration (\"30m\", \"2h\")")
                })?;
                if wait < hold {
                    return Err(format!(
                        "max_wait: {text:?} is shorter than the hold {hold_text:?}"
                    ));
                }
                if wait > MAX_WAIT {
                    return Err(format!("max_wait: {text:?} is over 72h"));
                }
                wait
            }
        };
        let max_5xx_rate = w.max_5xx_rate.unwrap_or(DEFAULT_MAX_5XX_RATE);
        if !(0.0..=1.0).contains(&max_5xx_rate) {
            return Err(format!(
                "max_5xx_rate: {max_5xx_rate} is not a fraction from 0 to 1"
            ));
        }
        let max_p99_ratio = w.max_p99_ratio.unwrap_or(DEFAULT_MAX_P99_RATIO);
        if !(1.0..=1000.0).contains(&max_p99_ratio) {
            return Err(format!(
                "max_p99_ratio: {max_p99_ratio} is not a ratio from 1 to 1000"
            ));
        }
        let p99_floor_ms = w.p99_floor_ms.unwrap_or(DEFAULT_P99_FLOOR_MS);
        if !(0.0..=60_000.0).contains(&p99_floor_ms) {
            return Err(format!(
                "p99_floor_ms: {p99_floor_ms} is not from 0 to 60000"
            ));
        }
        let min_requests = w.min_requests.unwrap_or(DEFAULT_MIN_REQUESTS);
        if !(1..=100_000_000).contains(&min_requests) {
            return Err(format!(
                "min_requests: {min_requests} is not from 1 to 100000000"
            ));
        }
        let app = |name: &str, v: Option<String>| -> Result<Option<AppId>, String> {
            match v.map(|v| v.trim().to_string()) {
                None => Ok(None),
                Some(v) if v.starts_with('/') && v.len() > 1 => Ok(Some(v.into())),
                Some(v) => Err(format!("{name}: {v:?} is not an app id (\"/group/app\")")),
            }
        };
        let canary = app("canary", w.canary)?;
        let baseline = app("baseline", w.baseline)?;
        if canary.is_some() && canary == baseline {
            return Err("canary and baseline are the same app".into());
        }
        Ok(Plan {
            canary,
            baseline,
            steps,
            hold,
            max_wait,
            max_5xx_rate,
            max_p99_ratio,
            p99_floor_ms,
            min_requests,
        })
    }
}

impl Plan {
    /// The plan as [`Plan::parse`] reads it back (JSON): what a state file records.
    pub fn written(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "steps": self.steps,
            "hold": format!("{}ms", self.hold.as_millis()),
            "max_wait": format!("{}ms", self.max_wait.as_millis()),
            "max_5xx_rate": self.max_5xx_rate,
            "max_p99_ratio": self.max_p99_ratio,
            "p99_floor_ms": self.p99_floor_ms,
            "min_requests": self.min_requests,
        });
        if let Some(c) = &self.canary {
            v["canary"] = serde_json::json!(&**c);
        }
        if let Some(b) = &self.baseline {
            v["baseline"] = serde_json::json!(&**b);
        }
        v
    }
}

/// `key=value` pairs, `;` or whitespace between them, each key once.
fn pairs(text: &str) -> Result<Written, String> {
    let mut map = serde_json::Map::new();
    for pair in text
        .split(|c: char| c == ';' || c.is_whitespace())
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?}: expected key=value"))?;
        let key = key.trim();
        let value = match key {
            "steps" => serde_json::Value::Array(
                value
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse::<u64>()
                            .map(Into::into)
                            .map_err(|_| format!("steps: {s:?} is not a whole percent"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            "max_5xx_rate" | "max_p99_ratio" | "p99_floor_ms" => value
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(serde_json::Value::Number)
                .ok_or_else(|| format!("{key}: {value:?} is not a number"))?,
            "min_requests" => value
                .parse::<u64>()
                .map(Into::into)
                .map_err(|_| format!("{key}: {value:?} is not a whole number"))?,
            _ => serde_json::Value::String(value.to_string()),
        };
        if map.insert(key.to_string(), value).is_some() {
            return Err(format!("{key} given twice"));
        }
    }
    serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| format!("plan: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_pairs_give_the_same_plan() {
        let a = Plan::parse(
            r#"{"steps": [1, 5, 25, 50, 100], "hold": "30s", "max_5xx_rate": 0.02,
                "max_p99_ratio": 2, "min_requests": 50, "canary": "/shop-green"}"#,
        )
        .unwrap();
        let b = Plan::parse(
            "steps=1,5,25,50,100; hold=30s max_5xx_rate=0.02;max_p99_ratio=2 min_requests=50 \
             canary=/shop-green",
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.steps, vec![1, 5, 25, 50, 100]);
        assert_eq!(a.hold, Duration::from_secs(30));
        assert_eq!(a.canary.as_deref(), Some("/shop-green"));
        assert_eq!(Plan::parse(&a.written().to_string()).unwrap(), a);
    }

    #[test]
    fn defaults_for_gates_only() {
        let p = Plan::parse(r#"{"steps": [10, 100], "hold": "1m"}"#).unwrap();
        assert_eq!(p.max_5xx_rate, DEFAULT_MAX_5XX_RATE);
        assert_eq!(p.max_p99_ratio, DEFAULT_MAX_P99_RATIO);
        assert_eq!(p.min_requests, DEFAULT_MIN_REQUESTS);
        // max_wait: three holds, at least 10 minutes.
        assert_eq!(p.max_wait, Duration::from_secs(600));
        let p = Plan::parse(r#"{"steps": [10, 100], "hold": "1h"}"#).unwrap();
        assert_eq!(p.max_wait, Duration::from_secs(3 * 3600));
        let p = Plan::parse("steps=10,100 hold=1m max_wait=90s").unwrap();
        assert_eq!(p.max_wait, Duration::from_secs(90));
        assert_eq!(written_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(written_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn bad_plans_are_refused_with_why() {
        for (plan, why) in [
            (r#"{"hold": "1m"}"#, "needs \"steps\""),
            (r#"{"steps": [10, 100]}"#, "needs \"hold\""),
            (r#"{"steps": [], "hold": "1m"}"#, "1 to 20"),
            (r#"{"steps": [50, 10, 100], "hold": "1m"}"#, "must increase"),
            (
                r#"{"steps": [10, 50], "hold": "1m"}"#,
                "last step must be 100",
            ),
            (r#"{"steps": [0, 100], "hold": "1m"}"#, "from 1 to 100"),
            (r#"{"steps": [10.5, 100], "hold": "1m"}"#, "whole percent"),
            (r#"{"steps": [101], "hold": "1m"}"#, "from 1 to 100"),
            (r#"{"steps": [100], "hold": "soon"}"#, "not a duration"),
            (r#"{"steps": [100], "hold": "0s"}"#, "not a duration"),
            (r#"{"steps": [100], "hold": "25h"}"#, "over 24h"),
            (
                r#"{"steps": [100], "hold": "1m", "max_wait": "30s"}"#,
                "shorter than the hold",
            ),
            (
                r#"{"steps": [100], "hold": "1m", "max_wait": "73h"}"#,
                "over 72h",
            ),
            (
                r#"{"steps": [100], "hold": "1m", "max_wait": "never"}"#,
                "max_wait: \"never\" is not a duration",
            ),
            (
                r#"{"steps": [100], "hold": "1m", "max_5xx_rate": 5}"#,
                "fraction",
            ),
            (
                r#"{"steps": [100], "hold": "1m", "max_p99_ratio": 0.5}"#,
                "ratio",
            ),
            (
                r#"{"steps": [100], "hold": "1m", "min_requests": 0}"#,
                "min_requests",
            ),
            (
                r#"{"steps": [100], "hold": "1m", "canary": "x"}"#,
                "not an app id",
            ),
            (
                r#"{"steps": [100], "hold": "1m", "canary": "/a", "baseline": "/a"}"#,
                "same app",
            ),
            (
                r#"{"steps": [100], "hold": "1m", "gates": {}}"#,
                "unknown field",
            ),
            (r#"{"steps": [1, 5, 25"#, "not valid JSON"),
            ("steps=1,5,100 hold", "expected key=value"),
            ("steps=1,5,100 hold=1m hold=2m", "given twice"),
            ("steps=1,x,100 hold=1m", "whole percent"),
            ("steps=1,100 hold=1m max_5xx_rate=lots", "not a number"),
            ("steps=1,100 hold=1m colour=green", "unknown field"),
        ] {
            let e = Plan::parse(plan).unwrap_err();
            assert!(e.contains(why), "{plan}: {e}");
        }
    }

    proptest::proptest! {
        /// Any text: refused or a plan within bounds that reads back the same.
        #[test]
        fn any_text_is_refused_or_a_plan_that_reads_back(text in ".{0,200}") {
            if let Ok(plan) = Plan::parse(&text) {
                proptest::prop_assert_eq!(plan.steps.last(), Some(&100));
                proptest::prop_assert_eq!(Plan::parse(&plan.written().to_string()), Ok(plan));
            }
        }

        /// Pairs from the label's keys with arbitrary values: never a panic, never a plan
        /// outside its bounds.
        #[test]
        fn label_pairs_stay_in_bounds(
            steps in proptest::collection::vec(0u64..200, 0..25),
            hold in "[0-9]{0,6}(ms|s|m|h|x)?",
            wait in proptest::option::of("[0-9]{0,6}(ms|s|m|h|x)?"),
            rate in proptest::num::f64::ANY,
            ratio in proptest::num::f64::ANY,
            min in proptest::num::u64::ANY,
        ) {
            let steps: Vec<String> = steps.iter().map(u64::to_string).collect();
            let wait = wait.map(|w| format!("; max_wait={w}")).unwrap_or_default();
            let text = format!(
                "steps={}; hold={hold}; max_5xx_rate={rate}; max_p99_ratio={ratio}; min_requests={min}{wait}",
                steps.join(",")
            );
            if let Ok(plan) = Plan::parse(&text) {
                proptest::prop_assert!(plan.steps.windows(2).all(|w| w[0] < w[1]));
                proptest::prop_assert!((0.0..=1.0).contains(&plan.max_5xx_rate));
                proptest::prop_assert!(plan.max_p99_ratio >= 1.0);
                proptest::prop_assert!(!plan.hold.is_zero() && plan.hold <= MAX_HOLD);
                proptest::prop_assert!(plan.hold <= plan.max_wait && plan.max_wait <= MAX_WAIT);
                proptest::prop_assert_eq!(Plan::parse(&plan.written().to_string()), Ok(plan));
            }
        }
    }
}
