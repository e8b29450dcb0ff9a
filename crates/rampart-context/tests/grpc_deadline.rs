//! A real tonic-health client and server over loopback: a call made after
//! the context's deadline passed is refused by `PropagateContextLayer`
//! before it is sent, and the tonic client (with core's `GrpcStatusLayer`)
//! sees DEADLINE_EXCEEDED; a call in time carries its `grpc-timeout`.
//!
//! Bounded by an outer `tokio::time::timeout`.

use rampart_context::PropagateContextLayer;
use rampart_core::{Context, GrpcStatusLayer};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tonic::transport::{Endpoint, Server, server::TcpIncoming};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceBuilder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_deadline_reaches_a_tonic_client_as_deadline_exceeded_without_a_call() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Count the requests that reach the server.
        let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = reached.clone();
        let server = tokio::spawn(async move {
            let _ = Server::builder()
                .layer(tower::util::MapRequestLayer::new(
                    move |req: http::Request<tonic::body::Body>| {
                        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        req
                    },
                ))
                .add_service(health)
                .serve_with_incoming(TcpIncoming::from(listener))
                .await;
        });
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let stack = ServiceBuilder::new()
            .layer(GrpcStatusLayer::new())
            .layer(PropagateContextLayer::builder().deadline().build().unwrap())
            .service(channel);
        let mut client = HealthClient::new(stack);
        let check = || HealthCheckRequest {
            service: String::new(),
        };

        // In time: answered.
        let ctx = Context::new().with_timeout(Duration::from_secs(5));
        ctx.scope(client.check(check())).await.unwrap();
        assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 1);

        // Already expired: refused here, never sent.
        let expired = Context::new().with_deadline(Instant::now());
        let status = expired.scope(client.check(check())).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
        assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 1);
        server.abort();
    })
    .await
    .expect("test took longer than 30 s");
}
