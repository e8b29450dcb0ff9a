//! `RetryLayer::tonic()` around a real tonic `Channel`: a tonic-health
//! client and server over loopback, the server refusing the first calls
//! with UNAVAILABLE.
#![cfg(feature = "tonic")]

use rampart_core::ErrorKind;
use rampart_retry::{Backoff, RetryLayer};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::transport::{Channel, Server};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as Wire;
use tonic_health::pb::health_client::HealthClient;
use tower::{Layer, Service, ServiceBuilder};

/// Answers the first `fail` requests with `status` (a trailers-only gRPC
/// response), then passes them on; counts every request.
#[derive(Clone)]
struct Flaky<S> {
    inner: S,
    fail: Arc<AtomicUsize>,
    seen: Arc<AtomicUsize>,
    status: fn() -> tonic::Status,
}

#[derive(Clone)]
struct FlakyLayer {
    fail: Arc<AtomicUsize>,
    seen: Arc<AtomicUsize>,
    status: fn() -> tonic::Status,
}

impl<S> Layer<S> for FlakyLayer {
    type Service = Flaky<S>;
    fn layer(&self, inner: S) -> Flaky<S> {
        Flaky {
            inner,
            fail: self.fail.clone(),
            seen: self.seen.clone(),
            status: self.status,
        }
    }
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<http::Request<B>> for Flaky<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFut<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.seen.fetch_add(1, Ordering::SeqCst);
        let refuse = self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if refuse {
            let res = (self.status)().into_http();
            return Box::pin(async move { Ok(res) });
        }
        Box::pin(self.inner.call(req))
    }
}

struct Upstream {
    addr: SocketAddr,
    seen: Arc<AtomicUsize>,
    _server: tokio::task::JoinHandle<()>,
}

/// A tonic-health server on 127.0.0.1:0: "" is NOT_SERVING and
/// "rampart.Test" SERVING (so a body that lost its service name would get
/// the wrong answer), the first `fail` requests answered with `status`.
async fn upstream(fail: usize, status: fn() -> tonic::Status) -> Upstream {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    reporter
        .set_service_status("rampart.Test", ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let flaky = FlakyLayer {
        fail: Arc::new(AtomicUsize::new(fail)),
        seen: seen.clone(),
        status,
    };
    let server = tokio::spawn(async move {
        let _reporter = reporter;
        Server::builder()
            .layer(flaky)
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    Upstream {
        addr,
        seen,
        _server: server,
    }
}

fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("the test finished in time")
}

#[tokio::test]
async fn a_tonic_health_client_through_retry_gets_the_answer_after_unavailable() {
    within(async {
        let up = upstream(2, || tonic::Status::unavailable("warming up")).await;
        let retry = RetryLayer::tonic()
            .max_attempts(3)
            .backoff(Backoff::constant(Duration::from_millis(5)))
            .stats()
            .build()
            .unwrap();
        let svc = ServiceBuilder::new()
            .layer(retry.clone())
            .service(channel(up.addr));
        let mut client = HealthClient::new(svc);
        let res = client.check(check("rampart.Test")).await.unwrap();
        // The replayed body still names the service: SERVING, not the
        // NOT_SERVING of "".
        assert_eq!(res.into_inner().status(), Wire::Serving);
        assert_eq!(up.seen.load(Ordering::SeqCst), 3);
        let s = retry.stats().unwrap();
        assert_eq!((s.calls, s.retries), (1, 2));
    })
    .await;
}

#[tokio::test]
async fn a_tonic_client_sees_the_last_status_when_attempts_run_out() {
    within(async {
        let up = upstream(usize::MAX, || tonic::Status::unavailable("down for good")).await;
        let retry = RetryLayer::tonic()
            .max_attempts(2)
            .backoff(Backoff::none())
            .build()
            .unwrap();
        let mut client =
            HealthClient::new(ServiceBuilder::new().layer(retry).service(channel(up.addr)));
        let status = client.check(check("rampart.Test")).await.unwrap_err();
        // A failed response is returned as it is: tonic reads its status.
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), "down for good");
        assert_eq!(up.seen.load(Ordering::SeqCst), 2);
    })
    .await;
}

#[tokio::test]
async fn a_non_retryable_grpc_status_is_not_retried() {
    within(async {
        let up = upstream(1, || tonic::Status::invalid_argument("bad")).await;
        let retry = RetryLayer::tonic().max_attempts(3).build().unwrap();
        let mut client =
            HealthClient::new(ServiceBuilder::new().layer(retry).service(channel(up.addr)));
        let status = client.check(check("rampart.Test")).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(up.seen.load(Ordering::SeqCst), 1);
    })
    .await;
}

#[tokio::test]
async fn connection_refused_is_retried_then_reported() {
    within(async {
        // A port with nothing listening: every attempt is refused before
        // anything is sent, so even a non-idempotent RPC may be retried.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let retry = RetryLayer::tonic()
            .max_attempts(3)
            .backoff(Backoff::constant(Duration::from_millis(5)))
            .stats()
            .build()
            .unwrap();
        let mut client = HealthClient::new(
            ServiceBuilder::new()
                .layer(retry.clone())
                .service(channel(addr)),
        );
        let status = client.check(check("rampart.Test")).await.unwrap_err();
        let source = std::error::Error::source(&status)
            .and_then(|e| e.downcast_ref::<rampart_core::Error>())
            .map(rampart_core::Error::kind);
        assert_eq!(source, Some(ErrorKind::RetriesExhausted), "{status:?}");
        assert_eq!(retry.stats().unwrap().retries, 2);
    })
    .await;
}
