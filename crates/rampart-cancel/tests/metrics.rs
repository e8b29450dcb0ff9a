//! What `CancelLayer` records on the `metrics` facade: exact counts after a
//! scripted run, the in-flight gauge back to zero on every path, per name.
#![cfg(feature = "metrics")]

use rampart_cancel::{CancelLayer, Shutdown};
use rampart_core::{CancellationToken, Context, ErrorKind};
use rampart_testkit::{MetricsCapture, MetricsSnapshot};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;
use tower::{Layer, Service, ServiceExt, service_fn};

/// A handler: sleeps `ms` milliseconds, then answers; 0 fails at once, and
/// `u64::MAX` panics when first polled.
fn handler()
-> impl Service<u64, Response = u64, Error = std::io::Error, Future: Send> + Clone + Send {
    service_fn(|ms: u64| async move {
        match ms {
            0 => Err(std::io::Error::other("handler failed")),
            u64::MAX => panic!("handler panicked"),
            _ => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(ms)
            }
        }
    })
}

fn cancelled(s: &MetricsSnapshot, layer: &str, reason: &str) -> Option<u64> {
    s.counter_with(
        "rampart.cancel.cancelled",
        &[("layer", layer), ("reason", reason)],
    )
}

fn poll_once<F: std::future::Future>(fut: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
}

#[tokio::test(start_paused = true)]
async fn a_scripted_run_counts_each_cancellation_by_reason_and_the_gauge_ends_at_zero() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| CancelLayer::new().name("api"));
    let shutdown = layer.shutdown().clone();
    let svc = cap.install(|| layer.layer(handler()));

    // Two that complete: one answers, one fails with its own error.
    assert_eq!(svc.clone().oneshot(5).await.unwrap(), 5);
    assert_eq!(
        svc.clone().oneshot(0).await.unwrap_err().kind(),
        ErrorKind::Inner
    );

    // One whose caller's token fires while it runs.
    let caller = CancellationToken::new();
    let ctx = Context::new().with_cancellation(caller.clone());
    let call = tokio::spawn(ctx.clone().scope(svc.clone().oneshot(60_000)));
    tokio::time::sleep(Duration::from_millis(10)).await;
    caller.cancel();
    assert_eq!(
        call.await.unwrap().unwrap_err().kind(),
        ErrorKind::Cancelled
    );

    // One whose caller's token had fired before the call.
    let err = ctx.scope(svc.clone().oneshot(5)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled);

    // One whose caller drops the response future while it is pending.
    {
        let mut fut = pin!(svc.clone().call(60_000));
        assert!(poll_once(fut.as_mut()).is_pending());
    }

    // One whose handler panics: the task fails, the request is not left
    // counted in flight. Its future is dropped unfinished while the panic
    // unwinds: a cancellation by drop, as its hooks see it.
    let panicked = tokio::spawn(svc.clone().oneshot(u64::MAX)).await;
    assert!(panicked.unwrap_err().is_panic());

    // A drain: one request still running at the deadline is cancelled, a
    // call during the drain is refused.
    let slow = tokio::spawn(svc.clone().oneshot(60_000));
    tokio::task::yield_now().await;
    let drain = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { shutdown.drain(Duration::from_secs(1)).await }
    });
    tokio::task::yield_now().await;
    assert_eq!(
        svc.clone().oneshot(5).await.unwrap_err().kind(),
        ErrorKind::Closed
    );
    let report = drain.await.unwrap();
    assert_eq!(
        slow.await.unwrap().unwrap_err().kind(),
        ErrorKind::Cancelled
    );
    assert_eq!((report.cancelled(), report.refused()), (1, 1));

    let s = cap.snapshot();
    assert_eq!(cancelled(&s, "api", "token"), Some(2));
    assert_eq!(cancelled(&s, "api", "caller_dropped"), Some(2));
    assert_eq!(cancelled(&s, "api", "shutdown"), Some(1));
    assert_eq!(s.counter("rampart.cancel.refused", "api"), Some(1));
    assert_eq!(s.gauge("rampart.cancel.in_flight", "api"), Some(0.0));
}

#[tokio::test(start_paused = true)]
async fn the_in_flight_gauge_counts_the_requests_running() {
    let cap = MetricsCapture::new();
    let svc = cap.install(|| CancelLayer::new().name("api").layer(handler()));
    let a = tokio::spawn(svc.clone().oneshot(1_000));
    let b = tokio::spawn(svc.clone().oneshot(2_000));
    tokio::time::sleep(Duration::from_millis(10)).await;
    // (A snapshot resets the gauge it reads: this one is the test's last.)
    assert_eq!(
        cap.snapshot().gauge("rampart.cancel.in_flight", "api"),
        Some(2.0)
    );
    a.abort();
    b.abort();
}

#[tokio::test(start_paused = true)]
async fn two_layers_with_different_names_record_separately_over_one_shutdown() {
    let cap = MetricsCapture::new();
    let shutdown = Shutdown::named("server");
    let (a, b) = cap.install(|| {
        (
            CancelLayer::with_shutdown(&shutdown)
                .name("a")
                .layer(handler()),
            CancelLayer::with_shutdown(&shutdown)
                .name(String::from("b"))
                .layer(handler()),
        )
    });
    // `a`: one caller drop; `b`: one completed, then both drained with one
    // request each still running at the deadline.
    {
        let mut fut = pin!(a.clone().call(60_000));
        assert!(poll_once(fut.as_mut()).is_pending());
    }
    b.clone().oneshot(5).await.unwrap();
    let slow_a = tokio::spawn(a.clone().oneshot(60_000));
    let slow_b = tokio::spawn(b.clone().oneshot(60_000));
    tokio::task::yield_now().await;
    let report = shutdown.drain(Duration::from_millis(100)).await;
    assert_eq!(report.cancelled(), 2);
    assert!(slow_a.await.unwrap().is_err() && slow_b.await.unwrap().is_err());
    assert_eq!(
        b.clone().oneshot(5).await.unwrap_err().kind(),
        ErrorKind::Closed
    );

    let s = cap.snapshot();
    assert_eq!(cancelled(&s, "a", "caller_dropped"), Some(1));
    assert_eq!(cancelled(&s, "a", "shutdown"), Some(1));
    assert_eq!(s.counter("rampart.cancel.refused", "a"), Some(0));
    assert_eq!(cancelled(&s, "b", "caller_dropped"), Some(0));
    assert_eq!(cancelled(&s, "b", "shutdown"), Some(1));
    assert_eq!(s.counter("rampart.cancel.refused", "b"), Some(1));
    for layer in ["a", "b"] {
        assert_eq!(cancelled(&s, layer, "token"), Some(0));
        assert_eq!(s.gauge("rampart.cancel.in_flight", layer), Some(0.0));
    }
}
