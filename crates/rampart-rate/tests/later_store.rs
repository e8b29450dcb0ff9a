//! A store that answers later (as a remote one does): the layers wait for
//! its answer and keep every decision exact, on tokio's paused clock.

use rampart_core::{Error, ErrorKind};
use rampart_rate::{Decision, KeyedRateLimitLayer, LocalStore, Quota, RateLimitLayer, RateStore};
use std::convert::Infallible;
use std::future::Future;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service, ServiceExt, service_fn};

/// [`LocalStore`]'s decision, answered on the second poll (the first one
/// wakes the task and returns `Pending`).
struct Later(LocalStore);

struct LaterAnswer {
    answer: Option<Result<Decision, Error>>,
    polled: bool,
}

impl Future for LaterAnswer {
    type Output = Result<Decision, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if !self.polled {
            self.polled = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(self.answer.take().expect("polled after completion"))
    }
}

impl RateStore for Later {
    type Future = LaterAnswer;

    fn check<K: Hash + ?Sized>(&self, key: &K, quota: &Quota, max_wait: Duration) -> LaterAnswer {
        let mut now = std::task::Context::from_waker(std::task::Waker::noop());
        let answer = match Pin::new(&mut self.0.check(key, quota, max_wait)).poll(&mut now) {
            Poll::Ready(d) => d,
            Poll::Pending => unreachable!("LocalStore answers at once"),
        };
        LaterAnswer {
            answer: Some(answer),
            polled: false,
        }
    }
}

fn echo() -> impl Service<u32, Response = u32, Error = Infallible, Future: Send> + Clone + Send {
    service_fn(|n: u32| async move { Ok::<_, Infallible>(n) })
}

fn two_per_second() -> Quota {
    Quota::per_second(NonZeroU32::new(2).unwrap())
}

#[tokio::test(start_paused = true)]
async fn a_store_that_answers_later_admits_the_burst_then_refuses_with_the_exact_retry_after() {
    let layer = RateLimitLayer::builder(two_per_second())
        .store(Later(LocalStore::new()))
        .build();
    let svc = layer.layer(echo());
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), 1);
    assert_eq!(svc.clone().oneshot(2).await.unwrap(), 2);
    let e = svc.clone().oneshot(3).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert_eq!(e.retry_after(), Some(Duration::from_millis(500)));
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(svc.clone().oneshot(4).await.unwrap(), 4);
    assert_eq!(layer.stats().rejected, 1);
}

#[tokio::test(start_paused = true)]
async fn a_service_polled_ready_twice_takes_one_slot() {
    let layer = RateLimitLayer::builder(two_per_second())
        .store(Later(LocalStore::new()))
        .build();
    let mut svc = layer.layer(echo());
    svc.ready().await.unwrap();
    svc.ready().await.unwrap();
    assert_eq!(svc.call(1).await.unwrap(), 1);
    // One slot of two taken: one more is admitted, the next refused.
    assert_eq!(svc.clone().oneshot(2).await.unwrap(), 2);
    let e = svc.clone().oneshot(3).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
}

#[tokio::test(start_paused = true)]
async fn a_keyed_layer_waits_for_a_store_that_answers_later() {
    let layer = KeyedRateLimitLayer::builder(two_per_second(), |n: &u32| *n % 2)
        .store(Later(LocalStore::new()))
        .build();
    let svc = layer.layer(echo());
    assert_eq!(svc.clone().oneshot(0).await.unwrap(), 0);
    assert_eq!(svc.clone().oneshot(2).await.unwrap(), 2);
    let e = svc.clone().oneshot(4).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert_eq!(e.retry_after(), Some(Duration::from_millis(500)));
}
