//! With the `metrics` feature, a retry layer records its attempts, retries,
//! give-ups (by reason), budget rejections and backoff delays on the
//! `metrics` facade, labelled by the layer's name; exact values after
//! scripted runs on the paused clock.
#![cfg(feature = "metrics")]

use rampart_core::{CancellationToken, Context, ErrorKind};
use rampart_retry::{Backoff, Budget, Jitter, RetryLayer};
use rampart_testkit::{MetricsCapture, MetricsSnapshot, MockReply, MockService};
use std::time::Duration;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const REASONS: [&str; 5] = [
    "max_attempts",
    "not_replayable",
    "cancelled",
    "deadline",
    "max_elapsed",
];

fn exhausted(s: &MetricsSnapshot, layer: &str, reason: &str) -> Option<u64> {
    s.counter_with(
        "rampart.retry.exhausted",
        &[("layer", layer), ("reason", reason)],
    )
}

/// Every `exhausted` reason is registered; all are zero but `want`'s.
fn assert_exhausted(s: &MetricsSnapshot, layer: &str, want: &[(&str, u64)]) {
    for reason in REASONS {
        let expected = want
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |&(_, n)| n);
        assert_eq!(
            exhausted(s, layer, reason),
            Some(expected),
            "exhausted{{reason={reason}}}"
        );
    }
}

fn exponential_100ms() -> Backoff {
    Backoff::exponential(Duration::from_millis(100)).jitter(Jitter::None)
}

#[tokio::test(start_paused = true)]
async fn three_retries_then_success_record_four_attempts_three_retries_and_the_slept_delays() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| {
        RetryLayer::builder()
            .name("payments")
            .max_attempts(5)
            .backoff(exponential_100ms())
            .build()
            .unwrap()
    });
    let svc = MockService::scripted([
        MockReply::err("refused"),
        MockReply::err("refused"),
        MockReply::err("refused"),
        MockReply::ok(7u8),
    ]);
    let started = Instant::now();
    let out = cap
        .install(|| layer.layer(svc.clone()))
        .oneshot(1u8)
        .await
        .unwrap();
    assert_eq!(out, 7);
    assert_eq!(svc.calls(), 4);
    // The delays the histogram holds are the ones slept on the paused clock.
    assert_eq!(started.elapsed(), Duration::from_millis(700));

    let s = cap.snapshot();
    assert_eq!(s.counter("rampart.retry.attempts", "payments"), Some(4));
    assert_eq!(s.counter("rampart.retry.retries", "payments"), Some(3));
    assert_eq!(
        s.counter("rampart.retry.budget.rejected", "payments"),
        Some(0)
    );
    assert_exhausted(&s, "payments", &[]);
    assert_eq!(
        s.histogram("rampart.retry.backoff.duration", "payments"),
        Some(vec![0.1, 0.2, 0.4])
    );
}

#[tokio::test(start_paused = true)]
async fn a_success_at_once_is_one_attempt_and_nothing_else() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| RetryLayer::builder().name("x").build().unwrap());
    let svc = MockService::new(|n: u8| MockReply::ok(n));
    for n in 0..5 {
        assert_eq!(
            cap.install(|| layer.layer(svc.clone()))
                .oneshot(n)
                .await
                .unwrap(),
            n
        );
    }
    let s = cap.snapshot();
    assert_eq!(s.counter("rampart.retry.attempts", "x"), Some(5));
    assert_eq!(s.counter("rampart.retry.retries", "x"), Some(0));
    assert_exhausted(&s, "x", &[]);
    assert_eq!(
        s.histogram("rampart.retry.backoff.duration", "x"),
        Some(vec![])
    );
}

#[tokio::test(start_paused = true)]
async fn running_out_of_attempts_counts_one_give_up_for_max_attempts() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| {
        RetryLayer::builder()
            .name("x")
            .max_attempts(3)
            .backoff(Backoff::constant(Duration::from_millis(250)))
            .build()
            .unwrap()
    });
    let svc = MockService::new(|_: u8| MockReply::<u8>::err("down"));
    let err = cap
        .install(|| layer.layer(svc))
        .oneshot(1)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RetriesExhausted);

    let s = cap.snapshot();
    assert_eq!(s.counter("rampart.retry.attempts", "x"), Some(3));
    assert_eq!(s.counter("rampart.retry.retries", "x"), Some(2));
    assert_exhausted(&s, "x", &[("max_attempts", 1)]);
    assert_eq!(
        s.histogram("rampart.retry.backoff.duration", "x"),
        Some(vec![0.25, 0.25])
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_that_would_outlive_the_deadline_counts_a_give_up_for_the_deadline() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| {
        RetryLayer::builder()
            .name("x")
            .max_attempts(5)
            .backoff(exponential_100ms())
            .build()
            .unwrap()
    });
    let svc = MockService::new(|_: u8| MockReply::<u8>::err("down"));
    // 100 ms fits before the deadline, the next 200 ms does not.
    let ctx = Context::new().with_deadline(Instant::now() + Duration::from_millis(250));
    ctx.scope(cap.install(|| layer.layer(svc)).oneshot(1))
        .await
        .unwrap_err();

    let s = cap.snapshot();
    assert_eq!(s.counter("rampart.retry.attempts", "x"), Some(2));
    assert_eq!(s.counter("rampart.retry.retries", "x"), Some(1));
    assert_exhausted(&s, "x", &[("deadline", 1)]);
    assert_eq!(
        s.histogram("rampart.retry.backoff.duration", "x"),
        Some(vec![0.1])
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_cancelled_during_the_backoff_counts_a_give_up_and_no_further_attempt() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| {
        RetryLayer::builder()
            .name("x")
            .max_attempts(3)
            .backoff(Backoff::constant(Duration::from_secs(1)))
            .build()
            .unwrap()
    });
    let svc = MockService::new(|_: u8| MockReply::<u8>::err("down"));
    let token = CancellationToken::new();
    let ctx = Context::new().with_cancellation(token.clone());
    let call = tokio::spawn(ctx.scope(cap.install(|| layer.layer(svc.clone())).oneshot(1)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel();
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    assert_eq!(svc.calls(), 1);

    let s = cap.snapshot();
    // The retry was decided (and its delay recorded), the attempt never sent.
    assert_eq!(s.counter("rampart.retry.attempts", "x"), Some(1));
    assert_eq!(s.counter("rampart.retry.retries", "x"), Some(1));
    assert_exhausted(&s, "x", &[("cancelled", 1)]);
}

#[tokio::test(start_paused = true)]
async fn budget_rejections_are_counted_apart_from_the_other_give_ups() {
    let cap = MetricsCapture::new();
    // One token for the whole window (1 retry per second over 1 s), no ratio.
    let layer = cap.install(|| {
        RetryLayer::builder()
            .name("x")
            .max_attempts(3)
            .backoff(Backoff::none())
            .budget(Budget::new(0.0, 1, Duration::from_secs(1)))
            .build()
            .unwrap()
    });
    let svc = MockService::new(|_: u8| MockReply::<u8>::err("down"));
    let retry = cap.install(|| layer.layer(svc.clone()));
    // Call 1: fails, retried with the only token, fails, refused by the budget.
    // Calls 2 and 3: fail, refused at once.
    for _ in 0..3 {
        retry.clone().oneshot(1).await.unwrap_err();
    }
    assert_eq!(svc.calls(), 4);

    let s = cap.snapshot();
    assert_eq!(s.counter("rampart.retry.attempts", "x"), Some(4));
    assert_eq!(s.counter("rampart.retry.retries", "x"), Some(1));
    assert_eq!(s.counter("rampart.retry.budget.rejected", "x"), Some(3));
    assert_exhausted(&s, "x", &[]);
    // A zero delay is a retry's delay too.
    assert_eq!(
        s.histogram("rampart.retry.backoff.duration", "x"),
        Some(vec![0.0])
    );
}

#[tokio::test(start_paused = true)]
async fn two_layers_with_different_names_record_separately() {
    let cap = MetricsCapture::new();
    let (a, b) = cap.install(|| {
        let build = |name: &'static str| {
            RetryLayer::builder()
                .name(name)
                .max_attempts(2)
                .backoff(Backoff::constant(Duration::from_millis(10)))
                .build()
                .unwrap()
        };
        (build("users"), build("orders"))
    });
    let down = MockService::new(|_: u8| MockReply::<u8>::err("down"));
    let up = MockService::new(|n: u8| MockReply::ok(n));
    cap.install(|| a.layer(down)).oneshot(1).await.unwrap_err();
    for n in 0..3 {
        cap.install(|| b.layer(up.clone()))
            .oneshot(n)
            .await
            .unwrap();
    }

    let s = cap.snapshot();
    assert_eq!(s.counter("rampart.retry.attempts", "users"), Some(2));
    assert_eq!(s.counter("rampart.retry.retries", "users"), Some(1));
    assert_exhausted(&s, "users", &[("max_attempts", 1)]);
    assert_eq!(
        s.histogram("rampart.retry.backoff.duration", "users"),
        Some(vec![0.01])
    );
    assert_eq!(s.counter("rampart.retry.attempts", "orders"), Some(3));
    assert_eq!(s.counter("rampart.retry.retries", "orders"), Some(0));
    assert_exhausted(&s, "orders", &[]);
    assert_eq!(s.counter("rampart.retry.attempts", "default"), None);
}

#[tokio::test(start_paused = true)]
async fn an_unnamed_layer_records_as_default_and_a_renamed_one_under_its_new_name() {
    let cap = MetricsCapture::new();
    let (unnamed, renamed) =
        cap.install(|| (RetryLayer::default(), RetryLayer::default().name("late")));
    let up = MockService::new(|n: u8| MockReply::ok(n));
    cap.install(|| unnamed.layer(up.clone()))
        .oneshot(1)
        .await
        .unwrap();
    cap.install(|| renamed.layer(up.clone()))
        .oneshot(1)
        .await
        .unwrap();
    cap.install(|| renamed.layer(up)).oneshot(2).await.unwrap();

    let s = cap.snapshot();
    assert_eq!(s.counter("rampart.retry.attempts", "default"), Some(1));
    assert_eq!(s.counter("rampart.retry.attempts", "late"), Some(2));
    assert_eq!(
        s.names(),
        [
            "rampart.retry.attempts",
            "rampart.retry.backoff.duration",
            "rampart.retry.budget.rejected",
            "rampart.retry.exhausted",
            "rampart.retry.retries",
        ]
    );
}
