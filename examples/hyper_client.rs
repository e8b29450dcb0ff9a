//! The recommended client stack around a hyper-util client, against a flaky
//! local server (`rampart_testkit::FlakyServer`).
//!
//! ```text
//! propagate context → total deadline → retry (with budget) → concurrency limit
//!   → per-attempt timeout → deadline on the wire → hyper-util client
//! ```
//!
//! Run it with `cargo run --example hyper_client`. Each scenario prints what
//! the server did, what the caller got and how many attempts it took; the
//! example exits non-zero if any outcome is not the expected one.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rampart::prelude::*;
use rampart::retry::{Jitter, ReplayBody, ReplayHttp};
use rampart::{BoxError, Error};
use rampart_testkit::{FlakyServer, Reply};
use tower::{Service, ServiceBuilder, ServiceExt};

type HttpClient = Client<HttpConnector, ReplayBody<Full<Bytes>>>;
type Retry = RetryLayer<HttpOrGrpcClassify, ReplayHttp>;

/// The client stack's settings for one scenario.
struct Settings {
    total: Duration,
    attempt: Duration,
    max_attempts: usize,
    limit: usize,
    budget: Budget,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            total: Duration::from_secs(3),
            attempt: Duration::from_millis(300),
            max_attempts: 3,
            limit: 8,
            // 10 % of calls may be retried, plus 2 retries a second, over 10 s.
            budget: Budget::new(0.1, 2, Duration::from_secs(10)),
        }
    }
}

/// What the client stack is: a cloneable service from requests to
/// responses or a rampart [`Error`].
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

/// The recommended client stack; the retry layer is returned too, for its
/// stats.
fn client_stack(s: Settings) -> Result<(impl ClientStack, Retry), BoxError> {
    let retry = RetryLayer::http()
        .max_attempts(s.max_attempts)
        .backoff(Backoff::exponential(Duration::from_millis(20)).jitter(Jitter::Full))
        .budget(s.budget)
        .stats()
        .seed(21)
        .build()?;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let svc = ServiceBuilder::new()
        .propagate_context()
        .deadline(s.total)
        .retry_with(retry.clone())
        .limit_concurrency(ConcurrencyLimitLayer::new(s.limit))
        .attempt_timeout(s.attempt)
        .propagate_deadline()
        .service(client);
    Ok((svc, retry))
}

fn request(
    method: Method,
    server: &FlakyServer,
    path: &str,
) -> Result<Request<Full<Bytes>>, BoxError> {
    Ok(Request::builder()
        .method(method)
        .uri(server.uri(path))
        .body(Full::new(Bytes::from_static(b"payload")))?)
}

/// Outcome of one call: a status or an error kind.
fn outcome(r: &Result<Response<Incoming>, Error>) -> String {
    match r {
        Ok(res) => res.status().to_string(),
        Err(e) => format!("error {:?} ({e})", e.kind()),
    }
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

fn attempts(retry: &Retry) -> String {
    retry.stats().map_or_else(String::new, |s| {
        format!(
            "calls {}, retries {}, budget rejections {}, exhausted {}",
            s.calls, s.retries, s.budget_rejections, s.exhausted
        )
    })
}

async fn through_failures(c: &mut Checks) -> Result<(), BoxError> {
    println!("1. 503 + Retry-After: 0, then a connection reset, then 200 (GET):");
    let server = FlakyServer::builder()
        .script([
            Reply::status(503).retry_after("0"),
            Reply::reset(),
            Reply::ok(),
        ])
        .start()
        .await?;
    let (svc, retry) = client_stack(Settings::default())?;
    let ctx = Context::new().with_request_id(RequestId::parse(b"order-21")?);
    let r = ctx
        .scope(svc.oneshot(request(Method::GET, &server, "/flaky")?))
        .await;
    let seen = server.requests();
    let ids: Vec<_> = seen.iter().map(|r| r.header("x-request-id")).collect();
    let budgets: Vec<u64> = seen
        .iter()
        .filter_map(|r| r.header("x-request-timeout-ms")?.parse().ok())
        .collect();
    println!(
        "     server saw {} attempts, ids {ids:?}, deadlines (ms) {budgets:?}",
        seen.len()
    );
    println!("     retry stats: {}", attempts(&retry));
    c.check(
        "succeeds on the 3rd attempt",
        r.as_ref().is_ok_and(|r| r.status() == StatusCode::OK) && seen.len() == 3,
        outcome(&r),
    );
    c.check(
        "every attempt carries the caller's id and a deadline that never grows",
        ids.iter().all(|i| *i == Some("order-21"))
            && budgets.len() == 3
            && budgets.windows(2).all(|w| w[1] <= w[0])
            && budgets[0] <= 3000,
        format!("{ids:?} {budgets:?}"),
    );
    Ok(())
}

async fn hung_attempt(c: &mut Checks) -> Result<(), BoxError> {
    println!("2. the first attempt hangs; the per-attempt timeout (300 ms) frees it:");
    let server = FlakyServer::builder()
        .script([Reply::hang(), Reply::ok()])
        .start()
        .await?;
    let (svc, retry) = client_stack(Settings::default())?;
    let started = Instant::now();
    let r = svc.oneshot(request(Method::GET, &server, "/hang")?).await;
    let took = started.elapsed();
    println!("     retry stats: {}", attempts(&retry));
    c.check(
        "200 on the 2nd attempt, after one 300 ms timeout",
        r.as_ref().is_ok_and(|r| r.status() == StatusCode::OK)
            && server.request_count() == 2
            && took >= Duration::from_millis(300)
            && took < Duration::from_secs(2),
        format!("{} after {took:?}", outcome(&r)),
    );
    Ok(())
}

async fn not_idempotent(c: &mut Checks) -> Result<(), BoxError> {
    println!("3. POST (not idempotent) answered 503: not retried, the 503 comes back:");
    let server = FlakyServer::builder()
        .script([Reply::status(503), Reply::ok()])
        .start()
        .await?;
    let (svc, _) = client_stack(Settings::default())?;
    let r = svc.oneshot(request(Method::POST, &server, "/order")?).await;
    c.check(
        "one attempt, 503 returned as it is",
        r.as_ref()
            .is_ok_and(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE)
            && server.request_count() == 1,
        format!("{}, {} attempt(s)", outcome(&r), server.request_count()),
    );
    Ok(())
}

async fn total_deadline(c: &mut Checks) -> Result<(), BoxError> {
    println!("4. every attempt hangs: the 1 s total deadline ends the retries:");
    let server = FlakyServer::builder()
        .handler(|_| Some(Reply::hang()))
        .start()
        .await?;
    let (svc, retry) = client_stack(Settings {
        total: Duration::from_secs(1),
        attempt: Duration::from_millis(400),
        max_attempts: 10,
        ..Settings::default()
    })?;
    let started = Instant::now();
    let r = svc.oneshot(request(Method::GET, &server, "/hang")?).await;
    let took = started.elapsed();
    println!(
        "     {} attempts, retry stats: {}",
        server.request_count(),
        attempts(&retry)
    );
    c.check(
        "DeadlineExceeded at about 1 s, not after 10 attempts",
        r.as_ref()
            .is_err_and(|e| e.kind() == ErrorKind::DeadlineExceeded)
            && took < Duration::from_millis(1500)
            && server.request_count() <= 3,
        format!("{} after {took:?}", outcome(&r)),
    );
    Ok(())
}

async fn budget(c: &mut Checks) -> Result<(), BoxError> {
    println!("5. the server fails every call: the retry budget bounds the extra load:");
    let server = FlakyServer::builder().failure_ratio(1.0).start().await?;
    let (ratio, floor_per_sec, ttl) = (0.1, 2, Duration::from_secs(10));
    let (svc, retry) = client_stack(Settings {
        max_attempts: 5,
        budget: Budget::new(ratio, floor_per_sec, ttl),
        ..Settings::default()
    })?;
    let calls = 50;
    let mut statuses = Vec::new();
    for _ in 0..calls {
        let r = svc
            .clone()
            .oneshot(request(Method::GET, &server, "/down")?)
            .await;
        statuses.push(outcome(&r));
    }
    let sent = server.request_count();
    // Without a budget: 50 × 5 = 250 attempts.
    let bound =
        calls + (calls as f64 * ratio).ceil() as usize + floor_per_sec * ttl.as_secs() as usize;
    println!("     retry stats: {}", attempts(&retry));
    c.check(
        &format!("{calls} calls, every one answered 503"),
        statuses.iter().all(|s| s.starts_with("503")),
        format!("{} answered", statuses.len()),
    );
    c.check(
        "attempts within calls × (1 + ratio) + floor",
        sent <= bound && sent > calls,
        format!("{sent} attempts (bound {bound}; 250 without a budget)"),
    );
    Ok(())
}

async fn limit(c: &mut Checks) -> Result<(), BoxError> {
    println!("6. 16 concurrent calls through a client limit of 3 (server latency 50 ms):");
    let server = FlakyServer::builder()
        .latency(Duration::from_millis(50))
        .start()
        .await?;
    let (svc, _) = client_stack(Settings {
        limit: 3,
        attempt: Duration::from_secs(2),
        ..Settings::default()
    })?;
    let calls = (0..16).map(|_| {
        let svc = svc.clone();
        let req = request(Method::GET, &server, "/item");
        async move { svc.oneshot(req?).await.map_err(BoxError::from) }
    });
    let results = futures_util::future::join_all(calls).await;
    let ok = results
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|r| r.status() == StatusCode::OK))
        .count();
    c.check(
        "all 16 succeed, the server never sees more than 3 at once",
        ok == 16 && server.peak_inflight() <= 3,
        format!("{ok} ok, server peak in flight {}", server.peak_inflight()),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut c = Checks { failed: 0 };
    let run = async {
        through_failures(&mut c).await?;
        hung_attempt(&mut c).await?;
        not_idempotent(&mut c).await?;
        total_deadline(&mut c).await?;
        budget(&mut c).await?;
        limit(&mut c).await?;
        Ok::<_, BoxError>(())
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .map_err(|_| "hyper_client did not finish within 60 s")??;
    if c.failed > 0 {
        return Err(format!("{} check(s) failed", c.failed).into());
    }
    println!("all checks passed");
    Ok(())
}
