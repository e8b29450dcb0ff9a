//! Adaptive limits against a simulated server, in paused time.

mod common;

use common::{MS, until};
use rampart_core::Error;
use rampart_core::Outcome;
use rampart_core::classify::{ErrorRef, classify_fn};
use rampart_limit::{
    AimdConfig, ConcurrencyLimitLayer, Gradient2Config, Limit, LimitAlgorithm, Sample,
    SampleWindow, VegasConfig,
};
use rampart_testkit::{Gate, MockReply, MockService};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::{Layer, ServiceExt, service_fn};

/// A server that works on at most `capacity` requests at once (10 ms each),
/// queues up to `queue` more, and refuses the rest — or everything while
/// `failing`.
#[derive(Clone)]
struct Server {
    slots: Arc<tokio::sync::Semaphore>,
    inside: Arc<AtomicUsize>,
    capacity: usize,
    queue: usize,
    failing: Arc<AtomicBool>,
}

const CAPACITY: usize = 20;
const QUEUE: usize = 10;
const WORK: Duration = Duration::from_millis(10);

impl Server {
    fn new(capacity: usize, queue: usize) -> Server {
        Server {
            slots: Arc::new(tokio::sync::Semaphore::new(capacity)),
            inside: Arc::default(),
            capacity,
            queue,
            failing: Arc::default(),
        }
    }

    async fn handle(self, n: u32) -> Result<u32, Error> {
        struct Leave(Arc<AtomicUsize>);
        impl Drop for Leave {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        let _leave = Leave(Arc::clone(&self.inside));
        if self.failing.load(Ordering::SeqCst) || now > self.capacity + self.queue {
            return Err(Error::overloaded(None));
        }
        let _slot = self.slots.acquire().await.expect("never closed");
        tokio::time::sleep(WORK).await;
        Ok(n)
    }
}

fn window() -> SampleWindow {
    SampleWindow {
        min_time: 100 * MS,
        max_time: 100 * MS,
        ..SampleWindow::default()
    }
}

/// Drives `4 × CAPACITY` closed-loop callers (each backs off 1 ms after an
/// error) through an adaptive limit; returns the limit every 100 ms per
/// phase: healthy for 10 s, failing for 2 s, healthy again for 5 s.
async fn simulate(limit: Limit, server: Server) -> [Vec<usize>; 3] {
    let layer = ConcurrencyLimitLayer::builder(limit)
        .sample_window(Some(window()))
        .build()
        .unwrap();
    let s = server.clone();
    let svc = layer.layer(service_fn(move |n: u32| s.clone().handle(n)));
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..4 * CAPACITY)
        .map(|_| {
            let svc = svc.clone();
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    if svc.clone().oneshot(1).await.is_err() {
                        tokio::time::sleep(MS).await;
                    }
                }
            })
        })
        .collect();
    let mut phases: [Vec<usize>; 3] = Default::default();
    for (phase, (secs, failing)) in [(10, false), (2, true), (5, false)].into_iter().enumerate() {
        server.failing.store(failing, Ordering::SeqCst);
        for _ in 0..secs * 10 {
            tokio::time::sleep(100 * MS).await;
            phases[phase].push(layer.limit());
        }
    }
    stop.store(true, Ordering::SeqCst);
    for c in callers {
        c.await.unwrap();
    }
    assert_eq!(layer.stats().in_flight, 0);
    phases
}

/// Healthy: the limit settles between the server's capacity and its
/// capacity plus queue; failing: it collapses; healthy again: it recovers.
fn assert_converges_and_backs_off(name: &str, [healthy, failing, recovered]: [Vec<usize>; 3]) {
    let settled = &healthy[50..];
    let (lo, hi) = (CAPACITY * 4 / 5, (CAPACITY + QUEUE) * 11 / 10);
    for &l in settled {
        assert!(
            (lo..=hi).contains(&l),
            "{name}: limit {l} outside {lo}..={hi} after settling: {healthy:?}"
        );
    }
    let mean = settled
        .iter()
        .map(|&l| f64::from(u32::try_from(l).unwrap()))
        .sum::<f64>()
        / settled.len() as f64;
    assert!(
        (CAPACITY as f64..=(CAPACITY + QUEUE + 1) as f64).contains(&mean),
        "{name}: mean {mean} not near capacity {CAPACITY}..{}",
        CAPACITY + QUEUE
    );
    let last = *failing.last().unwrap();
    assert!(
        last <= 5,
        "{name}: limit {last} after 2 s of overload: {failing:?}"
    );
    let back = *recovered.last().unwrap();
    assert!(
        back >= lo,
        "{name}: limit {back} after recovery: {recovered:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn aimd_converges_near_capacity_of_a_simulated_server_and_backs_off_on_overload() {
    let aimd = AimdConfig {
        initial_limit: 5,
        min_limit: 1,
        max_limit: 1000,
        timeout: 3 * WORK / 2,
        ..AimdConfig::default()
    };
    let phases = simulate(aimd.into(), Server::new(CAPACITY, QUEUE)).await;
    assert_converges_and_backs_off("aimd", phases);
}

#[tokio::test(start_paused = true)]
async fn vegas_converges_near_capacity_of_a_simulated_server_and_backs_off_on_overload() {
    let vegas = VegasConfig {
        initial_limit: 5,
        seed: Some(7),
        ..VegasConfig::default()
    };
    let phases = simulate(vegas.into(), Server::new(CAPACITY, QUEUE)).await;
    assert_converges_and_backs_off("vegas", phases);
}

#[tokio::test(start_paused = true)]
async fn vegas_finds_capacity_from_latency_alone() {
    // A server that queues without bound: no drops, only rising latency.
    let vegas = VegasConfig {
        initial_limit: 5,
        seed: Some(7),
        ..VegasConfig::default()
    };
    let [healthy, _, _] = simulate(vegas.into(), Server::new(CAPACITY, usize::MAX / 2)).await;
    for &l in &healthy[50..] {
        assert!(
            (CAPACITY..=CAPACITY * 3 / 2).contains(&l),
            "limit {l}: {healthy:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn gradient2_converges_near_capacity_of_a_simulated_server_and_backs_off_on_overload() {
    let g = Gradient2Config {
        initial_limit: 5,
        min_limit: 1,
        max_limit: 1000,
        ..Gradient2Config::default()
    };
    let phases = simulate(g.into(), Server::new(CAPACITY, QUEUE)).await;
    assert_converges_and_backs_off("gradient2", phases);
}

/// Plays back a list of limits, one per sample, and records the samples.
#[derive(Debug)]
struct Scripted {
    limits: Vec<usize>,
    current: usize,
    seen: Arc<Mutex<Vec<Sample>>>,
}

impl LimitAlgorithm for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }
    fn limit(&self) -> usize {
        self.current
    }
    fn update(&mut self, s: Sample) -> usize {
        self.seen.lock().unwrap().push(s);
        if !self.limits.is_empty() {
            self.current = self.limits.remove(0);
        }
        self.current
    }
}

#[tokio::test(start_paused = true)]
async fn a_shrunk_limit_admits_nobody_until_in_flight_falls_below_it() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let algo = Scripted {
        limits: vec![2],
        current: 4,
        seen: Arc::clone(&seen),
    };
    let layer = ConcurrencyLimitLayer::with_algorithm(algo)
        .sample_window(None)
        .build()
        .unwrap();
    assert_eq!(layer.limit(), 4);
    let gates: Vec<Gate> = (0..4).map(|_| Gate::new()).collect();
    let mock = MockService::<usize, usize>::new({
        let gates = gates.clone();
        move |n| match gates.get(n) {
            Some(g) => MockReply::ok(n).after_gate(g),
            None => MockReply::ok(n),
        }
    });
    let svc = layer.layer(mock.clone());
    let held: Vec<_> = (0..4)
        .map(|n| tokio::spawn(svc.clone().oneshot(n)))
        .collect();
    until(|| mock.inflight() == 4, "four in flight").await;
    let late = tokio::spawn(svc.clone().oneshot(9));
    until(|| layer.stats().waiting == 1, "a fifth waits").await;

    gates[0].open(); // its sample shrinks the limit to 2
    held.into_iter().next().unwrap().await.unwrap().unwrap();
    assert_eq!(layer.limit(), 2);
    assert_eq!((layer.stats().in_flight, layer.stats().waiting), (3, 1));
    gates[1].open();
    until(|| layer.stats().in_flight == 2, "one more done").await;
    assert_eq!(
        layer.stats().waiting,
        1,
        "2 in flight, limit 2: still waiting"
    );
    gates[2].open();
    assert_eq!(late.await.unwrap().unwrap(), 9, "admitted below the limit");
    assert!(mock.peak_inflight() <= 4);
    let first = seen.lock().unwrap()[0];
    assert_eq!(first.in_flight, 1, "the first call took the first permit");
    assert!(!first.dropped);
    gates[3].open();
}

#[tokio::test(start_paused = true)]
async fn classify_decides_what_counts_as_a_drop() {
    // 503 responses are drops, 404 says nothing, 200 is a latency sample.
    let judge = classify_fn(|r: Result<&u16, ErrorRef<'_>>| match r {
        Ok(503) => Outcome::Retryable { after: None },
        Ok(404) | Err(_) => Outcome::Fatal,
        Ok(_) => Outcome::Success,
    });
    let aimd = AimdConfig {
        initial_limit: 10,
        min_limit: 1,
        ..AimdConfig::default()
    };
    let layer = ConcurrencyLimitLayer::builder(aimd)
        .sample_window(None)
        .classify(judge)
        .build()
        .unwrap();
    let mock = MockService::<u16, u16>::new(|status| MockReply::ok(status).after(MS));
    let svc = layer.layer(mock);
    for _ in 0..5 {
        svc.clone().oneshot(404).await.unwrap();
    }
    assert_eq!(layer.limit(), 10, "fatal results are not samples");
    svc.clone().oneshot(503).await.unwrap();
    assert_eq!(layer.limit(), 9, "a 503 is a drop");
    let e = ConcurrencyLimitLayer::builder(Limit::Fixed(1))
        .sample_window(Some(SampleWindow {
            min_samples: 0,
            ..SampleWindow::default()
        }))
        .build()
        .unwrap_err();
    assert_eq!((e.field(), e.value()), ("min_samples", "0"));
}
