//! Error handling: the article's `asyncio.gather(..., return_exceptions=True)`
//! over a tower service (`rampart::fanout::gather`).
//!
//! `risky_operation` waits a second and fails half the time with "Something
//! went wrong". Option 1 calls it once and catches the error; option 2
//! gathers two calls with errors as values and prints each task's outcome,
//! in the order the tasks were given. Then what the article cannot say in
//! one line: gather 10 calls, at most 3 at once, fail fast, or take the
//! first success.
//!
//! Run it with `cargo run --example error_handling` (the second is scaled
//! down to 100 ms; `-- --article-time` waits the article's full second;
//! `-- --seed N` picks other coin flips, the default shows one failure and
//! one success in option 2).
//!
//! The example exits non-zero if an outcome does not match the coin flips
//! that decided it.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rampart::BoxError;
use rampart::fanout::{Failure, FanOutLayer, Outcome, gather};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tower::{Layer, ServiceExt, service_fn};

/// Python's `ValueError("Something went wrong")`.
#[derive(Debug, Clone)]
struct ValueError(&'static str);

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ValueError {}

/// The coin flips, in call order (true = fails), for the checks.
type Flips = Arc<Mutex<Vec<bool>>>;

/// `risky_operation` as a service: waits `pause`, then fails with
/// probability 0.5 (a seeded generator: the same run every time).
fn risky_operation(
    pause: Duration,
    seed: u64,
) -> (
    impl tower::Service<(), Response = &'static str, Error = ValueError, Future: Send> + Clone,
    Flips,
) {
    let rng = Arc::new(Mutex::new(SmallRng::seed_from_u64(seed)));
    let flips = Flips::default();
    let seen = flips.clone();
    let svc = service_fn(move |()| {
        let fails = rng.lock().unwrap().random::<f64>() < 0.5;
        seen.lock().unwrap().push(fails);
        async move {
            tokio::time::sleep(pause).await;
            if fails {
                Err(ValueError("Something went wrong"))
            } else {
                Ok("success")
            }
        }
    });
    (svc, flips)
}

fn arg_value(name: &str) -> Option<String> {
    let mut args = std::env::args();
    args.by_ref().find(|a| a == name)?;
    args.next()
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let article_time = std::env::args().any(|a| a == "--article-time");
    let pause = if article_time {
        Duration::from_secs(1)
    } else {
        Duration::from_millis(100)
    };
    let seed = arg_value("--seed").map_or(Ok(7), |s| s.parse::<u64>())?;
    let (svc, flips) = risky_operation(pause, seed);

    // Option 1: try/except directly.
    match svc.clone().oneshot(()).await {
        Ok(result) => println!("Option 1: {result}"),
        Err(e) => println!("Caught: {e}"),
    }

    // Option 2: gather with return_exceptions=True.
    let started = Instant::now();
    let results = gather(svc.clone(), [(), ()]).await;
    let took = started.elapsed();
    for (i, result) in results.iter().enumerate() {
        match result {
            Outcome::Ok(r) => println!("Task {i} succeeded: {r}"),
            Outcome::Err(e) => println!("Task {i} failed: {e}"),
            Outcome::NotDone(n) => println!("Task {i} not done: {n}"),
        }
    }
    println!(
        "  (both ran at once: {} ms for two {} ms operations)",
        took.as_millis(),
        pause.as_millis()
    );
    let expected: Vec<bool> = flips.lock().unwrap()[1..3].to_vec();
    let got: Vec<bool> = results.iter().map(Outcome::is_err).collect();
    if got != expected {
        return Err(format!("outcomes {got:?} do not match the coin flips {expected:?}").into());
    }

    // Beyond the article: ten calls, at most three at once, three ways.
    println!();
    let three = NonZeroUsize::new(3).expect("non-zero");
    let all = FanOutLayer::new()
        .concurrency(three)
        .layer(svc.clone())
        .oneshot(vec![(); 10])
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "10 calls, at most 3 at once, errors as values: {} succeeded, {} failed",
        all.succeeded(),
        all.failed()
    );
    match FanOutLayer::new()
        .fail_fast()
        .concurrency(three)
        .layer(svc.clone())
        .oneshot(vec![(); 10])
        .await
    {
        Ok(g) => println!("fail-fast: all {} succeeded", g.succeeded()),
        Err(e) => {
            let g = e.gathered();
            println!(
                "fail-fast: stopped at task {}'s error ({}); {} succeeded, {} cancelled or never sent",
                g.first_error_index().unwrap_or_default(),
                g.first_error().map_or(String::new(), ToString::to_string),
                g.succeeded(),
                g.not_done()
            );
            if e.failure() != Failure::Unreachable {
                return Err(format!("fail-fast failed with {:?}", e.failure()).into());
            }
        }
    }
    match FanOutLayer::new()
        .first_ok()
        .concurrency(three)
        .layer(svc)
        .oneshot(vec![(); 10])
        .await
    {
        Ok(g) => {
            let (i, r) = g.oks().next().ok_or("first-ok returned no success")?;
            println!(
                "first-ok: task {i} won ({r}) after {} failure(s); {} cancelled or never sent",
                g.failed(),
                g.not_done()
            );
        }
        Err(e) => println!("first-ok: every call failed ({e})"),
    }
    Ok(())
}
