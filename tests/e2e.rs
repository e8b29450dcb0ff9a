//! End to end, in one process over loopback: the full client stack calling
//! the full server stack under load, and a drain in the middle of load,
//! each bounded in count and time. (The chaos soak of the client stack is
//! `tests/soak.rs`.)
//!
//! Client, outermost first: context propagation → total deadline → retry
//! (with budget) → concurrency limit → per-attempt timeout → deadline on
//! the wire → hyper-util. Server: request id → handle errors →
//! cancel/drain → deadline from headers → concurrency limit → handler.
//!
//! What is asserted: every request gets exactly one outcome, the counts add
//! up, no call outlives its deadline by more than a margin, retries stay
//! within the budget, and every in-flight gauge is back to zero.
//!
//! `cargo test --release --test e2e -- --ignored --nocapture` measures
//! req/s and p99 of a hello-world served bare and behind the server stack.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rampart::Error;
use rampart::cancel::{CancelLayer, Shutdown};
use rampart::prelude::*;
use rampart::retry::{Jitter, ReplayBody, ReplayHttp};
use tower::{Service, ServiceBuilder, ServiceExt};

type HttpClient = Client<HttpConnector, ReplayBody<Full<Bytes>>>;
type Retry = RetryLayer<HttpOrGrpcClassify, ReplayHttp>;

/// A cloneable client stack from requests to responses or a rampart error.
trait ClientStack:
    Service<Request<Full<Bytes>>, Response = Response<Incoming>, Error = Error, Future: Send>
    + Clone
    + Send
    + 'static
{
}

impl<T> ClientStack for T where
    T: Service<Request<Full<Bytes>>, Response = Response<Incoming>, Error = Error, Future: Send>
        + Clone
        + Send
        + 'static
{
}

struct ClientParts<S> {
    svc: S,
    retry: Retry,
    limit: ConcurrencyLimitLayer,
}

struct ClientSettings {
    total: Duration,
    attempt: Duration,
    limit: usize,
    budget: (f64, usize, Duration),
}

fn client_stack(s: &ClientSettings) -> ClientParts<impl ClientStack> {
    let (ratio, floor, ttl) = s.budget;
    let retry = RetryLayer::http()
        .max_attempts(3)
        .backoff(
            Backoff::exponential(Duration::from_millis(5))
                .max_delay(Duration::from_millis(50))
                .jitter(Jitter::Full),
        )
        .budget(Budget::new(ratio, floor, ttl))
        .stats()
        .seed(21)
        .build()
        .unwrap();
    let limit = ConcurrencyLimitLayer::new(s.limit);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let svc = ServiceBuilder::new()
        .propagate_context()
        .deadline(s.total)
        .retry_with(retry.clone())
        .limit_concurrency(limit.clone())
        .attempt_timeout(s.attempt)
        .propagate_deadline()
        .service(client);
    ClientParts { svc, retry, limit }
}

struct ServerParts {
    addr: SocketAddr,
    shutdown: Shutdown,
    limit: ConcurrencyLimitLayer,
    handled: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// The recommended server stack around a handler that answers with the
/// request id it sees.
async fn server_stack() -> ServerParts {
    use axum::routing::get;
    let shutdown = Shutdown::new();
    let limit = ConcurrencyLimitLayer::new(16);
    let handled = Arc::new(AtomicUsize::new(0));
    let count = handled.clone();
    let handler = move || {
        let count = count.clone();
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            Context::current()
                .and_then(|c| c.request_id().map(ToString::to_string))
                .unwrap_or_default()
        }
    };
    let stack = ServiceBuilder::new()
        .request_id()
        .handle_errors()
        .layer(CancelLayer::with_shutdown(&shutdown))
        .deadline_from_headers(Duration::from_secs(5))
        .limit_concurrency(limit.clone());
    let router = axum::Router::new().route("/", get(handler)).layer(stack);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.draining())
            .into_future(),
    );
    ServerParts {
        addr,
        shutdown,
        limit,
        handled,
        task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_2000_requests_from_32_tasks_through_both_stacks_each_get_one_answer_with_their_id() {
    const TASKS: usize = 32;
    const PER_TASK: usize = 63; // 2 016 requests
    tokio::time::timeout(Duration::from_secs(120), async {
        let server = server_stack().await;
        let client = client_stack(&ClientSettings {
            total: Duration::from_secs(10),
            attempt: Duration::from_secs(5),
            limit: 32,
            budget: (0.2, 10, Duration::from_secs(10)),
        });
        let outcomes = Arc::new(
            (0..TASKS * PER_TASK)
                .map(|_| AtomicUsize::new(0))
                .collect::<Vec<_>>(),
        );
        let mismatched = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let svc = client.svc.clone();
                let outcomes = outcomes.clone();
                let (mismatched, failed) = (mismatched.clone(), failed.clone());
                let uri = format!("http://{}/", server.addr);
                tokio::spawn(async move {
                    for i in 0..PER_TASK {
                        let n = t * PER_TASK + i;
                        let id = format!("load-{n}");
                        let ctx = Context::new().with_request_id(RequestId::parse(id.as_bytes()).unwrap());
                        let req = Request::get(&uri).body(Full::default()).unwrap();
                        match ctx.scope(svc.clone().oneshot(req)).await {
                            Ok(res) if res.status() == StatusCode::OK => {
                                let body = res.into_body().collect().await.unwrap().to_bytes();
                                if body != id.as_bytes() {
                                    mismatched.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                            _ => {
                                failed.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        outcomes[n].fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let elapsed = started.elapsed();
        let total = TASKS * PER_TASK;
        println!(
            "load: {total} requests from {TASKS} tasks in {elapsed:?} ({:.0} req/s, debug build), retry {:?}",
            total as f64 / elapsed.as_secs_f64(),
            client.retry.stats()
        );

        assert!(
            outcomes.iter().all(|o| o.load(Ordering::SeqCst) == 1),
            "every request has exactly one outcome"
        );
        assert_eq!(failed.load(Ordering::SeqCst), 0, "no request failed");
        assert_eq!(mismatched.load(Ordering::SeqCst), 0, "each answer carries its own id");
        assert_eq!(server.handled.load(Ordering::SeqCst), total, "handled once each");
        let stats = client.retry.stats().unwrap();
        assert_eq!(stats.calls, total as u64);
        assert_eq!(stats.retries, 0);
        assert_eq!(client.limit.stats().in_flight, 0, "client permits returned");
        assert_eq!(client.limit.stats().waiting, 0);
        assert_eq!(server.limit.stats().in_flight, 0, "server permits returned");
        assert_eq!(server.shutdown.in_flight(), 0, "no request left in the drain tracker");

        // Drain: nothing in flight, nothing cancelled; the listener stops.
        let report = server.shutdown.drain(Duration::from_secs(5)).await;
        assert_eq!((report.in_flight_at_start(), report.cancelled()), (0, 0));
        drop(client);
        tokio::time::timeout(Duration::from_secs(10), server.task)
            .await
            .expect("the listener stops after the drain")
            .unwrap()
            .unwrap();
    })
    .await
    .expect("the load test finishes within 120 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_in_the_middle_of_load_every_request_ends_once_and_the_report_adds_up() {
    const TASKS: usize = 32;
    tokio::time::timeout(Duration::from_secs(60), async {
        use axum::routing::get;
        let shutdown = Shutdown::new();
        let completed = Arc::new(AtomicUsize::new(0));
        let count = completed.clone();
        // Handlers take 0..150 ms; a drain deadline of 60 ms lets some finish
        // and cancels the rest.
        let handler = move |uri: http::Uri| {
            let count = count.clone();
            async move {
                let n: u64 = uri.query().and_then(|q| q.parse().ok()).unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(draw(7, n) % 150)).await;
                count.fetch_add(1, Ordering::SeqCst);
                "done"
            }
        };
        let stack = ServiceBuilder::new()
            .request_id()
            .handle_errors()
            .layer(CancelLayer::with_shutdown(&shutdown))
            .deadline_from_headers(Duration::from_secs(5))
            .limit_concurrency(ConcurrencyLimitLayer::new(64));
        let router = axum::Router::new().route("/", get(handler)).layer(stack);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.draining())
                .into_future(),
        );
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let sent = Arc::new(AtomicUsize::new(0));
        // (ok, cancelled 499, closed 503, refused / connection error)
        let tally = Arc::new([
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        ]);
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let (client, sent, tally) = (client.clone(), sent.clone(), tally.clone());
                tokio::spawn(async move {
                    for i in 0u64.. {
                        sent.fetch_add(1, Ordering::SeqCst);
                        let uri: http::Uri = format!("http://{addr}/?{}", t as u64 * 1_000_000 + i)
                            .parse()
                            .unwrap();
                        let slot = match client.get(uri).await {
                            Ok(res) => match res.status().as_u16() {
                                200 => 0,
                                499 => 1,
                                503 => 2,
                                other => panic!("unexpected status {other}"),
                            },
                            Err(_) => 3,
                        };
                        tally[slot].fetch_add(1, Ordering::SeqCst);
                        if slot != 0 {
                            // Closed, refused or cancelled: the server is
                            // going away; this caller stops.
                            break;
                        }
                    }
                })
            })
            .collect();
        // Let the load run, then drain in the middle of it.
        while sent.load(Ordering::SeqCst) < 500 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let report = shutdown.drain(Duration::from_millis(60)).await;
        for t in tasks {
            t.await.expect("no caller panicked");
        }
        drop(client);
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the listener stops after the drain")
            .unwrap()
            .unwrap();
        let get = |i: usize| tally[i].load(Ordering::SeqCst);
        println!(
            "drain under load: {} sent; {} ok, {} cancelled (499), {} closed (503), {} refused; \
             report: {} in flight at start, {} completed, {} cancelled, {} refused, took {:?}",
            sent.load(Ordering::SeqCst),
            get(0),
            get(1),
            get(2),
            get(3),
            report.in_flight_at_start(),
            report.completed(),
            report.cancelled(),
            report.refused(),
            report.elapsed()
        );
        assert_eq!(
            get(0) + get(1) + get(2) + get(3),
            sent.load(Ordering::SeqCst),
            "every request has exactly one outcome"
        );
        assert_eq!(
            report.completed() + report.cancelled(),
            report.in_flight_at_start(),
            "the drain accounts for every request in flight"
        );
        assert_eq!(
            get(1),
            report.cancelled(),
            "each cancelled request was answered 499"
        );
        assert_eq!(
            get(0),
            completed.load(Ordering::SeqCst),
            "each completed handler was answered 200"
        );
        assert!(
            report.in_flight_at_start() > 0,
            "the drain began under load"
        );
        assert_eq!(shutdown.in_flight(), 0);
    })
    .await
    .expect("bounded: nothing hung");
}

/// splitmix64: a seeded, reproducible stream of draws from a sequence
/// number.
fn draw(seed: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------- measure

/// Latency percentiles and throughput of `requests` GETs from `callers`
/// tasks with a plain hyper client.
async fn measure(addr: SocketAddr, callers: usize, requests: usize) -> (f64, Duration, Duration) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
    let per = requests / callers;
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (client, uri) = (client.clone(), uri.clone());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                for _ in 0..per {
                    let t = Instant::now();
                    let res = client.get(uri.clone()).await.unwrap();
                    assert_eq!(res.status(), StatusCode::OK);
                    res.into_body().collect().await.unwrap();
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::with_capacity(requests);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    (
        all.len() as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
    )
}

async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --release -- --ignored --nocapture"]
async fn measure_hello_world_bare_vs_behind_the_server_stack() {
    use axum::routing::get;
    tokio::time::timeout(Duration::from_secs(300), async {
        let hello = || async { "hello" };
        let bare = serve(axum::Router::new().route("/", get(hello))).await;
        let shutdown = Shutdown::new();
        let stack = ServiceBuilder::new()
            .request_id()
            .handle_errors()
            .layer(CancelLayer::with_shutdown(&shutdown))
            .deadline_from_headers(Duration::from_secs(5))
            .limit_concurrency(ConcurrencyLimitLayer::new(1024));
        let stacked = serve(axum::Router::new().route("/", get(hello)).layer(stack)).await;
        let (callers, requests) = (32, 20_000);
        // Warm up both, then alternate three rounds each.
        measure(bare, callers, 2_000).await;
        measure(stacked, callers, 2_000).await;
        let mut rows = Vec::new();
        for round in 0..3 {
            for (name, addr) in [("bare", bare), ("stacked", stacked)] {
                let (rps, p50, p99) = measure(addr, callers, requests).await;
                println!(
                    "round {round} {name:>7}: {rps:>8.0} req/s  p50 {:>7.1} µs  p99 {:>7.1} µs",
                    p50.as_secs_f64() * 1e6,
                    p99.as_secs_f64() * 1e6
                );
                rows.push((name, rps, p99));
            }
        }
        let best = |n: &str| {
            rows.iter()
                .filter(|r| r.0 == n)
                .map(|r| (r.1, r.2))
                .fold((0.0f64, Duration::MAX), |(a, b), (r, p)| (a.max(r), b.min(p)))
        };
        let (b_rps, b_p99) = best("bare");
        let (s_rps, s_p99) = best("stacked");
        println!(
            "best of 3: bare {b_rps:.0} req/s p99 {b_p99:?}; stacked {s_rps:.0} req/s p99 {s_p99:?}; \
             throughput {:.1} %, p99 {:+.1} %",
            s_rps / b_rps * 100.0,
            (s_p99.as_secs_f64() / b_p99.as_secs_f64() - 1.0) * 100.0
        );
    })
    .await
    .expect("bounded");
}
