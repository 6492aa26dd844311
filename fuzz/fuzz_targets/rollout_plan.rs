//! A canary rollout plan from outside (the admin API's body, the `SWITCHYARD_{n}_ROLLOUT`
//! label): never a panic; a plan accepted is within its bounds and reads back the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchyard::routing::rollout::{MAX_HOLD, MAX_STEPS, MAX_WAIT, Plan};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(plan) = Plan::parse(text) {
        assert!(!plan.steps.is_empty() && plan.steps.len() <= MAX_STEPS);
        assert!(plan.steps.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(plan.steps.last(), Some(&100));
        assert!(!plan.hold.is_zero() && plan.hold <= MAX_HOLD);
        assert!(plan.hold <= plan.max_wait && plan.max_wait <= MAX_WAIT);
        assert!((0.0..=1.0).contains(&plan.max_5xx_rate));
        assert!(plan.min_requests >= 1);
        assert_eq!(Plan::parse(&plan.written().to_string()).as_ref(), Ok(&plan));
    }
});
