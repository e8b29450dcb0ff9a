//! Behaviour of gather / wait / FanOutLayer, on tokio's paused clock.

use proptest::prelude::*;
use rampart_core::{CancellationToken, Context, Error, ErrorKind, RequestId};
use rampart_fanout::{
    Failure, FanOutLayer, Gathered, Mode, NotDone, Outcome, Reason, gather, wait,
};
use rampart_testkit::{Gate, MockError, MockReply, MockService, ReadyMode, cancel_at_every_poll};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{Instant, advance};
use tower::{Layer, Service, ServiceExt, service_fn};

/// A request: answer after `ms`, with `Ok(id)` or an error naming `id`.
#[derive(Clone, Copy, Debug)]
struct Job {
    id: u32,
    ms: u64,
    ok: bool,
}

fn ok(id: u32, ms: u64) -> Job {
    Job { id, ms, ok: true }
}

fn fail(id: u32, ms: u64) -> Job {
    Job { id, ms, ok: false }
}

fn mock() -> MockService<Job, u32> {
    MockService::new(|j: Job| {
        let reply = if j.ok {
            MockReply::ok(j.id)
        } else {
            MockReply::err(format!("job {} failed", j.id))
        };
        reply.after(Duration::from_millis(j.ms))
    })
}

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

fn ids<E>(g: &Gathered<u32, E>) -> Vec<Option<u32>> {
    g.iter().map(|o| o.as_ref().ok().copied()).collect()
}

#[tokio::test(start_paused = true)]
async fn outcomes_come_back_in_input_order_whatever_order_they_finish_in() {
    let svc = mock();
    let jobs = [ok(0, 50), ok(1, 10), fail(2, 30), ok(3, 0), ok(4, 40)];
    let g = gather(svc.clone(), jobs).await;
    assert_eq!(ids(&g), [Some(0), Some(1), None, Some(3), Some(4)]);
    assert_eq!(g[2].clone().err().unwrap().message(), "job 2 failed");
    assert_eq!((g.succeeded(), g.failed(), g.not_done()), (4, 1, 0));
    assert_eq!(g.completed(), 5);
    assert_eq!(g.first_error_index(), Some(2));
    assert_eq!(svc.calls(), 5);
    assert_eq!(svc.inflight(), 0);
}

#[tokio::test(start_paused = true)]
async fn gather_runs_every_request_at_once_without_a_bound() {
    let svc = mock();
    let started = Instant::now();
    let g = gather(svc.clone(), (0..100).map(|i| ok(i, 100))).await;
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    assert!(g.all_ok());
    assert_eq!(svc.peak_inflight(), 100);
}

#[tokio::test(start_paused = true)]
async fn the_concurrency_bound_is_never_exceeded_and_every_request_runs() {
    let svc = mock();
    let fan = FanOutLayer::new().concurrency(nz(3)).layer(svc.clone());
    let jobs: Vec<Job> = (0..20).map(|i| ok(i, u64::from(i % 7) * 10 + 5)).collect();
    let g = fan.oneshot(jobs).await.unwrap();
    assert!(g.all_ok());
    assert_eq!(ids(&g), (0..20).map(Some).collect::<Vec<_>>());
    assert_eq!(svc.peak_inflight(), 3);
    assert_eq!(svc.calls(), 20);
}

#[tokio::test(start_paused = true)]
async fn a_request_is_sent_only_when_the_inner_service_is_ready() {
    let svc = mock();
    let gate = Gate::new();
    svc.set_ready(ReadyMode::Gated(gate.clone()));
    let task = tokio::spawn(gather(svc.clone(), [ok(0, 1), ok(1, 1)]));
    advance(Duration::from_secs(1)).await;
    assert_eq!(svc.calls(), 0, "nothing sent while not ready");
    gate.open();
    let g = task.await.unwrap();
    assert!(g.all_ok());
    assert_eq!(svc.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_inner_concurrency_limit_is_respected_through_poll_ready() {
    let svc = mock();
    let limited = tower::limit::ConcurrencyLimitLayer::new(2).layer(svc.clone());
    let g = gather(limited, (0..10).map(|i| ok(i, 10))).await;
    assert!(g.all_ok());
    assert_eq!(svc.peak_inflight(), 2);
}

#[tokio::test(start_paused = true)]
async fn mode_all_keeps_errors_as_values() {
    let fan = FanOutLayer::new().layer(mock());
    let g = fan
        .oneshot(vec![fail(0, 10), ok(1, 20), fail(2, 5)])
        .await
        .unwrap();
    assert_eq!((g.succeeded(), g.failed()), (1, 2));
    assert_eq!(g.first_error_index(), Some(2), "job 2 failed first in time");
    assert_eq!(g.errs().map(|(i, _)| i).collect::<Vec<_>>(), [0, 2]);
    assert_eq!(g.oks().collect::<Vec<_>>(), [(1, &1)]);
}

#[tokio::test(start_paused = true)]
async fn fail_fast_stops_at_the_first_error_and_cancels_the_rest() {
    let svc = mock();
    let fan = FanOutLayer::new()
        .fail_fast()
        .concurrency(nz(3))
        .layer(svc.clone());
    let started = Instant::now();
    let err = fan
        .oneshot(vec![
            ok(0, 10),
            ok(1, 100),
            fail(2, 20),
            ok(3, 10),
            ok(4, 10),
        ])
        .await
        .unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_millis(20));
    assert_eq!(err.failure(), Failure::Unreachable);
    let g = err.gathered();
    assert_eq!(g.first_error().unwrap().message(), "job 2 failed");
    // 0 done at 10 ms, 3 sent then and done at 20 ms together with 2's error,
    // or still in flight: either way 1 was cancelled mid-flight, 4 never sent.
    assert_eq!(g[0], Outcome::Ok(0));
    assert_eq!(
        g[1],
        Outcome::NotDone(g[1].not_done().unwrap()),
        "the slow one did not finish"
    );
    let one = g[1].not_done().unwrap();
    assert_eq!((one.reason(), one.was_sent()), (Reason::Decided, true));
    assert_eq!(one.kind(), ErrorKind::Cancelled);
    assert!(!g[4].is_done());
    assert_eq!(svc.inflight(), 0, "nothing left running");
    assert_eq!(svc.dropped() + svc.completed(), svc.calls());
    let e = Error::from(err);
    assert_eq!(e.kind(), ErrorKind::Inner);
    assert!(e.to_string().contains("job 2 failed"));
}

#[tokio::test(start_paused = true)]
async fn first_ok_returns_at_the_first_success_and_cancels_the_others() {
    let svc = mock();
    let fan = FanOutLayer::new().first_ok().layer(svc.clone());
    let started = Instant::now();
    let g = fan
        .oneshot(vec![ok(0, 300), fail(1, 10), ok(2, 50), ok(3, 200)])
        .await
        .unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(50));
    assert_eq!(ids(&g), [None, None, Some(2), None]);
    assert!(g[1].is_err());
    for i in [0, 3] {
        let n = g[i].not_done().unwrap();
        assert_eq!((n.reason(), n.was_sent()), (Reason::Decided, true));
    }
    assert_eq!(svc.dropped(), 2);
    assert_eq!(svc.inflight(), 0);
}

#[tokio::test(start_paused = true)]
async fn first_ok_fails_once_every_request_failed() {
    let fan = FanOutLayer::new().first_ok().layer(mock());
    let err = fan
        .oneshot(vec![fail(0, 10), fail(1, 30)])
        .await
        .unwrap_err();
    assert_eq!(err.failure(), Failure::Unreachable);
    assert_eq!(err.gathered().failed(), 2);
    assert_eq!(err.gathered().first_error_index(), Some(0));
}

#[tokio::test(start_paused = true)]
async fn quorum_is_done_once_k_succeed() {
    let svc = mock();
    let fan = FanOutLayer::new().quorum(nz(2)).layer(svc.clone());
    let started = Instant::now();
    let g = fan
        .oneshot(vec![ok(0, 10), fail(1, 5), ok(2, 1000), ok(3, 30)])
        .await
        .unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(30));
    assert_eq!(ids(&g), [Some(0), None, None, Some(3)]);
    assert_eq!(g[2].not_done().unwrap().reason(), Reason::Decided);
    assert_eq!(svc.dropped(), 1);
}

#[tokio::test(start_paused = true)]
async fn quorum_fails_as_soon_as_it_becomes_impossible() {
    let svc = mock();
    let fan = FanOutLayer::new().quorum(nz(3)).layer(svc.clone());
    let started = Instant::now();
    let err = fan
        .oneshot(vec![ok(0, 10), fail(1, 20), fail(2, 30), ok(3, 1000)])
        .await
        .unwrap_err();
    // After the second failure at 30 ms, at most 2 of 4 can succeed.
    assert_eq!(started.elapsed(), Duration::from_millis(30));
    assert_eq!(err.failure(), Failure::Unreachable);
    assert_eq!(err.gathered().not_done(), 1);
    assert_eq!(svc.dropped(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_quorum_larger_than_the_batch_fails_at_once_without_sending() {
    let svc = mock();
    let fan = FanOutLayer::new().quorum(nz(3)).layer(svc.clone());
    let err = fan.oneshot(vec![ok(0, 1), ok(1, 1)]).await.unwrap_err();
    assert_eq!(err.failure(), Failure::Unreachable);
    assert_eq!(svc.calls(), 0);
    assert!(
        err.gathered()
            .iter()
            .all(|o| !o.not_done().unwrap().was_sent())
    );
    assert_eq!(Error::from(err).kind(), ErrorKind::InvalidRequest);
}

#[tokio::test(start_paused = true)]
async fn empty_batches_have_a_defined_result_in_every_mode() {
    let none: Vec<Job> = Vec::new();
    for (mode, ok_expected) in [
        (Mode::All, true),
        (Mode::FailFast, true),
        (Mode::FirstOk, false),
        (Mode::Quorum(nz(1)), false),
    ] {
        let res = FanOutLayer::new()
            .mode(mode)
            .layer(mock())
            .oneshot(none.clone())
            .await;
        assert_eq!(res.is_ok(), ok_expected, "{mode:?}");
    }
}

/// The article's collective timeout: 1 s, 3 s and 5 s under 2 s.
#[tokio::test(start_paused = true)]
async fn wait_cancels_what_is_not_done_at_the_collective_timeout() {
    let svc = mock();
    let started = Instant::now();
    let g = wait(
        svc.clone(),
        [ok(0, 1000), ok(1, 3000), ok(2, 5000)],
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(g.completed(), 1);
    assert_eq!(g.not_done(), 2);
    assert_eq!(g[0], Outcome::Ok(0));
    for i in [1, 2] {
        let n = g[i].not_done().unwrap();
        assert_eq!((n.reason(), n.was_sent()), (Reason::Timeout, true));
        assert_eq!(n.to_error().kind(), ErrorKind::Timeout);
    }
    // The drop guards of the two slow calls ran: cancelled, not leaked.
    assert_eq!(svc.dropped(), 2);
    assert_eq!(svc.inflight(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_layer_timeout_fails_the_group_with_its_outcomes_and_unsent_ones_are_marked() {
    let svc = mock();
    let fan = FanOutLayer::new()
        .concurrency(nz(1))
        .timeout(Duration::from_millis(150))
        .layer(svc.clone());
    let err = fan
        .oneshot(vec![ok(0, 100), ok(1, 100), ok(2, 100)])
        .await
        .unwrap_err();
    assert_eq!(err.failure(), Failure::Timeout);
    let g = err.gathered();
    assert_eq!(g[0], Outcome::Ok(0));
    assert_eq!(
        g[1],
        Outcome::NotDone(NotDone::clone(&g[1].not_done().unwrap()))
    );
    assert!(g[1].not_done().unwrap().was_sent());
    assert!(!g[2].not_done().unwrap().was_sent());
    assert_eq!(Error::from(err).kind(), ErrorKind::Timeout);
    assert_eq!(svc.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_zero_timeout_sends_nothing() {
    let svc = mock();
    let g = wait(svc.clone(), [ok(0, 0)], Duration::ZERO).await;
    assert_eq!(g.not_done(), 1);
    assert_eq!(g[0].not_done().unwrap().reason(), Reason::Timeout);
    assert_eq!(svc.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn permits_of_cut_off_calls_are_released_at_the_deadline() {
    let svc = mock();
    let limited = tower::limit::ConcurrencyLimitLayer::new(2).layer(svc.clone());
    let g = wait(
        limited.clone(),
        [ok(0, 10_000), ok(1, 10_000), ok(2, 10)],
        Duration::from_millis(100),
    )
    .await;
    assert_eq!(g.not_done(), 3, "2 cut off in flight, 1 never got a permit");
    assert!(!g[2].not_done().unwrap().was_sent());
    // Both permits are free again: two new calls run side by side at once.
    let started = Instant::now();
    let g = gather(limited, [ok(3, 10), ok(4, 10)]).await;
    assert!(g.all_ok());
    assert_eq!(started.elapsed(), Duration::from_millis(10));
}

#[tokio::test(start_paused = true)]
async fn the_caller_context_deadline_is_respected_when_earlier() {
    let svc = mock();
    let ctx = Context::new().with_timeout(Duration::from_millis(500));
    let g = ctx
        .scope(wait(
            svc.clone(),
            [ok(0, 100), ok(1, 1000)],
            Duration::from_secs(2),
        ))
        .await;
    assert_eq!(g[0], Outcome::Ok(0));
    assert_eq!(g[1].not_done().unwrap().reason(), Reason::DeadlineExceeded);
    let fan = FanOutLayer::new().layer(svc.clone());
    let err = Context::new()
        .with_timeout(Duration::from_millis(50))
        .scope(async { fan.oneshot(vec![ok(2, 1000)]).await })
        .await
        .unwrap_err();
    assert_eq!(err.failure(), Failure::DeadlineExceeded);
    assert_eq!(Error::from(err).kind(), ErrorKind::DeadlineExceeded);
}

#[tokio::test(start_paused = true)]
async fn an_expired_context_sends_nothing() {
    let svc = mock();
    let ctx = Context::new().with_deadline(Instant::now());
    let g = ctx
        .scope(async { gather(svc.clone(), [ok(0, 0)]).await })
        .await;
    assert_eq!(g[0].not_done().unwrap().reason(), Reason::DeadlineExceeded);
    assert_eq!(svc.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_callers_cancellation_wakes_the_group_at_once_and_drops_its_calls() {
    let svc = mock();
    let token = CancellationToken::new();
    let ctx = Context::new().with_cancellation(token.clone());
    let fan = FanOutLayer::new().layer(svc.clone());
    let task = tokio::spawn(ctx.scope(async move {
        fan.oneshot(vec![ok(0, 10), ok(1, 10_000), ok(2, 10_000)])
            .await
    }));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(svc.inflight(), 2);
    let cancelled_at = Instant::now();
    token.cancel();
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(Instant::now(), cancelled_at, "no wait after the cancel");
    assert_eq!(err.failure(), Failure::Cancelled);
    assert_eq!(err.gathered()[0], Outcome::Ok(0));
    assert_eq!(
        err.gathered()[1].not_done().unwrap().reason(),
        Reason::Cancelled
    );
    assert_eq!((svc.calls(), svc.completed(), svc.dropped()), (3, 1, 2));
    assert_eq!(Error::from(err).kind(), ErrorKind::Cancelled);
}

#[tokio::test(start_paused = true)]
async fn each_call_runs_in_the_callers_context_with_the_groups_deadline_and_token() {
    type Seen = Arc<Mutex<Vec<(Option<String>, Option<Instant>, CancellationToken)>>>;
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let svc = service_fn(move |ms: u64| {
        let ctx = Context::current().expect("a context in the call");
        record.lock().unwrap().push((
            ctx.request_id().map(ToString::to_string),
            ctx.deadline(),
            ctx.cancellation().expect("a token").clone(),
        ));
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            // And in the poll of its future.
            let id = Context::current().and_then(|c| c.request_id().cloned());
            Ok::<_, MockError>(id.map(|i| i.to_string()))
        }
    });
    let caller_token = CancellationToken::new();
    let ctx = Context::new()
        .with_request_id(RequestId::parse(b"req-7").unwrap())
        .with_cancellation(caller_token.clone());
    let start = Instant::now();
    let fan = FanOutLayer::new()
        .first_ok()
        .timeout(Duration::from_secs(2))
        .layer(svc);
    let g = ctx.scope(fan.oneshot(vec![10, 5000])).await.unwrap();
    assert_eq!(g[0], Outcome::Ok(Some("req-7".to_owned())));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    for (id, deadline, token) in seen.iter() {
        assert_eq!(id.as_deref(), Some("req-7"));
        assert_eq!(*deadline, Some(start + Duration::from_secs(2)));
        assert!(
            token.is_cancelled(),
            "the group's token is cancelled at its end"
        );
    }
    assert!(!caller_token.is_cancelled(), "the caller's token is not");
}

#[tokio::test(start_paused = true)]
async fn without_a_caller_context_or_timeout_calls_run_bare() {
    let svc = service_fn(|()| async { Ok::<_, MockError>(Context::current().is_some()) });
    let g = gather(svc, [()]).await;
    assert_eq!(g[0], Outcome::Ok(false));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_group_drops_every_call_in_flight() {
    let svc = mock();
    let fut = gather(svc.clone(), (0..5).map(|i| ok(i, 10_000)));
    let res = tokio::time::timeout(Duration::from_millis(10), fut).await;
    assert!(res.is_err());
    assert_eq!(svc.calls(), 5);
    assert_eq!(svc.dropped(), 5);
    assert_eq!(svc.inflight(), 0);
}

#[tokio::test(start_paused = true)]
async fn cancelling_at_every_poll_never_leaks_a_call() {
    let svc = MockService::<u32, u32>::new(|n| MockReply::ok(n).after_yield().after_yield());
    let fan = FanOutLayer::new().concurrency(nz(2));
    let drops = cancel_at_every_poll(
        || fan.layer(svc.clone()).oneshot(vec![1, 2, 3, 4, 5]),
        || match svc.inflight() {
            0 => Ok(()),
            n => Err(format!("{n} calls still in flight")),
        },
    )
    .await
    .unwrap();
    assert!(drops >= 3);
}

#[tokio::test(start_paused = true)]
async fn a_poll_ready_error_fails_the_waiting_request_and_the_rest_are_never_sent() {
    let svc = mock();
    let gate = Gate::new();
    svc.set_ready(ReadyMode::Gated(gate.clone()));
    gate.open();
    let fan = FanOutLayer::new().concurrency(nz(1)).layer(svc.clone());
    let task = tokio::spawn(fan.oneshot(vec![ok(0, 100), ok(1, 100), ok(2, 100)]));
    advance(Duration::from_millis(50)).await;
    svc.set_ready(ReadyMode::Fail(MockError::new("broken")));
    let g = task.await.unwrap().unwrap();
    assert_eq!(g[0], Outcome::Ok(0), "the call in flight finishes");
    assert_eq!(g[1].clone().err().unwrap().message(), "broken");
    let n = g[2].not_done().unwrap();
    assert_eq!((n.reason(), n.was_sent()), (Reason::NotReady, false));
    assert_eq!(n.kind(), ErrorKind::Closed);
    assert_eq!(svc.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_fanout_service_gather_returns_outcomes_even_when_the_group_fails() {
    let mut fan = FanOutLayer::new().fail_fast().layer(mock());
    let g = fan.gather([fail(0, 1), ok(1, 100)]).await;
    assert_eq!((g.failed(), g.not_done()), (1, 1));
    assert_eq!(fan.layer().get_mode(), Mode::FailFast);
}

#[test]
#[should_panic(expected = "FanOutFuture polled after it completed")]
fn polling_a_finished_group_again_panics() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let svc = service_fn(|()| async { Ok::<_, MockError>(()) });
        let mut fut = std::pin::pin!(FanOutLayer::new().layer(svc).call(vec![()]));
        let _ = (&mut fut).await;
        std::future::poll_fn(|cx| std::future::Future::poll(fut.as_mut(), cx).map(|_| ())).await;
    });
}

#[test]
fn fan_out_errors_display_their_counts() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let err = rt
        .block_on(
            FanOutLayer::new()
                .fail_fast()
                .layer(mock())
                .oneshot(vec![fail(0, 1), ok(1, 5)]),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "fan-out failed, its goal became unreachable: 0 succeeded, 1 failed, 1 not done"
    );
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(err);
    assert!(boxed.to_string().starts_with("fan-out failed"));
}

#[cfg(feature = "serde")]
#[test]
fn the_config_deserializes_with_defaults_and_refuses_unknown_fields() {
    use rampart_fanout::FanOutConfig;

    let cfg: FanOutConfig =
        serde_json::from_str(r#"{"concurrency": 16, "timeout_ms": 2000}"#).unwrap();
    assert_eq!(cfg.concurrency, Some(nz(16)));
    let layer = FanOutLayer::from_config(&cfg);
    assert_eq!(layer.get_timeout(), Some(Duration::from_secs(2)));
    assert_eq!(layer.get_mode(), Mode::All);

    let cfg: FanOutConfig = serde_json::from_str(r#"{"mode": "first_ok"}"#).unwrap();
    assert_eq!(
        cfg,
        FanOutConfig {
            mode: Mode::FirstOk,
            ..FanOutConfig::default()
        }
    );
    let cfg: FanOutConfig = serde_json::from_str(r#"{"mode": {"quorum": 2}}"#).unwrap();
    assert_eq!(cfg.mode, Mode::Quorum(nz(2)));

    let zero = serde_json::from_str::<FanOutConfig>(r#"{"concurrency": 0}"#);
    assert!(zero.is_err(), "zero concurrency");
    let zero = serde_json::from_str::<FanOutConfig>(r#"{"mode": {"quorum": 0}}"#);
    assert!(zero.is_err(), "zero quorum");
    let unknown = serde_json::from_str::<FanOutConfig>(r#"{"limit": 3}"#);
    assert!(unknown.is_err(), "unknown field");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the delays, failures, bound and mode-all timeout: outcome i
    /// belongs to request i, the counts add up, the bound holds and nothing
    /// is left running.
    #[test]
    fn outcomes_match_their_requests_and_counts_add_up(
        jobs in proptest::collection::vec((0u64..50, any::<bool>()), 0..40),
        bound in 1usize..8,
        timeout_ms in proptest::option::of(0u64..120),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let jobs: Vec<Job> = jobs
            .iter()
            .enumerate()
            .map(|(i, &(ms, good))| Job { id: i as u32, ms, ok: good })
            .collect();
        let svc = mock();
        let mut layer = FanOutLayer::new().concurrency(nz(bound));
        if let Some(t) = timeout_ms {
            layer = layer.timeout(Duration::from_millis(t));
        }
        let mut fan = layer.layer(svc.clone());
        let g = rt.block_on(fan.gather(jobs.clone()));
        prop_assert_eq!(g.len(), jobs.len());
        prop_assert_eq!(g.succeeded() + g.failed() + g.not_done(), jobs.len());
        for (i, (o, j)) in g.iter().zip(&jobs).enumerate() {
            match o {
                Outcome::Ok(id) => prop_assert!(j.ok && *id == j.id),
                Outcome::Err(e) => {
                    prop_assert!(!j.ok);
                    prop_assert_eq!(e.message(), format!("job {i} failed"));
                }
                Outcome::NotDone(n) => {
                    prop_assert_eq!(n.reason(), Reason::Timeout);
                    prop_assert!(timeout_ms.is_some());
                }
            }
        }
        if timeout_ms.is_none() {
            prop_assert_eq!(g.not_done(), 0);
        }
        prop_assert!(svc.peak_inflight() <= bound);
        prop_assert_eq!(svc.inflight(), 0);
        prop_assert_eq!(svc.calls(), g.completed() + g.iter().filter(|o| o.not_done().is_some_and(|n| n.was_sent())).count());
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_that_panics_fails_alone_and_the_others_finish() {
    let svc = MockService::<u32, u32>::new(|n| {
        if n == 1 {
            MockReply::panic("boom").after(Duration::from_millis(5))
        } else {
            MockReply::ok(n).after(Duration::from_millis(10))
        }
    });
    let g = gather(svc.clone(), [0, 1, 2]).await;
    assert_eq!(g[0], Outcome::Ok(0));
    assert_eq!(g[2], Outcome::Ok(2));
    let n = g[1].not_done().unwrap();
    assert_eq!((n.reason(), n.was_sent()), (Reason::Panicked, true));
    assert_eq!(n.kind(), ErrorKind::Inner);
    assert_eq!(svc.inflight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_service_that_panics_in_call_fails_that_request_and_sends_no_more() {
    let calls = Arc::new(Mutex::new(0));
    let seen = calls.clone();
    let svc = service_fn(move |n: u32| {
        *seen.lock().unwrap() += 1;
        assert!(n != 1, "call panics on 1");
        async move { Ok::<_, MockError>(n) }
    });
    let fan = FanOutLayer::new().quorum(nz(2)).layer(svc);
    let err = fan.oneshot(vec![0, 1, 2]).await.unwrap_err();
    assert_eq!(
        err.failure(),
        Failure::Unreachable,
        "2 of 3 are now impossible"
    );
    let g = err.gathered();
    assert_eq!(g[0], Outcome::Ok(0));
    assert_eq!(g[1].not_done().unwrap().reason(), Reason::Panicked);
    let never = g[2].not_done().unwrap();
    assert_eq!(
        (never.reason(), never.was_sent()),
        (Reason::NotReady, false)
    );
    assert_eq!(*calls.lock().unwrap(), 2);
}

/// Records the request id current when it is dropped.
struct DropProbe(Arc<Mutex<Vec<Option<String>>>>);

impl Drop for DropProbe {
    fn drop(&mut self) {
        let id = Context::current().and_then(|c| c.request_id().map(ToString::to_string));
        self.0.lock().unwrap().push(id);
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_the_group_drops_its_calls_in_its_context_and_cancels_its_token() {
    let drops = Arc::new(Mutex::new(Vec::new()));
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let (d, t) = (drops.clone(), tokens.clone());
    let svc = service_fn(move |()| {
        let probe = DropProbe(d.clone());
        t.lock()
            .unwrap()
            .push(Context::current().unwrap().cancellation().unwrap().clone());
        async move {
            let _probe = probe;
            std::future::pending::<Result<(), MockError>>().await
        }
    });
    let ctx = Context::new().with_request_id(RequestId::parse(b"req-9").unwrap());
    // Made in the caller's context, then polled and dropped outside it.
    let mut fut = Box::pin(ctx.sync_scope(|| gather(svc, [(), ()])));
    let res = tokio::time::timeout(Duration::from_millis(10), &mut fut).await;
    assert!(res.is_err(), "the group never finishes");
    assert_eq!(tokens.lock().unwrap().len(), 2);
    assert!(drops.lock().unwrap().is_empty());
    drop(fut);
    assert_eq!(
        *drops.lock().unwrap(),
        [Some("req-9".to_owned()), Some("req-9".to_owned())]
    );
    assert!(
        tokens
            .lock()
            .unwrap()
            .iter()
            .all(CancellationToken::is_cancelled)
    );
}

#[tokio::test(start_paused = true)]
async fn a_group_created_outside_the_scope_adopts_the_context_it_is_polled_in() {
    let svc = service_fn(|()| async {
        Ok::<_, MockError>(Context::current().and_then(|c| c.request_id().map(ToString::to_string)))
    });
    let fut = gather(svc, [()]);
    let g = Context::new()
        .with_request_id(RequestId::parse(b"late").unwrap())
        .scope(fut)
        .await;
    assert_eq!(g[0], Outcome::Ok(Some("late".to_owned())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_thread_runtime_gathers_calls_answered_by_other_tasks() {
    let svc = service_fn(|n: u64| async move {
        tokio::spawn(async move { n * 2 })
            .await
            .map_err(|e| MockError::new(e.to_string()))
    });
    let fan = FanOutLayer::new().concurrency(nz(16)).layer(svc);
    let g = tokio::time::timeout(
        Duration::from_secs(10),
        fan.oneshot((0..500).collect::<Vec<u64>>()),
    )
    .await
    .expect("done within 10 s")
    .unwrap();
    let got: Vec<u64> = g.into_iter().filter_map(Outcome::ok).collect();
    assert_eq!(got, (0..500).map(|n| n * 2).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn an_already_cancelled_caller_sends_nothing() {
    let svc = mock();
    let token = CancellationToken::new();
    token.cancel();
    let fan = FanOutLayer::new().layer(svc.clone());
    let err = Context::new()
        .with_cancellation(token)
        .scope(async { fan.oneshot(vec![ok(0, 1), ok(1, 1)]).await })
        .await
        .unwrap_err();
    assert_eq!(err.failure(), Failure::Cancelled);
    assert_eq!(err.gathered().not_done(), 2);
    assert_eq!(svc.calls(), 0);
}

#[test]
fn the_layer_defaults_are_mode_all_unbounded_without_timeout() {
    let layer = FanOutLayer::new();
    assert_eq!(layer.get_mode(), Mode::All);
    assert_eq!(layer.get_concurrency(), None);
    assert_eq!(layer.get_timeout(), None);
    let layer = layer
        .quorum(nz(2))
        .concurrency(nz(4))
        .timeout(Duration::from_millis(5));
    assert_eq!(layer.get_mode(), Mode::Quorum(nz(2)));
    assert_eq!(layer.get_concurrency(), Some(nz(4)));
    assert_eq!(layer.get_timeout(), Some(Duration::from_millis(5)));
    assert_eq!(
        FanOutLayer::from_config(&rampart_fanout::FanOutConfig::default()),
        FanOutLayer::new()
    );
}
