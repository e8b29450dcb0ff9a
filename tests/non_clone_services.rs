//! `TimeoutLayer`, `DeadlineLayer` and `ConcurrencyLimitLayer` wrap services
//! that are not `Clone` — tower's `BoxService` and a hyper http1
//! `SendRequest` talking to a loopback server — and still bound the wait
//! for a service that is not ready.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rampart::prelude::*;
use rampart::timeout::{DeadlineLayer, TimeoutLayer};
use tower::util::BoxService;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

/// Every real-socket test is bounded.
const BOUND: Duration = Duration::from_secs(20);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// hyper's http1 `SendRequest` as a tower `Service`: one connection, one
/// request at a time (`poll_ready` is `Pending` while a response is
/// outstanding), and not `Clone`.
struct H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>);

type H1Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, hyper::Error>> + Send>>;

impl Service<Request<Empty<Bytes>>> for H1 {
    type Response = Response<Incoming>;
    type Error = hyper::Error;
    type Future = H1Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Empty<Bytes>>) -> H1Future {
        Box::pin(self.0.send_request(req))
    }
}

/// A loopback http1 server: `/slow` answers after 5 s, anything else at once.
async fn server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let handler = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    if req.uri().path() == "/slow" {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"pong"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), handler)
                    .await;
            });
        }
    });
    addr
}

/// A fresh http1 connection to `addr`.
async fn connect(addr: std::net::SocketAddr) -> H1 {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    H1(send)
}

fn get(addr: std::net::SocketAddr, path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .header("host", addr.to_string())
        .body(Empty::new())
        .unwrap()
}

async fn body(res: Response<Incoming>) -> Bytes {
    res.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn each_layer_wraps_a_hyper_http1_send_request() {
    tokio::time::timeout(BOUND, async {
        let addr = server().await;

        let mut svc = TimeoutLayer::new(ms(2000)).layer(connect(addr).await);
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(get(addr, "/"))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body(res).await, "pong");

        let mut svc = DeadlineLayer::new(ms(2000)).layer(connect(addr).await);
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(get(addr, "/"))
            .await
            .unwrap();
        assert_eq!(body(res).await, "pong");

        let limit = ConcurrencyLimitLayer::new(1);
        let mut svc = limit.layer(connect(addr).await);
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(get(addr, "/"))
            .await
            .unwrap();
        assert_eq!(body(res).await, "pong");
        assert_eq!(limit.stats().in_flight, 0);

        // All three in one chain, as a client stack has them.
        let mut svc = ServiceBuilder::new()
            .layer(DeadlineLayer::new(ms(3000)))
            .layer(ConcurrencyLimitLayer::new(4))
            .layer(TimeoutLayer::new(ms(2000)))
            .service(connect(addr).await);
        for _ in 0..3 {
            let res = svc
                .ready()
                .await
                .unwrap()
                .call(get(addr, "/"))
                .await
                .unwrap();
            assert_eq!(body(res).await, "pong");
        }
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_busy_http1_connection_is_waited_for_at_most_the_timeout() {
    tokio::time::timeout(BOUND, async {
        let addr = server().await;
        for (name, mut svc) in [
            (
                "timeout",
                BoxService::new(TimeoutLayer::new(ms(100)).layer(connect(addr).await)),
            ),
            (
                "deadline",
                BoxService::new(DeadlineLayer::new(ms(100)).layer(connect(addr).await)),
            ),
        ] {
            // The first call (to /slow, kept alive) keeps the connection
            // busy, so the next poll_ready is Pending until the timer.
            let first = svc.ready().await.unwrap().call(get(addr, "/slow"));
            let start = tokio::time::Instant::now();
            let second = svc.ready().await.unwrap().call(get(addr, "/")).await;
            let err = second.expect_err("the connection is still busy");
            assert!(
                matches!(err.kind(), ErrorKind::Timeout | ErrorKind::DeadlineExceeded),
                "{name}: {err}"
            );
            let waited = start.elapsed();
            assert!(
                waited >= ms(100) && waited < ms(2000),
                "{name}: waited {waited:?} for readiness"
            );
            drop(first);
        }
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn the_three_layers_chain_around_a_box_service() {
    // (The paused-clock tests of a never-ready BoxService live in the
    // rampart-timeout and rampart-limit crates.)
    let limit = ConcurrencyLimitLayer::new(2);
    let inner = BoxService::new(tower::service_fn(|n: u32| async move {
        Ok::<_, Infallible>(n + 1)
    }));
    let mut svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(ms(5000)))
        .layer(limit.clone())
        .layer(TimeoutLayer::new(ms(5000)))
        .service(inner);
    for n in 0..3 {
        assert_eq!(svc.ready().await.unwrap().call(n).await.unwrap(), n + 1);
    }
    assert_eq!(limit.stats().in_flight, 0);
}
