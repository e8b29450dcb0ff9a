//! rampart's metrics scraped by Prometheus: an axum server with the server
//! stack, a client stack calling it, and a `/metrics` route serving
//! `metrics-exporter-prometheus`'s rendering.
//!
//! ```text
//! cargo run --example metrics --features metrics,full
//! ```
//!
//! 1. The Prometheus recorder is installed **first**: each layer registers
//!    its handles when it is built, with the recorder installed then.
//! 2. The server (127.0.0.1, a free port):
//!    request id → handle errors → cancel/drain → deadline from headers →
//!    rate limit per tenant (`x-tenant`) → rate limit → concurrency limit per tenant →
//!    concurrency limit (shed) → queue → handler; its handlers use a
//!    coalescer (`/profile`), a keyed lock (`/account`) and a fan-out over
//!    replicas behind a keyed circuit breaker (`/search`).
//! 3. Load, bounded in count: bursts over the limits (sheds, 429s),
//!    deadlines that expire, a malformed deadline header, and a client stack
//!    (context propagation → deadline → retry with a budget → circuit
//!    breaker → attempt timeout → deadline propagation) calling a flaky
//!    route, a dead one and a slow one, so that retries, give-ups, breaker
//!    trips and timeouts happen.
//! 4. `GET /metrics` over HTTP: the `rampart_` lines of the scrape are
//!    printed, then one line per metric of the guide's table
//!    (`rampart::guide`, "Metrics") with its total, and the example exits
//!    non-zero if any is missing from the scrape.
//!
//! The whole run takes a few seconds (at most 30 s, then it fails).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use rampart::BoxError;
use rampart::cancel::Shutdown;
use rampart::limit::HeaderKey;
use rampart::prelude::*;
use rampart::retry::{Jitter, ReplayBody};
use rampart::timeout::DeadlineHeaders;
use tokio::net::TcpListener;
use tower::{Layer, ServiceBuilder, ServiceExt, service_fn};

/// The guide, whose "Metrics" table lists every metric rampart records.
const GUIDE: &str = include_str!("../src/guide.rs");

/// Buckets of every rampart histogram (all are durations in seconds).
const BUCKETS: [f64; 9] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// The number after `name=` in the query, if any.
fn query(uri: &Uri, name: &str) -> Option<u64> {
    uri.query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
        .parse()
        .ok()
}

/// `/work?ms=N`: sleeps N ms (at most 5 s), waking early when cancelled.
async fn work(uri: Uri) -> String {
    let ms = query(&uri, "ms").unwrap_or(10).min(5_000);
    let token = Context::current().and_then(|c| c.cancellation().cloned());
    let sleep = tokio::time::sleep(Duration::from_millis(ms));
    let Some(token) = token else {
        sleep.await;
        return format!("slept {ms} ms\n");
    };
    tokio::select! {
        () = sleep => format!("slept {ms} ms\n"),
        () = token.cancelled() => "cancelled\n".to_owned(),
    }
}

/// The server: the stack around the routes, `/metrics` outside it.
fn app(prometheus: PrometheusHandle, shutdown: &Shutdown) -> Result<Router, BoxError> {
    // Handlers' own resilience: single-flight profile loads, one update per
    // account at a time, a search fanned out to three replicas (one slow)
    // each behind its own circuit.
    let profiles = CoalesceLayer::new(|id: &u64| *id)
        .name("profiles")
        .layer(service_fn(|id: u64| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, Infallible>(format!("profile {id}\n"))
        }));
    let accounts = KeyedLockLayer::new(|id: &u64| *id)
        .name("accounts")
        .layer(service_fn(|id: u64| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, Infallible>(format!("account {id} updated\n"))
        }));
    let replicas = KeyedCircuitBreakerLayer::new(|r: &u32| *r, CircuitBreakerLayer::new(), 8)
        .name("replicas")
        .layer(service_fn(|replica: u32| async move {
            let ms = if replica == 2 { 1_000 } else { 10 };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, Infallible>(replica)
        }));
    let search = FanOutLayer::new()
        .timeout(Duration::from_millis(100))
        .name("replicas")
        .layer(replicas);

    let flaky_calls = Arc::new(AtomicUsize::new(0));
    let routes = Router::new()
        .route("/work", get(work))
        .route(
            "/flaky",
            get(move || {
                // Two calls in three fail with 503.
                let n = flaky_calls.fetch_add(1, Ordering::Relaxed);
                async move {
                    if n % 3 == 2 {
                        (StatusCode::OK, "ok\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "try again\n")
                    }
                }
            }),
        )
        .route(
            "/down",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down\n") }),
        )
        .route(
            "/profile",
            get(move |uri: Uri| {
                let profiles = profiles.clone();
                async move { profiles.oneshot(query(&uri, "id").unwrap_or(1)).await }
            }),
        )
        .route(
            "/account",
            get(move |uri: Uri| {
                let accounts = accounts.clone();
                async move { accounts.oneshot(query(&uri, "id").unwrap_or(1)).await }
            }),
        )
        .route(
            "/search",
            get(move || {
                let search = search.clone();
                async move {
                    match search.oneshot(vec![0, 1, 2]).await {
                        Ok(g) => format!("{} replicas answered\n", g.succeeded()),
                        Err(e) => format!(
                            "{} replicas answered in time ({:?})\n",
                            e.gathered().succeeded(),
                            e.failure()
                        ),
                    }
                }
            }),
        );

    let tenant = |req: &Request<Body>| req.headers().get("x-tenant").cloned();
    let stack = ServiceBuilder::new()
        .layer(RequestIdLayer::new().name("edge"))
        .handle_errors()
        .layer(CancelLayer::with_shutdown(shutdown).name("server"))
        .layer(
            DeadlineLayer::from_headers(Duration::from_secs(2), DeadlineHeaders::new())
                .name("server"),
        )
        .layer(KeyedRateLimitLayer::new(Quota::per_second(nz(50)), tenant).name("tenants"))
        .layer(RateLimitLayer::new(Quota::per_second(nz(1_000))).name("server"))
        .limit_concurrency_per_key(
            KeyedConcurrencyLimitLayer::builder(HeaderKey::from_static("x-tenant"), 8)
                .name("tenants")
                .build()?,
        )
        .limit_concurrency(
            ConcurrencyLimitLayer::builder(4)
                .shed()
                .name("server")
                .build()?,
        )
        .layer(QueueLayer::new(8, 4).name("server"));
    // The stack wraps the routes as one service, built once. Not
    // `routes.layer(stack)`: axum applies a `Router::layer` to each route
    // again for every connection, and each application of a `QueueLayer`
    // builds a queue of its own and spawns its workers (measured here: 1183
    // live workers, `rampart_queue_workers`, instead of 4).
    let server = stack.service(routes.with_state(()));
    Ok(Router::new()
        .route(
            "/metrics",
            get(move || {
                let prometheus = prometheus.clone();
                async move { prometheus.render() }
            }),
        )
        .fallback_service(server))
}

type RawClient = Client<HttpConnector, Empty<Bytes>>;

/// A plain GET (no rampart client stack): the status, or the error.
async fn get_raw(
    client: &RawClient,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(StatusCode, String), BoxError> {
    let mut req = Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client.request(req.body(Empty::new())?).await?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Sends `n` requests at once; returns the count of each status.
async fn burst(
    client: &RawClient,
    addr: SocketAddr,
    n: usize,
    path: &str,
    headers: &[(&str, &str)],
) -> BTreeMap<String, usize> {
    let calls = (0..n).map(|_| get_raw(client, addr, path, headers));
    let mut seen = BTreeMap::new();
    for r in futures_util::future::join_all(calls).await {
        let key = match r {
            Ok((status, _)) => status.as_u16().to_string(),
            Err(e) => format!("error ({e})"),
        };
        *seen.entry(key).or_default() += 1;
    }
    seen
}

/// Drives the server with raw calls, then through the client stack.
async fn load(addr: SocketAddr) -> Result<(), BoxError> {
    let raw: RawClient = Client::builder(TokioExecutor::new()).build_http();

    println!("load:");
    let seen = burst(&raw, addr, 12, "/work?ms=200", &[("x-tenant", "a")]).await;
    println!("  12 at once over a limit of 4 (shed): {seen:?}");
    let seen = burst(&raw, addr, 70, "/work?ms=1", &[("x-tenant", "noisy")]).await;
    println!("  70 at once from tenant \"noisy\" (50 per second): {seen:?}");
    let seen = burst(&raw, addr, 4, "/profile?id=7", &[("x-tenant", "b")]).await;
    println!("  4 at once for one profile (coalesced): {seen:?}");
    let seen = burst(&raw, addr, 3, "/account?id=3", &[("x-tenant", "c")]).await;
    println!("  3 at once on one account (keyed lock): {seen:?}");
    let (status, body) = get_raw(&raw, addr, "/search", &[("x-tenant", "d")]).await?;
    println!(
        "  a search over 3 replicas, one slow: {status} {}",
        body.trim()
    );
    for (what, headers) in [
        (
            "a 100 ms deadline on 2 s of work",
            &[("x-request-timeout-ms", "100")][..],
        ),
        ("a deadline already spent", &[("x-request-timeout-ms", "0")]),
        ("a malformed deadline", &[("x-request-timeout-ms", "soon")]),
        (
            "a caller's request id",
            &[("x-request-id", "metrics-demo-1")],
        ),
        ("a hostile request id", &[("x-request-id", "evil\"id")]),
    ] {
        let headers = [headers, &[("x-tenant", "e")]].concat();
        let (status, _) = get_raw(&raw, addr, "/work?ms=2000", &headers).await?;
        println!("  {what}: {status}");
    }

    // The client stack, outermost first.
    let retry = RetryLayer::http()
        .name("client")
        .max_attempts(3)
        .backoff(Backoff::exponential(Duration::from_millis(10)).jitter(Jitter::Full))
        .budget(Budget::new(0.1, 2, Duration::from_secs(10)))
        .build()?;
    let breaker = CircuitBreakerLayer::http_builder()
        .name("upstream")
        .consecutive_failures(6)
        .break_duration(Duration::from_secs(5))
        .build()?;
    let client = ServiceBuilder::new()
        .layer(PropagateContextLayer::new().name("client"))
        .layer(DeadlineLayer::new(Duration::from_secs(2)).name("client"))
        .retry_with(retry)
        .circuit_breaker(breaker)
        .layer(TimeoutLayer::new(Duration::from_millis(150)).name("client"))
        .layer(PropagateDeadlineLayer::new().name("client"))
        .service(Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Empty<Bytes>>>());
    let mut outcomes = BTreeMap::<String, usize>::new();
    // A slow call (each attempt times out), a flaky route (retries
    // succeed), then a dead one (retries give up, the circuit opens and
    // refuses the last calls).
    for path in [
        "/work?ms=1000",
        "/flaky",
        "/flaky",
        "/flaky",
        "/down",
        "/down",
        "/down",
    ] {
        let req = Request::get(format!("http://{addr}{path}"))
            .header("x-tenant", "client")
            .body(Empty::<Bytes>::new())?;
        let ctx = Context::new().with_request_id(RequestId::parse(b"client-1")?);
        let outcome = match ctx.scope(client.clone().oneshot(req)).await {
            Ok(res) => res.status().as_u16().to_string(),
            Err(e) => format!("{:?}", e.kind()),
        };
        *outcomes.entry(format!("{path} -> {outcome}")).or_default() += 1;
    }
    // A call made outside any context.
    let req = Request::get(format!("http://{addr}/work?ms=1"))
        .header("x-tenant", "client")
        .body(Empty::<Bytes>::new())?;
    let _ = client.oneshot(req).await;
    println!("  through the client stack: {outcomes:?}");
    Ok(())
}

/// One row of the guide's metrics table: name and kind.
fn guide_metrics() -> Vec<(String, String)> {
    GUIDE
        .lines()
        .filter_map(|l| l.strip_prefix("//! | `rampart."))
        .filter_map(|row| {
            let (name, rest) = row.split_once('`')?;
            let kind = rest
                .trim_start_matches([' ', '|'])
                .split([',', ' '])
                .next()?;
            Some((format!("rampart.{name}"), kind.to_owned()))
        })
        .collect()
}

/// Checks the scrape against the guide's table: one line per metric.
/// Returns the names missing from the scrape.
fn check(scrape: &str) -> Vec<String> {
    let mut missing = Vec::new();
    let metrics = guide_metrics();
    println!("\nevery metric of the guide's table in the scrape:");
    for (name, kind) in &metrics {
        // Prometheus writes `.` as `_`; a histogram is a family of
        // `_bucket`, `_sum` and `_count` series (or quantiles).
        let prom = name.replace('.', "_");
        let series_of = |suffix: &str| -> Vec<f64> {
            scrape
                .lines()
                .filter_map(|l| {
                    let rest = l.strip_prefix(&prom)?.strip_prefix(suffix)?;
                    if !(rest.starts_with('{') || rest.starts_with(' ')) {
                        return None;
                    }
                    rest.rsplit(' ').next()?.parse().ok()
                })
                .collect()
        };
        let (values, what) = if kind == "histogram" {
            (series_of("_count"), "observations")
        } else {
            (series_of(""), "total")
        };
        if values.is_empty() {
            println!("  [MISSING] {name:<38} {kind:<9} (no `{prom}` series)");
            missing.push(name.clone());
        } else {
            println!(
                "  [ok]      {name:<38} {kind:<9} {what} {} over {} series",
                values.iter().sum::<f64>(),
                values.len()
            );
        }
    }
    println!(
        "{} metrics in the table, {} missing",
        metrics.len(),
        missing.len()
    );
    missing
}

async fn run(prometheus: PrometheusHandle) -> Result<Vec<String>, BoxError> {
    // 2. The server, built after the recorder.
    let shutdown = Shutdown::named("server");
    let router = app(prometheus, &shutdown)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.draining())
            .into_future(),
    );
    println!("serving on http://{addr} (scrape: http://{addr}/metrics)");

    // 3. Load.
    load(addr).await?;

    // 4. Scrape over HTTP, as Prometheus would.
    let raw: RawClient = Client::builder(TokioExecutor::new()).build_http();
    let (status, scrape) = get_raw(&raw, addr, "/metrics", &[]).await?;
    println!("\nGET /metrics: {status}; its rampart_ lines (histogram buckets left out):");
    let mut buckets = 0;
    for line in scrape.lines().filter(|l| l.contains("rampart_")) {
        if line.contains("_bucket{") {
            buckets += 1;
        } else {
            println!("  {line}");
        }
    }
    println!("  ({buckets} `_bucket` lines left out)");
    let missing = check(&scrape);

    let report = shutdown.drain(Duration::from_secs(1)).await;
    println!(
        "\ndrain: {} completed, {} cancelled",
        report.completed(),
        report.cancelled()
    );
    drop(raw);
    if tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .is_err()
    {
        println!("the listener still had idle connections; leaving them");
    }
    Ok(missing)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // 1. The recorder first: a stack built before it records nothing.
    let prometheus = PrometheusBuilder::new()
        .set_buckets(&BUCKETS)?
        .install_recorder()?;

    let missing = match tokio::time::timeout(Duration::from_secs(30), run(prometheus)).await {
        Ok(missing) => missing?,
        Err(_) => return Err("the example did not finish within 30 s".into()),
    };
    if missing.is_empty() {
        println!("ok: every metric of the guide's table is in the scrape");
        Ok(())
    } else {
        eprintln!("missing from the scrape: {}", missing.join(", "));
        std::process::exit(1);
    }
}
