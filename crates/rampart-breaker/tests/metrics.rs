//! What the circuit breakers record on the `metrics` facade, captured
//! exactly after scripted runs. (A capture's snapshot drains counters and
//! gauges as well as histograms — metrics-util's debugging recorder swaps
//! them to zero — so each test takes one snapshot, at the end.)
#![cfg(feature = "metrics")]

use rampart_breaker::{CircuitBreakerLayer, KeyedCircuitBreakerLayer, State};
use rampart_core::ErrorKind;
use rampart_testkit::{MetricsCapture, MetricsSnapshot};
use std::time::Duration;
use tower::{Layer, Service, ServiceExt, service_fn};

/// A backend that fails when asked to.
fn backend() -> impl Service<bool, Response = (), Error = std::io::Error, Future: Send> + Clone {
    service_fn(|fail: bool| async move {
        if fail {
            Err(std::io::Error::other("down"))
        } else {
            Ok(())
        }
    })
}

fn breaker(name: &'static str, failures: usize) -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .name(name)
        .consecutive_failures(failures)
        .break_duration(Duration::from_secs(1))
        .probes(1)
        .build()
        .unwrap()
}

fn transitions(s: &MetricsSnapshot, layer: &str, to: &str) -> Option<u64> {
    s.counter_with(
        "rampart.breaker.transitions",
        &[("layer", layer), ("to", to)],
    )
}

fn calls(s: &MetricsSnapshot, layer: &str, outcome: &str) -> Option<u64> {
    s.counter_with(
        "rampart.breaker.calls",
        &[("layer", layer), ("outcome", outcome)],
    )
}

#[tokio::test(start_paused = true)]
async fn a_trip_two_refusals_and_a_recovery_are_counted_exactly_and_the_state_returns_to_closed() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| breaker("payments", 2));
    let svc = layer.layer(backend());

    svc.clone().oneshot(false).await.unwrap();
    for _ in 0..2 {
        assert!(svc.clone().oneshot(true).await.is_err());
    }
    assert_eq!(layer.handle().state(), State::Open);
    for _ in 0..2 {
        let e = svc.clone().oneshot(false).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Overloaded);
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    svc.clone().oneshot(false).await.unwrap(); // the probe closes it

    let s = cap.snapshot();
    assert_eq!(layer.handle().state(), State::Closed);
    assert_eq!(s.gauge("rampart.breaker.state", "payments"), Some(0.0));
    assert_eq!(transitions(&s, "payments", "open"), Some(1));
    assert_eq!(transitions(&s, "payments", "half_open"), Some(1));
    assert_eq!(transitions(&s, "payments", "closed"), Some(1));
    assert_eq!(s.counter("rampart.breaker.rejected", "payments"), Some(2));
    assert_eq!(calls(&s, "payments", "success"), Some(2));
    assert_eq!(calls(&s, "payments", "failure"), Some(2));
    // The counters agree with the circuit's own stats.
    assert_eq!(layer.stats().rejected, 2);
    assert_eq!(layer.stats().opened, 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_and_the_state_gauge_reads_open() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| breaker("search", 1));
    let svc = layer.layer(backend());

    assert!(svc.clone().oneshot(true).await.is_err()); // closed -> open
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(svc.clone().oneshot(true).await.is_err()); // probe fails: reopen
    let s = cap.snapshot();
    assert_eq!(s.gauge("rampart.breaker.state", "search"), Some(2.0));
    assert_eq!(transitions(&s, "search", "open"), Some(2));
    assert_eq!(transitions(&s, "search", "half_open"), Some(1));
    assert_eq!(transitions(&s, "search", "closed"), Some(0));
    assert_eq!(calls(&s, "search", "failure"), Some(2));
    assert_eq!(s.counter("rampart.breaker.rejected", "search"), Some(0));
}

#[tokio::test(start_paused = true)]
async fn two_named_breakers_record_separately() {
    let cap = MetricsCapture::new();
    let (a, b) = cap.install(|| (breaker("a", 1), breaker("b", 5)));
    let (sa, sb) = (a.layer(backend()), b.layer(backend()));

    assert!(sa.clone().oneshot(true).await.is_err()); // a opens
    assert!(sa.clone().oneshot(false).await.is_err()); // refused
    for _ in 0..3 {
        sb.clone().oneshot(false).await.unwrap();
    }
    assert!(sb.clone().oneshot(true).await.is_err()); // b stays closed

    let s = cap.snapshot();
    assert_eq!(s.gauge("rampart.breaker.state", "a"), Some(2.0));
    assert_eq!(s.gauge("rampart.breaker.state", "b"), Some(0.0));
    assert_eq!(s.counter("rampart.breaker.rejected", "a"), Some(1));
    assert_eq!(s.counter("rampart.breaker.rejected", "b"), Some(0));
    assert_eq!(transitions(&s, "a", "open"), Some(1));
    assert_eq!(transitions(&s, "b", "open"), Some(0));
    assert_eq!(calls(&s, "a", "failure"), Some(1));
    assert_eq!(calls(&s, "a", "success"), Some(0));
    assert_eq!(calls(&s, "b", "success"), Some(3));
    assert_eq!(calls(&s, "b", "failure"), Some(1));
}

#[tokio::test(start_paused = true)]
async fn forcing_and_resetting_move_the_state_gauge_and_count_transitions() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| breaker("forced", 3));
    let svc = layer.layer(backend());
    let h = layer.handle();

    h.force_open();
    assert!(svc.clone().oneshot(false).await.is_err());
    h.force_closed();
    svc.clone().oneshot(true).await.unwrap_err(); // goes through, not judged
    h.reset();
    let s = cap.snapshot();
    assert_eq!(s.gauge("rampart.breaker.state", "forced"), Some(0.0));
    assert_eq!(transitions(&s, "forced", "open"), Some(1));
    assert_eq!(s.counter("rampart.breaker.rejected", "forced"), Some(1));
    // forced open -> forced closed -> closed: both count as "closed".
    assert_eq!(transitions(&s, "forced", "closed"), Some(2));
    assert_eq!(calls(&s, "forced", "failure"), Some(0));
}

#[tokio::test(start_paused = true)]
async fn an_unnamed_breaker_reports_as_default_and_naming_the_layer_relabels_it() {
    let cap = MetricsCapture::new();
    let (unnamed, renamed) = cap.install(|| {
        (
            CircuitBreakerLayer::new(),
            CircuitBreakerLayer::new().name("renamed"),
        )
    });
    unnamed.layer(backend()).oneshot(false).await.unwrap();
    renamed.layer(backend()).oneshot(false).await.unwrap();
    let s = cap.snapshot();
    assert_eq!(calls(&s, "default", "success"), Some(1));
    assert_eq!(calls(&s, "renamed", "success"), Some(1));
    assert_eq!(s.gauge("rampart.breaker.state", "renamed"), Some(0.0));
    assert_eq!(renamed.handle().name(), Some("renamed"));
}

#[tokio::test(start_paused = true)]
async fn a_keyed_breaker_counts_keys_and_sums_its_circuits_under_one_name() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| {
        KeyedCircuitBreakerLayer::new(|k: &(u32, bool)| k.0, breaker("template", 1), 2)
            .name("per-host")
    });
    let svc = layer.layer(service_fn(|(_, fail): (u32, bool)| async move {
        if fail {
            Err(std::io::Error::other("down"))
        } else {
            Ok(())
        }
    }));

    svc.clone().oneshot((1, false)).await.unwrap();
    assert!(svc.clone().oneshot((2, true)).await.is_err()); // key 2 opens
    assert!(svc.clone().oneshot((2, false)).await.is_err()); // refused
    assert_eq!(layer.keys(), 2);
    // Key 3 finds the map full: key 1 (closed, idle) is evicted for it.
    svc.clone().oneshot((3, false)).await.unwrap();
    assert_eq!(layer.keys(), 2);

    let s = cap.snapshot();
    assert_eq!(s.gauge("rampart.breaker.keys", "per-host"), Some(2.0));
    assert_eq!(transitions(&s, "per-host", "open"), Some(1));
    assert_eq!(s.counter("rampart.breaker.rejected", "per-host"), Some(1));
    assert_eq!(calls(&s, "per-host", "success"), Some(2));
    assert_eq!(calls(&s, "per-host", "failure"), Some(1));
    // Several circuits under one name have no single state.
    assert_eq!(s.gauge("rampart.breaker.state", "per-host"), None);
    // The template's own circuit registered under its name and saw nothing.
    assert_eq!(calls(&s, "template", "failure"), Some(0));
}

#[tokio::test(start_paused = true)]
async fn a_keyed_breaker_built_from_a_builder_records_only_under_its_name() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| {
        KeyedCircuitBreakerLayer::try_new(
            |k: &u32| *k,
            CircuitBreakerLayer::builder()
                .name("routes")
                .consecutive_failures(1),
            10,
        )
        .unwrap()
    });
    let svc = layer.layer(service_fn(|k: u32| async move {
        if k == 0 {
            Err(std::io::Error::other("down"))
        } else {
            Ok(())
        }
    }));
    assert!(svc.clone().oneshot(0).await.is_err()); // key 0 opens
    svc.clone().oneshot(1).await.unwrap();
    let s = cap.snapshot();
    assert_eq!(s.gauge("rampart.breaker.keys", "routes"), Some(2.0));
    assert_eq!(transitions(&s, "routes", "open"), Some(1));
    assert_eq!(s.gauge("rampart.breaker.state", "routes"), None);
    assert_eq!(layer.overflow_handle().name(), Some("routes"));
}
