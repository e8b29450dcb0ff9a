//! Semaphore: the article's `asyncio.Semaphore(3)` as a tower layer, against
//! real loopback servers.
//!
//! Run it with `cargo run --example semaphore` (about 6 s: the article's
//! requests take half a second each).
//!
//! Part 1 is the article's scenario: 10 requests, at most 3 at once, each
//! taking 0.5 s. The server (the inner service) reports the most requests it
//! ever had at once: 3; the whole batch takes about 2 s (4 waves).
//!
//! Part 2 is what a server does under a burst it cannot wait out: a
//! shedding limit answers the excess at once with `503` and `Retry-After`
//! (rampart's `HandleErrorsLayer` maps the limit's `Overloaded` error).
//!
//! Part 3 is what a fixed number cannot do: a server whose latency grows
//! with its load (10 ms + 1 ms per request in flight) has no obvious "right"
//! limit. An adaptive (Vegas) limit starts at 1 with 48 eager callers behind
//! it and finds one where latency starts to climb, printed as it goes
//! with the calls in flight at the server, the callers waiting in line, and
//! the latency of the calls that got through.
//!
//! The example exits non-zero if part 1 or part 2 does not behave as above.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rampart::limit::{ConcurrencyLimitLayer, SampleWindow, VegasConfig};
use rampart::{BoxError, HandleErrorsLayer};
use rampart_testkit::FlakyServer;
use tower::{Layer, Service, ServiceExt, service_fn};

/// A hyper client that reads the whole body: `Response<Bytes>` (a body with
/// a `Default`, as `HandleErrorsLayer` needs for the responses it makes).
fn http_client()
-> impl Service<Request<Empty<Bytes>>, Response = Response<Bytes>, Error = BoxError, Future: Send>
+ Clone
+ Send {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    service_fn(move |req| {
        let fut = client.request(req);
        async move {
            let (parts, body) = fut.await?.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, BoxError>(Response::from_parts(parts, body))
        }
    })
}

/// [`http_client`], counting the calls and adding up their latency (µs).
fn timed(
    seen: Arc<(AtomicU64, AtomicU64)>,
) -> impl Service<Request<Empty<Bytes>>, Response = Response<Bytes>, Error = BoxError, Future: Send>
+ Clone
+ Send {
    let client = http_client();
    service_fn(move |req: Request<Empty<Bytes>>| {
        let (fut, seen, started) = (client.clone().oneshot(req), seen.clone(), Instant::now());
        async move {
            let res = fut.await;
            let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            seen.0.fetch_add(1, Ordering::Relaxed);
            seen.1.fetch_add(us, Ordering::Relaxed);
            res
        }
    })
}

fn get(server: &FlakyServer, path: &str) -> Result<Request<Empty<Bytes>>, BoxError> {
    Ok(Request::get(server.uri(path)).body(Empty::new())?)
}

async fn article() -> Result<bool, BoxError> {
    println!("Part 1: 10 requests, Semaphore(3), 0.5 s each");
    let server = FlakyServer::builder()
        .latency(Duration::from_millis(500))
        .start()
        .await?;
    let limit = ConcurrencyLimitLayer::new(3);
    let svc = limit.layer(http_client());
    let started = Instant::now();
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let req = get(&server, &format!("/item/{i}"));
            let svc = svc.clone();
            tokio::spawn(async move { svc.oneshot(req?).await.map_err(BoxError::from) })
        })
        .collect();
    let mut fetched = 0;
    for call in calls {
        if call.await??.status().is_success() {
            fetched += 1;
        }
    }
    let elapsed = started.elapsed();
    let peak = server.peak_inflight();
    println!("  fetched {fetched} URLs in {:.2} s", elapsed.as_secs_f64());
    println!("  most requests the server had at once: {peak}");
    server.shutdown().await;
    Ok(fetched == 10 && peak == 3 && (1.9..3.0).contains(&elapsed.as_secs_f64()))
}

async fn burst() -> Result<bool, BoxError> {
    println!();
    println!("Part 2: a burst of 10 against a shedding limit of 3");
    let server = FlakyServer::builder()
        .latency(Duration::from_millis(200))
        .start()
        .await?;
    let limit = ConcurrencyLimitLayer::builder(3)
        .shed()
        .retry_after(Some(Duration::from_secs(2)))
        .build()?;
    let svc = HandleErrorsLayer::new().layer(limit.layer(http_client()));
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let req = get(&server, &format!("/burst/{i}"));
            let svc = svc.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let res = svc.oneshot(req?).await?;
                Ok::<_, BoxError>((res, started.elapsed()))
            })
        })
        .collect();
    let (mut ok, mut shed) = (0, 0);
    for (i, call) in calls.into_iter().enumerate() {
        let (res, took) = call.await??;
        let retry_after = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        println!(
            "  request {i}: {} (Retry-After: {retry_after}) after {} ms",
            res.status(),
            took.as_millis()
        );
        match res.status().as_u16() {
            200 => ok += 1,
            503 if retry_after == "2" => shed += 1,
            _ => {}
        }
    }
    let stats = limit.stats();
    println!(
        "  served {ok}, shed {shed} at once (limit stats: shed {}, in flight {})",
        stats.shed, stats.in_flight
    );
    server.shutdown().await;
    Ok(ok == 3 && shed == 7 && stats.shed == 7)
}

async fn adaptive() -> Result<(), BoxError> {
    const CALLERS: usize = 48;
    println!();
    println!(
        "Part 3: Vegas against a server whose latency is 10 ms + 1 ms per request in flight, {CALLERS} callers"
    );
    let server = FlakyServer::builder()
        .latency(Duration::from_millis(10))
        .latency_per_inflight(Duration::from_millis(1))
        .start()
        .await?;
    let vegas = VegasConfig {
        initial_limit: 1,
        max_limit: 200,
        seed: Some(5),
        ..VegasConfig::default()
    };
    let limit = ConcurrencyLimitLayer::builder(vegas)
        // One decision per 100 ms with at least 5 calls (the default, 1 s
        // and 10 calls, is steadier and slower).
        .sample_window(Some(SampleWindow {
            min_time: Duration::from_millis(100),
            max_time: Duration::from_millis(100),
            min_samples: 5,
            ..SampleWindow::default()
        }))
        .build()?;
    // Calls that got through the limit and their total latency at the
    // server (µs): measured between the limit and the client.
    let seen = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let svc = limit.layer(timed(seen.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (svc, stop, uri) = (svc.clone(), stop.clone(), server.uri("/work"));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let req = Request::get(uri.clone()).body(Empty::new())?;
                    svc.clone().oneshot(req).await?;
                }
                Ok::<_, BoxError>(())
            })
        })
        .collect();
    let started = Instant::now();
    let (mut calls, mut total_us, mut latency_ms) = (0, 0, 0.0);
    let mut last = started;
    println!("  time     limit  in flight  waiting  calls/s  latency");
    // Every 100 ms while it moves, then every 500 ms.
    for step in [100, 100, 100, 100, 100, 500, 500, 500, 500] {
        tokio::time::sleep(Duration::from_millis(step)).await;
        let (c, t) = (
            seen.0.load(Ordering::Relaxed),
            seen.1.load(Ordering::Relaxed),
        );
        let (dc, dt) = (c - calls, t - total_us);
        (calls, total_us) = (c, t);
        let per_sec = dc as f64 / last.elapsed().as_secs_f64();
        last = Instant::now();
        if dc > 0 {
            latency_ms = dt as f64 / dc as f64 / 1000.0;
        }
        let s = limit.stats();
        println!(
            "  {:>4} ms  {:>5}  {:>9}  {:>7}  {:>7.0}  {:>5.1} ms",
            started.elapsed().as_millis(),
            s.limit,
            server.inflight(),
            s.waiting,
            per_sec,
            latency_ms,
        );
    }
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.await??;
    }
    println!(
        "  settled at {} in flight, {latency_ms:.0} ms a call, where the server's latency starts to climb \
         (all {CALLERS} callers at once: ~{} ms a call)",
        limit.limit(),
        10 + CALLERS
    );
    server.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let part1 = article().await?;
    let part2 = burst().await?;
    adaptive().await?;
    if !(part1 && part2) {
        eprintln!("unexpected outcome: part 1 ok = {part1}, part 2 ok = {part2}");
        std::process::exit(1);
    }
    Ok(())
}
