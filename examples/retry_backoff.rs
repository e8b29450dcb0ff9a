//! Retry with backoff: the article's `fetch_with_retry`, against a real
//! flaky server, then a retry budget capping amplification in a full outage.
//!
//! Run it with `cargo run --example retry_backoff` (about 10 s: the article's
//! delays are real seconds).
//!
//! Part 1 is the article's scenario: a server failing 70 % of requests
//! (seeded, so every run is the same), 3 attempts in all, a 1 s base delay
//! doubling (1 s, then 2 s). Each attempt is printed with the delay that
//! preceded it.
//!
//! Part 2 is what the article leaves out: during a full outage, every
//! caller retrying multiplies the load on a service that is already down.
//! The same 200 calls are made without and with a retry budget (20 % of
//! calls, plus 1 retry/s, over 10 s), and the attempts the server saw are
//! counted. The example exits non-zero if the budget's bound does not hold.
//!
//! Part 3 is the same retry around a tonic `Channel`: a tonic-health
//! client and server over loopback, the server answering UNAVAILABLE twice
//! (the second time with `grpc-retry-pushback-ms: 300`) before it answers.
//! `RetryLayer::tonic()` is the named adapter: it replays the request body
//! as the `tonic::body::Body` a `Channel` takes. The example exits non-zero
//! if the client does not get SERVING on the third attempt.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rampart::BoxError;
use rampart::retry::{Backoff, Budget, Jitter, ReplayBody, RetryLayer};
use rampart_testkit::FlakyServer;
use tower::{Layer, Service, ServiceExt, service_fn};

type Body = Empty<Bytes>;
type HttpClient = Client<HttpConnector, ReplayBody<Body>>;

const ATTEMPT: HeaderName = HeaderName::from_static("x-retry-attempt");

/// The client, printing every attempt and the pause before it.
fn logged_client(
    client: HttpClient,
    last_end: Arc<Mutex<Option<Instant>>>,
) -> impl Service<
    Request<ReplayBody<Body>>,
    Response = Response<Incoming>,
    Error = BoxError,
    Future: Send,
> + Clone {
    service_fn(move |req: Request<ReplayBody<Body>>| {
        // The retry layer stamps `x-retry-attempt: n` on attempts 2, 3, …
        let n = req
            .headers()
            .get(&ATTEMPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("1")
            .to_owned();
        let waited = last_end
            .lock()
            .unwrap()
            .map(|t: Instant| format!("after {:.1} s", t.elapsed().as_secs_f64()))
            .unwrap_or_else(|| "at once".to_owned());
        let fut = client.request(req);
        let last_end = last_end.clone();
        async move {
            let res = fut.await;
            *last_end.lock().unwrap() = Some(Instant::now());
            match &res {
                Ok(r) => println!("  attempt {n}/3 ({waited}): {}", r.status()),
                Err(e) => println!("  attempt {n}/3 ({waited}): error {e}"),
            }
            res.map_err(BoxError::from)
        }
    })
}

async fn article(server: &FlakyServer) -> Result<(), BoxError> {
    println!("Part 1: fetch_with_retry(max_retries=3, base_delay=1) against a server failing 70 %");
    let last_end = Arc::new(Mutex::new(None));
    let retry = RetryLayer::http()
        .max_attempts(3) // the article's max_retries=3: three calls in all
        .backoff(
            Backoff::exponential(Duration::from_secs(1))
                .multiplier(2.0)
                .jitter(Jitter::None), // the article's 1 s, 2 s
        )
        .attempt_header(ATTEMPT)
        .build()?
        .layer(logged_client(
            Client::builder(TokioExecutor::new()).build_http(),
            last_end.clone(),
        ));
    for name in ["api.example.com", "api.example.org", "api.example.net"] {
        println!("fetch {name}");
        *last_end.lock().unwrap() = None;
        let req = Request::get(server.uri(&format!("/{name}"))).body(Empty::new())?;
        match retry.clone().oneshot(req).await {
            Ok(res) if res.status().is_success() => {
                let body = res.into_body().collect().await?.to_bytes();
                println!("  => Data from {name} ({})", String::from_utf8_lossy(&body));
            }
            Ok(res) => println!("  => gave up: last response {}", res.status()),
            Err(e) => println!("  => gave up: {e}"),
        }
    }
    Ok(())
}

/// Sends `calls` requests through `layer` to a server that is down; returns
/// the attempts the server saw.
async fn outage(
    calls: u32,
    layer: RetryLayer<rampart::HttpOrGrpcClassify, rampart::retry::ReplayHttp>,
) -> Result<usize, BoxError> {
    let server = FlakyServer::builder().failure_ratio(1.0).start().await?;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let retry = layer.layer(client);
    for _ in 0..calls {
        let req = Request::get(server.uri("/orders")).body(Empty::new())?;
        let res = retry.clone().oneshot(req).await?;
        assert_eq!(res.status(), 503);
    }
    let seen = server.request_count();
    server.shutdown().await;
    Ok(seen)
}

async fn budget() -> Result<bool, BoxError> {
    const CALLS: u32 = 200;
    println!();
    println!("Part 2: {CALLS} calls, 3 attempts each, during a full outage (every request fails)");
    let plain = RetryLayer::http()
        .max_attempts(3)
        .backoff(Backoff::none())
        .build()?;
    let without = outage(CALLS, plain).await?;
    println!(
        "  without a budget: the server saw {without} attempts ({:.2}x the calls)",
        f64::from(u32::try_from(without)?) / f64::from(CALLS)
    );

    let (ratio, min_per_sec, ttl) = (0.2, 1_u32, Duration::from_secs(10));
    let budget = Budget::try_new(ratio, usize::try_from(min_per_sec)?, ttl)?;
    let layer = RetryLayer::http()
        .max_attempts(3)
        .backoff(Backoff::none())
        .budget(budget)
        .stats()
        .build()?;
    let with = outage(CALLS, layer.clone()).await?;
    let s = layer.stats().ok_or("stats are on")?;
    println!(
        "  with a budget (ratio {ratio}, {min_per_sec}/s floor, ttl {ttl:?}): {with} attempts ({:.2}x)",
        f64::from(u32::try_from(with)?) / f64::from(CALLS)
    );
    println!(
        "  retries {}, refused by the budget {}, other give-ups {}",
        s.retries, s.budget_rejections, s.exhausted
    );
    let bound = f64::from(CALLS) * (1.0 + ratio) + f64::from(min_per_sec) * ttl.as_secs_f64();
    println!("  bound: calls x (1 + ratio) + floor = {bound}");
    Ok(f64::from(u32::try_from(with)?) <= bound)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let server = FlakyServer::builder()
        .seed(12)
        .failure_ratio(0.7)
        .start()
        .await?;
    article(&server).await?;
    server.shutdown().await;
    if !budget().await? {
        eprintln!("the budget let more retries through than its bound");
        std::process::exit(1);
    }
    if !grpc().await? {
        eprintln!("the tonic client did not get SERVING on its third attempt");
        std::process::exit(1);
    }
    Ok(())
}

/// Part 3: `RetryLayer::tonic()` around a tonic `Channel`.
async fn grpc() -> Result<bool, BoxError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    println!();
    println!(
        "Part 3: a tonic-health client through RetryLayer::tonic(), the server unavailable twice"
    );
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("shop.Orders", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let started = Instant::now();
    // The first two requests are refused: UNAVAILABLE, then UNAVAILABLE
    // with a 300 ms pushback.
    let flaky = tower::layer::layer_fn(move |inner| {
        let counter = counter.clone();
        tower::util::BoxCloneService::new(tower::service_fn(move |req| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let mut inner = Clone::clone(&inner);
            println!("  attempt {n} at {:.2} s", started.elapsed().as_secs_f64());
            async move {
                let refuse = |pushback: Option<&'static str>| {
                    let mut res: http::Response<tonic::body::Body> =
                        tonic::Status::unavailable("warming up").into_http();
                    if let Some(ms) = pushback {
                        res.headers_mut()
                            .insert("grpc-retry-pushback-ms", http::HeaderValue::from_static(ms));
                    }
                    Ok(res)
                };
                match n {
                    1 => refuse(None),
                    2 => refuse(Some("300")),
                    _ => tower::Service::<http::Request<_>>::call(&mut inner, req).await,
                }
            }
        }))
    });
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(flaky)
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let retry = RetryLayer::tonic()
        .max_attempts(3)
        .backoff(Backoff::exponential(Duration::from_millis(100)).jitter(Jitter::Grpc))
        .build()?;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?.connect_lazy();
    let mut client = HealthClient::new(tower::ServiceBuilder::new().layer(retry).service(channel));
    let res = client
        .check(HealthCheckRequest {
            service: "shop.Orders".to_owned(),
        })
        .await?;
    let status = res.into_inner().status();
    println!(
        "  => {status:?} after {} attempts",
        seen.load(Ordering::SeqCst)
    );
    server.abort();
    drop(reporter);
    Ok(status == ServingStatus::Serving && seen.load(Ordering::SeqCst) == 3)
}
