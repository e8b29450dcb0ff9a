//! The rampart tour: every pattern working against a local flaky server, with
//! a readable report.
//!
//! Run it with `cargo run --example tour`.

mod breaker;
mod cancel;
mod classify;
mod context;
mod fanout;
mod limit;
mod rate;

mod queue;
mod retry;
mod sync;
mod timeout;

use rampart::BoxError;
use std::future::Future;
use std::time::Instant;

/// Prints a section heading.
pub(crate) fn heading(title: &str) {
    println!();
    println!("== {title} ==");
}

/// Prints one line of a section's report.
pub(crate) fn line(text: impl std::fmt::Display) {
    println!("   {text}");
}

async fn section<F>(name: &str, f: F) -> bool
where
    F: Future<Output = Result<(), BoxError>>,
{
    let started = Instant::now();
    match f.await {
        Ok(()) => {
            line(format_args!("ok ({} ms)", started.elapsed().as_millis()));
            true
        }
        Err(e) => {
            line(format_args!("FAILED: {name}: {e}"));
            false
        }
    }
}

#[tokio::main]
async fn main() {
    println!("rampart tour: resilience patterns as tower layers, against local flaky servers");
    let results = [
        section("classification and error mapping", classify::run()).await,
        section("retry", retry::run()).await,
        section("timeouts and deadlines", timeout::run()).await,
        section("concurrency limits", limit::run()).await,
        section("request id and context", context::run()).await,
        section("cancellation and drain", cancel::run()).await,
        section("rate limiting", rate::run()).await,
        section("keyed lock and single-flight", sync::run()).await,
        section("circuit breaker", breaker::run()).await,
        section("fan-out", fanout::run()).await,
        section("queue", queue::run()).await,
    ];
    let failed = results.iter().filter(|ok| !**ok).count();
    println!();
    if failed == 0 {
        println!("tour finished: every section ok");
    } else {
        println!("tour finished: {failed} section(s) failed");
        std::process::exit(1);
    }
}
