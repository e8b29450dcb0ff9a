//! What the rate limiters record on the `metrics` facade, captured exactly
//! after scripted runs on tokio's paused clock. (A capture's snapshot
//! drains counters and gauges as well as histograms — metrics-util's
//! debugging recorder swaps them to zero — so each test takes one
//! snapshot, at the end, or reads the deltas of successive ones.)
#![cfg(feature = "metrics")]
// Exact values are the point: the gauges move by whole numbers.
#![allow(clippy::float_cmp)]

use rampart_core::{CancellationToken, Context, ErrorKind};
use rampart_rate::{KeyedRateLimitLayer, KeyedStore, Quota, RateLimitLayer, RateStore};
use rampart_testkit::MetricsCapture;
use std::convert::Infallible;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt, service_fn};

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn echo() -> impl Service<u32, Response = u32, Error = Infallible, Future: Send> + Clone + Send {
    service_fn(|n: u32| async move { Ok::<_, Infallible>(n) })
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_three_then_two_refusals_are_counted_exactly() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| RateLimitLayer::new(Quota::per_second(nz(3))).name("api"));
    let svc = cap.install(|| layer.layer(echo()));
    for i in 0..5 {
        let r = svc.clone().oneshot(i).await;
        assert_eq!(r.is_ok(), i < 3, "call {i}");
    }
    // One interval later, one more slot.
    advance(Duration::from_millis(334)).await;
    svc.clone().oneshot(5).await.unwrap();

    let s = cap.snapshot();
    assert_eq!(s.counter("rampart.rate.admitted", "api"), Some(4));
    assert_eq!(s.counter("rampart.rate.rejected", "api"), Some(2));
    assert_eq!(
        s.histogram("rampart.rate.wait.duration", "api"),
        Some(vec![])
    );
    assert_eq!(layer.stats().rejected, 2);
    // An unkeyed layer over the local store has no keys.
    assert_eq!(s.gauge("rampart.rate.keys", "api"), None);
}

#[tokio::test(start_paused = true)]
async fn callers_that_waited_record_their_wait_in_seconds() {
    // Two per second, two at once, waits of up to one second: of five
    // callers at one instant two go at once, two wait 0.5 s and 1 s, the
    // fifth would wait 1.5 s and is refused.
    let cap = MetricsCapture::new();
    let layer = cap.install(|| {
        RateLimitLayer::builder(Quota::per_second(nz(2)))
            .max_wait(Duration::from_secs(1))
            .name("waits")
            .build()
    });
    let svc = cap.install(|| layer.layer(echo()));
    let calls: Vec<_> = (0..5)
        .map(|i| tokio::spawn(svc.clone().oneshot(i)))
        .collect();
    let mut refused = 0;
    for c in calls {
        if let Err(e) = c.await.unwrap() {
            assert_eq!(e.kind(), ErrorKind::RateLimited);
            refused += 1;
        }
    }
    assert_eq!(refused, 1);

    let s = cap.snapshot();
    assert_eq!(s.counter("rampart.rate.admitted", "waits"), Some(4));
    assert_eq!(s.counter("rampart.rate.rejected", "waits"), Some(1));
    assert_eq!(
        s.histogram("rampart.rate.wait.duration", "waits")
            .map(sorted),
        Some(vec![0.5, 1.0])
    );
    assert_eq!(layer.stats().waited, 2);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_wait_records_the_time_it_waited() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| {
        RateLimitLayer::builder(Quota::every(Duration::from_secs(10)))
            .max_wait(Duration::from_secs(60))
            .name("cancel")
            .build()
    });
    let svc = cap.install(|| layer.layer(echo()));
    svc.clone().oneshot(1).await.unwrap();
    let token = CancellationToken::new();
    let ctx = Context::new().with_cancellation(token.clone());
    let call = tokio::spawn(ctx.scope(svc.clone().oneshot(2)));
    tokio::task::yield_now().await; // the call starts waiting now
    advance(Duration::from_millis(2_500)).await;
    token.cancel();
    let e = call.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);

    let s = cap.snapshot();
    assert_eq!(s.counter("rampart.rate.admitted", "cancel"), Some(2));
    assert_eq!(s.counter("rampart.rate.rejected", "cancel"), Some(0));
    assert_eq!(
        s.histogram("rampart.rate.wait.duration", "cancel"),
        Some(vec![2.5])
    );
}

#[tokio::test(start_paused = true)]
async fn a_slot_beyond_the_deadline_counts_as_rejected() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| {
        RateLimitLayer::builder(Quota::every(Duration::from_secs(10)))
            .max_wait(Duration::from_secs(60))
            .name("deadline")
            .build()
    });
    let svc = cap.install(|| layer.layer(echo()));
    svc.clone().oneshot(1).await.unwrap();
    let ctx = Context::new().with_timeout(Duration::from_secs(2));
    let e = ctx.scope(svc.clone().oneshot(2)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded);

    let s = cap.snapshot();
    assert_eq!(s.counter("rampart.rate.admitted", "deadline"), Some(1));
    assert_eq!(s.counter("rampart.rate.rejected", "deadline"), Some(1));
    assert_eq!(
        s.histogram("rampart.rate.wait.duration", "deadline"),
        Some(vec![])
    );
}

#[tokio::test(start_paused = true)]
async fn two_named_limiters_record_separately_and_an_unnamed_one_as_default() {
    let cap = MetricsCapture::new();
    let (a, b, unnamed) = cap.install(|| {
        (
            RateLimitLayer::builder(Quota::per_second(nz(1)))
                .name("a")
                .build(),
            RateLimitLayer::new(Quota::per_second(nz(2))).name("b"),
            RateLimitLayer::new(Quota::per_second(nz(1))),
        )
    });
    let (sa, sb, su) = (
        cap.install(|| a.layer(echo())),
        cap.install(|| b.layer(echo())),
        cap.install(|| unnamed.layer(echo())),
    );
    for i in 0..3 {
        let _ = sa.clone().oneshot(i).await;
        let _ = sb.clone().oneshot(i).await;
    }
    su.clone().oneshot(0).await.unwrap();

    let s = cap.snapshot();
    assert_eq!(s.counter("rampart.rate.admitted", "a"), Some(1));
    assert_eq!(s.counter("rampart.rate.rejected", "a"), Some(2));
    assert_eq!(s.counter("rampart.rate.admitted", "b"), Some(2));
    assert_eq!(s.counter("rampart.rate.rejected", "b"), Some(1));
    assert_eq!(s.counter("rampart.rate.admitted", "default"), Some(1));
    assert_eq!(s.counter("rampart.rate.rejected", "default"), Some(0));
    assert_eq!((a.layer_name(), unnamed.layer_name()), ("a", "default"));
}

#[tokio::test(start_paused = true)]
async fn a_keyed_limiter_counts_per_key_decisions_and_its_keys_gauge_returns_to_zero() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| {
        KeyedRateLimitLayer::builder(Quota::per_second(nz(1)), |n: &u32| *n % 3)
            .max_keys(NonZeroUsize::new(100).unwrap())
            .name("tenants")
            .build()
    });
    let svc = cap.install(|| layer.layer(echo()));
    // Keys 0, 1, 2 each admit one and refuse their second request.
    for i in 0..6 {
        let r = svc.clone().oneshot(i).await;
        assert_eq!(r.is_ok(), i < 3, "call {i}");
    }
    assert_eq!(layer.store().len(), 3);
    // Once every bucket has refilled, a sweep drops the keys.
    advance(Duration::from_secs(1)).await;
    layer.store().sweep();
    assert!(layer.store().is_empty());

    let s = cap.snapshot();
    assert_eq!(s.counter("rampart.rate.admitted", "tenants"), Some(3));
    assert_eq!(s.counter("rampart.rate.rejected", "tenants"), Some(3));
    assert_eq!(s.gauge("rampart.rate.keys", "tenants"), Some(0.0));
}

#[tokio::test(start_paused = true)]
async fn the_keys_gauge_follows_inserts_and_sweeps() {
    let cap = MetricsCapture::new();
    let layer = cap
        .install(|| KeyedRateLimitLayer::new(Quota::per_second(nz(1)), |n: &u32| *n).name("keys"));
    let svc = cap.install(|| layer.layer(echo()));
    for i in 0..5 {
        svc.clone().oneshot(i).await.unwrap();
    }
    let s = cap.snapshot();
    assert_eq!(s.gauge("rampart.rate.keys", "keys"), Some(5.0));
    assert_eq!(s.counter("rampart.rate.admitted", "keys"), Some(5));
}

#[tokio::test(start_paused = true)]
async fn a_keyed_caller_that_waited_records_its_wait_and_a_full_store_counts_as_rejected() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| {
        KeyedRateLimitLayer::builder(Quota::every(Duration::from_millis(200)), |n: &u32| *n)
            .max_wait(Duration::from_millis(200))
            .store(KeyedStore::new(NonZeroUsize::new(16).unwrap())) // one key per shard
            .name("keyed-wait")
            .build()
    });
    let svc = cap.install(|| layer.layer(echo()));
    svc.clone().oneshot(7).await.unwrap();
    svc.clone().oneshot(7).await.unwrap(); // waits 200 ms
    // New keys until one lands in a shard already holding an active key.
    let mut overloaded = 0;
    let mut admitted_new = 0;
    for k in 100..200 {
        match svc.clone().oneshot(k).await {
            Ok(_) => admitted_new += 1,
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Overloaded);
                overloaded += 1;
                break;
            }
        }
    }
    assert_eq!(overloaded, 1);

    let s = cap.snapshot();
    assert_eq!(
        s.counter("rampart.rate.admitted", "keyed-wait"),
        Some(2 + admitted_new)
    );
    assert_eq!(s.counter("rampart.rate.rejected", "keyed-wait"), Some(1));
    assert_eq!(
        s.histogram("rampart.rate.wait.duration", "keyed-wait"),
        Some(vec![0.2])
    );
    assert_eq!(
        s.gauge("rampart.rate.keys", "keyed-wait"),
        Some(layer.store().len() as f64)
    );
}

#[tokio::test(start_paused = true)]
async fn two_keyed_limiters_with_one_name_add_up_and_the_series_returns_to_zero_when_both_are_dropped()
 {
    let cap = MetricsCapture::new();
    // Each snapshot drains the series: later snapshots read deltas, added up.
    let mut keys = 0.0;
    let mut read = || {
        keys += cap
            .snapshot()
            .gauge("rampart.rate.keys", "shared")
            .unwrap_or(0.0);
        keys
    };
    let build = || KeyedRateLimitLayer::new(Quota::per_second(nz(1)), |n: &u32| *n).name("shared");
    let a = cap.install(build);
    let sa = cap.install(|| a.layer(echo()));
    for i in 0..3 {
        sa.clone().oneshot(i).await.unwrap();
    }
    // A second store of the same name starts empty: it used to set the
    // series to its own count, 0 (no snapshot before it: a snapshot resets
    // the recorder's gauges and would hide that).
    let b = cap.install(build);
    assert_eq!(read(), 3.0);
    let sb = cap.install(|| b.layer(echo()));
    for i in 0..2 {
        sb.clone().oneshot(i).await.unwrap();
    }
    assert_eq!(read(), 5.0);
    drop((a, sa));
    assert_eq!(read(), 2.0);
    drop((b, sb));
    assert_eq!(read(), 0.0);
}

#[tokio::test(start_paused = true)]
async fn renaming_a_keyed_limiter_moves_its_keys_from_the_old_series_to_the_new_one() {
    let cap = MetricsCapture::new();
    let quota = Quota::per_second(nz(1));
    let (other, layer) = cap.install(|| {
        (
            KeyedRateLimitLayer::new(quota, |n: &u32| *n),
            KeyedRateLimitLayer::new(quota, |n: &u32| *n),
        )
    });
    other
        .store()
        .check(&1u32, &quota, Duration::ZERO)
        .await
        .unwrap();
    for k in 0..2u32 {
        layer
            .store()
            .check(&k, &quota, Duration::ZERO)
            .await
            .unwrap();
    }
    let layer = cap.install(|| layer.name("moved"));
    // The services register the stores' keys, each under the name its
    // layer ended up with (the renamed one never under "default").
    let echo = || tower::service_fn(|n: u32| async move { Ok::<_, std::convert::Infallible>(n) });
    let services = cap.install(|| (other.layer(echo()), layer.layer(echo())));
    // One snapshot for both names (each snapshot drains every series).
    let s = cap.snapshot();
    assert_eq!(s.gauge("rampart.rate.keys", "moved"), Some(2.0));
    // The other unnamed store keeps its key under "default".
    assert_eq!(s.gauge("rampart.rate.keys", "default"), Some(1.0));
    assert_eq!(layer.store().len(), 2);
    drop((layer, other, services));
    // Deltas since the snapshot: both series back to 0.
    let s = cap.snapshot();
    assert_eq!(s.gauge("rampart.rate.keys", "moved"), Some(-2.0));
    assert_eq!(s.gauge("rampart.rate.keys", "default"), Some(-1.0));
}
