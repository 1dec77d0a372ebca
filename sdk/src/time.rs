//! Clocks (`wasi:clocks`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time, seconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// Block the calling provider for `duration` without using CPU (the host still bounds the call's
/// wall-clock time).
pub fn sleep(duration: std::time::Duration) {
    let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    wasip2::clocks::monotonic_clock::subscribe_duration(nanos).block();
}
