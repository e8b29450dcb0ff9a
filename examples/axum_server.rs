//! The recommended server stack around an axum router, with graceful
//! shutdown.
//!
//! ```text
//! request id → handle errors → cancel/drain → deadline from headers → concurrency limit → handler
//! ```
//!
//! - `cargo run --example axum_server [PORT]` serves on 127.0.0.1:PORT (0 or
//!   no argument: a free port) until Ctrl-C, then drains the requests in
//!   flight for up to 5 s and prints the drain report.
//! - `cargo run --example axum_server -- --self-test` starts the server,
//!   calls it with a hyper client (an id, an expired deadline, a burst over
//!   the limit, a request in flight during the drain), shuts it down and
//!   exits non-zero if any outcome is not the expected one.
//!
//! Routes: `GET /hello` answers at once with the request id and the time
//! left before its deadline; `GET /slow?ms=N` sleeps N ms (at most 10 s)
//! and wakes early if the request is cancelled.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rampart::BoxError;
use rampart::cancel::{CancelLayer, DrainReport, Shutdown};
use rampart::prelude::*;
use tokio::net::TcpListener;
use tower::ServiceBuilder;

/// Concurrent handlers at most; the rest are shed with 503 + Retry-After.
const LIMIT: usize = 4;
/// Deadline of a request whose caller sent none (and cap of those sent).
const SERVER_BUDGET: Duration = Duration::from_secs(5);
/// How long a drain waits for the requests in flight before cancelling them.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

fn request_id() -> String {
    Context::current()
        .and_then(|c| c.request_id().map(ToString::to_string))
        .unwrap_or_else(|| "none".into())
}

async fn hello() -> String {
    let left = Context::current()
        .and_then(|c| c.remaining())
        .map_or_else(|| "none".into(), |d| format!("{}ms", d.as_millis()));
    format!("hello, request {} (deadline in {left})\n", request_id())
}

async fn slow(uri: Uri) -> String {
    let ms = uri
        .query()
        .and_then(|q| q.strip_prefix("ms="))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(500)
        .min(10_000);
    // The request's cancellation token: fires on drain, caller gone, or the
    // server-wide cancel. The deadline layer bounds the sleep anyway.
    let token = Context::current().and_then(|c| c.cancellation().cloned());
    let sleep = tokio::time::sleep(Duration::from_millis(ms));
    match token {
        Some(t) => {
            tokio::select! {
                () = sleep => {}
                () = t.cancelled() => return "cancelled\n".into(),
            }
        }
        None => sleep.await,
    }
    format!("slept {ms}ms for request {}\n", request_id())
}

/// The router behind the recommended server stack. The limit layer is
/// returned too so its stats can be read.
fn app(shutdown: &Shutdown) -> Result<(Router, ConcurrencyLimitLayer), BoxError> {
    let limit = ConcurrencyLimitLayer::builder(LIMIT)
        .shed()
        .retry_after(Some(Duration::from_secs(1)))
        .build()?;
    let stack = ServiceBuilder::new()
        .request_id()
        .handle_errors()
        .layer(CancelLayer::with_shutdown(shutdown))
        .deadline_from_headers(SERVER_BUDGET)
        .limit_concurrency(limit.clone());
    let router = Router::new()
        .route("/hello", get(hello))
        .route("/slow", get(slow))
        .layer(stack);
    Ok((router, limit))
}

struct Server {
    addr: SocketAddr,
    shutdown: Shutdown,
    limit: ConcurrencyLimitLayer,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(port: u16) -> Result<Server, BoxError> {
    let shutdown = Shutdown::new();
    let (router, limit) = app(&shutdown)?;
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    // The listener stops accepting as soon as the drain begins.
    let task = tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.draining())
            .into_future(),
    );
    Ok(Server {
        addr,
        shutdown,
        limit,
        task,
    })
}

impl Server {
    /// Drains the requests in flight, then waits for the listener task.
    async fn stop(self) -> Result<DrainReport, BoxError> {
        let report = self.shutdown.drain(DRAIN_DEADLINE).await;
        println!(
            "drain: {} in flight at start, {} completed, {} cancelled, {} refused, deadline hit: {}, took {:?}",
            report.in_flight_at_start(),
            report.completed(),
            report.cancelled(),
            report.refused(),
            report.deadline_hit(),
            report.elapsed()
        );
        // Keep-alive connections close once idle; do not wait for ever.
        match tokio::time::timeout(Duration::from_secs(5), self.task).await {
            Ok(joined) => joined??,
            Err(_) => println!("listener still had idle connections after 5 s; leaving them"),
        }
        Ok(report)
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut port = 0;
    let mut self_test = false;
    for arg in std::env::args().skip(1) {
        if arg == "--self-test" {
            self_test = true;
        } else {
            port = arg
                .parse()
                .map_err(|_| format!("usage: axum_server [PORT] [--self-test], got {arg:?}"))?;
        }
    }
    if self_test {
        return run_self_test().await;
    }

    let server = start(port).await?;
    println!(
        "serving on http://{} (limit {LIMIT}, budget {SERVER_BUDGET:?}); Ctrl-C to drain and stop",
        server.addr
    );
    println!(
        "  try: curl -i -H 'x-request-id: demo-1' -H 'x-request-timeout-ms: 800' http://{}/hello",
        server.addr
    );
    tokio::signal::ctrl_c().await?;
    println!("\nCtrl-C: draining (up to {DRAIN_DEADLINE:?})");
    server.stop().await?;
    Ok(())
}

// ---------------------------------------------------------------- self-test

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

struct Reply {
    status: StatusCode,
    id: Option<String>,
    retry_after: Option<String>,
    body: String,
}

async fn call(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, BoxError> {
    let mut req = Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client.request(req.body(Empty::new())?).await?;
    let text = |n: &str| {
        res.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (status, id, retry_after) = (res.status(), text("x-request-id"), text("retry-after"));
    let body = res.into_body().collect().await?.to_bytes();
    Ok(Reply {
        status,
        id,
        retry_after,
        body: String::from_utf8_lossy(&body).trim_end().to_owned(),
    })
}

struct Checks {
    failed: usize,
}

impl Checks {
    fn check(&mut self, what: &str, ok: bool, seen: impl std::fmt::Display) {
        println!("  [{}] {what}: {seen}", if ok { "pass" } else { "FAIL" });
        if !ok {
            self.failed += 1;
        }
    }
}

async fn run_self_test() -> Result<(), BoxError> {
    let outcome = tokio::time::timeout(Duration::from_secs(30), self_test_body()).await;
    match outcome {
        Ok(Ok(0)) => {
            println!("self-test: all checks passed");
            Ok(())
        }
        Ok(Ok(n)) => Err(format!("self-test: {n} check(s) failed").into()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("self-test: did not finish within 30 s".into()),
    }
}

async fn self_test_body() -> Result<usize, BoxError> {
    let server = start(0).await?;
    let addr = server.addr;
    println!("self-test against http://{addr}");
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut c = Checks { failed: 0 };

    // 1. A caller's id and deadline reach the handler; the id is echoed.
    let r = call(
        &client,
        addr,
        "/hello",
        &[
            ("x-request-id", "self-test-1"),
            ("x-request-timeout-ms", "800"),
        ],
    )
    .await?;
    c.check(
        "id echoed and seen by the handler",
        r.status == StatusCode::OK
            && r.id.as_deref() == Some("self-test-1")
            && r.body.contains("request self-test-1"),
        format!("{} id={:?} body={:?}", r.status, r.id, r.body),
    );

    // 2. No id: one is generated (a UUIDv7) and echoed.
    let r = call(&client, addr, "/hello", &[]).await?;
    let generated =
        r.id.as_deref()
            .is_some_and(|id| RequestId::parse(id.as_bytes()).is_ok());
    c.check(
        "an id is generated when none is sent",
        r.status == StatusCode::OK && generated,
        format!("{} id={:?}", r.status, r.id),
    );

    // 3. A hostile id is replaced, not echoed.
    let hostile = "evil\"; drop table";
    let r = call(&client, addr, "/hello", &[("x-request-id", hostile)]).await?;
    c.check(
        "a hostile id is replaced",
        r.status == StatusCode::OK && r.id.as_deref().is_some_and(|id| id != hostile),
        format!("{} id={:?}", r.status, r.id),
    );

    // 4. An expired deadline: 504 without running the handler.
    let r = call(
        &client,
        addr,
        "/slow?ms=2000",
        &[("x-request-timeout-ms", "0")],
    )
    .await?;
    c.check(
        "expired deadline on arrival is 504",
        r.status == StatusCode::GATEWAY_TIMEOUT,
        r.status,
    );

    // 5. A deadline shorter than the work: 504 at the deadline.
    let started = std::time::Instant::now();
    let r = call(
        &client,
        addr,
        "/slow?ms=3000",
        &[("x-request-timeout-ms", "200")],
    )
    .await?;
    let took = started.elapsed();
    c.check(
        "a 200 ms caller deadline stops a 3 s handler with 504",
        r.status == StatusCode::GATEWAY_TIMEOUT && took < Duration::from_secs(2),
        format!("{} after {took:?}", r.status),
    );

    // 6. A burst over the limit: LIMIT succeed, the rest are shed with 503 +
    //    Retry-After.
    let burst = LIMIT * 3;
    let calls = (0..burst).map(|_| call(&client, addr, "/slow?ms=300", &[]));
    let replies = futures_util::future::join_all(calls).await;
    let (mut ok, mut shed, mut other) = (0, 0, 0);
    for r in replies {
        match r {
            Ok(r) if r.status == StatusCode::OK => ok += 1,
            Ok(r) if r.status == StatusCode::SERVICE_UNAVAILABLE && r.retry_after.is_some() => {
                shed += 1;
            }
            _ => other += 1,
        }
    }
    c.check(
        &format!("burst of {burst} over a limit of {LIMIT}"),
        (1..=LIMIT * 2).contains(&ok) && shed >= 1 && other == 0 && ok + shed == burst,
        format!("{ok} ok, {shed} shed (503 + Retry-After), {other} other"),
    );
    let stats = server.limit.stats();
    c.check(
        "no permit held after the burst",
        stats.in_flight == 0,
        format!("in flight {}, shed {}", stats.in_flight, stats.shed),
    );

    // 7. Drain with one short and one long request in flight: the short one
    //    completes; the long one (10 s) is cancelled at the drain deadline
    //    (shortened here by calling drain with 500 ms).
    let short = tokio::spawn({
        let client = client.clone();
        async move { call(&client, addr, "/slow?ms=200", &[]).await }
    });
    let long = tokio::spawn({
        let client = client.clone();
        async move { call(&client, addr, "/slow?ms=10000", &[]).await }
    });
    // Wait until both are admitted.
    let admitted = tokio::time::timeout(Duration::from_secs(5), async {
        while server.shutdown.in_flight() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .is_ok();
    c.check(
        "two requests in flight before the drain",
        admitted,
        server.shutdown.in_flight(),
    );
    let report = server.shutdown.drain(Duration::from_millis(500)).await;
    println!(
        "  drain: {} in flight at start, {} completed, {} cancelled, deadline hit: {}, took {:?}",
        report.in_flight_at_start(),
        report.completed(),
        report.cancelled(),
        report.deadline_hit(),
        report.elapsed()
    );
    c.check(
        "drain: the short request completed, the long one was cancelled",
        report.completed() == 1 && report.cancelled() == 1,
        format!(
            "completed {}, cancelled {}",
            report.completed(),
            report.cancelled()
        ),
    );
    let short = short.await?;
    c.check(
        "the short request got its 200",
        short.as_ref().is_ok_and(|r| r.status == StatusCode::OK),
        short.map_or_else(|e| e.to_string(), |r| r.status.to_string()),
    );
    // A cancelled request is answered 499 when the connection is still
    // there (or the connection is closed); either way it ends.
    let long = long.await?;
    c.check(
        "the long request ended (cancelled, 499)",
        long.as_ref()
            .is_ok_and(|r| r.status.as_u16() == 499 || r.body == "cancelled"),
        long.map_or_else(|e| e.to_string(), |r| r.status.to_string()),
    );
    // After the drain, nothing is admitted (the listener is closing; a
    // request on a kept-alive connection gets 503 Closed, a new connection
    // is refused).
    let after = call(&client, addr, "/hello", &[]).await;
    c.check(
        "nothing admitted after the drain",
        after
            .as_ref()
            .map_or(true, |r| r.status == StatusCode::SERVICE_UNAVAILABLE),
        after.map_or_else(|e| format!("refused ({e})"), |r| r.status.to_string()),
    );
    drop(client);
    match tokio::time::timeout(Duration::from_secs(5), server.task).await {
        Ok(joined) => {
            joined??;
            c.check("the listener stopped", true, "stopped");
        }
        Err(_) => c.check("the listener stopped", false, "still running after 5 s"),
    }
    Ok(c.failed)
}
