//! What a queue records on the `metrics` facade: scripted runs under the
//! paused clock, with exact counts, exact wait times and gauges back to
//! zero.
#![cfg(feature = "metrics")]
// Exact values are the point: the paused clock makes every one exact.
#![allow(clippy::float_cmp, clippy::many_single_char_names)]

use rampart_core::{Context, ErrorKind};
use rampart_queue::{Queue, QueueLayer};
use rampart_testkit::{Gate, MetricsCapture, MockReply, MockService};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::sleep;
use tower::{Layer, Service, ServiceExt};

const MS: Duration = Duration::from_millis(1);

const DEPTH: &str = "rampart.queue.depth";
const RUNNING: &str = "rampart.queue.running";
const WORKERS: &str = "rampart.queue.workers";
const COMPLETED: &str = "rampart.queue.completed";
const SHED: &str = "rampart.queue.shed";
const SKIPPED: &str = "rampart.queue.skipped";
const PANICKED: &str = "rampart.queue.panicked";
const WAIT: &str = "rampart.queue.wait.duration";

const GAUGES: [&str; 3] = [DEPTH, RUNNING, WORKERS];
const COUNTERS: [&str; 4] = [COMPLETED, SHED, SKIPPED, PANICKED];

type Q = Queue<u64, u64>;

/// Lets spawned tasks (the workers) run until nothing is ready.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// A mock answering request `ms` after `ms` milliseconds.
fn timed() -> MockService<u64, u64> {
    MockService::new(|ms: u64| MockReply::ok(ms).after(Duration::from_millis(ms)))
}

/// A mock answering once `gate` opens.
fn gated(gate: &Gate) -> MockService<u64, u64> {
    let g = gate.clone();
    MockService::new(move |n: u64| MockReply::ok(n).after_gate(&g))
}

/// One layer's values, cumulated over snapshots: the debugging recorder
/// behind `MetricsCapture` hands counters and gauges out as deltas (each
/// snapshot resets them), so they are summed; wait samples are collected
/// in the order recorded.
struct Tally<'a> {
    cap: &'a MetricsCapture,
    layer: &'static str,
    values: HashMap<&'static str, f64>,
    waits: Vec<f64>,
}

impl<'a> Tally<'a> {
    fn new(cap: &'a MetricsCapture, layer: &'static str) -> Self {
        Tally {
            cap,
            layer,
            values: HashMap::new(),
            waits: Vec::new(),
        }
    }

    /// Takes a snapshot and folds it in.
    fn update(&mut self) -> &mut Self {
        let s = self.cap.snapshot();
        for g in GAUGES {
            *self.values.entry(g).or_default() += s.gauge(g, self.layer).unwrap_or(0.0);
        }
        for c in COUNTERS {
            *self.values.entry(c).or_default() += s.counter(c, self.layer).unwrap_or(0) as f64;
        }
        self.waits
            .extend(s.histogram(WAIT, self.layer).unwrap_or_default());
        self
    }

    fn get(&self, name: &str) -> f64 {
        self.values.get(name).copied().unwrap_or(0.0)
    }

    /// (depth, running, workers).
    fn gauges(&self) -> (f64, f64, f64) {
        (self.get(DEPTH), self.get(RUNNING), self.get(WORKERS))
    }
}

#[tokio::test(start_paused = true)]
async fn a_scripted_run_records_exact_counts_wait_times_and_gauges_back_to_zero() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| {
        QueueLayer::builder()
            .capacity(4)
            .workers(1)
            .name("emails")
            .build()
            .unwrap()
    });
    let svc: Q = cap.install(|| layer.layer(timed()));
    assert_eq!(svc.layer_name(), "emails");
    let mut t = Tally::new(&cap, "emails");
    assert_eq!(t.update().gauges(), (0.0, 0.0, 1.0));

    // t=0: a runs 0..30. b is queued, runs 30..40. c is queued and its
    // caller leaves; d is queued with a 20 ms deadline, which passes while
    // it waits; both are skipped when the worker takes them at t=40. e is
    // queued, runs 40..45.
    let a = tokio::spawn(svc.clone().oneshot(30));
    settle().await;
    let b = tokio::spawn(svc.clone().oneshot(10));
    settle().await;
    let c = tokio::spawn(svc.clone().oneshot(1));
    settle().await;
    c.abort();
    let d = tokio::spawn(
        Context::new()
            .with_timeout(20 * MS)
            .scope(svc.clone().oneshot(1)),
    );
    settle().await;
    let e = tokio::spawn(svc.clone().oneshot(5));
    settle().await;
    assert_eq!(t.update().gauges(), (4.0, 1.0, 1.0));
    assert_eq!(t.waits, [0.0]);

    assert_eq!(a.await.unwrap().unwrap(), 30);
    assert_eq!(b.await.unwrap().unwrap(), 10);
    assert!(c.await.unwrap_err().is_cancelled());
    assert_eq!(
        d.await.unwrap().unwrap_err().kind(),
        ErrorKind::DeadlineExceeded
    );
    assert_eq!(e.await.unwrap().unwrap(), 5);
    settle().await;
    t.update();
    assert_eq!(t.gauges(), (0.0, 0.0, 1.0));
    assert_eq!(t.get(COMPLETED), 3.0);
    assert_eq!(t.get(SKIPPED), 2.0);
    assert_eq!((t.get(SHED), t.get(PANICKED)), (0.0, 0.0));
    // One sample per request taken off the queue, run or skipped, in the
    // order taken: a, b, c, d, e.
    assert_eq!(t.waits, [0.0, 0.030, 0.040, 0.040, 0.040]);

    // The stats agree.
    let st = svc.stats();
    assert_eq!((st.completed, st.skipped, st.shed), (3, 2, 0));

    svc.close();
    svc.stopped().await;
    assert_eq!(t.update().gauges(), (0.0, 0.0, 0.0));
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_in_shed_mode_counts_each_shed() {
    let cap = MetricsCapture::new();
    let gate = Gate::new();
    let svc: Q = cap.install(|| {
        QueueLayer::new(1, 1)
            .shed()
            .name("shed")
            .layer(gated(&gate))
    });
    let mut t = Tally::new(&cap, "shed");
    // One running, one queued; the next two are shed.
    let running = tokio::spawn(svc.clone().oneshot(1));
    settle().await;
    let queued = tokio::spawn(svc.clone().oneshot(2));
    settle().await;
    for n in [3, 4] {
        let e = svc.clone().oneshot(n).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Overloaded);
    }
    assert_eq!(t.update().gauges(), (1.0, 1.0, 1.0));
    sleep(10 * MS).await;
    gate.open();
    assert_eq!(running.await.unwrap().unwrap(), 1);
    assert_eq!(queued.await.unwrap().unwrap(), 2);
    settle().await;
    t.update();
    assert_eq!(t.get(SHED), 2.0);
    assert_eq!(t.get(COMPLETED), 2.0);
    assert_eq!(t.gauges(), (0.0, 0.0, 1.0));
    assert_eq!(t.waits, [0.0, 0.010]);
    assert_eq!(svc.stats().shed, 2);
}

#[tokio::test(start_paused = true)]
async fn max_wait_and_try_submit_on_a_full_queue_count_as_sheds() {
    let cap = MetricsCapture::new();
    let gate = Gate::new();
    let svc: Q = cap.install(|| {
        QueueLayer::builder()
            .capacity(1)
            .workers(1)
            .max_wait(50 * MS)
            .name("wait")
            .build()
            .unwrap()
            .layer(gated(&gate))
    });
    let mut t = Tally::new(&cap, "wait");
    let running = tokio::spawn(svc.clone().oneshot(1));
    settle().await;
    let queued = tokio::spawn(svc.clone().oneshot(2));
    settle().await;
    // Waits for space 50 ms, then is shed.
    let e = svc.clone().oneshot(3).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overloaded);
    // Refused at once.
    let e = svc.try_submit(4).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overloaded);
    gate.open();
    running.await.unwrap().unwrap();
    queued.await.unwrap().unwrap();
    settle().await;
    t.update();
    assert_eq!(t.get(SHED), 2.0);
    assert_eq!(t.get(COMPLETED), 2.0);
    assert_eq!(t.gauges(), (0.0, 0.0, 1.0));
    assert_eq!(t.waits, [0.0, 0.050]);
}

#[tokio::test(start_paused = true)]
async fn the_wait_is_measured_from_enqueue_not_from_the_wait_for_space() {
    let cap = MetricsCapture::new();
    let svc: Q = cap.install(|| QueueLayer::new(1, 1).name("space").layer(timed()));
    let mut t = Tally::new(&cap, "space");
    // a runs 0..30; b is queued at 0 and runs 30..40; c waits for space
    // until the worker takes b (t=30), is queued then, and is taken at 40.
    let a = tokio::spawn(svc.clone().oneshot(30));
    settle().await;
    let b = tokio::spawn(svc.clone().oneshot(10));
    settle().await;
    let c = tokio::spawn(svc.clone().oneshot(1));
    settle().await;
    assert_eq!(t.update().gauges(), (1.0, 1.0, 1.0));
    for (h, want) in [(a, 30), (b, 10), (c, 1)] {
        assert_eq!(h.await.unwrap().unwrap(), want);
    }
    settle().await;
    t.update();
    assert_eq!(t.waits, [0.0, 0.030, 0.010]);
    assert_eq!(t.get(COMPLETED), 3.0);
    assert_eq!(t.gauges(), (0.0, 0.0, 1.0));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_call_counts_as_panicked_not_completed() {
    let cap = MetricsCapture::new();
    let mock = MockService::new(|n: u64| {
        if n == 13 {
            MockReply::panic("unlucky")
        } else {
            MockReply::ok(n)
        }
    });
    let svc: Q = cap.install(|| QueueLayer::new(4, 1).name("panics").layer(mock));
    let mut t = Tally::new(&cap, "panics");
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), 1);
    let e = svc.clone().oneshot(13).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Inner);
    assert_eq!(svc.clone().oneshot(2).await.unwrap(), 2);
    settle().await;
    t.update();
    assert_eq!(t.get(PANICKED), 1.0);
    assert_eq!(t.get(COMPLETED), 2.0);
    assert_eq!(t.gauges(), (0.0, 0.0, 1.0));
    assert_eq!(t.waits, [0.0, 0.0, 0.0]);
    let st = svc.stats();
    assert_eq!((st.panicked, st.completed), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn an_inner_error_counts_as_completed() {
    let cap = MetricsCapture::new();
    let mock = MockService::new(|n: u64| {
        if n == 0 {
            MockReply::err("no")
        } else {
            MockReply::ok(n)
        }
    });
    let svc: Q = cap.install(|| QueueLayer::new(4, 2).name("errors").layer(mock));
    let mut t = Tally::new(&cap, "errors");
    svc.clone().oneshot(0).await.unwrap_err();
    svc.clone().oneshot(1).await.unwrap();
    settle().await;
    t.update();
    assert_eq!(t.get(COMPLETED), 2.0);
    assert_eq!(t.gauges(), (0.0, 0.0, 2.0));
    assert_eq!(svc.stats().failed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_drain_deadline_leaves_every_gauge_at_zero() {
    let cap = MetricsCapture::new();
    let gate = Gate::new();
    let svc: Q = cap.install(|| QueueLayer::new(4, 1).name("drain").layer(gated(&gate)));
    let mut t = Tally::new(&cap, "drain");
    let calls: Vec<_> = (0..3)
        .map(|n| {
            let mut s = svc.clone();
            let fut = s.call(n);
            tokio::spawn(fut)
        })
        .collect();
    settle().await;
    assert_eq!(t.update().gauges(), (2.0, 1.0, 1.0));
    let drained = svc.drain(10 * MS).await;
    assert!(!drained.in_time);
    assert_eq!((drained.queued_dropped, drained.running_dropped), (2, 1));
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap_err().kind(), ErrorKind::Closed);
    }
    t.update();
    assert_eq!(t.gauges(), (0.0, 0.0, 0.0));
    // Only the request a worker took was measured; none ran to an outcome.
    assert_eq!(t.waits, [0.0]);
    assert_eq!((t.get(COMPLETED), t.get(SKIPPED)), (0.0, 0.0));
}

#[tokio::test(start_paused = true)]
async fn fire_and_forget_jobs_are_measured_like_calls() {
    let cap = MetricsCapture::new();
    let svc: Q = cap.install(|| QueueLayer::new(4, 1).name("jobs").layer(timed()));
    let mut t = Tally::new(&cap, "jobs");
    svc.submit(10).await.unwrap();
    svc.try_submit(20).unwrap();
    settle().await;
    assert_eq!(t.update().gauges(), (1.0, 1.0, 1.0));
    svc.close();
    svc.stopped().await;
    t.update();
    assert_eq!(t.get(COMPLETED), 2.0);
    assert_eq!(t.gauges(), (0.0, 0.0, 0.0));
    assert_eq!(t.waits, [0.0, 0.010]);
}

#[tokio::test(start_paused = true)]
async fn queues_record_under_their_own_names_and_unnamed_ones_as_default() {
    let cap = MetricsCapture::new();
    let gate = Gate::new();
    let (a, b, plain) = cap.install(|| {
        let a: Q = QueueLayer::new(1, 1).shed().name("a").layer(gated(&gate));
        let b: Q = QueueLayer::builder()
            .workers(3)
            .name("b")
            .build()
            .unwrap()
            .layer(timed());
        let plain: Q = Queue::new(timed(), 1, 2);
        (a, b, plain)
    });
    assert_eq!(
        (a.layer_name(), b.layer_name(), plain.layer_name()),
        ("a", "b", "default")
    );
    let held = tokio::spawn(a.clone().oneshot(1));
    settle().await;
    let queued = tokio::spawn(a.clone().oneshot(2));
    settle().await;
    a.clone().oneshot(3).await.unwrap_err();
    b.clone().oneshot(1).await.unwrap();
    plain.clone().oneshot(1).await.unwrap();
    gate.open();
    held.await.unwrap().unwrap();
    queued.await.unwrap().unwrap();
    settle().await;
    let s = cap.snapshot();
    assert_eq!(s.counter(SHED, "a"), Some(1));
    assert_eq!(s.counter(SHED, "b"), Some(0));
    assert_eq!(s.counter(COMPLETED, "a"), Some(2));
    assert_eq!(s.counter(COMPLETED, "b"), Some(1));
    assert_eq!(s.counter(COMPLETED, "default"), Some(1));
    assert_eq!(s.gauge(WORKERS, "a"), Some(1.0));
    assert_eq!(s.gauge(WORKERS, "b"), Some(3.0));
    assert_eq!(s.gauge(WORKERS, "default"), Some(2.0));
    let mut names = s.names();
    names.retain(|n| n.starts_with("rampart.queue."));
    assert_eq!(
        names,
        [
            COMPLETED, DEPTH, PANICKED, RUNNING, SHED, SKIPPED, WAIT, WORKERS
        ]
    );
}
