//! The retry budget through the layer: amplification under a full outage is
//! bounded by `calls × (1 + ratio) + floor`, one budget is shared by many
//! services, and an empty budget fails fast.

use rampart_core::ErrorKind;
use rampart_retry::{Backoff, Budget, BudgetConfig, RetryConfig, RetryLayer};
use rampart_testkit::{MockReply, MockService};
use std::time::Duration;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const CALLS: u64 = 10_000;

async fn outage(ratio: f64, min_per_sec: usize, ttl: Duration) -> (u64, RetryLayer) {
    let svc = MockService::new(|_: u32| MockReply::<u32>::err("outage"));
    let layer = RetryLayer::builder()
        .max_attempts(3)
        .backoff(Backoff::none())
        .budget(Budget::new(ratio, min_per_sec, ttl))
        .stats()
        .build()
        .unwrap();
    let retry = layer.layer(svc.clone());
    for _ in 0..CALLS {
        retry.clone().oneshot(1).await.unwrap_err();
    }
    (svc.calls() as u64, layer)
}

#[tokio::test(start_paused = true)]
async fn full_outage_attempts_are_bounded_by_ratio_plus_floor() {
    let ttl = Duration::from_secs(10);
    for ratio in [0.2, 0.75, 0.3, 0.0, 1.0] {
        let (attempts, layer) = outage(ratio, 10, ttl).await;
        let floor: u32 = 10 * 10;
        let bound = CALLS as f64 * (1.0 + ratio) + f64::from(floor);
        assert!(
            attempts as f64 <= bound,
            "ratio {ratio}: {attempts} > {bound}"
        );
        // And the budget is used, not under-spent: exactly the bound (capped
        // by max_attempts when the ratio allows more than two retries each).
        let want =
            (CALLS + (CALLS as f64 * ratio).round() as u64 + u64::from(floor)).min(CALLS * 3);
        assert_eq!(attempts, want, "ratio {ratio}");
        let s = layer.stats().unwrap();
        assert_eq!(s.calls, CALLS);
        assert_eq!(s.retries, attempts - CALLS);
        assert_eq!(
            s.budget_rejections + s.exhausted,
            CALLS,
            "every call gave up once"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_fails_fast_without_sleeping() {
    let svc = MockService::new(|_: u32| MockReply::<u32>::err("down"));
    let layer = RetryLayer::builder()
        .backoff(Backoff::constant(Duration::from_secs(5)))
        .budget(Budget::new(0.0, 0, Duration::from_secs(10)))
        .stats()
        .build()
        .unwrap();
    let started = Instant::now();
    let err = layer.layer(svc.clone()).oneshot(1).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(svc.calls(), 1);
    assert_eq!(err.kind(), ErrorKind::RetriesExhausted);
    assert_eq!(layer.stats().unwrap().budget_rejections, 1);
}

#[tokio::test(start_paused = true)]
async fn one_budget_is_shared_by_several_services() {
    let budget = Budget::new(0.5, 0, Duration::from_secs(10));
    let a = MockService::new(|_: u32| MockReply::<u32>::err("a down"));
    let b = MockService::new(|_: u32| MockReply::<u32>::err("b down"));
    let mk = |budget: &Budget| {
        RetryLayer::builder()
            .max_attempts(5)
            .backoff(Backoff::none())
            .budget(budget.clone())
            .build()
            .unwrap()
    };
    let (la, lb) = (mk(&budget), mk(&budget));
    // 100 calls through A deposit 50 tokens; B spends them.
    for _ in 0..100 {
        la.layer(MockService::new(|_: u32| MockReply::ok(1)))
            .oneshot(1)
            .await
            .unwrap();
    }
    assert_eq!(budget.available(), 50);
    for _ in 0..20 {
        lb.layer(b.clone()).oneshot(1).await.unwrap_err();
    }
    // 20 first calls deposit 10 more: 60 tokens for B's retries.
    assert_eq!(b.calls(), 20 + 60);
    assert_eq!(budget.available(), 0);
    la.layer(a.clone()).oneshot(1).await.unwrap_err();
    // A's own deposit (half a token) is not a whole retry.
    assert_eq!(a.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn budget_from_config_is_built_per_layer() {
    let cfg = RetryConfig {
        max_attempts: 2,
        backoff: Backoff::none(),
        budget: Some(BudgetConfig {
            ratio: 0.1,
            min_per_sec: 0,
            ttl: Duration::from_secs(1),
        }),
        ..RetryConfig::default()
    };
    let layer = RetryLayer::builder().config(cfg).build().unwrap();
    assert_eq!(layer.budget().unwrap().config().ttl, Duration::from_secs(1));
    let svc = MockService::new(|_: u32| MockReply::<u32>::err("down"));
    for _ in 0..100 {
        layer.layer(svc.clone()).oneshot(1).await.unwrap_err();
    }
    assert_eq!(svc.calls(), 110);
}
