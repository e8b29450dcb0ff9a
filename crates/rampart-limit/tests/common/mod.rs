//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a subset

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

pub(crate) const MS: Duration = Duration::from_millis(1);

/// Polls `fut` exactly once, with a waker that does nothing.
pub(crate) fn poll_once<F: Future + ?Sized>(fut: Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

/// Yields to the scheduler until `cond` holds (at most 10 000 times).
pub(crate) async fn until(mut cond: impl FnMut() -> bool, what: &str) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("gave up waiting until {what}");
}
