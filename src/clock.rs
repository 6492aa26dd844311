//! The coarse clock: milliseconds of the monotonic clock as of the kernel's last tick
//! (`CLOCK_MONOTONIC_COARSE`), a few milliseconds coarse and a fraction of a precise reading's
//! cost. For what counts in seconds and runs on every request or chunk relayed: idle timeouts,
//! an outlier's ejection. Latencies and deadlines a client waits on use the precise clock.

/// How far the coarse clock can lag the precise one: a kernel tick, 10 ms at 100 Hz, the
/// slowest tick Linux runs. A precise deadline for what the coarse clock decides is set this
/// much later, so that it does not fire while the coarse clock still says "not yet".
pub const COARSE_LAG: std::time::Duration = std::time::Duration::from_millis(10);

/// Milliseconds of the monotonic clock as of the last tick.
pub fn coarse_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux knows.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}
