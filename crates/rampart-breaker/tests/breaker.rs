//! Behaviour of `CircuitBreakerLayer` through its public API, on tokio's
//! paused clock.

use http::{Request, Response};
use rampart_breaker::{
    CircuitBreakerLayer, CircuitOpen, State, TripModel, Window, breaker_classify,
};
use rampart_core::{Error, ErrorKind};
use rampart_testkit::{Gate, MockReply, MockService, ReadyMode};
use std::time::Duration;
use tokio::time;
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

/// What the mock backend does with a call.
#[derive(Clone, Debug)]
enum Do {
    Ok,
    Fail,
    Hang,
    Wait(Gate),
    Slow(Duration),
}

type Mock = MockService<Do, &'static str>;

fn backend() -> Mock {
    MockService::new(|d: Do| match d {
        Do::Ok => MockReply::ok("ok"),
        Do::Fail => MockReply::err("backend down"),
        Do::Hang => MockReply::pending(),
        Do::Wait(g) => MockReply::ok("ok").after_gate(&g),
        Do::Slow(d) => MockReply::ok("ok").after(d),
    })
}

async fn send<S>(svc: &S, d: Do) -> Result<&'static str, Error>
where
    S: Service<Do, Response = &'static str, Error = Error> + Clone,
{
    svc.clone().oneshot(d).await
}

async fn run<S>(svc: &S, calls: &[Do])
where
    S: Service<Do, Response = &'static str, Error = Error> + Clone,
{
    for d in calls {
        let _ = send(svc, d.clone()).await;
    }
}

fn ratio(ratio: f64, window: usize, min_calls: usize) -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .failure_ratio(ratio)
        .window(Window::Calls(window))
        .min_calls(min_calls)
        .break_duration(Duration::from_secs(5))
        .probes(1)
        .build()
        .expect("valid config")
}

fn consecutive(n: usize, probes: usize) -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .consecutive_failures(n)
        .break_duration(Duration::from_secs(5))
        .probes(probes)
        .probe_timeout(Duration::from_secs(2))
        .build()
        .expect("valid config")
}

fn n(d: Do, times: usize) -> Vec<Do> {
    vec![d; times]
}

#[tokio::test(start_paused = true)]
async fn ratio_trips_exactly_when_failures_reach_the_ratio_of_min_calls() {
    let layer = ratio(0.5, 10, 10);
    let h = layer.handle();
    let svc = layer.layer(backend());
    run(&svc, &n(Do::Ok, 5)).await;
    run(&svc, &n(Do::Fail, 4)).await;
    assert_eq!(h.state(), State::Closed, "9 calls: below the minimum");
    run(&svc, &[Do::Fail]).await;
    assert_eq!(h.state(), State::Open, "10 calls, 5 failures = 50 %");
}

#[tokio::test(start_paused = true)]
async fn ratio_below_the_threshold_never_trips() {
    let layer = ratio(0.5, 10, 10);
    let h = layer.handle();
    let svc = layer.layer(backend());
    for _ in 0..20 {
        run(&svc, &[Do::Ok, Do::Ok, Do::Fail, Do::Ok, Do::Fail]).await; // 40 %
    }
    assert_eq!(h.state(), State::Closed);
    assert_eq!(h.stats().calls_in_window, 10);
}

#[tokio::test(start_paused = true)]
async fn minimum_number_of_calls_is_respected() {
    let layer = ratio(0.5, 100, 20);
    let h = layer.handle();
    let svc = layer.layer(backend());
    run(&svc, &n(Do::Fail, 19)).await;
    assert_eq!(
        h.state(),
        State::Closed,
        "19 failures are below min_calls 20"
    );
    assert_eq!(h.stats().failures_in_window, 19);
    run(&svc, &[Do::Fail]).await;
    assert_eq!(h.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_success_that_completes_the_minimum_can_trip() {
    // As resilience4j: the rate is judged after every call.
    let layer = ratio(0.5, 10, 10);
    let h = layer.handle();
    let svc = layer.layer(backend());
    run(&svc, &n(Do::Fail, 5)).await;
    run(&svc, &n(Do::Ok, 4)).await;
    assert_eq!(h.state(), State::Closed);
    run(&svc, &[Do::Ok]).await;
    assert_eq!(h.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trip_at_n_and_a_success_resets_the_count() {
    let layer = consecutive(3, 1);
    let h = layer.handle();
    let svc = layer.layer(backend());
    run(&svc, &[Do::Fail, Do::Fail, Do::Ok, Do::Fail, Do::Fail]).await;
    assert_eq!(h.state(), State::Closed);
    assert_eq!(h.stats().failures_in_window, 2);
    run(&svc, &[Do::Fail]).await;
    assert_eq!(h.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_calls_older_than_the_window() {
    let layer = CircuitBreakerLayer::builder()
        .trip_model(TripModel::FailureRatio {
            ratio: 0.5,
            window: Window::Time(Duration::from_secs(1)),
            min_calls: 4,
        })
        .build()
        .unwrap();
    let h = layer.handle();
    let svc = layer.layer(backend());
    run(&svc, &n(Do::Fail, 3)).await;
    time::advance(Duration::from_millis(1_100)).await;
    // The three failures have left the window.
    run(&svc, &[Do::Ok, Do::Ok, Do::Fail]).await;
    assert_eq!(h.state(), State::Closed);
    assert_eq!(h.stats().calls_in_window, 3);
    time::advance(Duration::from_millis(500)).await;
    run(&svc, &[Do::Fail]).await;
    assert_eq!(
        h.state(),
        State::Open,
        "4 calls in the last second, 2 failed"
    );
}

#[tokio::test(start_paused = true)]
async fn open_circuit_refuses_at_once_with_overloaded_and_the_time_to_the_next_probe() {
    let layer = consecutive(2, 1);
    let mock = backend();
    let svc = layer.layer(mock.clone());
    run(&svc, &n(Do::Fail, 2)).await;
    assert_eq!(mock.calls(), 2);
    time::advance(Duration::from_secs(2)).await;
    let e = send(&svc, Do::Ok).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overloaded);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
    let open = e.find_source::<CircuitOpen>().expect("CircuitOpen source");
    assert_eq!(open.state(), State::Open);
    assert_eq!(open.retry_after(), Some(Duration::from_secs(3)));
    assert_eq!(
        mock.calls(),
        2,
        "the refused call never reached the backend"
    );
    assert_eq!(layer.stats().rejected, 1);
    assert_eq!(layer.stats().retry_after, Some(Duration::from_secs(3)));
}

#[tokio::test(start_paused = true)]
async fn after_the_break_a_successful_probe_closes_the_circuit() {
    let layer = consecutive(1, 1);
    let h = layer.handle();
    let svc = layer.layer(backend());
    run(&svc, &[Do::Fail]).await;
    time::advance(Duration::from_millis(4_999)).await;
    assert!(send(&svc, Do::Ok).await.is_err(), "still open 1 ms early");
    time::advance(Duration::from_millis(1)).await;
    assert_eq!(h.state(), State::HalfOpen);
    assert_eq!(send(&svc, Do::Ok).await.unwrap(), "ok");
    assert_eq!(h.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_with_a_grown_break_and_a_close_resets_it() {
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .break_duration(Duration::from_secs(1))
        .break_backoff(2.0, Duration::from_secs(3))
        .probes(1)
        .build()
        .unwrap();
    let h = layer.handle();
    let svc = layer.layer(backend());
    run(&svc, &[Do::Fail]).await;
    let mut breaks = Vec::new();
    for _ in 0..3 {
        breaks.push(h.stats().retry_after.unwrap().as_secs());
        time::advance(h.stats().retry_after.unwrap()).await;
        run(&svc, &[Do::Fail]).await; // the probe fails
        assert_eq!(h.state(), State::Open);
    }
    breaks.push(h.stats().retry_after.unwrap().as_secs());
    assert_eq!(breaks, [1, 2, 3, 3]);
    time::advance(Duration::from_secs(3)).await;
    run(&svc, &[Do::Ok]).await;
    assert_eq!(h.state(), State::Closed);
    run(&svc, &[Do::Fail]).await;
    assert_eq!(h.stats().retry_after, Some(Duration::from_secs(1)));
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_at_most_n_probes_among_100_concurrent_callers() {
    let layer = consecutive(1, 3);
    let h = layer.handle();
    let mock = backend();
    let svc = layer.layer(mock.clone());
    run(&svc, &[Do::Fail]).await;
    time::advance(Duration::from_secs(5)).await;
    let gate = Gate::new();
    let calls: Vec<_> = (0..100)
        .map(|_| tokio::spawn(send_owned(svc.clone(), Do::Wait(gate.clone()))))
        .collect();
    for _ in 0..1_000 {
        if mock.inflight() == 3 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(mock.inflight(), 3, "the probes reached the backend");
    assert_eq!(h.stats().probes_in_flight, 3);
    gate.open();
    let mut ok = 0;
    let mut refused = 0;
    for c in calls {
        match c.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) if e.kind() == ErrorKind::Overloaded => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((ok, refused), (3, 97));
    assert_eq!(mock.peak_inflight(), 3);
    assert_eq!(h.state(), State::Closed, "3 successful probes close it");
}

async fn send_owned<S>(svc: S, d: Do) -> Result<&'static str, Error>
where
    S: Service<Do, Response = &'static str, Error = Error>,
{
    svc.oneshot(d).await
}

#[tokio::test(start_paused = true)]
async fn a_stuck_probe_times_out_and_the_circuit_probes_again() {
    let layer = consecutive(1, 1); // probe timeout 2 s
    let h = layer.handle();
    let mock = backend();
    let svc = layer.layer(mock.clone());
    run(&svc, &[Do::Fail]).await;
    time::advance(Duration::from_secs(5)).await;
    let stuck = tokio::spawn(send_owned(svc.clone(), Do::Hang));
    tokio::task::yield_now().await;
    assert_eq!(mock.inflight(), 1);
    let e = send(&svc, Do::Ok).await.unwrap_err();
    assert_eq!(
        e.find_source::<CircuitOpen>().unwrap().state(),
        State::HalfOpen
    );
    time::advance(Duration::from_secs(2)).await;
    // The probe is past its timeout: it counts as failed, the circuit
    // reopens for another break.
    let e = send(&svc, Do::Ok).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overloaded);
    assert_eq!(h.state(), State::Open);
    time::advance(Duration::from_secs(5)).await;
    assert_eq!(send(&svc, Do::Ok).await.unwrap(), "ok");
    assert_eq!(h.state(), State::Closed);
    stuck.abort();
}

#[tokio::test(start_paused = true)]
async fn a_probe_let_in_after_a_dropped_one_gets_its_whole_probe_timeout() {
    let layer = consecutive(1, 1); // probe timeout 2 s
    let h = layer.handle();
    let mock = backend();
    let svc = layer.layer(mock.clone());
    run(&svc, &[Do::Fail]).await;
    time::advance(Duration::from_secs(5)).await;
    // A first probe is dropped unfinished: its slot comes back.
    let first = tokio::spawn(send_owned(svc.clone(), Do::Hang));
    tokio::task::yield_now().await;
    assert_eq!(mock.inflight(), 1);
    first.abort();
    let _ = first.await;
    time::advance(Duration::from_millis(1_900)).await;
    // A second probe 1.9 s later.
    let second = tokio::spawn(send_owned(svc.clone(), Do::Hang));
    tokio::task::yield_now().await;
    assert_eq!(h.stats().probes_in_flight, 1);
    time::advance(Duration::from_millis(500)).await;
    // 2.4 s after the first probe, 0.5 s after the second: the second is
    // still within its time, so a caller is refused and the circuit stays
    // half-open.
    let e = send(&svc, Do::Ok).await.unwrap_err();
    assert_eq!(
        e.find_source::<CircuitOpen>().unwrap().state(),
        State::HalfOpen
    );
    assert_eq!(h.state(), State::HalfOpen);
    // Once its own 2 s are over, it counts as failed.
    time::advance(Duration::from_millis(1_500)).await;
    assert!(send(&svc, Do::Ok).await.is_err());
    assert_eq!(h.state(), State::Open);
    second.abort();
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_gives_its_slot_back() {
    let layer = consecutive(1, 1);
    let h = layer.handle();
    let svc = layer.layer(backend());
    run(&svc, &[Do::Fail]).await;
    time::advance(Duration::from_secs(5)).await;
    let mut probe = svc.clone();
    let fut = probe.ready().await.unwrap().call(Do::Hang);
    assert!(send(&svc, Do::Ok).await.is_err(), "the only slot is taken");
    drop(fut);
    assert_eq!(h.stats().probes_in_flight, 0);
    assert_eq!(send(&svc, Do::Ok).await.unwrap(), "ok");
    assert_eq!(h.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_late_answer_from_before_the_trip_changes_nothing() {
    let layer = consecutive(2, 1);
    let h = layer.handle();
    let svc = layer.layer(backend());
    let gate = Gate::new();
    let late = tokio::spawn(send_owned(svc.clone(), Do::Wait(gate.clone())));
    tokio::task::yield_now().await;
    run(&svc, &n(Do::Fail, 2)).await;
    assert_eq!(h.state(), State::Open);
    let before = h.stats();
    gate.open();
    assert!(late.await.unwrap().is_ok());
    assert_eq!(h.stats(), before);
}

#[tokio::test(start_paused = true)]
async fn one_circuit_is_shared_by_1000_clones_and_every_service_of_the_layer() {
    let layer = ratio(0.5, 100, 100);
    let h = layer.handle();
    let a = layer.layer(backend());
    let b = layer.clone().layer(backend());
    for i in 0..1_000 {
        let svc = if i % 2 == 0 { a.clone() } else { b.clone() };
        let d = if i < 50 { Do::Fail } else { Do::Ok };
        let _ = svc.oneshot(d).await;
        if i == 98 {
            assert_eq!(h.state(), State::Closed);
        }
        if i == 99 {
            assert_eq!(
                h.state(),
                State::Open,
                "100 calls from 100 clones, 50 failed"
            );
        }
    }
    assert_eq!(h.stats().rejected, 900);
}

#[tokio::test(start_paused = true)]
async fn http_503_is_a_failure_and_404_is_not() {
    let layer = CircuitBreakerLayer::http_builder()
        .consecutive_failures(2)
        .build()
        .unwrap();
    let h = layer.handle();
    let svc = layer.layer(service_fn(|req: Request<u16>| async move {
        Ok::<_, BoxError>(Response::builder().status(*req.body()).body(()).unwrap())
    }));
    let call = |status: u16| {
        let req = Request::post("/").body(status).unwrap();
        svc.clone().oneshot(req)
    };
    for _ in 0..10 {
        assert_eq!(call(404).await.unwrap().status(), 404);
    }
    call(503).await.unwrap();
    assert_eq!(h.state(), State::Closed);
    call(503).await.unwrap();
    assert_eq!(h.state(), State::Open, "a POST's 503s count too");
    let e = call(200).await.unwrap_err();
    assert!(e.retry_after().is_some());
}

#[tokio::test(start_paused = true)]
async fn grpc_unavailable_is_a_failure_and_not_found_is_not() {
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .classify(breaker_classify())
        .build()
        .unwrap();
    let h = layer.handle();
    let svc = layer.layer(service_fn(|req: Request<u16>| async move {
        Ok::<_, BoxError>(
            Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", req.body().to_string())
                .body(())
                .unwrap(),
        )
    }));
    let call = |code: u16| {
        let req = Request::post("/svc/Method")
            .header("content-type", "application/grpc")
            .body(code)
            .unwrap();
        svc.clone().oneshot(req)
    };
    call(5).await.unwrap(); // NOT_FOUND
    assert_eq!(h.state(), State::Closed);
    call(14).await.unwrap(); // UNAVAILABLE
    assert_eq!(h.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_grpc_connection_reset_of_a_non_idempotent_method_is_a_failure() {
    // The retry classifier will not repeat a maybe-sent CreateOrder; the
    // breaker must still count the reset as the backend failing.
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .classify(breaker_classify())
        .build()
        .unwrap();
    let h = layer.handle();
    let svc = layer.layer(service_fn(|_: Request<()>| async {
        Err::<Response<()>, BoxError>(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )))
    }));
    let req = Request::post("/shop.Orders/CreateOrder")
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let _ = svc.clone().oneshot(req).await;
    assert_eq!(h.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn the_callers_own_cancellation_is_not_counted() {
    let layer = consecutive(1, 1);
    let h = layer.handle();
    let svc = layer.layer(service_fn(|cancel: bool| async move {
        if cancel {
            Err::<(), _>(Error::cancelled())
        } else {
            Err(Error::timeout())
        }
    }));
    for _ in 0..5 {
        let e = svc.clone().oneshot(true).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Cancelled, "passed through unchanged");
    }
    assert_eq!(h.state(), State::Closed);
    let _ = svc.clone().oneshot(false).await;
    assert_eq!(h.state(), State::Open, "a timeout is a failure");
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip_the_circuit_and_a_slow_probe_fails() {
    let layer = CircuitBreakerLayer::builder()
        .failure_ratio(1.0)
        .window(Window::Calls(4))
        .min_calls(4)
        .slow_calls(Duration::from_millis(100), 0.5)
        .probes(1)
        .build()
        .unwrap();
    let h = layer.handle();
    let svc = layer.layer(backend());
    let slow = Do::Slow(Duration::from_millis(150));
    run(&svc, &[Do::Ok, Do::Ok, slow.clone()]).await;
    assert_eq!(h.state(), State::Closed);
    run(&svc, std::slice::from_ref(&slow)).await;
    assert_eq!(h.state(), State::Open, "2 of 4 calls slow");
    time::advance(Duration::from_secs(5)).await;
    assert_eq!(send(&svc, slow).await.unwrap(), "ok");
    assert_eq!(h.state(), State::Open, "a slow probe fails");
}

#[tokio::test(start_paused = true)]
async fn handle_forces_open_and_closed_and_resets() {
    let layer = consecutive(1, 1);
    let h = layer.handle();
    let mock = backend();
    let svc = layer.layer(mock.clone());
    h.force_open();
    assert_eq!(h.state(), State::ForcedOpen);
    time::advance(Duration::from_secs(3_600)).await;
    let e = send(&svc, Do::Ok).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overloaded);
    assert_eq!(e.retry_after(), None);
    assert_eq!(mock.calls(), 0);
    h.force_closed();
    run(&svc, &n(Do::Fail, 10)).await;
    assert_eq!(h.state(), State::ForcedClosed, "failures are not counted");
    h.reset();
    assert_eq!(h.state(), State::Closed);
    run(&svc, &[Do::Fail]).await;
    assert_eq!(h.state(), State::Open);
    h.reset();
    assert_eq!(send(&svc, Do::Ok).await.unwrap(), "ok");
}

#[tokio::test(start_paused = true)]
async fn the_refusal_maps_to_503_with_retry_after() {
    let layer = consecutive(1, 1);
    let svc = tower::ServiceBuilder::new()
        .layer(rampart_core::HandleErrorsLayer::new())
        .layer(layer)
        .service(service_fn(|_req: Request<()>| async {
            Err::<Response<String>, _>(std::io::Error::other("refused"))
        }));
    let _ = svc.clone().oneshot(Request::new(())).await;
    let res = svc.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "5");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_probe_gives_its_slot_back() {
    let layer = consecutive(1, 1);
    let h = layer.handle();
    let svc = layer.layer(MockService::new(|panic: bool| {
        if panic {
            MockReply::<()>::panic("boom")
        } else {
            MockReply::err("down")
        }
    }));
    let _ = svc.clone().oneshot(false).await;
    time::advance(Duration::from_secs(5)).await;
    let r = tokio::spawn(svc.clone().oneshot(true)).await;
    assert!(r.unwrap_err().is_panic());
    assert_eq!(h.stats().probes_in_flight, 0);
    assert_eq!(h.state(), State::HalfOpen);
}

#[test]
fn build_refuses_invalid_settings_naming_the_field() {
    let field = |r: Result<CircuitBreakerLayer, rampart_core::ConfigError>| {
        r.unwrap_err().field().to_owned()
    };
    let b = CircuitBreakerLayer::builder;
    assert_eq!(field(b().failure_ratio(1.5).build()), "failure_ratio");
    assert_eq!(field(b().failure_ratio(f64::NAN).build()), "failure_ratio");
    assert_eq!(field(b().window(Window::Calls(0)).build()), "window");
    assert_eq!(
        field(b().window(Window::Calls(10)).min_calls(11).build()),
        "min_calls"
    );
    assert_eq!(field(b().min_calls(0).build()), "min_calls");
    assert_eq!(
        field(b().window(Window::Time(Duration::from_millis(5))).build()),
        "window"
    );
    assert_eq!(
        field(b().consecutive_failures(0).build()),
        "consecutive_failures"
    );
    assert_eq!(field(b().probes(0).build()), "probes");
    assert_eq!(
        field(b().probe_timeout(Duration::ZERO).build()),
        "probe_timeout"
    );
    assert_eq!(
        field(b().break_duration(Duration::ZERO).build()),
        "break_duration"
    );
    assert_eq!(
        field(b().break_backoff(0.5, Duration::from_secs(60)).build()),
        "break_multiplier"
    );
    assert_eq!(
        field(b().slow_calls(Duration::ZERO, 0.5).build()),
        "slow_call_threshold"
    );
    let e = b().failure_ratio(2.0).build().unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid failure_ratio = 2.0: expected a ratio in 0.0..=1.0"
    );
}

#[test]
fn defaults_follow_resilience4j_and_polly() {
    let s = CircuitBreakerLayer::new().stats();
    assert_eq!(s.state, State::Closed);
    assert_eq!(
        TripModel::default(),
        TripModel::FailureRatio {
            ratio: 0.5,
            window: Window::Calls(100),
            min_calls: 100
        }
    );
    assert_eq!(rampart_breaker::DEFAULT_BREAK, Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_refuses_without_waiting_for_the_inner_readiness() {
    let layer = consecutive(1, 1);
    let mock = backend();
    let svc = layer.layer(mock.clone());
    run(&svc, &[Do::Fail]).await;
    // The backend's client is stuck (say, reconnecting): never ready.
    mock.set_ready(ReadyMode::Gated(Gate::new()));
    let e = time::timeout(Duration::from_secs(1), send(&svc, Do::Ok))
        .await
        .expect("refused at once, not stuck in poll_ready")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overloaded);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(5)));
    assert_eq!(layer.stats().rejected, 1);
}

/// A layer with `breaker_classify` that opens on the first failure and
/// counts every counted call in a 100-call window.
fn one_failure_opens() -> CircuitBreakerLayer<rampart_breaker::BreakerClassify> {
    CircuitBreakerLayer::http_builder()
        .failure_ratio(0.01)
        .window(Window::Calls(100))
        .min_calls(1)
        .break_duration(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Answers a gRPC call with the headers its body lists.
async fn grpc_answer(
    headers: &[(&'static str, &'static str)],
) -> (State, u64, Result<Response<()>, Error>) {
    let layer = one_failure_opens();
    let h = layer.handle();
    let svc = layer.layer(service_fn(
        |req: Request<Vec<(&'static str, &'static str)>>| async move {
            let mut b = Response::builder().header("content-type", "application/grpc");
            for (k, v) in req.body() {
                b = b.header(*k, *v);
            }
            Ok::<_, BoxError>(b.body(()).unwrap())
        },
    ));
    let req = Request::post("/shop.Orders/Create")
        .header("content-type", "application/grpc")
        .body(headers.to_vec())
        .unwrap();
    let out = svc.oneshot(req).await;
    (h.state(), h.stats().calls_in_window, out)
}

#[tokio::test(start_paused = true)]
async fn grpc_resource_exhausted_is_not_counted_even_with_pushback() {
    // How a rate limiter answers: the backend is healthy.
    for headers in [
        &[("grpc-status", "8"), ("grpc-retry-pushback-ms", "500")][..],
        &[("grpc-status", "8")][..],
    ] {
        let (state, counted, out) = grpc_answer(headers).await;
        out.unwrap();
        assert_eq!((state, counted), (State::Closed, 0), "{headers:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn grpc_failure_codes_open_the_circuit_whatever_the_pushback() {
    for code in ["14", "13", "2", "15", "4"] {
        for pushback in [None, Some("-1"), Some("garbage"), Some("500")] {
            let mut headers = vec![("grpc-status", code)];
            headers.extend(pushback.map(|p| ("grpc-retry-pushback-ms", p)));
            let (state, counted, _) = grpc_answer(&headers).await;
            assert_eq!((state, counted), (State::Open, 1), "{headers:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn grpc_ok_is_a_success_and_other_codes_are_not_counted() {
    let (state, counted, _) = grpc_answer(&[("grpc-status", "0")]).await;
    assert_eq!((state, counted), (State::Closed, 1));
    for code in ["1", "3", "5", "6", "7", "8", "9", "10", "11", "12", "16"] {
        let (state, counted, _) = grpc_answer(&[("grpc-status", code)]).await;
        assert_eq!((state, counted), (State::Closed, 0), "code {code}");
    }
}

#[tokio::test(start_paused = true)]
async fn http_429_is_not_counted_404_is_a_success_and_5xx_failures() {
    let answer = |status: u16| async move {
        let layer = one_failure_opens();
        let h = layer.handle();
        let svc = layer.layer(service_fn(|req: Request<u16>| async move {
            Ok::<_, BoxError>(Response::builder().status(*req.body()).body(()).unwrap())
        }));
        let _ = svc.oneshot(Request::post("/").body(status).unwrap()).await;
        (h.state(), h.stats().calls_in_window)
    };
    assert_eq!(answer(429).await, (State::Closed, 0));
    for ok in [200, 204, 301, 400, 404] {
        assert_eq!(answer(ok).await, (State::Closed, 1), "{ok}");
    }
    for failure in [500, 502, 503, 504] {
        assert_eq!(answer(failure).await, (State::Open, 1), "{failure}");
    }
}

/// Calls a breaker (opening on one failure) whose inner service fails with
/// `error`; gives the state and the counted calls after.
async fn after_inner_error(error: fn() -> BoxError) -> (State, u64) {
    let layer = one_failure_opens();
    let h = layer.handle();
    let svc = layer.layer(service_fn(move |_: Request<()>| async move {
        Err::<Response<()>, BoxError>(error())
    }));
    let req = Request::get("/").body(()).unwrap();
    assert!(svc.oneshot(req).await.is_err());
    (h.state(), h.stats().calls_in_window)
}

/// An error that says "because of" its source.
#[derive(Debug)]
struct Wrapped(Error);

impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("wrapped")
    }
}

impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[tokio::test(start_paused = true)]
async fn a_local_shed_inside_the_breaker_is_not_counted() {
    let sheds: [fn() -> BoxError; 4] = [
        || Error::rate_limited(Some(Duration::from_millis(100))).into(),
        || Error::overloaded(None).into(),
        // Deeper in the chain, under a wrapper.
        || Error::from_inner(Wrapped(Error::overloaded(None))).into(),
        || {
            Error::overloaded(None)
                .with_source(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
                .into()
        },
    ];
    for (i, shed) in sheds.into_iter().enumerate() {
        assert_eq!(
            after_inner_error(shed).await,
            (State::Closed, 0),
            "shed {i}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_is_a_failure() {
    let refused = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
    assert_eq!(after_inner_error(refused).await, (State::Open, 1));
    let refused =
        || Error::from_inner(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)).into();
    assert_eq!(after_inner_error(refused).await, (State::Open, 1));
}

#[tokio::test(start_paused = true)]
async fn an_open_inner_circuit_is_not_counted_by_the_outer_one() {
    let inner = one_failure_opens();
    inner.handle().force_open();
    let outer = one_failure_opens();
    let h = outer.handle();
    let svc = outer.layer(inner.layer(service_fn(|_: Request<()>| async {
        Ok::<_, BoxError>(Response::new(()))
    })));
    for _ in 0..3 {
        let e = svc
            .clone()
            .oneshot(Request::get("/").body(()).unwrap())
            .await
            .unwrap_err();
        assert!(e.find_source::<CircuitOpen>().is_some(), "{e}");
    }
    assert_eq!((h.state(), h.stats().calls_in_window), (State::Closed, 0));
}

#[tokio::test(start_paused = true)]
async fn a_local_shed_is_not_counted_with_any_classifier() {
    // The default (non-HTTP) classifier too.
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .build()
        .unwrap();
    let h = layer.handle();
    let svc = layer.layer(service_fn(|fail: bool| async move {
        if fail {
            Err::<(), BoxError>(Error::rate_limited(None).into())
        } else {
            Ok(())
        }
    }));
    for _ in 0..3 {
        let _ = svc.clone().oneshot(true).await;
    }
    assert_eq!(h.state(), State::Closed);
}
