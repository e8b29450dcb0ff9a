//! What the keyed lock and the coalescer record on the `metrics` facade:
//! scripted runs under the paused clock, with exact counts, gauges back to
//! zero and exact wait times.
#![cfg(feature = "metrics")]
// Exact values are the point: the paused clock makes every one exact.
#![allow(clippy::float_cmp, clippy::many_single_char_names)]

use rampart_core::{CancellationToken, Context, ErrorKind};
use rampart_sync::{CoalesceLayer, KeyedLockLayer};
use rampart_testkit::{MetricsCapture, MockReply, MockService};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::{Instant, sleep};
use tower::{Layer, ServiceExt};

const MS: Duration = Duration::from_millis(1);

/// Polls `fut` once, with a waker that does nothing.
fn poll_once<F: std::future::Future + ?Sized>(
    fut: std::pin::Pin<&mut F>,
) -> std::task::Poll<F::Output> {
    fut.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
}

/// Lets every spawned task run until it waits on something.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// One layer's metrics cumulated over snapshots: the debugging recorder
/// behind `MetricsCapture` hands out counters and gauges as deltas (each
/// snapshot swaps them to zero), and every gauge here moves up and down
/// only, so sums give the current values.
struct Tally<'a> {
    cap: &'a MetricsCapture,
    layer: &'static str,
    gauges: &'static [&'static str],
    counters: &'static [&'static str],
    /// Counters with a `reason` label: (name, reasons).
    reasons: &'static [(&'static str, &'static [&'static str])],
    histogram: &'static str,
    values: HashMap<String, f64>,
    samples: Vec<f64>,
}

impl Tally<'_> {
    fn update(&mut self) -> &mut Self {
        let s = self.cap.snapshot();
        for g in self.gauges {
            *self.values.entry((*g).to_owned()).or_default() +=
                s.gauge(g, self.layer).unwrap_or(0.0);
        }
        for c in self.counters {
            *self.values.entry((*c).to_owned()).or_default() +=
                s.counter(c, self.layer).unwrap_or(0) as f64;
        }
        for (c, reasons) in self.reasons {
            for r in *reasons {
                let n = s
                    .counter_with(c, &[("layer", self.layer), ("reason", r)])
                    .unwrap_or(0);
                *self.values.entry(format!("{c}/{r}")).or_default() += n as f64;
            }
        }
        self.samples
            .extend(s.histogram(self.histogram, self.layer).unwrap_or_default());
        self
    }

    fn get(&self, name: &str) -> f64 {
        self.values.get(name).copied().unwrap_or(0.0)
    }
}

fn lock_tally<'a>(cap: &'a MetricsCapture, layer: &'static str) -> Tally<'a> {
    Tally {
        cap,
        layer,
        gauges: &["rampart.lock.held", "rampart.lock.waiting"],
        counters: &["rampart.lock.waited"],
        reasons: &[(
            "rampart.lock.gave_up",
            &["cancelled", "deadline", "dropped"],
        )],
        histogram: "rampart.lock.wait.duration",
        values: HashMap::new(),
        samples: Vec::new(),
    }
}

fn coalesce_tally<'a>(cap: &'a MetricsCapture, layer: &'static str) -> Tally<'a> {
    Tally {
        cap,
        layer,
        gauges: &["rampart.coalesce.in_flight", "rampart.coalesce.waiting"],
        counters: &[
            "rampart.coalesce.leaders",
            "rampart.coalesce.coalesced",
            "rampart.coalesce.cached",
            "rampart.coalesce.abandoned",
        ],
        reasons: &[("rampart.coalesce.gave_up", &["cancelled", "deadline"])],
        histogram: "",
        values: HashMap::new(),
        samples: Vec::new(),
    }
}

/// A mock answering `(key, ms)` with `ms` after `ms` milliseconds.
fn mock() -> MockService<(u32, u64), u64> {
    MockService::new(|(_, ms): (u32, u64)| MockReply::ok(ms).after(Duration::from_millis(ms)))
}

#[tokio::test(start_paused = true)]
async fn a_scripted_keyed_lock_run_records_exact_waits_give_ups_and_gauges_back_to_zero() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| KeyedLockLayer::new(|r: &(u32, u64)| r.0).name("accounts"));
    let mut t = lock_tally(&cap, "accounts");
    let svc = cap.install(|| layer.layer(mock()));

    // t=0: a holds key 1 for 30 ms; b waits for it (30 ms) then runs 10 ms;
    // c is cancelled at 10 ms, d's deadline passes at 20 ms, e's caller
    // drops it at 25 ms. Key 2 is free: f runs at once, no wait.
    let a = tokio::spawn(svc.clone().oneshot((1, 30)));
    settle().await;
    let b = tokio::spawn(svc.clone().oneshot((1, 10)));
    let token = CancellationToken::new();
    let c = tokio::spawn(
        Context::new()
            .with_cancellation(token.clone())
            .scope(svc.clone().oneshot((1, 1))),
    );
    let d = tokio::spawn(
        Context::new()
            .with_deadline(Instant::now() + 20 * MS)
            .scope(svc.clone().oneshot((1, 1))),
    );
    let e = tokio::spawn(svc.clone().oneshot((1, 1)));
    let f = tokio::spawn(svc.clone().oneshot((2, 5)));
    settle().await;
    t.update();
    assert_eq!(t.get("rampart.lock.held"), 2.0);
    assert_eq!(t.get("rampart.lock.waiting"), 4.0);
    assert_eq!(t.get("rampart.lock.waited"), 4.0);

    sleep(10 * MS).await;
    token.cancel();
    assert_eq!(c.await.unwrap().unwrap_err().kind(), ErrorKind::Cancelled);
    assert_eq!(f.await.unwrap().unwrap(), 5);
    assert_eq!(
        d.await.unwrap().unwrap_err().kind(),
        ErrorKind::DeadlineExceeded
    ); // t=20
    sleep(5 * MS).await; // t=25
    e.abort();
    assert!(e.await.unwrap_err().is_cancelled());
    t.update();
    assert_eq!(t.get("rampart.lock.waiting"), 1.0);
    assert_eq!(t.get("rampart.lock.held"), 1.0);

    assert_eq!(a.await.unwrap().unwrap(), 30);
    assert_eq!(b.await.unwrap().unwrap(), 10); // t=40
    t.update();
    assert_eq!(t.get("rampart.lock.held"), 0.0);
    assert_eq!(t.get("rampart.lock.waiting"), 0.0);
    assert_eq!(t.get("rampart.lock.waited"), 4.0);
    assert_eq!(t.get("rampart.lock.gave_up/cancelled"), 1.0);
    assert_eq!(t.get("rampart.lock.gave_up/deadline"), 1.0);
    assert_eq!(t.get("rampart.lock.gave_up/dropped"), 1.0);
    // In the order they stopped waiting: c, d, e, then b (granted).
    assert_eq!(t.samples, [0.010, 0.020, 0.025, 0.030]);
    let st = layer.stats();
    assert_eq!((st.keys, st.waiting, st.waited, st.gave_up), (0, 0, 4, 3));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiting_lock_future_leaves_the_gauges_at_zero() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| KeyedLockLayer::new(|r: &(u32, u64)| r.0).name("drop"));
    let mut t = lock_tally(&cap, "drop");
    let svc = cap.install(|| layer.layer(mock()));
    let held = tokio::spawn(svc.clone().oneshot((7, 10)));
    settle().await;
    // Never polled: dropped while in line.
    let waiting = svc.clone().oneshot((7, 1));
    assert_eq!(
        t.update().get("rampart.lock.waiting"),
        0.0,
        "not called yet"
    );
    let mut waiting = Box::pin(waiting);
    assert!(poll_once(waiting.as_mut()).is_pending());
    assert_eq!(t.update().get("rampart.lock.waiting"), 1.0);
    sleep(3 * MS).await;
    drop(waiting);
    held.await.unwrap().unwrap();
    t.update();
    assert_eq!(t.get("rampart.lock.waiting"), 0.0);
    assert_eq!(t.get("rampart.lock.held"), 0.0);
    assert_eq!(t.get("rampart.lock.gave_up/dropped"), 1.0);
    assert_eq!(t.samples, [0.003]);
}

#[tokio::test(start_paused = true)]
async fn a_scripted_coalesce_run_records_leaders_joins_give_ups_and_gauges_back_to_zero() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| CoalesceLayer::new(|r: &(u32, u64)| r.0).name("profiles"));
    let mut t = coalesce_tally(&cap, "profiles");
    let mock = mock();
    let svc = cap.install(|| layer.layer(mock.clone()));

    // Key 1: a leads a 30 ms call; b and c join it; d joins and is
    // cancelled at 10 ms; e joins and its deadline passes at 20 ms.
    let a = tokio::spawn(svc.clone().oneshot((1, 30)));
    settle().await;
    let b = tokio::spawn(svc.clone().oneshot((1, 30)));
    let c = tokio::spawn(svc.clone().oneshot((1, 30)));
    let token = CancellationToken::new();
    let d = tokio::spawn(
        Context::new()
            .with_cancellation(token.clone())
            .scope(svc.clone().oneshot((1, 30))),
    );
    let e = tokio::spawn(
        Context::new()
            .with_deadline(Instant::now() + 20 * MS)
            .scope(svc.clone().oneshot((1, 30))),
    );
    settle().await;
    t.update();
    assert_eq!(t.get("rampart.coalesce.in_flight"), 1.0);
    assert_eq!(t.get("rampart.coalesce.waiting"), 5.0);
    sleep(10 * MS).await;
    token.cancel();
    assert_eq!(d.await.unwrap().unwrap_err().kind(), ErrorKind::Cancelled);
    assert_eq!(
        e.await.unwrap().unwrap_err().kind(),
        ErrorKind::DeadlineExceeded
    );
    for h in [a, b, c] {
        assert_eq!(h.await.unwrap().unwrap(), 30);
    }

    // Key 2: a lone leader whose caller leaves: the call is abandoned.
    let mut lone = Box::pin(svc.clone().oneshot((2, 50)));
    assert!(poll_once(lone.as_mut()).is_pending());
    assert_eq!(t.update().get("rampart.coalesce.in_flight"), 1.0);
    drop(lone);

    t.update();
    assert_eq!(t.get("rampart.coalesce.in_flight"), 0.0);
    assert_eq!(t.get("rampart.coalesce.waiting"), 0.0);
    assert_eq!(t.get("rampart.coalesce.leaders"), 2.0);
    assert_eq!(t.get("rampart.coalesce.coalesced"), 4.0);
    assert_eq!(t.get("rampart.coalesce.abandoned"), 1.0);
    assert_eq!(t.get("rampart.coalesce.cached"), 0.0);
    assert_eq!(t.get("rampart.coalesce.gave_up/cancelled"), 1.0);
    assert_eq!(t.get("rampart.coalesce.gave_up/deadline"), 1.0);
    assert_eq!(mock.calls(), 2);
    let st = layer.stats();
    assert_eq!((st.calls, st.coalesced, st.abandoned), (2, 4, 1));
}

#[tokio::test(start_paused = true)]
async fn a_kept_result_counts_as_cached() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| {
        CoalesceLayer::time_to_live(|r: &(u32, u64)| r.0, Duration::from_secs(1)).name("kept")
    });
    let mut t = coalesce_tally(&cap, "kept");
    let svc = cap.install(|| layer.layer(mock()));
    svc.clone().oneshot((1, 5)).await.unwrap();
    svc.clone().oneshot((1, 5)).await.unwrap();
    svc.clone().oneshot((1, 5)).await.unwrap();
    t.update();
    assert_eq!(t.get("rampart.coalesce.leaders"), 1.0);
    assert_eq!(t.get("rampart.coalesce.cached"), 2.0);
    assert_eq!(t.get("rampart.coalesce.in_flight"), 0.0);
    assert_eq!(t.get("rampart.coalesce.waiting"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn layers_with_different_names_record_separately() {
    let cap = MetricsCapture::new();
    let (one, two) = cap.install(|| {
        (
            KeyedLockLayer::new(|r: &(u32, u64)| r.0).name("one"),
            KeyedLockLayer::new(|r: &(u32, u64)| r.0).name("two"),
        )
    });
    let (svc1, svc2) = (
        cap.install(|| one.layer(mock())),
        cap.install(|| two.layer(mock())),
    );
    let held = tokio::spawn(svc1.clone().oneshot((1, 10)));
    settle().await;
    let waits = tokio::spawn(svc1.clone().oneshot((1, 1)));
    svc2.clone().oneshot((1, 1)).await.unwrap();
    held.await.unwrap().unwrap();
    waits.await.unwrap().unwrap();
    let s = cap.snapshot();
    assert_eq!(s.counter("rampart.lock.waited", "one"), Some(1));
    assert_eq!(s.counter("rampart.lock.waited", "two"), Some(0));
    assert_eq!(
        s.histogram("rampart.lock.wait.duration", "one"),
        Some(vec![0.010])
    );
    assert_eq!(
        s.histogram("rampart.lock.wait.duration", "two"),
        Some(vec![])
    );
    for layer in ["one", "two"] {
        assert_eq!(s.gauge("rampart.lock.held", layer), Some(0.0));
        assert_eq!(s.gauge("rampart.lock.waiting", layer), Some(0.0));
    }
}
