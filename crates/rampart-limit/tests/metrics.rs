//! What the limits record on the `metrics` facade: scripted runs under the
//! paused clock, with exact counts, gauges back to zero and exact wait
//! times.
#![cfg(feature = "metrics")]
// Exact values are the point: the paused clock makes every one exact.
#![allow(clippy::float_cmp, clippy::many_single_char_names)]

mod common;

use common::MS;
use rampart_core::{CancellationToken, Context, ErrorKind};
use rampart_limit::{AimdConfig, ConcurrencyLimitLayer, KeyedConcurrencyLimitLayer};
use rampart_testkit::{MetricsCapture, MetricsSnapshot, MockReply, MockService};
use std::collections::HashMap;
use tokio::time::{Instant, sleep};
use tower::{Layer, ServiceExt};

/// Lets every spawned task run until it waits on something.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// A mock answering request `ms` after `ms` milliseconds.
fn mock() -> MockService<u64, u64> {
    MockService::new(|ms: u64| MockReply::ok(ms).after(std::time::Duration::from_millis(ms)))
}

/// The values of one layer's metrics, cumulated over snapshots: the
/// debugging recorder behind `MetricsCapture` hands out counters and gauges
/// as deltas (each snapshot swaps them to zero), so counters and gauges
/// (every gauge moves by deltas, `current` included) are summed.
struct Tally<'a> {
    cap: &'a MetricsCapture,
    layer: &'static str,
    values: HashMap<&'static str, f64>,
    waits: Vec<f64>,
}

const SUMMED_GAUGES: [&str; 4] = [
    "rampart.limit.current",
    "rampart.limit.in_flight",
    "rampart.limit.waiting",
    "rampart.limit.keys",
];
const COUNTERS: [&str; 2] = ["rampart.limit.shed", "rampart.limit.keys.rejected"];
const REASONS: [&str; 3] = ["max_wait", "deadline", "cancelled"];

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
        let s: MetricsSnapshot = self.cap.snapshot();
        for g in SUMMED_GAUGES {
            *self.values.entry(g).or_default() += s.gauge(g, self.layer).unwrap_or(0.0);
        }
        for c in COUNTERS {
            *self.values.entry(c).or_default() += s.counter(c, self.layer).unwrap_or(0) as f64;
        }
        for r in REASONS {
            let n = s
                .counter_with(
                    "rampart.limit.expired",
                    &[("layer", self.layer), ("reason", r)],
                )
                .unwrap_or(0);
            *self.values.entry(r).or_default() += n as f64;
        }
        self.waits.extend(
            s.histogram("rampart.limit.wait.duration", self.layer)
                .unwrap_or_default(),
        );
        self
    }

    fn get(&self, name: &str) -> f64 {
        self.values.get(name).copied().unwrap_or(0.0)
    }

    fn expired(&self, reason: &str) -> f64 {
        self.get(reason)
    }
}

#[tokio::test(start_paused = true)]
async fn a_scripted_run_records_exact_sheds_expiries_wait_times_and_gauges_back_to_zero() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| {
        ConcurrencyLimitLayer::builder(1)
            .max_wait(50 * MS)
            .max_waiting(2)
            .name("payments")
            .build()
            .unwrap()
    });
    let mut t = Tally::new(&cap, "payments");
    let mock = mock();
    let call = |ms: u64| tokio::spawn(cap.install(|| layer.layer(mock.clone())).oneshot(ms));

    // t=0: a holds the permit for 30 ms; b waits 30 ms, then runs 100 ms;
    // c waits behind b until its maximum wait (50 ms) passes.
    let a = call(30);
    settle().await;
    let b = call(100);
    settle().await;
    let c = call(1);
    settle().await;
    t.update();
    assert_eq!(t.get("rampart.limit.in_flight"), 1.0);
    assert_eq!(t.get("rampart.limit.waiting"), 2.0);
    assert_eq!(t.get("rampart.limit.current"), 1.0);

    // The line is full: two calls shed at once.
    for _ in 0..2 {
        let e = cap
            .install(|| layer.layer(mock.clone()))
            .oneshot(1)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Overloaded);
    }

    sleep(60 * MS).await; // t=60
    assert_eq!(a.await.unwrap().unwrap(), 30);
    assert_eq!(c.await.unwrap().unwrap_err().kind(), ErrorKind::Overloaded);

    // t=60..70: a waiter cancelled by its request's token.
    let token = CancellationToken::new();
    let f = tokio::spawn(
        Context::new()
            .with_cancellation(token.clone())
            .scope(cap.install(|| layer.layer(mock.clone())).oneshot(1)),
    );
    sleep(10 * MS).await;
    token.cancel();
    assert_eq!(f.await.unwrap().unwrap_err().kind(), ErrorKind::Cancelled);

    // t=70..85: a waiter whose request's deadline passes.
    let e = Context::new()
        .with_deadline(Instant::now() + 15 * MS)
        .scope(cap.install(|| layer.layer(mock.clone())).oneshot(1))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded);

    // t=85..90: a waiter whose caller drops it: counted by no counter, but
    // it leaves the waiting gauge and its wait is measured.
    let h = call(1);
    sleep(5 * MS).await;
    assert_eq!(t.update().get("rampart.limit.waiting"), 1.0);
    h.abort();
    assert!(h.await.unwrap_err().is_cancelled());
    t.update();
    assert_eq!(t.get("rampart.limit.waiting"), 0.0);
    assert_eq!(t.get("rampart.limit.in_flight"), 1.0);

    assert_eq!(b.await.unwrap().unwrap(), 100); // t=130
    t.update();
    assert_eq!(t.get("rampart.limit.in_flight"), 0.0);
    assert_eq!(t.get("rampart.limit.waiting"), 0.0);
    assert_eq!(t.get("rampart.limit.current"), 1.0);
    assert_eq!(t.get("rampart.limit.shed"), 2.0);
    assert_eq!(t.expired("max_wait"), 1.0);
    assert_eq!(t.expired("deadline"), 1.0);
    assert_eq!(t.expired("cancelled"), 1.0);
    // In the order they left the line: b (granted), c (max wait), the
    // cancelled one, the one past its deadline, the dropped one.
    assert_eq!(t.waits, [0.030, 0.050, 0.010, 0.015, 0.005]);
    // The stats agree (they count expiries by max wait and deadline only).
    let st = layer.stats();
    assert_eq!(
        (st.shed, st.expired, st.in_flight, st.waiting),
        (2, 2, 0, 0)
    );
    assert_eq!(mock.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_call_that_finds_a_free_permit_records_no_wait() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| ConcurrencyLimitLayer::new(4).name("fast"));
    let svc = cap.install(|| layer.layer(mock()));
    for _ in 0..3 {
        svc.clone().oneshot(1).await.unwrap();
    }
    let s = cap.snapshot();
    assert_eq!(
        s.histogram("rampart.limit.wait.duration", "fast"),
        Some(vec![])
    );
    assert_eq!(s.gauge("rampart.limit.in_flight", "fast"), Some(0.0));
    assert_eq!(s.gauge("rampart.limit.current", "fast"), Some(4.0));
    assert_eq!(s.counter("rampart.limit.shed", "fast"), Some(0));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiting_response_future_leaves_the_gauges_at_zero() {
    // The keyed limit waits in the response future: drop it while waiting.
    let cap = MetricsCapture::new();
    let layer = cap.install(|| {
        KeyedConcurrencyLimitLayer::builder(|_: &u64| 0u8, 1)
            .name("keyed")
            .build()
            .unwrap()
    });
    let mut t = Tally::new(&cap, "keyed");
    let svc = cap.install(|| layer.layer(mock()));
    let held = tokio::spawn(svc.clone().oneshot(20));
    settle().await;
    let mut waiting = Box::pin(svc.clone().oneshot(1));
    assert!(common::poll_once(waiting.as_mut()).is_pending());
    t.update();
    assert_eq!(t.get("rampart.limit.waiting"), 1.0);
    assert_eq!(t.get("rampart.limit.in_flight"), 1.0);
    sleep(5 * MS).await;
    drop(waiting);
    held.await.unwrap().unwrap();
    t.update();
    assert_eq!(t.get("rampart.limit.waiting"), 0.0);
    assert_eq!(t.get("rampart.limit.in_flight"), 0.0);
    assert_eq!(t.waits, [0.005]);
    assert_eq!(t.expired("cancelled"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn the_current_gauge_follows_an_adaptive_limit() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| {
        ConcurrencyLimitLayer::builder(AimdConfig {
            initial_limit: 4,
            min_limit: 2,
            max_limit: 10,
            ..AimdConfig::default()
        })
        .sample_window(None)
        .name("adaptive")
        .build()
        .unwrap()
    });
    let mut t = Tally::new(&cap, "adaptive");
    // Nothing is registered before the layer makes a service.
    assert_eq!(t.update().get("rampart.limit.current"), 0.0);
    let svc = cap.install(|| {
        layer.layer(MockService::<bool, ()>::new(|fail: bool| {
            if fail {
                MockReply::err("overloaded")
            } else {
                MockReply::ok(())
            }
        }))
    });
    // Drops: 4 -> 3 -> 2 (the floor) -> 2.
    for want in [3.0, 2.0, 2.0] {
        svc.clone().oneshot(true).await.unwrap_err();
        assert_eq!(t.update().get("rampart.limit.current"), want);
    }
    // A success with the limit half used: + 1.
    svc.clone().oneshot(false).await.unwrap();
    assert_eq!(t.update().get("rampart.limit.current"), 3.0);
    assert_eq!(layer.limit(), 3);
    assert_eq!(t.get("rampart.limit.in_flight"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn layers_with_different_names_record_separately() {
    let cap = MetricsCapture::new();
    let (a, b) = cap.install(|| {
        (
            ConcurrencyLimitLayer::builder(1)
                .shed()
                .name("a")
                .build()
                .unwrap(),
            ConcurrencyLimitLayer::new(3).name("b"),
        )
    });
    let mock = mock();
    let held = tokio::spawn(cap.install(|| a.layer(mock.clone())).oneshot(10));
    settle().await;
    for _ in 0..3 {
        cap.install(|| a.layer(mock.clone()))
            .oneshot(1)
            .await
            .unwrap_err();
    }
    cap.install(|| b.layer(mock.clone()))
        .oneshot(1)
        .await
        .unwrap();
    held.await.unwrap().unwrap();
    let s = cap.snapshot();
    assert_eq!(s.counter("rampart.limit.shed", "a"), Some(3));
    assert_eq!(s.counter("rampart.limit.shed", "b"), Some(0));
    assert_eq!(s.gauge("rampart.limit.current", "a"), Some(1.0));
    assert_eq!(s.gauge("rampart.limit.current", "b"), Some(3.0));
    assert_eq!(s.gauge("rampart.limit.in_flight", "a"), Some(0.0));
    assert_eq!(s.gauge("rampart.limit.in_flight", "b"), Some(0.0));
    // `new(3).name("b")` registered nothing under "default".
    assert_eq!(s.gauge("rampart.limit.current", "default"), None);
}

#[tokio::test(start_paused = true)]
async fn a_keyed_run_records_keys_sheds_and_key_map_refusals() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| {
        KeyedConcurrencyLimitLayer::builder(|req: &(u8, u64)| req.0, 1)
            .max_keys(2)
            .max_waiting(1)
            .max_wait(50 * MS)
            .name("tenants")
            .build()
            .unwrap()
    });
    let mut t = Tally::new(&cap, "tenants");
    let svc = cap.install(|| {
        layer.layer(MockService::new(|(_, ms): (u8, u64)| {
            MockReply::ok(ms).after(std::time::Duration::from_millis(ms))
        }))
    });
    let call = |key: u8, ms: u64| tokio::spawn(svc.clone().oneshot((key, ms)));
    let one = call(1, 20); // key 1 held 0..20
    let two = call(2, 30); // key 2 held 0..30
    settle().await;
    let one_waits = call(1, 10); // waits 0..20, runs 20..30
    settle().await;
    // Key 1's line is full: shed. Key 3 finds the map full of busy keys.
    let shed = svc.clone().oneshot((1, 1)).await.unwrap_err();
    assert_eq!(shed.kind(), ErrorKind::Overloaded);
    let full = svc.clone().oneshot((3, 1)).await.unwrap_err();
    assert_eq!(full.kind(), ErrorKind::Overloaded);
    t.update();
    assert_eq!(t.get("rampart.limit.keys"), 2.0);
    assert_eq!(t.get("rampart.limit.in_flight"), 2.0);
    assert_eq!(t.get("rampart.limit.waiting"), 1.0);
    assert_eq!(t.get("rampart.limit.current"), 1.0);
    for h in [one, two, one_waits] {
        h.await.unwrap().unwrap();
    }
    t.update();
    assert_eq!(t.get("rampart.limit.in_flight"), 0.0);
    assert_eq!(t.get("rampart.limit.waiting"), 0.0);
    assert_eq!(t.get("rampart.limit.shed"), 1.0);
    assert_eq!(t.get("rampart.limit.keys.rejected"), 1.0);
    assert_eq!(t.expired("max_wait"), 0.0);
    assert_eq!(t.waits, [0.020]);
    // Idle keys stay tracked until the map needs room (as `stats().keys`).
    assert_eq!(t.get("rampart.limit.keys"), 2.0);
    svc.clone().oneshot((3, 1)).await.unwrap();
    let keys = layer.stats().keys;
    assert_eq!(t.update().get("rampart.limit.keys"), keys as f64);
    let st = layer.stats();
    assert_eq!((st.shed, st.key_map_full), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn two_limits_with_one_name_add_up_and_the_series_returns_to_zero_when_both_are_dropped() {
    let cap = MetricsCapture::new();
    let mut t = Tally::new(&cap, "shared");
    let a = cap.install(|| ConcurrencyLimitLayer::new(3).name("shared"));
    let sa = cap.install(|| a.layer(mock()));
    // A second layer of the same name adds its limit (it used to set the
    // series to its own limit, hiding the first one's). No snapshot in
    // between: a snapshot resets the recorder's gauges and would hide it.
    let b = cap.install(|| ConcurrencyLimitLayer::new(5).name("shared"));
    let svc = cap.install(|| b.layer(mock()));
    assert_eq!(t.update().get("rampart.limit.current"), 8.0);
    svc.clone().oneshot(1).await.unwrap();
    drop((a, sa));
    assert_eq!(t.update().get("rampart.limit.current"), 5.0);
    drop((b, svc));
    assert_eq!(t.update().get("rampart.limit.current"), 0.0);
    assert_eq!(t.get("rampart.limit.in_flight"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn an_adaptive_limit_moves_only_its_own_share_of_a_shared_name() {
    let cap = MetricsCapture::new();
    let mut t = Tally::new(&cap, "mixed");
    let fixed = cap.install(|| ConcurrencyLimitLayer::new(10).name("mixed"));
    let fixed_svc = cap.install(|| fixed.layer(mock()));
    let adaptive = cap.install(|| {
        ConcurrencyLimitLayer::builder(AimdConfig {
            initial_limit: 4,
            min_limit: 2,
            max_limit: 10,
            ..AimdConfig::default()
        })
        .sample_window(None)
        .name("mixed")
        .build()
        .unwrap()
    });
    let svc = cap.install(|| {
        adaptive.layer(MockService::<bool, ()>::new(|_| {
            MockReply::err("overloaded")
        }))
    });
    assert_eq!(t.update().get("rampart.limit.current"), 14.0);
    svc.clone().oneshot(true).await.unwrap_err(); // 4 -> 3
    assert_eq!(adaptive.limit(), 3);
    assert_eq!(t.update().get("rampart.limit.current"), 13.0);
    // The adaptive layer dropped takes its current limit (3) off.
    drop((adaptive, svc));
    assert_eq!(t.update().get("rampart.limit.current"), 10.0);
    drop((fixed, fixed_svc));
    assert_eq!(t.update().get("rampart.limit.current"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn renaming_a_limit_moves_its_share_and_leaves_the_other_layers_of_the_old_name() {
    let cap = MetricsCapture::new();
    let (unnamed, renamed) = cap.install(|| {
        (
            ConcurrencyLimitLayer::new(2).layer(mock()),
            // Registered under "moved" only, when it makes its service.
            ConcurrencyLimitLayer::new(7).name("moved").layer(mock()),
        )
    });
    // One snapshot for both names (each snapshot drains every series).
    let s = cap.snapshot();
    assert_eq!(s.gauge("rampart.limit.current", "moved"), Some(7.0));
    // The unnamed layer's 2 stays under "default" (the rename used to set
    // that series to 0).
    assert_eq!(s.gauge("rampart.limit.current", "default"), Some(2.0));
    drop((unnamed, renamed));
    // Deltas since the snapshot: both series back to 0.
    let s = cap.snapshot();
    assert_eq!(s.gauge("rampart.limit.current", "moved"), Some(-7.0));
    assert_eq!(s.gauge("rampart.limit.current", "default"), Some(-2.0));
}

#[tokio::test(start_paused = true)]
async fn keyed_limits_with_one_name_add_up_keys_and_limits_and_give_them_back_when_dropped() {
    let cap = MetricsCapture::new();
    let mut t = Tally::new(&cap, "tenants");
    let build = || {
        KeyedConcurrencyLimitLayer::builder(|req: &(u8, u64)| req.0, 2)
            .max_keys(10)
            .name("tenants")
            .build()
            .unwrap()
    };
    let a = cap.install(build);
    let sa = cap.install(|| a.layer(mock_keyed()));
    sa.clone().oneshot((1, 1)).await.unwrap();
    sa.clone().oneshot((2, 1)).await.unwrap();
    // A second map of the same name starts empty: it used to set the keys
    // series to 0 (no snapshot before it: that would hide the `set`).
    let b = cap.install(build);
    let sb = cap.install(|| b.layer(mock_keyed()));
    t.update();
    assert_eq!(t.get("rampart.limit.keys"), 2.0);
    assert_eq!(
        t.get("rampart.limit.current"),
        4.0,
        "the limits per key add up"
    );
    sb.clone().oneshot((1, 1)).await.unwrap();
    t.update();
    assert_eq!(t.get("rampart.limit.keys"), 3.0);
    assert_eq!(
        t.get("rampart.limit.current"),
        4.0,
        "the limits per key add up"
    );
    drop((a, sa));
    t.update();
    assert_eq!(t.get("rampart.limit.keys"), 1.0);
    assert_eq!(t.get("rampart.limit.current"), 2.0);
    drop((b, sb));
    t.update();
    assert_eq!(t.get("rampart.limit.keys"), 0.0);
    assert_eq!(t.get("rampart.limit.current"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn renaming_a_keyed_limit_moves_its_share_of_keys_and_limit() {
    let cap = MetricsCapture::new();
    let (other, layer) = cap.install(|| {
        (
            KeyedConcurrencyLimitLayer::new(|req: &(u8, u64)| req.0, 3),
            KeyedConcurrencyLimitLayer::new(|req: &(u8, u64)| req.0, 5).name("renamed"),
        )
    });
    let svc = cap.install(|| other.layer(mock_keyed()));
    let renamed_svc = cap.install(|| layer.layer(mock_keyed()));
    svc.clone().oneshot((1, 1)).await.unwrap();
    let s = cap.snapshot();
    assert_eq!(s.gauge("rampart.limit.current", "default"), Some(3.0));
    assert_eq!(s.gauge("rampart.limit.keys", "default"), Some(1.0));
    assert_eq!(s.gauge("rampart.limit.current", "renamed"), Some(5.0));
    assert_eq!(s.gauge("rampart.limit.keys", "renamed"), Some(0.0));
    // Deltas since the snapshot: the renamed layer's series back to 0,
    // the unnamed one's keeps its share until it is dropped.
    drop((layer, renamed_svc));
    let s = cap.snapshot();
    assert_eq!(s.gauge("rampart.limit.current", "renamed"), Some(-5.0));
    assert_eq!(s.gauge("rampart.limit.current", "default"), Some(0.0));
    drop((other, svc));
    let s = cap.snapshot();
    assert_eq!(s.gauge("rampart.limit.current", "default"), Some(-3.0));
    assert_eq!(s.gauge("rampart.limit.keys", "default"), Some(-1.0));
}

/// A keyed mock answering `(key, ms)` after `ms` milliseconds.
fn mock_keyed() -> MockService<(u8, u64), u64> {
    MockService::new(|(_, ms): (u8, u64)| {
        MockReply::ok(ms).after(std::time::Duration::from_millis(ms))
    })
}
