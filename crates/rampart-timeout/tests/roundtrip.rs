//! Deadline propagation over real sockets: edge client → hop A (a hyper
//! server reading `grpc-timeout`, calling on) → hop B (the testkit's
//! recording server). Each hop receives the time that remains, not the
//! original budget. Real time, bounded by an outer timeout.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rampart_core::codec::parse_grpc_timeout;
use rampart_core::{BoxError, Context, HandleErrorsLayer};
use rampart_testkit::{FlakyServer, Reply};
use rampart_timeout::{DeadlineHeaders, DeadlineLayer, PropagateDeadlineLayer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

type Body = Full<Bytes>;

fn h2_client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

fn grpc_request(uri: String) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/grpc")
        .body(Body::default())
        .unwrap()
}

/// What hop A saw.
#[derive(Clone, Debug, Default)]
struct SeenByA {
    header: Option<Duration>,
    remaining: Option<Duration>,
}

/// Serves `svc` (an `Infallible` tower service) on 127.0.0.1:0 with h2c.
async fn serve<S>(svc: S) -> SocketAddr
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let svc = svc.clone();
            tokio::spawn(async move {
                let hyper_svc = hyper::service::service_fn(move |req| svc.clone().oneshot(req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), hyper_svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn grpc_timeout_round_trip_shows_the_remaining_time_at_every_hop() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let hop_b = FlakyServer::builder()
            .script([Reply::grpc(0)])
            .start()
            .await
            .unwrap();
        let b_uri = hop_b.url("/pkg.B/Call");

        // Hop A: reads grpc-timeout (5 s budget), calls hop B through a
        // propagating client.
        let seen_a = Arc::new(Mutex::new(SeenByA::default()));
        let downstream = ServiceBuilder::new()
            .layer(PropagateDeadlineLayer::new())
            .service(h2_client());
        let handler = {
            let seen_a = seen_a.clone();
            service_fn(move |req: Request<Incoming>| {
                let (seen_a, downstream, b_uri) =
                    (seen_a.clone(), downstream.clone(), b_uri.clone());
                async move {
                    *seen_a.lock().unwrap() = SeenByA {
                        header: req
                            .headers()
                            .get("grpc-timeout")
                            .and_then(|v| parse_grpc_timeout(v.as_bytes())),
                        remaining: Context::current().and_then(|c| c.remaining()),
                    };
                    let res = downstream.oneshot(grpc_request(b_uri)).await?;
                    let mut out = Response::new(Body::default());
                    *out.status_mut() = res.status();
                    Ok::<_, BoxError>(out)
                }
            })
        };
        let hop_a = ServiceBuilder::new()
            .layer(HandleErrorsLayer::new())
            .layer(DeadlineLayer::from_headers(
                Duration::from_secs(5),
                DeadlineHeaders::new(),
            ))
            .service(handler);
        let a_addr = serve(hop_a).await;

        // The edge: a 1 s deadline, propagated.
        let budget = Duration::from_secs(1);
        let edge = ServiceBuilder::new()
            .layer(DeadlineLayer::new(budget))
            .layer(PropagateDeadlineLayer::new())
            .service(h2_client());
        let started = Instant::now();
        let res = edge
            .oneshot(grpc_request(format!("http://{a_addr}/pkg.A/Call")))
            .await
            .unwrap();
        let elapsed = started.elapsed();
        assert_eq!(res.status(), 200);

        let a = seen_a.lock().unwrap().clone();
        let at_a = a.header.expect("hop A received grpc-timeout");
        let at_b = hop_b.requests()[0]
            .header("grpc-timeout")
            .and_then(|v| parse_grpc_timeout(v.as_bytes()))
            .expect("hop B received grpc-timeout");
        // Shrinking, never growing: original > A's > B's, and what was lost
        // on the way is no more than the time that actually went by.
        assert!(
            at_a < budget,
            "hop A got {at_a:?}, not the original {budget:?}"
        );
        assert!(
            at_b < at_a,
            "hop B got {at_b:?}, less than hop A's {at_a:?}"
        );
        assert!(
            at_b + elapsed >= budget,
            "B's {at_b:?} + elapsed {elapsed:?} covers the budget"
        );
        // Hop A's own 5 s budget did not extend the caller's deadline.
        let remaining_a = a
            .remaining
            .expect("hop A ran inside a context with a deadline");
        assert!(
            remaining_a <= at_a,
            "A's context deadline {remaining_a:?} ≤ header {at_a:?}"
        );
        hop_b.shutdown().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn an_expired_propagated_deadline_is_answered_at_once_without_running_the_handler() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let called = Arc::new(Mutex::new(0u32));
        let handler = {
            let called = called.clone();
            service_fn(move |_req: Request<Incoming>| {
                *called.lock().unwrap() += 1;
                async { Ok::<_, BoxError>(Response::new(Body::default())) }
            })
        };
        let hop = ServiceBuilder::new()
            .layer(HandleErrorsLayer::new())
            .layer(DeadlineLayer::from_headers(
                Duration::from_secs(5),
                DeadlineHeaders::new(),
            ))
            .service(handler);
        let addr = serve(hop).await;
        let mut req = grpc_request(format!("http://{addr}/pkg.A/Call"));
        req.headers_mut()
            .insert("grpc-timeout", http::HeaderValue::from_static("0n"));
        let res = h2_client().request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["grpc-status"], "4", "DEADLINE_EXCEEDED");
        let mut req = Request::get(format!("http://{addr}/"))
            .body(Body::default())
            .unwrap();
        req.headers_mut()
            .insert("x-request-timeout-ms", http::HeaderValue::from_static("0"));
        let res = h2_client().request(req).await.unwrap();
        assert_eq!(res.status(), 504);
        assert_eq!(*called.lock().unwrap(), 0);
    })
    .await
    .expect("bounded");
}
