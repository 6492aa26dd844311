//! The coarse clock: milliseconds of the monotonic clock as of the kernel's last tick
//! (`CLOCK_MONOTONIC_COARSE`), a few milliseconds coarse and a fraction of a precise reading's
//! cost. For what counts in seconds and runs on every request or chunk relayed: idle timeouts,
//! an outlier's ejection. Latencies and deadlines a client waits on use the precise clock.

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
