//! The recommended stacks, end to end over loopback: every rampart layer in
//! one `ServiceBuilder`, through the facade's `ServiceBuilderExt`.
//!
//! Client, outermost first: context propagation → total deadline → retry →
//! concurrency limit → per-attempt timeout → deadline on the wire → hyper.
//! Server: request id → handle errors → deadline from headers → limit →
//! handler.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rampart::prelude::*;
use rampart::retry::{Backoff, Jitter, ReplayBody};
use rampart_testkit::{FlakyServer, Reply};
use tower::{ServiceBuilder, ServiceExt};

type HttpClient = Client<HttpConnector, ReplayBody<Full<Bytes>>>;

/// Every real-socket test is bounded.
const BOUND: Duration = Duration::from_secs(20);

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn id(s: &str) -> RequestId {
    RequestId::parse(s.as_bytes()).unwrap()
}

#[tokio::test]
async fn client_stack_retries_through_failures_carrying_id_and_a_shrinking_deadline() {
    tokio::time::timeout(BOUND, async {
        let server = FlakyServer::builder()
            .script([
                Reply::status(503).retry_after("0"),
                Reply::reset(),
                Reply::ok().body("finally"),
            ])
            .start()
            .await
            .unwrap();
        let stack = ServiceBuilder::new()
            .propagate_context()
            .deadline(Duration::from_secs(5))
            .retry_with(
                RetryLayer::http()
                    .max_attempts(3)
                    .backoff(Backoff::exponential(Duration::from_millis(10)).jitter(Jitter::None))
                    .attempt_header(http::HeaderName::from_static("x-retry-attempt"))
                    .build()
                    .unwrap(),
            )
            .limit_concurrency(ConcurrencyLimitLayer::new(4))
            .attempt_timeout(Duration::from_secs(2))
            .propagate_deadline()
            .service(client());

        let ctx = Context::new().with_request_id(id("edge-42"));
        let req = Request::put(server.uri("/item"))
            .body(Full::new(Bytes::from_static(b"payload")))
            .unwrap();
        let res = ctx.scope(stack.oneshot(req)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);

        let seen = server.requests();
        assert_eq!(seen.len(), 3, "503, reset, then success");
        let mut last_budget = Duration::MAX;
        for (n, r) in seen.iter().enumerate() {
            assert_eq!(r.header("x-request-id"), Some("edge-42"), "attempt {n}");
            assert_eq!(&r.body[..], b"payload", "body replayed on attempt {n}");
            let ms: u64 = r.header("x-request-timeout-ms").unwrap().parse().unwrap();
            let budget = Duration::from_millis(ms);
            assert!(
                budget <= Duration::from_secs(5),
                "the total deadline is what is sent"
            );
            assert!(
                budget <= last_budget,
                "the deadline never grows between attempts"
            );
            last_budget = budget;
        }
        assert_eq!(seen[0].header("x-retry-attempt"), None);
        assert_eq!(seen[2].header("x-retry-attempt"), Some("3"));
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn client_stack_gives_up_at_the_total_deadline_not_after_every_attempt() {
    tokio::time::timeout(BOUND, async {
        let server = FlakyServer::builder()
            .script([Reply::ok().after(Duration::from_secs(30))])
            .start()
            .await
            .unwrap();
        let stack = ServiceBuilder::new()
            .deadline(Duration::from_millis(200))
            .retry_with(RetryLayer::http().max_attempts(5).build().unwrap())
            .attempt_timeout(Duration::from_secs(10))
            .service(client());
        let started = std::time::Instant::now();
        let req = Request::get(server.uri("/slow"))
            .body(Full::default())
            .unwrap();
        let err = stack.oneshot(req).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(server.request_count(), 1, "no retry outlives the request");
    })
    .await
    .expect("bounded");
}

/// A server built from the recommended server stack, serving `handler`.
async fn serve(limit: ConcurrencyLimitLayer) -> std::net::SocketAddr {
    use axum::routing::get;
    let handler = || async {
        let ctx = Context::current().expect("the request runs in a context");
        tokio::time::sleep(Duration::from_millis(150)).await;
        format!(
            "id={} left<={}ms",
            ctx.request_id().unwrap(),
            ctx.remaining().unwrap().as_millis()
        )
    };
    let stack = ServiceBuilder::new()
        .request_id()
        .handle_errors()
        .deadline_from_headers(Duration::from_secs(5))
        .limit_concurrency(limit);
    let router = axum::Router::new().route("/", get(handler)).layer(stack);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

#[tokio::test]
async fn server_stack_answers_with_id_and_maps_overload_and_expired_deadlines() {
    tokio::time::timeout(BOUND, async {
        let shed = ConcurrencyLimitLayer::builder(1).shed().build().unwrap();
        let addr = serve(shed).await;
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let get = |headers: &[(&str, &str)]| {
            let mut b = Request::get(format!("http://{addr}/"));
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            client.request(b.body(Full::default()).unwrap())
        };

        // A caller's id and deadline reach the handler; the id is echoed.
        let res = get(&[
            ("x-request-id", "caller-7"),
            ("x-request-timeout-ms", "1000"),
        ])
        .await
        .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["x-request-id"], "caller-7");
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes();
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.starts_with("id=caller-7 left<="), "{text}");
        let left: u128 = text
            .trim_start_matches("id=caller-7 left<=")
            .trim_end_matches("ms")
            .parse()
            .unwrap();
        assert!(left < 1000, "the caller's 1 s budget, not the server's 5 s");

        // An expired deadline is 504 without running the handler; a hostile
        // id is replaced in the echo.
        let res = get(&[
            ("x-request-id", "evil;id=\"x\""),
            ("x-request-timeout-ms", "0"),
        ])
        .await
        .unwrap();
        assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
        let echoed = res.headers()["x-request-id"].to_str().unwrap();
        assert_ne!(echoed, "evil;id=\"x\"");
        assert!(RequestId::parse(echoed.as_bytes()).is_ok());

        // Two at once against a shedding limit of 1: one is 503 + Retry-After.
        let (a, b) = tokio::join!(get(&[]), get(&[]));
        let mut statuses = [a.unwrap(), b.unwrap()]
            .map(|r| (r.status(), r.headers().get("retry-after").is_some()));
        statuses.sort_by_key(|(s, _)| s.as_u16());
        assert_eq!(
            statuses,
            [
                (StatusCode::OK, false),
                (StatusCode::SERVICE_UNAVAILABLE, true)
            ]
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn rate_limits_read_straight_through_a_service_builder_chain() {
    use std::num::NonZeroU32;
    let per_second = |n| Quota::per_second(NonZeroU32::new(n).unwrap());
    let svc = ServiceBuilder::new()
        .handle_errors()
        .limit_rate(per_second(10))
        .limit_rate_per_key(
            per_second(1),
            rampart::rate::HeaderKey::from_static("x-tenant"),
        )
        .service(tower::service_fn(|_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
        }));
    let req = |t: &str| Request::builder().header("x-tenant", t).body(()).unwrap();
    assert_eq!(
        svc.clone().oneshot(req("a")).await.unwrap().status(),
        StatusCode::OK
    );
    let refused = svc.clone().oneshot(req("a")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(
        svc.clone().oneshot(req("b")).await.unwrap().status(),
        StatusCode::OK
    );
}
