//! Circuit breaker: a backend goes down and comes back, behind one circuit
//! shared by every clone of the client.
//!
//! Run it with `cargo run --example circuit_breaker` (about 4 s).
//!
//! A local server answers 200 while it is up and 503 while it is down. The
//! client sends a request every 20 ms through a `CircuitBreakerLayer`
//! (failure ratio 50 % over the last 20 calls, at least 10 calls; break
//! 250 ms, doubling on each failed probe up to 1 s; 2 probes), cloned per
//! request as axum does. The report shows:
//!
//! 1. up: every request is served, the circuit stays closed;
//! 2. down: after a handful of 503s the circuit opens, and from then on
//!    requests are refused at once (`503` + `Retry-After` from rampart's
//!    error mapping) without reaching the server; every break ends with a
//!    probe that fails and a longer break;
//! 3. back: the next probes succeed, the circuit closes, requests are
//!    served again.
//!
//! The example exits non-zero if the server saw more than a few requests
//! while it was down, or if the circuit did not close once it came back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rampart::BoxError;
use rampart::breaker::{CircuitBreakerHandle, CircuitBreakerLayer, State, Window};
use rampart::prelude::*;
use rampart_testkit::{FlakyServer, Reply};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

/// A hyper client whose responses carry the whole body.
fn client()
-> impl Service<Request<Empty<Bytes>>, Response = Response<Bytes>, Error = BoxError, Future: Send>
+ Clone
+ Send {
    let c = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    service_fn(move |req| {
        let fut = c.request(req);
        async move {
            let (parts, body) = fut.await?.into_parts();
            Ok::<_, BoxError>(Response::from_parts(
                parts,
                body.collect().await?.to_bytes(),
            ))
        }
    })
}

/// What one phase saw.
#[derive(Debug, Default)]
struct Tally {
    served: usize,
    backend_503: usize,
    refused: usize,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} served, {} answered 503 by the server, {} refused at once by the circuit",
            self.served, self.backend_503, self.refused
        )
    }
}

/// Sends a request every 20 ms for `for_how_long`, printing state changes.
async fn phase<S>(
    svc: &S,
    server: &FlakyServer,
    handle: &CircuitBreakerHandle,
    for_how_long: Duration,
) -> Result<Tally, BoxError>
where
    S: Service<Request<Empty<Bytes>>, Response = Response<Bytes>> + Clone,
    S::Error: Into<BoxError>,
{
    let mut tally = Tally::default();
    let started = Instant::now();
    let mut last = (handle.state(), handle.stats().opened);
    while started.elapsed() < for_how_long {
        let req = Request::get(server.uri("/")).body(Empty::new())?;
        let res = svc.clone().oneshot(req).await.map_err(Into::into)?;
        // The server's 503 says "down"; rampart's error mapping answers a
        // refusal with an empty body (and a Retry-After).
        let refused = res.status() == 503 && res.body().is_empty();
        match (res.status().as_u16(), refused) {
            (200, _) => tally.served += 1,
            (503, true) => tally.refused += 1,
            _ => tally.backend_503 += 1,
        }
        let stats = handle.stats();
        let now = (stats.state, stats.opened);
        if now != last {
            let what = match (last.0, now.0) {
                (State::Closed, State::Open) => "tripped".to_owned(),
                (_, State::Open) => "probe failed, reopened".to_owned(),
                (_, State::Closed) => "probes succeeded, closed".to_owned(),
                (State::Open, State::HalfOpen) => "break over, probing".to_owned(),
                (a, b) => format!("{a} -> {b}"),
            };
            let next = stats.retry_after.map_or(String::new(), |d| {
                format!(", next probe in {} ms", d.as_millis())
            });
            println!("  {:>5} ms  {what}{next}", started.elapsed().as_millis());
            last = now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(tally)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let down = Arc::new(AtomicBool::new(false));
    let server = {
        let down = down.clone();
        FlakyServer::builder()
            .handler(move |_req| {
                Some(if down.load(Ordering::Relaxed) {
                    Reply::status(503).body("down")
                } else {
                    Reply::ok()
                })
            })
            .start()
            .await?
    };
    let breaker = CircuitBreakerLayer::http_builder()
        .name("backend")
        .failure_ratio(0.5)
        .window(Window::Calls(20))
        .min_calls(10)
        .break_duration(Duration::from_millis(250))
        .break_backoff(2.0, Duration::from_secs(1))
        .probes(2)
        .build()?;
    let handle = breaker.handle();
    let svc = ServiceBuilder::new()
        .handle_errors()
        .circuit_breaker(breaker)
        .service(client());

    println!("1. backend up (0.5 s)");
    let up = phase(&svc, &server, &handle, Duration::from_millis(500)).await?;
    println!("   {up}; circuit {}", handle.state());

    println!("2. backend down (2.5 s)");
    down.store(true, Ordering::Relaxed);
    let before = server.request_count();
    let outage = phase(&svc, &server, &handle, Duration::from_millis(2_500)).await?;
    let reached = server.request_count() - before;
    println!("   {outage}; {reached} requests reached the server");

    println!("3. backend back (1.5 s)");
    down.store(false, Ordering::Relaxed);
    let back = phase(&svc, &server, &handle, Duration::from_millis(1_500)).await?;
    let stats = handle.stats();
    println!(
        "   {back}; circuit {}, opened {} times, refused {} calls in all",
        handle.state(),
        stats.opened,
        stats.rejected
    );
    server.shutdown().await;

    let ok = up.served > 0
        && up.backend_503 + up.refused == 0
        && outage.refused > outage.backend_503
        && reached <= 20
        && back.served > 0
        && handle.state() == State::Closed;
    if !ok {
        eprintln!("unexpected outcome");
        std::process::exit(1);
    }
    println!(
        "ok: the outage cost the server {reached} requests instead of {}",
        outage.backend_503 + outage.refused
    );
    Ok(())
}
