//! Producer/consumer: the article's `asyncio.Queue(maxsize=5)` with two
//! consumers, as a rampart queue in front of a service.
//!
//! Run it with `cargo run --example producer_consumer` (about 2 s: the
//! article's timings divided by 5).
//!
//! Part 1 is the article's scenario: a producer puts 10 items into a queue of
//! 5, one every 0.1 s; two consumers (the queue's workers) take 0.2 s per
//! item. The article ends its producer with one `None` sentinel, which stops
//! one consumer and leaves the other blocked on `queue.get()` forever; here
//! `close()` stops accepting, the queued items are finished, and *both*
//! consumers stop.
//!
//! Part 2 is a burst of 10 calls against a queue of 3 with one worker:
//! waiting for space (backpressure: every call is served, later ones wait)
//! against shedding (1 running + 3 queued are served, 6 refused at once with
//! `Overloaded`, which rampart maps to 503 + `Retry-After`).
//!
//! Part 3 is a job that panics: it fails alone with an error, the worker
//! logs it and goes on with the next job.
//!
//! The example exits non-zero if any part does not behave as described.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use rampart::queue::{Panicked, Queue, QueueLayer};
use rampart::{BoxError, ErrorKind};
use tower::{Layer, Service, ServiceExt, service_fn};

/// A consumer: each worker gets its own clone, and each clone its own name.
struct Consumer {
    name: String,
    next_id: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<(String, String)>>>,
}

impl Consumer {
    fn new(next_id: Arc<AtomicUsize>, log: Arc<Mutex<Vec<(String, String)>>>) -> Self {
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        Consumer {
            name: format!("consumer-{id}"),
            next_id,
            log,
        }
    }
}

impl Clone for Consumer {
    fn clone(&self) -> Self {
        Consumer::new(self.next_id.clone(), self.log.clone())
    }
}

impl Service<String> for Consumer {
    type Response = ();
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<(), BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, item: String) -> Self::Future {
        let (name, log) = (self.name.clone(), self.log.clone());
        Box::pin(async move {
            println!("  {name} consumed: {item}");
            log.lock().unwrap().push((name, item));
            tokio::time::sleep(Duration::from_millis(200)).await; // processing
            Ok(())
        })
    }
}

async fn article() -> Result<bool, BoxError> {
    println!("Part 1: 10 items, a queue of 5, 2 consumers");
    let log = Arc::new(Mutex::new(Vec::new()));
    let consumers = Consumer::new(Arc::new(AtomicUsize::new(1)), log.clone());
    let queue: Queue<String, ()> = QueueLayer::new(5, 2).layer(consumers);
    // The producer: `submit` waits while the queue is full, like
    // `await queue.put(item)`.
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let item = format!("item-{i}");
        queue.submit(item.clone()).await?;
        println!("  Produced: {item}");
    }
    // Instead of one `None` for two consumers: close, finish what is queued,
    // stop every worker.
    queue.close();
    tokio::time::timeout(Duration::from_secs(5), queue.stopped()).await?;
    let stats = queue.stats();
    let log = log.lock().unwrap();
    let by = |n: &str| log.iter().filter(|(c, _)| c == n).count();
    println!(
        "  consumed {} items (consumer-1: {}, consumer-2: {}); workers still running: {}",
        log.len(),
        by("consumer-1"),
        by("consumer-2"),
        stats.live_workers
    );
    Ok(log.len() == 10
        && by("consumer-1") > 0
        && by("consumer-2") > 0
        && stats.live_workers == 0
        && stats.completed == 10)
}

/// Sends 10 calls through `queue`: one, and once the worker runs it, nine
/// more at once; returns (served, shed).
async fn burst(queue: &Queue<u32, u32>) -> Result<(usize, usize), BoxError> {
    let call = |i| {
        let q = queue.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            (q.oneshot(i).await, started.elapsed())
        })
    };
    let mut calls = vec![call(0)];
    while queue.stats().running == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    calls.extend((1..10).map(call));
    let (mut served, mut shed) = (0, 0);
    let mut line = String::new();
    for call in calls {
        match call.await? {
            (Ok(_), took) => {
                served += 1;
                let _ = write!(line, " ok@{}ms", took.as_millis());
            }
            (Err(e), _) if e.kind() == ErrorKind::Overloaded => {
                shed += 1;
                line += " shed";
            }
            (Err(e), _) => return Err(e.into()),
        }
    }
    println!("   {line}");
    Ok((served, shed))
}

async fn backpressure_vs_shed() -> Result<bool, BoxError> {
    println!();
    println!("Part 2: a burst of 10 calls, a queue of 3, 1 worker, 50 ms per call");
    let work = service_fn(|n: u32| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok::<_, BoxError>(n)
    });
    println!("  waiting for space (backpressure):");
    let waiting: Queue<u32, u32> = QueueLayer::new(3, 1).layer(work);
    let (served_w, shed_w) = burst(&waiting).await?;
    println!("  shedding when full:");
    let shedding: Queue<u32, u32> = QueueLayer::new(3, 1).shed().layer(work);
    let (served_s, shed_s) = burst(&shedding).await?;
    println!(
        "  backpressure: {served_w} served, {shed_w} shed; shedding: {served_s} served, {shed_s} shed"
    );
    Ok(served_w == 10 && shed_w == 0 && served_s == 4 && shed_s == 6)
}

async fn panicking_job() -> Result<bool, BoxError> {
    println!();
    println!("Part 3: job 3 of 5 panics");
    let queue: Queue<u32, u32> = QueueLayer::new(5, 1).layer(service_fn(|n: u32| async move {
        assert!(n != 3, "job {n} hit a bug");
        Ok::<_, BoxError>(n * 10)
    }));
    let mut ok = 0;
    let mut failed_alone = false;
    for n in 1..=5 {
        match queue.clone().oneshot(n).await {
            Ok(v) => {
                ok += 1;
                println!("  job {n}: ok ({v})");
            }
            Err(e) => {
                let why = e.find_source::<Panicked>().map(Panicked::message);
                println!("  job {n}: failed: {e} ({why:?})");
                failed_alone = n == 3 && e.kind() == ErrorKind::Inner && why.is_some();
            }
        }
    }
    let stats = queue.stats();
    println!(
        "  {ok} jobs ok, {} panicked, workers still serving: {}",
        stats.panicked, stats.live_workers
    );
    Ok(ok == 4 && failed_alone && stats.panicked == 1 && stats.live_workers == 1)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The panic in part 3 is caught and turned into that job's error; keep
    // the default hook's message short.
    std::panic::set_hook(Box::new(|info| {
        println!("  (the queue caught a panic: {info})");
    }));
    let results = [
        article().await?,
        backpressure_vs_shed().await?,
        panicking_job().await?,
    ];
    println!();
    if results.iter().all(|ok| *ok) {
        println!("every part behaved as expected");
        Ok(())
    } else {
        println!("some part did not behave as expected: {results:?}");
        std::process::exit(1);
    }
}
