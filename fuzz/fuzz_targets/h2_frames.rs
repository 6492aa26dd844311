//! The HTTP/2 control-frame budget's scanner on arbitrary client bytes: a verdict, never a
//! panic; the credit within its bound; and the same bytes cut anywhere give the same verdict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::proxy::h2_frames::{MAX_CREDIT, Scanner};

fuzz_target!(|data: &[u8]| {
    let at = std::time::Instant::now();
    let mut whole = Scanner::new(at);
    let verdict = whole.feed(data, || at);
    assert!(whole.budget.credit() <= MAX_CREDIT);
    let cut = data.first().map_or(0, |&b| usize::from(b) % (data.len() + 1));
    let mut split = Scanner::new(at);
    let split_verdict = split
        .feed(&data[..cut], || at)
        .and_then(|()| split.feed(&data[cut..], || at));
    assert_eq!(verdict, split_verdict);
    if verdict.is_ok() {
        assert_eq!(whole.budget.credit(), split.budget.credit());
    }
});
