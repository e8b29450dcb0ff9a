//! Timeouts and deadlines (`rampart-timeout`).
//!
//! 1. The article's `asyncio.wait_for(slow_operation(), timeout=2.0)`: a
//!    10 s operation under a 2 s `TimeoutLayer` (a real 2 s wait).
//! 2. A deadline across hops, over real sockets: a client gives the request
//!    300 ms; an axum server (the edge) reads it, works 100 ms and calls a
//!    downstream axum server, which receives what is left — not 300 ms, and
//!    not its own 5 s budget either. Then the edge works too long: the
//!    deadline fires everywhere at 300 ms, the edge's work is dropped, and
//!    the downstream is never called.
//!
//! Run it with `cargo run --example timeouts`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rampart::prelude::*;
use rampart::timeout::{
    DeadlineHeaders, DeadlineLayer, PropagateDeadline, PropagateDeadlineLayer, Timeout,
    TimeoutLayer,
};
use rampart::{BoxError, HandleErrorsLayer};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt, service_fn};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Each server's own budget for a request: a caller's shorter deadline wins.
const SERVER_BUDGET: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    wait_for().await?;
    across_hops().await
}

/// The article's scenario.
async fn slow_operation((): ()) -> Result<&'static str, Infallible> {
    tokio::time::sleep(Duration::from_secs(10)).await;
    Ok("Operation completed")
}

async fn wait_for() -> Result<(), BoxError> {
    println!("== wait_for: a 10 s operation under a 2 s timeout ==");
    let svc = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(2)))
        .service(service_fn(slow_operation));
    let started = Instant::now();
    match svc.oneshot(()).await {
        Ok(result) => println!("{result}"),
        Err(e) if e.kind() == ErrorKind::Timeout => println!("Operation timed out!"),
        Err(e) => return Err(e.into()),
    }
    println!(
        "   (after {:.1} s; the operation was dropped)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The edge's client to the downstream: a timeout per attempt, the
/// remaining deadline written on every request.
type Downstream = Timeout<PropagateDeadline<HttpClient>>;

/// The edge server's state: its downstream client, how long to work.
#[derive(Clone)]
struct Edge {
    client: Downstream,
    downstream: String,
    work: Duration,
}

async fn across_hops() -> Result<(), BoxError> {
    println!();
    println!("== a 300 ms deadline across two hops (client -> edge -> downstream) ==");
    let downstream_calls = Arc::new(AtomicUsize::new(0));
    let downstream = serve(
        Router::new()
            .route("/", get(downstream))
            .with_state(downstream_calls.clone()),
    )
    .await?;

    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let to_downstream = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(5))) // per attempt
        .layer(PropagateDeadlineLayer::new())
        .service(client.clone());
    let edge = |work| {
        Router::new().route("/", get(edge)).with_state(Edge {
            client: to_downstream.clone(),
            downstream: format!("http://{downstream}/"),
            work,
        })
    };
    let quick_edge = serve(edge(Duration::from_millis(100))).await?;
    let slow_edge = serve(edge(Duration::from_millis(400))).await?;

    // The client: the whole request gets 300 ms, written on the wire.
    let caller = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_millis(300)))
        .layer(PropagateDeadlineLayer::new())
        .service(client.clone());

    println!("client: calling the edge with a 300 ms deadline");
    let started = Instant::now();
    let req = Request::get(format!("http://{quick_edge}/")).body(Full::default())?;
    let res = caller.clone().oneshot(req).await?;
    let body = res.into_body().collect().await?.to_bytes();
    println!(
        "client: {} after {} ms",
        String::from_utf8_lossy(&body),
        started.elapsed().as_millis()
    );

    println!();
    println!("client: again, to an edge that works 400 ms");
    let started = Instant::now();
    let req = Request::get(format!("http://{slow_edge}/")).body(Full::default())?;
    match caller.oneshot(req).await {
        Err(e) if e.kind() == ErrorKind::DeadlineExceeded => println!(
            "client: deadline exceeded after {} ms",
            started.elapsed().as_millis()
        ),
        // The edge's deadline is the one we propagated, rounded down: it can
        // pass a moment before ours, and then the edge answers 504 first.
        Ok(res) if res.status() == http::StatusCode::GATEWAY_TIMEOUT => println!(
            "client: the edge answered 504 after {} ms (its propagated deadline passed first)",
            started.elapsed().as_millis()
        ),
        other => return Err(format!("client: unexpected {other:?}").into()),
    }
    // Let the edge's own deadline fire and report.
    tokio::time::sleep(Duration::from_millis(50)).await;
    println!(
        "downstream calls in all: {} (the second request never got there)",
        downstream_calls.load(Ordering::SeqCst)
    );
    Ok(())
}

/// Serves `router` on 127.0.0.1:0 behind the server deadline layer.
async fn serve(router: Router) -> Result<std::net::SocketAddr, BoxError> {
    let router = router.layer(ServiceBuilder::new().layer(HandleErrorsLayer::new()).layer(
        DeadlineLayer::from_headers(SERVER_BUDGET, DeadlineHeaders::new()),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(addr)
}

/// Milliseconds left before the current request's deadline.
fn left_ms() -> u128 {
    Context::current()
        .and_then(|c| c.remaining())
        .map_or(0, |d| d.as_millis())
}

fn received(headers: &HeaderMap) -> String {
    headers
        .get(&rampart::timeout::X_REQUEST_TIMEOUT_MS)
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| "nothing".to_owned(), |v| format!("{v} ms"))
}

/// Prints a line if the edge's work is dropped before it is done.
struct WorkGuard {
    since: Instant,
    done: bool,
}

impl Drop for WorkGuard {
    fn drop(&mut self) {
        if !self.done {
            println!(
                "edge: its own deadline fired after {} ms; the work was dropped",
                self.since.elapsed().as_millis()
            );
        }
    }
}

async fn edge(State(edge): State<Edge>, headers: HeaderMap) -> Result<String, Error> {
    println!(
        "edge: received {}, deadline in {} ms",
        received(&headers),
        left_ms()
    );
    let mut guard = WorkGuard {
        since: Instant::now(),
        done: false,
    };
    tokio::time::sleep(edge.work).await; // the edge's own work
    guard.done = true;
    println!(
        "edge: worked {} ms, calling the downstream with {} ms left",
        edge.work.as_millis(),
        left_ms()
    );
    let req = Request::get(edge.downstream)
        .body(Full::default())
        .map_err(Error::from_inner)?;
    let res = edge.client.oneshot(req).await?;
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(Error::from_inner)?
        .to_bytes();
    Ok(format!(
        "edge ok, downstream said: {}",
        String::from_utf8_lossy(&body)
    ))
}

async fn downstream(State(calls): State<Arc<AtomicUsize>>, headers: HeaderMap) -> String {
    calls.fetch_add(1, Ordering::SeqCst);
    let left = left_ms();
    println!(
        "downstream: received {}, deadline in {left} ms (its own budget is {} s: it does not extend the caller's)",
        received(&headers),
        SERVER_BUDGET.as_secs()
    );
    format!("done with {left} ms to spare")
}
