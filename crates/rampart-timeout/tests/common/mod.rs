//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)] // each test binary uses a subset

use std::future::Future;
use std::time::Duration;

/// `n` milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Bounds a test step so that a regression fails instead of hanging (the
/// clock is paused, so the hour passes at once).
pub async fn within_an_hour<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(3600), f)
        .await
        .expect("the call should have finished long before an hour")
}
