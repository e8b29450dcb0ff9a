//! Feature `tonic`: a real tonic-health client and server over loopback.
//! Rampart failures in the stack under the client reach the caller as the
//! right `tonic::Status` code and metadata; a handler failing with a rampart
//! error answers the same over the wire.
//!
//! Every test is bounded by an outer `tokio::time::timeout`.

use rampart_core::{BoxError, Error, GrpcStatusLayer};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Server, server::TcpIncoming};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tower::{Layer, Service, ServiceExt, service_fn};

async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test took longer than 30 s")
}

/// A health service whose `check` fails with the rampart error named by the
/// request's `service` field, and answers SERVING otherwise.
struct FailingHealth;

#[tonic::async_trait]
impl Health for FailingHealth {
    async fn check(
        &self,
        req: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
        if let Some(e) = named_error(&req.get_ref().service) {
            return Err(e.into());
        }
        Ok(tonic::Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }

    type WatchStream = futures_util::stream::Empty<Result<HealthCheckResponse, tonic::Status>>;

    async fn watch(
        &self,
        _req: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not used"))
    }
}

fn named_error(name: &str) -> Option<Error> {
    Some(match name {
        "timeout" => Error::timeout(),
        "deadline" => Error::deadline_exceeded(),
        "overloaded" => Error::overloaded(Some(Duration::from_millis(250))),
        "overloaded-no-hint" => Error::overloaded(None),
        "rate-limited" => Error::rate_limited(Some(Duration::from_secs(1))),
        "huge-hint" => Error::overloaded(Some(Duration::MAX)),
        "cancelled" => Error::cancelled(),
        "closed" => Error::closed(),
        "retries-timed-out" => Error::retries_exhausted(3, Error::timeout()),
        "retries-closed" => Error::retries_exhausted(3, Error::closed()),
        _ => return None,
    })
}

/// (name, code, pushback metadata)
const CASES: &[(&str, Code, Option<&str>)] = &[
    ("timeout", Code::DeadlineExceeded, None),
    ("deadline", Code::DeadlineExceeded, None),
    ("overloaded", Code::ResourceExhausted, Some("250")),
    ("overloaded-no-hint", Code::ResourceExhausted, None),
    ("rate-limited", Code::ResourceExhausted, Some("1000")),
    ("huge-hint", Code::ResourceExhausted, Some("1000000000000")),
    ("cancelled", Code::Cancelled, None),
    ("closed", Code::Unavailable, None),
    ("retries-timed-out", Code::DeadlineExceeded, None),
    ("retries-closed", Code::Unavailable, None),
];

async fn start_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = Server::builder()
            .add_service(HealthServer::new(FailingHealth))
            .serve_with_incoming(TcpIncoming::from(listener))
            .await;
    });
    (addr, task)
}

async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A stand-in for a rampart layer under the client: fails the call with
/// the error named by `fail` before it reaches the channel, or passes it on.
fn failing_stack(
    channel: Channel,
    fail: Option<&'static str>,
) -> impl Service<
    http::Request<tonic::body::Body>,
    Response = http::Response<tonic::body::Body>,
    Error = BoxError,
    Future = impl Send,
> + Clone
+ Send {
    service_fn(move |req: http::Request<tonic::body::Body>| {
        let mut channel = channel.clone();
        async move {
            if let Some(e) = fail.and_then(named_error) {
                return Err(BoxError::from(e));
            }
            channel.ready().await?;
            channel.call(req).await.map_err(BoxError::from)
        }
    })
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tonic_client_sees_each_rampart_failure_as_its_grpc_code_and_pushback() {
    bounded(async {
        let (addr, server) = start_server().await;
        let channel = channel(addr).await;
        for &(name, code, pushback) in CASES {
            let stack = GrpcStatusLayer::new().layer(failing_stack(channel.clone(), Some(name)));
            let status = HealthClient::new(stack)
                .check(check("ok"))
                .await
                .unwrap_err();
            assert_eq!(status.code(), code, "{name}: {status:?}");
            assert_eq!(
                status
                    .metadata()
                    .get("grpc-retry-pushback-ms")
                    .map(|v| v.to_str().unwrap()),
                pushback,
                "{name}"
            );
        }
        // A call that succeeds goes through unchanged.
        let stack = GrpcStatusLayer::new().layer(failing_stack(channel.clone(), None));
        let res = HealthClient::new(stack).check(check("ok")).await.unwrap();
        assert_eq!(res.get_ref().status, ServingStatus::Serving as i32);
        server.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_layer_tonic_reports_unknown() {
    // What GrpcStatusLayer is for: tonic's own mapping knows no rampart
    // error.
    bounded(async {
        let (addr, server) = start_server().await;
        let status = HealthClient::new(failing_stack(channel(addr).await, Some("timeout")))
            .check(check("ok"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unknown);
        server.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_failure_wrapped_by_rampart_keeps_tonics_unavailable() {
    bounded(async {
        // Bind and drop a listener so the port refuses.
        let refused = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let lazy = Endpoint::from_shared(format!("http://{refused}"))
            .unwrap()
            .connect_lazy();
        // A rampart layer in between wraps the channel's error as Inner.
        let wrapped = service_fn(move |req: http::Request<tonic::body::Body>| {
            let mut ch = lazy.clone();
            async move {
                ch.ready().await.map_err(Error::from_inner)?;
                ch.call(req).await.map_err(Error::from_inner)
            }
        });
        let status = HealthClient::new(GrpcStatusLayer::new().layer(wrapped))
            .check(check("ok"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_failing_with_a_rampart_error_answers_its_status_over_the_wire() {
    bounded(async {
        let (addr, server) = start_server().await;
        let mut client = HealthClient::new(channel(addr).await);
        for &(name, code, pushback) in CASES {
            let status = client.check(check(name)).await.unwrap_err();
            assert_eq!(status.code(), code, "{name}: {status:?}");
            assert_eq!(
                status
                    .metadata()
                    .get("grpc-retry-pushback-ms")
                    .map(|v| v.to_str().unwrap()),
                pushback,
                "{name}"
            );
        }
        server.abort();
    })
    .await;
}

/// A stand-in for a layer that fails while waiting for readiness (a closed
/// queue): `poll_ready` fails with `Closed`; `call` counts.
#[derive(Clone)]
struct NeverReady {
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Service<http::Request<tonic::body::Body>> for NeverReady {
    type Response = http::Response<tonic::body::Body>;
    type Error = Error;
    type Future = std::future::Ready<Result<Self::Response, Error>>;
    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Error>> {
        std::task::Poll::Ready(Err(Error::closed()))
    }
    fn call(&mut self, _: http::Request<tonic::body::Body>) -> Self::Future {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::ready(Err(Error::closed()))
    }
}

#[tokio::test]
async fn a_readiness_failure_reaches_the_client_as_its_code_not_service_not_ready() {
    bounded(async {
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let never = NeverReady {
            calls: calls.clone(),
        };
        // tonic's generated client makes any readiness error UNKNOWN.
        let status = HealthClient::new(never.clone())
            .check(check("ok"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unknown);
        // Through the layer it is the call that fails, with UNAVAILABLE, and
        // the inner service is never called.
        let status = HealthClient::new(GrpcStatusLayer::new().layer(never))
            .check(check("ok"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    })
    .await;
}
