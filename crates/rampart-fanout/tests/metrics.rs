//! What `FanOutLayer` records on the `metrics` facade: exact counts and
//! durations after a scripted run (paused clock), per layer name.
#![cfg(feature = "metrics")]

use rampart_core::{CancellationToken, Context};
use rampart_fanout::{Failure, FanOutLayer, gather, wait};
use rampart_testkit::{MetricsCapture, MetricsSnapshot};
use std::num::NonZeroUsize;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;
use tower::{Layer, Service, ServiceExt, service_fn};

/// A replica: 0 fails at once, `u64::MAX` panics, anything else answers
/// after that many milliseconds.
fn replica() -> impl Service<u64, Response = u64, Error = &'static str, Future: Send> + Clone + Send
{
    service_fn(|ms: u64| async move {
        match ms {
            0 => Err("replica failed"),
            u64::MAX => panic!("replica panicked"),
            _ => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(ms)
            }
        }
    })
}

fn cancelled(s: &MetricsSnapshot, layer: &str, reason: &str) -> u64 {
    s.counter_with(
        "rampart.fanout.cancelled",
        &[("layer", layer), ("reason", reason)],
    )
    .unwrap()
}

fn poll_once<F: std::future::Future>(fut: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
}

#[tokio::test(start_paused = true)]
async fn a_scripted_run_records_calls_failures_cancellations_by_reason_and_durations() {
    let cap = MetricsCapture::new();
    let (timed, first_ok, plain) = cap.install(|| {
        (
            FanOutLayer::new()
                .timeout(Duration::from_secs(1))
                .name("replicas")
                .layer(replica()),
            FanOutLayer::new()
                .first_ok()
                .name("replicas")
                .layer(replica()),
            FanOutLayer::new().name("replicas").layer(replica()),
        )
    });

    // 4 calls, 1 failure, 2 abandoned at the collective timeout (1 s).
    let err = timed
        .clone()
        .oneshot(vec![10, 0, 5_000, 7_000])
        .await
        .unwrap_err();
    assert_eq!(err.failure(), Failure::Timeout);

    // 3 calls: the first success (10 ms) wins, 2 dropped as decided.
    let res = first_ok.clone().oneshot(vec![10, 20, 5_000]).await.unwrap();
    assert_eq!(res.succeeded(), 1);

    // 2 calls under a caller deadline of 100 ms: 1 dropped at it.
    let ctx = Context::new().with_timeout(Duration::from_millis(100));
    let err = ctx
        .scope(plain.clone().oneshot(vec![50, 5_000]))
        .await
        .unwrap_err();
    assert_eq!(err.failure(), Failure::DeadlineExceeded);

    // 1 call, the caller's token fires after 30 ms.
    let token = CancellationToken::new();
    let ctx = Context::new().with_cancellation(token.clone());
    let group = tokio::spawn(ctx.scope(plain.clone().oneshot(vec![5_000])));
    tokio::time::sleep(Duration::from_millis(30)).await;
    token.cancel();
    assert_eq!(
        group.await.unwrap().unwrap_err().failure(),
        Failure::Cancelled
    );

    // 2 calls in flight when the caller drops the group: no duration.
    {
        let mut group = pin!(plain.clone().call(vec![5_000, 5_000]));
        assert!(poll_once(group.as_mut()).is_pending());
    }

    // 2 calls, one panics (reported, not propagated), one answers at once.
    let res = plain.clone().oneshot(vec![u64::MAX, 1]).await.unwrap();
    assert_eq!(res.succeeded(), 1);

    let s = cap.snapshot();
    assert_eq!(s.counter("rampart.fanout.calls", "replicas"), Some(14));
    assert_eq!(s.counter("rampart.fanout.failed", "replicas"), Some(1));
    assert_eq!(s.counter("rampart.fanout.panicked", "replicas"), Some(1));
    assert_eq!(cancelled(&s, "replicas", "timeout"), 2);
    assert_eq!(cancelled(&s, "replicas", "decided"), 2);
    assert_eq!(cancelled(&s, "replicas", "deadline"), 1);
    assert_eq!(cancelled(&s, "replicas", "cancelled"), 1);
    assert_eq!(cancelled(&s, "replicas", "caller_dropped"), 2);
    assert_eq!(
        s.histogram("rampart.fanout.duration", "replicas").unwrap(),
        [1.0, 0.01, 0.1, 0.03, 0.001]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_poll_ready_counts_as_a_failed_request_and_the_rest_are_not_calls() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| {
        FanOutLayer::new()
            .concurrency(NonZeroUsize::new(1).unwrap())
            .name("bounded")
    });
    // A service that is ready twice, then fails in `poll_ready`.
    let failing = FailAfter {
        inner: service_fn(|ms: u64| async move { Ok::<_, &'static str>(ms) }),
        left: 2,
    };
    let res = cap
        .install(|| layer.layer(failing))
        .oneshot(vec![1, 2, 3, 4])
        .await
        .unwrap();
    assert_eq!((res.succeeded(), res.failed(), res.not_done()), (2, 1, 1));
    let s = cap.snapshot();
    assert_eq!(s.counter("rampart.fanout.calls", "bounded"), Some(2));
    assert_eq!(s.counter("rampart.fanout.failed", "bounded"), Some(1));
    assert_eq!(
        s.histogram("rampart.fanout.duration", "bounded").unwrap(),
        [0.0]
    );
}

/// Ready `left` times, then fails in `poll_ready`.
#[derive(Clone)]
struct FailAfter<S> {
    inner: S,
    left: usize,
}

impl<S: Service<u64, Error = &'static str>> Service<u64> for FailAfter<S> {
    type Response = S::Response;
    type Error = &'static str;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.left == 0 {
            return Poll::Ready(Err("not ready"));
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: u64) -> Self::Future {
        self.left -= 1;
        self.inner.call(req)
    }
}

#[tokio::test(start_paused = true)]
async fn two_layers_with_different_names_record_separately() {
    let cap = MetricsCapture::new();
    let (a, b) = cap.install(|| {
        (
            FanOutLayer::new().name("a").layer(replica()),
            FanOutLayer::new()
                .quorum(NonZeroUsize::new(2).unwrap())
                .name(String::from("b"))
                .layer(replica()),
        )
    });
    a.clone().oneshot(vec![1, 0]).await.unwrap();
    b.clone().oneshot(vec![1, 2, 3_000]).await.unwrap();
    let s = cap.snapshot();
    assert_eq!(s.counter("rampart.fanout.calls", "a"), Some(2));
    assert_eq!(s.counter("rampart.fanout.failed", "a"), Some(1));
    assert_eq!(cancelled(&s, "a", "decided"), 0);
    assert_eq!(
        s.histogram("rampart.fanout.duration", "a").unwrap(),
        [0.001]
    );
    assert_eq!(s.counter("rampart.fanout.calls", "b"), Some(3));
    assert_eq!(s.counter("rampart.fanout.failed", "b"), Some(0));
    assert_eq!(cancelled(&s, "b", "decided"), 1);
    assert_eq!(
        s.histogram("rampart.fanout.duration", "b").unwrap(),
        [0.002]
    );
}

#[tokio::test(start_paused = true)]
async fn gather_and_wait_have_no_name_and_record_nothing() {
    let cap = MetricsCapture::new();
    cap.install(|| async {
        let res = gather(replica(), [1, 0]).await;
        assert_eq!(res.failed(), 1);
        let res = wait(replica(), [1, 5_000], Duration::from_millis(10)).await;
        assert_eq!(res.not_done(), 1);
    })
    .await;
    assert!(cap.snapshot().names().is_empty());
}
