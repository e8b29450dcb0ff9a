//! Rate limiting: a burst against an axum route limited to 5 requests per
//! second, answered with `429 Too Many Requests` and an exact
//! `Retry-After`, then a client stack that honours it.
//!
//! Run it with `cargo run --example rate_limit` (about 2 s).
//!
//! The limit is one GCRA bucket behind the layer, so it holds although axum
//! clones the service for every request (tower's `RateLimit` would keep one
//! window per clone and let the whole burst through). Part 2 sends 10
//! requests through rampart's retry layer, which reads `Retry-After` and
//! comes back when the server said: every request ends `200`, spread over
//! the seconds the quota allows, without a single attempt wasted before the
//! hinted time.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rampart::BoxError;
use rampart::HandleErrorsLayer;
use rampart::rate::{Quota, RateLimitLayer};
use rampart::retry::{Backoff, ReplayBody, RetryLayer};
use tokio::net::TcpListener;
use tower::{Layer, ServiceBuilder, ServiceExt};

/// Starts the axum server: `GET /` limited to 5 per second; returns its
/// address and a count of the requests the handler ran.
async fn server() -> Result<(String, Arc<AtomicUsize>), BoxError> {
    let served = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&served);
    let app =
        Router::new()
            .route(
                "/",
                get(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async { "hello" }
                }),
            )
            .layer(ServiceBuilder::new().layer(HandleErrorsLayer::new()).layer(
                RateLimitLayer::new(Quota::per_second(NonZeroU32::new(5).expect("5 > 0"))),
            ));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}/"), served))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (uri, served) = server().await?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();

    println!("Part 1: a burst of 20 requests against a route limited to 5 per second");
    let burst = (0..20).map(|_| {
        let (client, uri) = (client.clone(), uri.clone());
        async move {
            let res = client
                .request(Request::get(uri).body(Empty::new())?)
                .await?;
            let retry_after = res
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Ok::<_, BoxError>((res.status(), retry_after))
        }
    });
    let results = futures_util::future::try_join_all(burst).await?;
    let ok = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let limited: Vec<_> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    let hints: std::collections::BTreeSet<_> =
        limited.iter().filter_map(|(_, h)| h.clone()).collect();
    println!(
        "  {ok} x 200, {} x 429 (Retry-After: {})",
        limited.len(),
        hints.into_iter().collect::<Vec<_>>().join(", ")
    );

    println!();
    println!("Part 2: 10 requests through a client retry stack that honours Retry-After");
    tokio::time::sleep(Duration::from_secs(1)).await; // a full bucket again
    let before = served.load(Ordering::SeqCst);
    let retry = RetryLayer::http()
        .max_attempts(4)
        .backoff(Backoff::none()) // only the server's hint decides the wait
        .build()?
        .layer(Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Empty<Bytes>>>());
    let started = Instant::now();
    let calls = (0..10).map(|_| {
        let (retry, uri) = (retry.clone(), uri.clone());
        async move {
            let res = retry.oneshot(Request::get(uri).body(Empty::new())?).await?;
            Ok::<_, BoxError>((res.status(), started.elapsed()))
        }
    });
    let results = futures_util::future::try_join_all(calls).await?;
    let all_ok = results.iter().all(|(s, _)| *s == StatusCode::OK);
    let mut seconds: Vec<u64> = results.iter().map(|(_, t)| t.as_secs()).collect();
    seconds.sort_unstable();
    seconds.dedup();
    let attempts = served.load(Ordering::SeqCst) - before;
    println!(
        "  {} x 200 after {:.1} s, finishing in second(s) {:?}; the handler ran {attempts} times",
        results.iter().filter(|(s, _)| *s == StatusCode::OK).count(),
        started.elapsed().as_secs_f64(),
        seconds,
    );

    if ok != 5 || limited.len() != 15 || !all_ok || attempts != 10 {
        eprintln!("unexpected outcome: expected 5 x 200 and 15 x 429, then 10 x 200");
        std::process::exit(1);
    }
    println!();
    println!("ok: the burst got exactly the quota, the rest a Retry-After the client honoured");
    Ok(())
}
