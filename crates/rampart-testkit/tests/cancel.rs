//! cancel_at_every_poll: finds leaks, passes correct futures, never hangs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rampart_testkit::{MockReply, MockService, cancel_at_every_poll, cancel_at_every_poll_bounded};
use tower::ServiceExt;

fn zero(counter: &AtomicUsize) -> Result<(), String> {
    match counter.load(Ordering::SeqCst) {
        0 => Ok(()),
        n => Err(format!("counter is {n}")),
    }
}

#[tokio::test(start_paused = true)]
async fn finds_a_leaky_future() {
    let counter = Arc::new(AtomicUsize::new(0));
    let err = cancel_at_every_poll(
        || {
            let c = Arc::clone(&counter);
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                // Forgets to decrement when dropped before this point.
                c.fetch_sub(1, Ordering::SeqCst);
            }
        },
        || zero(&counter),
    )
    .await
    .unwrap_err();
    assert_eq!(err.k, 1);
    assert!(!err.completed);
    assert_eq!(err.message, "counter is 1");
    assert!(err.to_string().contains("after 1 poll"));
}

struct Guard(Arc<AtomicUsize>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn passes_a_correct_future_and_counts_drop_points() {
    let counter = Arc::new(AtomicUsize::new(0));
    let drops = cancel_at_every_poll(
        || {
            let c = Arc::clone(&counter);
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                let _g = Guard(c);
                tokio::time::sleep(Duration::from_millis(10)).await;
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
        || zero(&counter),
    )
    .await
    .unwrap();
    // Polls: start (sleep pending), sleep done (yield pending), yield done
    // (sleep pending), sleep done -> complete on poll 4; drops at 0..=3.
    assert_eq!(drops, 4);
}

#[tokio::test(start_paused = true)]
async fn check_failing_after_completion_is_reported() {
    let counter = Arc::new(AtomicUsize::new(0));
    let err = cancel_at_every_poll(
        || {
            let c = Arc::clone(&counter);
            async move {
                tokio::task::yield_now().await;
                c.fetch_add(1, Ordering::SeqCst);
            }
        },
        || zero(&counter),
    )
    .await
    .unwrap_err();
    assert!(err.completed);
    assert_eq!(err.k, 2);
}

#[tokio::test(start_paused = true)]
async fn mock_service_calls_are_cancel_safe() {
    let svc = MockService::<(), u32>::new(|()| {
        MockReply::ok(1)
            .after(Duration::from_millis(5))
            .after_yield()
    });
    let drops = cancel_at_every_poll(
        || tokio::time::timeout(Duration::from_secs(1), svc.clone().oneshot(())),
        || match svc.inflight() {
            0 => Ok(()),
            n => Err(format!("{n} in flight")),
        },
    )
    .await
    .unwrap();
    assert!(drops >= 2, "{drops}");
    // k = 0 drops the `oneshot` before it ever called the service.
    assert_eq!(svc.dropped(), drops - 1);
    assert_eq!(svc.completed(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_future_that_never_completes_hits_the_bound() {
    let err = cancel_at_every_poll_bounded(
        20,
        || async {
            loop {
                tokio::task::yield_now().await;
            }
        },
        || Ok(()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.k, 20);
    assert!(err.message.contains("did not complete"));
}

#[tokio::test(start_paused = true)]
async fn immediately_ready_future_has_one_drop_point() {
    let drops = cancel_at_every_poll(|| async { 42 }, || Ok(()))
        .await
        .unwrap();
    assert_eq!(drops, 1);
}
