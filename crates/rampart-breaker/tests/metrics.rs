//! What the circuit breakers record on the `metrics` facade, captured
//! exactly after scripted runs. (A capture's snapshot drains counters and
//! gauges as well as histograms — metrics-util's debugging recorder swaps
//! them to zero — so each test takes one snapshot, at the end, or adds up
//! the deltas of successive ones.)
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
    let svc = cap.install(|| layer.layer(backend()));

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
    let svc = cap.install(|| layer.layer(backend()));

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
    let (sa, sb) = (
        cap.install(|| a.layer(backend())),
        cap.install(|| b.layer(backend())),
    );

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
    let svc = cap.install(|| layer.layer(backend()));
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
    cap.install(|| unnamed.layer(backend()))
        .oneshot(false)
        .await
        .unwrap();
    cap.install(|| renamed.layer(backend()))
        .oneshot(false)
        .await
        .unwrap();
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
    let svc = cap.install(|| {
        layer.layer(service_fn(|(_, fail): (u32, bool)| async move {
            if fail {
                Err(std::io::Error::other("down"))
            } else {
                Ok(())
            }
        }))
    });

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
    // The template never made a service: nothing registered under its name.
    assert_eq!(calls(&s, "template", "failure"), None);
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
    let svc = cap.install(|| {
        layer.layer(service_fn(|k: u32| async move {
            if k == 0 {
                Err(std::io::Error::other("down"))
            } else {
                Ok(())
            }
        }))
    });
    assert!(svc.clone().oneshot(0).await.is_err()); // key 0 opens
    svc.clone().oneshot(1).await.unwrap();
    let s = cap.snapshot();
    assert_eq!(s.gauge("rampart.breaker.keys", "routes"), Some(2.0));
    assert_eq!(transitions(&s, "routes", "open"), Some(1));
    assert_eq!(s.gauge("rampart.breaker.state", "routes"), None);
    assert_eq!(layer.overflow_handle().name(), Some("routes"));
}

/// Gauges read over several snapshots: each snapshot drains the debugging
/// recorder (a gauge goes back to 0 and later moves are deltas), so the
/// value of a series is the sum of what every snapshot read of it.
struct Gauges<'a> {
    cap: &'a MetricsCapture,
    series: Vec<(&'static str, &'static str, f64)>,
}

impl<'a> Gauges<'a> {
    fn new(cap: &'a MetricsCapture, series: &[(&'static str, &'static str)]) -> Self {
        Gauges {
            cap,
            series: series.iter().map(|&(n, l)| (n, l, 0.0)).collect(),
        }
    }

    /// Takes a snapshot and returns the value of every series, in order.
    fn read(&mut self) -> Vec<f64> {
        let s = self.cap.snapshot();
        for (name, layer, total) in &mut self.series {
            *total += s.gauge(name, layer).unwrap_or(0.0);
        }
        self.series.iter().map(|s| s.2).collect()
    }
}

/// Trips `layer`'s circuit (consecutive failures of 1) through `svc`.
async fn trip<S>(svc: &S)
where
    S: Service<bool, Response = ()> + Clone,
    S::Error: std::fmt::Debug,
{
    assert!(svc.clone().oneshot(true).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_breaker_built_under_the_name_of_an_open_one_leaves_its_share_and_both_recover_to_zero() {
    // The review's case: "payments" opens, a second "payments" is built
    // (it used to set the series to 0), the first recovers (it used to
    // take 2 off that 0, reading -2 with both circuits closed).
    let cap = MetricsCapture::new();
    let mut g = Gauges::new(&cap, &[("rampart.breaker.state", "payments")]);
    let first = cap.install(|| breaker("payments", 1));
    let svc = cap.install(|| first.layer(backend()));
    trip(&svc).await;
    assert_eq!(first.handle().state(), State::Open);
    // (No snapshot before the second is built: a snapshot resets the
    // debugging recorder's gauges, which would hide a `set`.)
    let second = cap.install(|| breaker("payments", 1));
    assert_eq!(g.read(), [2.0], "the open circuit keeps its share");

    tokio::time::advance(Duration::from_secs(1)).await;
    svc.clone().oneshot(false).await.unwrap(); // the probe closes it
    assert_eq!(first.handle().state(), State::Closed);
    assert_eq!(second.handle().state(), State::Closed);
    assert_eq!(g.read(), [0.0]);
}

#[tokio::test(start_paused = true)]
async fn two_breakers_with_one_name_add_up_and_the_series_returns_to_zero_when_both_are_dropped() {
    let cap = MetricsCapture::new();
    let mut g = Gauges::new(&cap, &[("rampart.breaker.state", "shared")]);
    let (a, b) = cap.install(|| (breaker("shared", 1), breaker("shared", 1)));
    let (sa, sb) = (
        cap.install(|| a.layer(backend())),
        cap.install(|| b.layer(backend())),
    );
    trip(&sa).await;
    assert_eq!(g.read(), [2.0]);
    b.handle().force_open();
    assert_eq!(g.read(), [4.0], "open (2) + forced open (2)");
    tokio::time::advance(Duration::from_secs(1)).await;
    // The next call moves the first circuit to half-open and fails the
    // probe: open again.
    trip(&sa).await;
    assert_eq!(a.handle().state(), State::Open);
    assert_eq!(g.read(), [4.0]);

    // Dropping a circuit (its layer, services and handles) takes its
    // share off; the other keeps its own.
    drop((a, sa));
    assert_eq!(g.read(), [2.0]);
    drop((b, sb));
    assert_eq!(g.read(), [0.0]);
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_dropped_while_its_break_has_passed_takes_off_the_share_it_reported() {
    // The break has passed (state() reads half-open) but no call moved
    // the circuit: its share is still the open code it reported.
    let cap = MetricsCapture::new();
    let mut g = Gauges::new(&cap, &[("rampart.breaker.state", "idle")]);
    let layer = cap.install(|| breaker("idle", 1));
    let svc = cap.install(|| layer.layer(backend()));
    trip(&svc).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(layer.handle().state(), State::HalfOpen);
    assert_eq!(g.read(), [2.0]);
    drop((layer, svc));
    assert_eq!(g.read(), [0.0]);
}

#[tokio::test(start_paused = true)]
async fn naming_a_layer_moves_its_circuit_out_of_default_without_touching_the_other_unnamed_ones() {
    let cap = MetricsCapture::new();
    let mut g = Gauges::new(
        &cap,
        &[
            ("rampart.breaker.state", "default"),
            ("rampart.breaker.state", "named"),
        ],
    );
    let unnamed = cap.install(CircuitBreakerLayer::new);
    let unnamed_svc = cap.install(|| unnamed.layer(backend()));
    unnamed.handle().force_open();
    assert_eq!(g.read(), [2.0, 0.0]);

    // `new()` then `.name(..)`: nothing registers under "default"; the
    // service registers under the name.
    let renamed = cap.install(|| CircuitBreakerLayer::new().name("named"));
    let renamed_svc = cap.install(|| renamed.layer(backend()));
    assert_eq!(g.read(), [2.0, 0.0]);

    // A circuit renamed after it was forced open (and its service and
    // handle dropped): the rename gives it a fresh, closed circuit under
    // the new name, and the old circuit's share leaves "default" with it.
    let moving = cap.install(CircuitBreakerLayer::new);
    drop(cap.install(|| moving.layer(backend())));
    moving.handle().force_open();
    assert_eq!(g.read(), [4.0, 0.0]);
    let moving = cap.install(|| moving.name("named"));
    assert_eq!(g.read(), [2.0, 0.0]);
    let moving_svc = cap.install(|| moving.layer(backend()));
    moving.handle().force_open();
    renamed.handle().force_open();
    assert_eq!(g.read(), [2.0, 4.0]);
    drop((unnamed, renamed, moving));
    drop((unnamed_svc, renamed_svc, moving_svc));
    assert_eq!(g.read(), [0.0, 0.0]);
}

#[tokio::test(start_paused = true)]
async fn keyed_breakers_with_one_name_add_up_their_keys_and_give_them_back_when_dropped() {
    let cap = MetricsCapture::new();
    let mut g = Gauges::new(&cap, &[("rampart.breaker.keys", "hosts")]);
    let keyed = || {
        KeyedCircuitBreakerLayer::try_new(
            |k: &u32| *k,
            CircuitBreakerLayer::builder().name("hosts"),
            10,
        )
        .unwrap()
    };
    let first = cap.install(keyed);
    let svc1 =
        cap.install(|| first.layer(service_fn(|_: u32| async { Ok::<_, std::io::Error>(()) })));
    svc1.clone().oneshot(1).await.unwrap();
    svc1.clone().oneshot(2).await.unwrap();
    // A second map of the same name starts empty: it used to set the
    // series to 0. (No snapshot before: it would hide that.)
    let second = cap.install(keyed);
    assert_eq!(g.read(), [2.0]);
    let svc2 =
        cap.install(|| second.layer(service_fn(|_: u32| async { Ok::<_, std::io::Error>(()) })));
    svc2.clone().oneshot(1).await.unwrap();
    assert_eq!(g.read(), [3.0]);

    drop((first, svc1));
    assert_eq!(g.read(), [1.0]);
    drop((second, svc2));
    assert_eq!(g.read(), [0.0]);
}
