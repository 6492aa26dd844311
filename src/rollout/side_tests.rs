//! Unit tests of a rollout side's measurements: what a backend answered stays in its step after it leaves the table.

use super::*;

fn sample(requests: u64, errors_5xx: u64) -> Sample {
    Sample {
        requests,
        errors_5xx,
        ..Sample::default()
    }
}

#[test]
fn a_backend_that_leaves_mid_step_keeps_what_it_answered() {
    let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
    let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
    let c: SocketAddr = "10.0.0.3:80".parse().unwrap();
    let mut side = Side::new(HashMap::from([(a, sample(100, 0)), (b, sample(50, 5))]));
    // b answers 10 more, all errors; then it is killed and c replaces it.
    let t = side.observe(HashMap::from([(a, sample(110, 0)), (b, sample(60, 15))]));
    assert_eq!((t.requests, t.errors_5xx), (20, 10));
    let t = side.observe(HashMap::from([(a, sample(120, 0)), (c, sample(3, 0))]));
    assert_eq!(
        (t.requests, t.errors_5xx),
        (33, 10),
        "b's errors stay in the step"
    );
    let t = side.observe(HashMap::from([(a, sample(121, 0)), (c, sample(4, 0))]));
    assert_eq!((t.requests, t.errors_5xx), (35, 10));
}
