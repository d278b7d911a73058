//! Where reports go besides the embedded store.

pub mod alerts;
pub mod influxdb;

use std::time::Duration;

/// Capped exponential backoff between retries: 0.5 s doubling up to 30 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(30))
}
