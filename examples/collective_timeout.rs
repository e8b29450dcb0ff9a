//! Collective timeout: the article's `asyncio.wait(tasks, timeout=2.0)` over
//! a tower service (`rampart::fanout::wait`).
//!
//! Three operations, fast (1 s), medium (3 s) and slow (5 s), under a 2 s
//! collective timeout: one completes, two do not. In the article the two
//! pending tasks are still running when `wait` returns and must be
//! cancelled by hand (forgetting to is a leak); here they are already
//! cancelled when `wait` returns — their futures dropped, their cleanup run
//! (printed as it happens) — and reported as not done.
//!
//! Run it with `cargo run --example collective_timeout`: time is scaled
//! down ten times (100 ms for the article's second); `-- --article-time`
//! runs the article's timings (2 s).
//!
//! Output:
//!
//! ```text
//! fast done
//!   slow: cancelled, cleaning up
//!   medium: cancelled, cleaning up
//! Completed: 1
//! Pending: 2
//!   fast: fast done
//!   medium: not done (cancelled: the collective timeout passed)
//!   slow: not done (cancelled: the collective timeout passed)
//! Still running after the wait: 0
//! ```
//!
//! The example exits non-zero if that is not what happened.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rampart::BoxError;
use rampart::fanout::{Outcome, Reason, wait};
use tower::service_fn;

/// Runs while alive; says so when dropped before finishing (the article's
/// `except asyncio.CancelledError` cleanup).
struct Running {
    name: &'static str,
    finished: bool,
    gauge: Arc<AtomicUsize>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.gauge.fetch_sub(1, Ordering::SeqCst);
        if !self.finished {
            println!("  {}: cancelled, cleaning up", self.name);
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let article_time = std::env::args().any(|a| a == "--article-time");
    let second = if article_time {
        Duration::from_secs(1)
    } else {
        Duration::from_millis(100)
    };
    let running = Arc::new(AtomicUsize::new(0));
    let gauge = running.clone();
    // async def operation(name, delay)
    let operation = service_fn(move |(name, delay): (&'static str, u32)| {
        gauge.fetch_add(1, Ordering::SeqCst);
        let guard = Running {
            name,
            finished: false,
            gauge: gauge.clone(),
        };
        async move {
            let mut guard = guard; // the whole guard lives in the future
            tokio::time::sleep(second * delay).await;
            guard.finished = true;
            println!("{name} done");
            Ok::<_, Infallible>(format!("{name} done"))
        }
    });
    let tasks = [("fast", 1), ("medium", 3), ("slow", 5)];

    let started = Instant::now();
    let result = wait(operation, tasks, second * 2).await;
    let took = started.elapsed();

    println!("Completed: {}", result.completed());
    println!("Pending: {}", result.not_done());
    for ((name, _), outcome) in tasks.iter().zip(&result) {
        match outcome {
            Outcome::Ok(r) => println!("  {name}: {r}"),
            Outcome::Err(e) => match *e {},
            Outcome::NotDone(n) => println!("  {name}: not done ({n})"),
        }
    }
    let still = running.load(Ordering::SeqCst);
    println!("Still running after the wait: {still}");
    println!(
        "(waited {} ms for a {} ms timeout)",
        took.as_millis(),
        (second * 2).as_millis()
    );

    let cut_off = result
        .iter()
        .filter_map(Outcome::not_done)
        .all(|n| n.reason() == Reason::Timeout && n.was_sent());
    if result.completed() != 1 || result.not_done() != 2 || !cut_off || still != 0 {
        return Err(
            "expected 1 completed and 2 cancelled at the timeout, none left running".into(),
        );
    }
    Ok(())
}
