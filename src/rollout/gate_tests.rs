use super::*;
use crate::backends::latency::Latency;

fn plan(text: &str) -> Plan {
    Plan::parse(text).unwrap()
}

/// `requests` responses, `errors` of them 5xx, all taking `ms`.
fn sample(requests: u64, errors: u64, ms: f64) -> Sample {
    let l = Latency::default();
    for _ in 0..requests {
        l.observe(ms / 1000.0);
    }
    Sample {
        requests,
        errors_5xx: errors,
        latency: l.counts(),
    }
}

const PLAN: &str = r#"{"steps": [5, 50, 100], "hold": "1m", "max_5xx_rate": 0.05, "max_p99_ratio": 2, "min_requests": 20}"#;

#[test]
fn a_step_without_its_minimum_fails_once_overdue() {
    let p = plan(PLAN);
    // No traffic at all on the canary: it waits, then fails with the counts.
    let (c, b) = (sample(0, 0, 10.0), sample(400, 0, 10.0));
    let v = evaluate(&p, &c, &b, true, false);
    assert_eq!(v.outcome, Outcome::Wait, "{}", v.why);
    let v = evaluate(&p, &c, &b, true, true);
    assert_eq!(v.outcome, Outcome::Fail, "{}", v.why);
    assert!(v.why.contains("max_wait 10m"), "{}", v.why);
    assert!(v.why.contains("canary 0, baseline 400"), "{}", v.why);
    // Too little on the baseline side: no comparison, no promotion either.
    let v = evaluate(&p, &sample(40, 0, 10.0), &sample(3, 0, 10.0), true, true);
    assert_eq!(v.outcome, Outcome::Fail, "{}", v.why);
    // Enough on both sides: overdue changes nothing.
    let v = evaluate(&p, &sample(40, 0, 10.0), &sample(400, 0, 10.0), true, true);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.why);
}

#[test]
fn a_healthy_canary_passes_once_held() {
    let p = plan(PLAN);
    let (c, b) = (sample(40, 1, 10.0), sample(400, 0, 10.0));
    let v = evaluate(&p, &c, &b, false, false);
    assert_eq!(v.outcome, Outcome::Wait, "{}", v.why);
    let v = evaluate(&p, &c, &b, true, false);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.why);
    assert_eq!(v.canary_requests, 40);
    assert_eq!(v.canary_5xx_rate, Some(1.0 / 40.0));
    assert!(v.p99_ratio.is_some_and(|r| (0.99..1.01).contains(&r)));
}

#[test]
fn too_few_responses_give_no_verdict_either_way() {
    let p = plan(PLAN);
    // Every canary answer a 500, but fewer than min_requests: no verdict yet.
    let v = evaluate(
        &p,
        &sample(19, 19, 10.0),
        &sample(400, 0, 10.0),
        true,
        false,
    );
    assert_eq!(v.outcome, Outcome::Wait);
    assert!(v.why.contains("waiting for 20"), "{}", v.why);
    // Enough canary answers but too few baseline ones: no pass.
    let v = evaluate(&p, &sample(40, 0, 10.0), &sample(3, 0, 10.0), true, false);
    assert_eq!(v.outcome, Outcome::Wait);
}

#[test]
fn a_5xx_rate_over_the_limit_fails_before_the_hold_ends() {
    let p = plan(PLAN);
    let v = evaluate(
        &p,
        &sample(20, 2, 10.0),
        &sample(400, 0, 10.0),
        false,
        false,
    );
    assert_eq!(v.outcome, Outcome::Fail);
    assert!(v.why.contains("5xx rate 10.00% (2 of 20)"), "{}", v.why);
    // At the limit: not over it.
    let v = evaluate(&p, &sample(20, 1, 10.0), &sample(400, 0, 10.0), true, false);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.why);
}

#[test]
fn a_slow_canary_fails_the_p99_ratio() {
    let p = plan(PLAN);
    let v = evaluate(
        &p,
        &sample(40, 0, 50.0),
        &sample(400, 0, 10.0),
        false,
        false,
    );
    assert_eq!(v.outcome, Outcome::Fail);
    assert!(v.why.contains("times the baseline's"), "{}", v.why);
    // Within the ratio (1.8 times, bucket bounds 20 % apart): passes.
    let v = evaluate(&p, &sample(40, 0, 15.0), &sample(400, 0, 10.0), true, false);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.why);
    // Under the floor (10 ms by default) latency differences are noise, not a regression.
    let v = evaluate(&p, &sample(40, 0, 6.0), &sample(400, 0, 0.2), true, false);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.why);
    let v = evaluate(&p, &sample(40, 0, 25.0), &sample(400, 0, 0.2), true, false);
    assert_eq!(v.outcome, Outcome::Fail, "{}", v.why);
    // The ratio needs the baseline's min_requests too.
    let v = evaluate(&p, &sample(40, 0, 50.0), &sample(5, 0, 10.0), true, false);
    assert_eq!(v.outcome, Outcome::Wait);
}

#[test]
fn samples_subtract_per_counter() {
    let (a, b) = (sample(10, 2, 5.0), sample(4, 1, 5.0));
    let d = a.since(&b);
    assert_eq!((d.requests, d.errors_5xx), (6, 1));
    assert_eq!(b.since(&a).requests, 0);
    let mut s = Sample::default();
    s.add(&a);
    s.add(&b);
    assert_eq!(s.requests, 14);
}

fn ids(names: &[&str]) -> Vec<AppId> {
    names.iter().map(|n| AppId::from(*n)).collect()
}

#[test]
fn canary_and_baseline_are_named_labelled_or_newest() {
    let apps = ids(&["/shop-blue", "/shop-green", "/shop-red"]);
    let two = |blue: Option<&'static str>, green: Option<&'static str>, label: bool| {
        vec![
            Candidate {
                app_id: &apps[0],
                started_at: blue,
                labelled: false,
            },
            Candidate {
                app_id: &apps[1],
                started_at: green,
                labelled: label,
            },
        ]
    };
    let p = plan(r#"{"steps": [100], "hold": "1s"}"#);
    let newest = two(
        Some("2026-11-01T00:00:00Z"),
        Some("2026-11-22T00:00:00Z"),
        false,
    );
    assert_eq!(
        resolve(&p, &newest).unwrap(),
        (apps[1].clone(), apps[0].clone())
    );
    let labelled = two(None, None, true);
    assert_eq!(resolve(&p, &labelled).unwrap().0, apps[1]);
    assert!(
        resolve(&p, &two(None, Some("x"), false))
            .unwrap_err()
            .contains("name the canary")
    );
    let same = two(Some("2026"), Some("2026"), false);
    assert!(resolve(&p, &same).unwrap_err().contains("two apps started"));
    let named = plan(r#"{"steps": [100], "hold": "1s", "canary": "/shop-blue"}"#);
    assert_eq!(
        resolve(&named, &newest).unwrap(),
        (apps[0].clone(), apps[1].clone())
    );
    let stranger = plan(r#"{"steps": [100], "hold": "1s", "canary": "/shop-pink"}"#);
    assert!(
        resolve(&stranger, &newest)
            .unwrap_err()
            .contains("not an app of the route")
    );
    assert!(resolve(&p, &newest[..1]).unwrap_err().contains("one app"));
    let mut three = newest;
    three.push(Candidate {
        app_id: &apps[2],
        started_at: Some("2026-01-01T00:00:00Z"),
        labelled: false,
    });
    assert!(
        resolve(&p, &three)
            .unwrap_err()
            .contains("name the baseline")
    );
    let both = plan(r#"{"steps": [100], "hold": "1s", "baseline": "/shop-blue"}"#);
    assert_eq!(
        resolve(&both, &three).unwrap(),
        (apps[1].clone(), apps[0].clone())
    );
}

#[test]
fn step_weights_split_100() {
    let (c, b) = (AppId::from("/c"), AppId::from("/b"));
    let w = weights(&c, &b, 25);
    assert_eq!((w[&c], w[&b]), (25, 75));
    let w = weights(&c, &b, 0);
    assert_eq!((w[&c], w[&b]), (0, 100));
}
