//! The rate limiters through their public API, on tokio's paused clock.

use rampart_core::{CancellationToken, Context, ErrorKind, HandleErrorsLayer};
use rampart_rate::{HeaderKey, KeyedRateLimitLayer, Quota, RateLimitLayer};
use std::convert::Infallible;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;
use tokio::time::{Instant, advance};
use tower::util::BoxService;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn echo() -> impl Service<u32, Response = u32, Error = Infallible, Future: Send> + Clone + Send {
    service_fn(|n: u32| async move { Ok::<_, Infallible>(n) })
}

#[tokio::test(start_paused = true)]
async fn admitted_count_over_time_equals_rate_times_t_plus_burst() {
    // 10 per second (one every 100 ms), 5 at once; a request every 10 ms
    // for 2 s: 5 + 2000 / 100 = 25 admitted, exactly.
    let layer = RateLimitLayer::new(Quota::per_second(nz(10)).with_burst(nz(5)));
    let svc = ServiceBuilder::new().layer(layer.clone()).service(echo());
    let mut admitted = 0;
    for i in 0..=200 {
        if i > 0 {
            advance(Duration::from_millis(10)).await;
        }
        if svc.clone().oneshot(i).await.is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 25);
    assert_eq!(layer.stats().rejected, 201 - 25);
}

#[tokio::test(start_paused = true)]
async fn every_clone_and_every_layered_service_shares_one_bucket() {
    let layer = RateLimitLayer::new(Quota::per_second(nz(3)));
    let a = layer.layer_service(echo());
    let b = layer.layer_service(echo());
    assert!(a.clone().oneshot(1).await.is_ok());
    assert!(b.clone().oneshot(2).await.is_ok());
    assert!(a.clone().oneshot(3).await.is_ok());
    let e = b.clone().oneshot(4).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
}

trait LayerService<S> {
    type Out;
    fn layer_service(&self, s: S) -> Self::Out;
}
impl<L: tower::Layer<S>, S> LayerService<S> for L {
    type Out = L::Service;
    fn layer_service(&self, s: S) -> L::Service {
        self.layer(s)
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_equals_the_real_wait() {
    let layer = RateLimitLayer::new(Quota::per(nz(2), Duration::from_millis(300)));
    let svc = layer.layer_service(echo());
    svc.clone().oneshot(1).await.unwrap();
    svc.clone().oneshot(2).await.unwrap();
    advance(Duration::from_millis(40)).await;
    let e = svc.clone().oneshot(3).await.unwrap_err();
    let after = e.retry_after().expect("a refusal says when to come back");
    assert_eq!(after, Duration::from_millis(110));
    advance(after.checked_sub(Duration::from_nanos(1)).unwrap()).await;
    let again = svc.clone().oneshot(4).await.unwrap_err();
    assert_eq!(again.retry_after(), Some(Duration::from_nanos(1)));
    advance(Duration::from_nanos(1)).await;
    assert_eq!(svc.clone().oneshot(5).await.unwrap(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_answered_with_429_and_retry_after() {
    let svc = ServiceBuilder::new()
        .layer(HandleErrorsLayer::new())
        .layer(RateLimitLayer::new(Quota::every(Duration::from_millis(
            1500,
        ))))
        .service(service_fn(|_: http::Request<String>| async {
            Ok::<_, Infallible>(http::Response::new(String::new()))
        }));
    let ok = svc
        .clone()
        .oneshot(http::Request::new(String::new()))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let refused = svc
        .clone()
        .oneshot(http::Request::new(String::new()))
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "2", "1.5 s rounded up");
}

#[tokio::test(start_paused = true)]
async fn max_wait_admits_after_exactly_the_wait() {
    let layer = RateLimitLayer::builder(Quota::per_second(nz(2)))
        .max_wait(Duration::from_secs(1))
        .build();
    let svc = layer.layer_service(echo());
    svc.clone().oneshot(1).await.unwrap();
    svc.clone().oneshot(2).await.unwrap();
    let start = Instant::now();
    let timed = |n| {
        let svc = svc.clone();
        async move {
            let out = svc.oneshot(n).await;
            (out, start.elapsed())
        }
    };
    let (three, four, five) = tokio::join!(timed(3), timed(4), timed(5));
    assert_eq!(three.0.unwrap(), 3);
    assert_eq!(three.1, Duration::from_millis(500));
    assert_eq!(four.0.unwrap(), 4);
    assert_eq!(four.1, Duration::from_secs(1));
    // The third in line would wait 1.5 s > max_wait: refused at once.
    let e = five.0.unwrap_err();
    assert_eq!(five.1, Duration::ZERO);
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert_eq!(e.retry_after(), Some(Duration::from_millis(1500)));
    assert_eq!(layer.stats().waited, 2);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_request_stops_at_once_when_its_token_is_cancelled() {
    let layer = RateLimitLayer::builder(Quota::every(Duration::from_secs(10)))
        .max_wait(Duration::from_secs(60))
        .build();
    let svc = layer.layer_service(echo());
    svc.clone().oneshot(1).await.unwrap();
    let token = CancellationToken::new();
    let ctx = Context::new().with_cancellation(token.clone());
    let call = tokio::spawn(ctx.scope(svc.clone().oneshot(2)));
    advance(Duration::from_secs(1)).await;
    token.cancel();
    let start = Instant::now();
    let e = call.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    assert!(start.elapsed() < Duration::from_millis(1));
}

#[tokio::test(start_paused = true)]
async fn a_slot_beyond_the_request_deadline_fails_at_once_with_deadline_exceeded() {
    let layer = RateLimitLayer::builder(Quota::every(Duration::from_secs(10)))
        .max_wait(Duration::from_secs(60))
        .build();
    let svc = layer.layer_service(echo());
    svc.clone().oneshot(1).await.unwrap();
    let ctx = Context::new().with_timeout(Duration::from_secs(2));
    let start = Instant::now();
    let e = ctx.scope(svc.clone().oneshot(2)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(start.elapsed(), Duration::ZERO);
    // Within the deadline, it waits.
    let ctx = Context::new().with_timeout(Duration::from_secs(20));
    assert_eq!(ctx.scope(svc.clone().oneshot(3)).await.unwrap(), 3);
    assert_eq!(start.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_service_that_is_not_clone_can_be_limited() {
    let inner: BoxService<u32, u32, Infallible> = BoxService::new(echo());
    let mut svc = RateLimitLayer::new(Quota::per_second(nz(1))).layer_service(inner);
    assert_eq!(svc.ready().await.unwrap().call(7).await.unwrap(), 7);
    let e = svc.ready().await.unwrap().call(8).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_as_inner() {
    let svc = RateLimitLayer::new(Quota::per_second(nz(1)))
        .layer_service(service_fn(|_: u32| async { Err::<u32, _>("boom") }));
    let e = svc.oneshot(1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Inner);
}

#[tokio::test(start_paused = true)]
async fn keys_are_limited_separately_and_share_one_store_across_clones() {
    let layer = KeyedRateLimitLayer::new(Quota::per_second(nz(1)), |n: &u32| *n % 2);
    let svc = layer.layer_service(echo());
    assert!(svc.clone().oneshot(0).await.is_ok());
    assert!(svc.clone().oneshot(1).await.is_ok());
    let e = svc.clone().oneshot(2).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
    assert!(
        layer.layer_service(echo()).oneshot(3).await.is_err(),
        "key 1 is used up in every service"
    );
}

#[tokio::test(start_paused = true)]
async fn keyed_by_header_answers_429_per_tenant() {
    let svc = ServiceBuilder::new()
        .layer(HandleErrorsLayer::new())
        .layer(KeyedRateLimitLayer::new(
            Quota::per_second(nz(2)),
            HeaderKey::from_static("x-tenant"),
        ))
        .service(service_fn(|_: http::Request<String>| async {
            Ok::<_, Infallible>(http::Response::new(String::new()))
        }));
    let req = |tenant: &str| {
        http::Request::builder()
            .header("x-tenant", tenant)
            .body(String::new())
            .unwrap()
    };
    let mut statuses = Vec::new();
    for tenant in ["a", "a", "a", "b"] {
        statuses.push(
            svc.clone()
                .oneshot(req(tenant))
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 429, 200]);
}

#[tokio::test(start_paused = true)]
async fn keys_stay_bounded_under_100_000_distinct_keys() {
    let layer = KeyedRateLimitLayer::builder(Quota::per_second(nz(1)), |n: &u32| *n)
        .max_keys(NonZeroUsize::new(1_024).unwrap())
        .build();
    let svc = layer.layer_service(echo());
    let (mut ok, mut shed) = (0u32, 0u32);
    for k in 0..100_000u32 {
        if k % 1_000 == 0 {
            advance(Duration::from_millis(100)).await;
        }
        match svc.clone().oneshot(k).await {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Overloaded);
                shed += 1;
            }
        }
        assert!(layer.store().len() <= 1_024);
    }
    assert_eq!(ok + shed, 100_000);
    assert!(ok > 0 && shed > 0, "ok {ok}, shed {shed}");
    advance(Duration::from_secs(1)).await;
    layer.store().sweep();
    assert!(layer.store().is_empty(), "idle keys are dropped");
}

#[tokio::test(start_paused = true)]
async fn a_keyed_waiting_request_takes_a_clone_and_calls_it_after_the_wait() {
    let layer = KeyedRateLimitLayer::builder(Quota::per_second(nz(1)), |_: &u32| "one")
        .max_wait(Duration::from_secs(5))
        .build();
    let svc = layer.layer_service(echo());
    let start = Instant::now();
    let (a, b, c) = tokio::join!(
        svc.clone().oneshot(1),
        svc.clone().oneshot(2),
        svc.clone().oneshot(3)
    );
    assert_eq!((a.unwrap(), b.unwrap(), c.unwrap()), (1, 2, 3));
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(layer.stats().waited, 2);
}

#[test]
fn the_services_are_send_and_sync_as_axum_requires() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    let plain = RateLimitLayer::new(Quota::per_second(nz(1))).layer_service(echo());
    let keyed =
        KeyedRateLimitLayer::new(Quota::per_second(nz(1)), |n: &u32| *n).layer_service(echo());
    send_sync(&plain);
    send_sync(&keyed);
}

/// A store behind a "network": answers on its second poll.
struct RemoteStore(rampart_rate::LocalStore);

impl rampart_rate::RateStore for RemoteStore {
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<rampart_rate::Decision, rampart_core::Error>>
                + Send,
        >,
    >;

    fn check<K: std::hash::Hash + ?Sized>(
        &self,
        key: &K,
        quota: &Quota,
        max_wait: Duration,
    ) -> Self::Future {
        let answer = self.0.check(key, quota, max_wait);
        Box::pin(async move {
            tokio::task::yield_now().await;
            answer.await
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_store_that_answers_later_decides_the_same_and_keeps_the_services_sync() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    let quota = Quota::per_second(nz(2));
    let plain = RateLimitLayer::builder(quota)
        .store(RemoteStore(rampart_rate::LocalStore::new()))
        .build()
        .layer_service(echo());
    let keyed = KeyedRateLimitLayer::builder(quota, |n: &u32| *n % 2)
        .store(RemoteStore(rampart_rate::LocalStore::new()))
        .build()
        .layer_service(echo());
    send_sync(&plain);
    send_sync(&keyed);
    for svc_results in [
        [
            plain.clone().oneshot(1).await.is_ok(),
            plain.clone().oneshot(2).await.is_ok(),
            plain.clone().oneshot(3).await.is_ok(),
        ],
        [
            keyed.clone().oneshot(1).await.is_ok(),
            keyed.clone().oneshot(2).await.is_ok(),
            keyed.clone().oneshot(3).await.is_ok(),
        ],
    ] {
        assert_eq!(svc_results, [true, true, false]);
    }
}

#[tokio::test(start_paused = true)]
async fn a_waiting_key_never_holds_the_readiness_other_keys_need() {
    // A concurrency limit of 1 inside: its permit is taken in poll_ready.
    // Tenant 0 waits a second for its rate; tenant 1, within its rate, must
    // not wait behind it.
    let svc = ServiceBuilder::new()
        .layer(
            KeyedRateLimitLayer::builder(Quota::per_second(nz(1)), |n: &u32| *n)
                .max_wait(Duration::from_secs(5))
                .build(),
        )
        .layer(tower::limit::ConcurrencyLimitLayer::new(1))
        .service(echo());
    svc.clone().oneshot(0).await.unwrap();
    let start = Instant::now();
    let waiting = tokio::spawn(svc.clone().oneshot(0));
    tokio::task::yield_now().await;
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO, "tenant 1 did not wait");
    assert_eq!(waiting.await.unwrap().unwrap(), 0);
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}
