//! Tour section: retry with capped backoff, a budget, and body replay
//! (`rampart-retry`), against local flaky servers. The article's delays
//! shrunk to milliseconds (the `retry_backoff` example runs them in seconds).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, Request};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rampart::BoxError;
use rampart::retry::{Backoff, Budget, Jitter, ReplayBody, RetryLayer};
use rampart_testkit::{FlakyServer, Reply};
use tower::{Layer, ServiceExt, service_fn};

type HttpClient = Client<HttpConnector, ReplayBody<Full<Bytes>>>;

const ATTEMPT: HeaderName = HeaderName::from_static("x-retry-attempt");

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn get(server: &FlakyServer, path: &str) -> Result<Request<Full<Bytes>>, BoxError> {
    Ok(Request::get(server.uri(path)).body(Full::new(Bytes::new()))?)
}

pub(crate) async fn run() -> Result<(), BoxError> {
    crate::heading("retry: capped backoff, budget, body replay (rampart-retry)");
    backoff().await?;
    budget().await?;
    replay().await?;
    cancelled().await
}

/// A 10 s backoff whose request is cancelled 100 ms in: the call ends at
/// once as Cancelled, and the server sees no second attempt.
async fn cancelled() -> Result<(), BoxError> {
    let server = FlakyServer::builder().failure_ratio(1.0).start().await?;
    let retry = RetryLayer::http()
        .backoff(Backoff::constant(Duration::from_secs(10)))
        .build()?
        .layer(client());
    let token = rampart::CancellationToken::new();
    let canceller = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        canceller.cancel();
    });
    let started = Instant::now();
    let res = rampart::Context::new()
        .with_cancellation(token)
        .scope(retry.oneshot(get(&server, "/slow-to-recover")?))
        .await;
    let took = started.elapsed();
    let kind = res.as_ref().err().map(rampart::Error::kind);
    crate::line(format_args!(
        "10 s backoff, cancelled at 100 ms: {kind:?} after {} ms, {} attempt(s) sent",
        took.as_millis(),
        server.request_count()
    ));
    if kind != Some(rampart::ErrorKind::Cancelled)
        || took > Duration::from_secs(2)
        || server.request_count() != 1
    {
        return Err("the cancelled backoff did not end at once as Cancelled".into());
    }
    server.shutdown().await;
    Ok(())
}

/// The article's fetch_with_retry: 70 % failures, 3 attempts, doubling delays.
async fn backoff() -> Result<(), BoxError> {
    let server = FlakyServer::builder()
        .seed(12)
        .failure_ratio(0.7)
        .start()
        .await?;
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let c = client();
    let logged = service_fn(move |req: Request<ReplayBody<Full<Bytes>>>| {
        let n = req.headers().get(&ATTEMPT).cloned();
        let (l, fut) = (l.clone(), c.request(req));
        async move {
            let res = fut.await?;
            let n = n.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("1");
            l.lock()
                .unwrap()
                .push(format!("{n}:{}", res.status().as_u16()));
            Ok::<_, BoxError>(res)
        }
    });
    let retry = RetryLayer::http()
        .max_attempts(3)
        .backoff(
            Backoff::exponential(Duration::from_millis(20))
                .multiplier(2.0)
                .jitter(Jitter::None),
        )
        .attempt_header(ATTEMPT)
        .build()?
        .layer(logged);
    crate::line("70 % failures, 3 attempts, 20 ms doubling (attempt:status)");
    for path in ["/a", "/b", "/c"] {
        log.lock().unwrap().clear();
        let started = Instant::now();
        let res = retry.clone().oneshot(get(&server, path)?).await?;
        let outcome = if res.status().is_success() {
            "ok"
        } else {
            "gave up"
        };
        crate::line(format_args!(
            "GET {path}: {} -> {outcome} in {} ms",
            log.lock().unwrap().join(" "),
            started.elapsed().as_millis()
        ));
    }
    server.shutdown().await;
    Ok(())
}

/// A full outage: the budget caps retry amplification.
async fn budget() -> Result<(), BoxError> {
    const CALLS: u32 = 100;
    let server = FlakyServer::builder().failure_ratio(1.0).start().await?;
    let layer = RetryLayer::http()
        .max_attempts(3)
        .backoff(Backoff::none())
        .budget(Budget::new(0.2, 1, Duration::from_secs(10)))
        .stats()
        .build()?;
    let retry = layer.layer(client());
    for _ in 0..CALLS {
        retry.clone().oneshot(get(&server, "/down")?).await?;
    }
    let s = layer.stats().ok_or("stats are on")?;
    crate::line(format_args!(
        "full outage, {CALLS} calls x 3 attempts allowed: the server saw {} (budget 20 % + 10 floor), {} retries refused",
        server.request_count(),
        s.budget_rejections
    ));
    if server.request_count() > 130 {
        return Err("the budget let too many retries through".into());
    }
    server.shutdown().await;
    Ok(())
}

/// A 10 KiB PUT answered 503 is replayed byte for byte; a 1 MiB one is sent
/// once and the 503 returned.
async fn replay() -> Result<(), BoxError> {
    let server = FlakyServer::builder()
        .script([Reply::status(503), Reply::ok(), Reply::status(503)])
        .start()
        .await?;
    let retry = RetryLayer::http()
        .backoff(Backoff::none())
        .build()?
        .layer(client());
    for size in [10 * 1024, 1024 * 1024] {
        let body: Bytes = (0..size)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>()
            .into();
        let before = server.request_count();
        let req = Request::put(server.uri("/upload")).body(Full::new(body.clone()))?;
        let res = retry.clone().oneshot(req).await?;
        let seen = server.requests();
        let exact = seen[before..].iter().all(|r| r.body == body);
        crate::line(format_args!(
            "PUT {} KiB: {} attempt(s), every body byte-exact: {exact}, final status {}",
            size / 1024,
            seen.len() - before,
            res.status().as_u16()
        ));
        if !exact {
            return Err("a replayed body differed".into());
        }
    }
    server.shutdown().await;
    Ok(())
}
