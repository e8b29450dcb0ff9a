//! Graceful drain of a real axum server on loopback: requests admitted
//! before the shutdown all complete or are cancelled by the deadline, none
//! is admitted after it, nothing hangs, and the counts add up.

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rampart_cancel::{CancelLayer, CancelReason, Shutdown};
use rampart_core::HandleErrorsLayer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tower::ServiceBuilder;

/// Everything the server saw.
#[derive(Default)]
struct Seen {
    started: AtomicUsize,
    finished: AtomicUsize,
    cleanups: AtomicUsize,
}

async fn start_server(
    shutdown: &Shutdown,
    seen: Arc<Seen>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let hook_seen = seen.clone();
    let layer = CancelLayer::with_shutdown(shutdown).on_cancel(move |info| {
        assert_eq!(info.reason(), CancelReason::Shutdown);
        hook_seen.cleanups.fetch_add(1, Ordering::SeqCst);
    });
    let handler_seen = seen.clone();
    let app = Router::new()
        .route(
            "/work/{ms}",
            get(move |Path(ms): Path<u64>| {
                let seen = handler_seen.clone();
                async move {
                    seen.started.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    seen.finished.fetch_add(1, Ordering::SeqCst);
                    format!("worked {ms} ms")
                }
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorsLayer::new())
                .layer(layer),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let draining = shutdown.draining();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(draining)
            .await
            .unwrap();
    });
    (addr, server)
}

/// Status of `GET /work/{ms}`, or `None` when the connection failed.
async fn get_work(addr: SocketAddr, ms: u64) -> Option<u16> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri = format!("http://{addr}/work/{ms}").parse().unwrap();
    let res = client.get(uri).await.ok()?;
    let status = res.status().as_u16();
    let _ = res.into_body().collect().await;
    Some(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_on_a_real_server_completes_fast_requests_cancels_slow_ones_and_admits_none_after() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let shutdown = Shutdown::new();
        let seen = Arc::new(Seen::default());
        let (addr, server) = start_server(&shutdown, seen.clone()).await;

        // 4 fast requests (they finish within the drain deadline) and 3 slow
        // ones (they would take a minute).
        let durations = [20, 20, 20, 20, 60_000, 60_000, 60_000];
        let calls: Vec<_> = durations
            .iter()
            .map(|&ms| tokio::spawn(get_work(addr, ms)))
            .collect();
        while seen.started.load(Ordering::SeqCst) < durations.len() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(shutdown.in_flight(), durations.len());

        let drain = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { shutdown.drain(Duration::from_secs(3)).await }
        });
        while !shutdown.is_draining() {
            tokio::task::yield_now().await;
        }
        // Requests sent once the drain began: refused (503) or never
        // connected; the handler never runs for them.
        let late: Vec<_> = (0..3).map(|_| tokio::spawn(get_work(addr, 1))).collect();

        let report = drain.await.unwrap();
        let mut statuses = Vec::new();
        for call in calls {
            statuses.push(call.await.unwrap());
        }
        for call in late {
            let status = call.await.unwrap();
            assert!(
                matches!(status, None | Some(503)),
                "late request got {status:?}"
            );
        }
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server stopped after the drain")
            .unwrap();

        assert_eq!(
            statuses,
            [
                Some(200),
                Some(200),
                Some(200),
                Some(200),
                Some(499),
                Some(499),
                Some(499)
            ]
        );
        assert_eq!(report.completed(), 4);
        assert_eq!(report.cancelled(), 3);
        assert_eq!(report.unfinished(), 0);
        assert_eq!(
            report.in_flight_at_start(),
            durations.len(),
            "counts add up"
        );
        assert!(report.deadline_hit());
        assert_eq!(
            seen.started.load(Ordering::SeqCst),
            durations.len(),
            "none admitted after"
        );
        assert_eq!(seen.finished.load(Ordering::SeqCst), 4);
        assert_eq!(
            seen.cleanups.load(Ordering::SeqCst),
            3,
            "one cleanup per cancelled request"
        );
        assert_eq!(shutdown.in_flight(), 0);
    })
    .await
    .expect("the drain test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_of_an_idle_real_server_returns_at_once_and_stops_it() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let shutdown = Shutdown::new();
        let seen = Arc::new(Seen::default());
        let (addr, server) = start_server(&shutdown, seen.clone()).await;
        assert_eq!(get_work(addr, 1).await, Some(200));
        let report = shutdown.drain(Duration::from_secs(10)).await;
        assert_eq!(report.in_flight_at_start(), 0);
        assert!(!report.deadline_hit());
        assert!(report.elapsed() < Duration::from_secs(5));
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server stopped")
            .unwrap();
        assert_eq!(seen.cleanups.load(Ordering::SeqCst), 0);
    })
    .await
    .expect("finished in time");
}
