//! Cancellation with cleanup (`rampart-cancel`).
//!
//! 1. The article's cancellable task: a handler printing "Working..." every
//!    second, run through a `CancelLayer`; its caller cancels it during the
//!    third second, the layer drops the handler, its cleanup hook prints
//!    "Task cancelled, cleaning up..." and the caller sees `Cancelled`:
//!    "Cancellation completed".
//! 2. Graceful shutdown of an axum server: fast and slow requests in
//!    flight when the shutdown starts; the fast ones complete, new ones are
//!    refused, the slow ones are cancelled at the drain deadline (499, with
//!    their cleanup), and the counts are printed.
//!
//! Run it with `cargo run --example cancellation`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rampart::prelude::*;
use rampart::{BoxError, CancellationToken};
use tower::{ServiceBuilder, ServiceExt, service_fn};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    println!("== the article's cancellable task ==");
    cancellable_task().await?;
    println!();
    println!("== graceful shutdown of an axum server ==");
    graceful_shutdown().await
}

/// `asyncio.create_task(cancellable_task())`, `task.cancel()`, cleanup.
async fn cancellable_task() -> Result<(), BoxError> {
    let task = ServiceBuilder::new()
        .cancel_scope(CancelLayer::new().on_cancel(|_| println!("Task cancelled, cleaning up...")))
        .service(service_fn(|()| async {
            loop {
                println!("Working...");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            #[allow(unreachable_code)]
            Ok::<(), BoxError>(())
        }));
    // The caller's token plays `task.cancel()`: the request's own token is
    // a child of it.
    let cancel = CancellationToken::new();
    let running = tokio::spawn(
        Context::new()
            .with_cancellation(cancel.clone())
            .scope(task.oneshot(())),
    );
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    cancel.cancel();
    match running.await? {
        Err(e) if e.kind() == ErrorKind::Cancelled => {
            println!("Cancellation completed");
            Ok(())
        }
        other => Err(format!("expected a cancelled task, got {other:?}").into()),
    }
}

/// An axum server with requests in flight receives a shutdown.
async fn graceful_shutdown() -> Result<(), BoxError> {
    let shutdown = Shutdown::new();
    let cleanups = Arc::new(AtomicUsize::new(0));
    let cleaned = cleanups.clone();
    let cancel = CancelLayer::with_shutdown(&shutdown).on_cancel(move |info| {
        cleaned.fetch_add(1, Ordering::SeqCst);
        println!(
            "   cleanup: request {} cancelled after {} ms ({})",
            info.request_id().map_or("-", RequestId::as_str),
            info.elapsed().as_millis(),
            info.reason()
        );
    });
    let app = Router::new()
        .route(
            "/work/{ms}",
            get(|Path(ms): Path<u64>| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                format!("worked {ms} ms")
            }),
        )
        .layer(
            ServiceBuilder::new()
                .request_id()
                .handle_errors()
                .cancel_scope(cancel),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.draining())
            .into_future(),
    );

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let get_work = move |name: &'static str, ms: u64| {
        let client = client.clone();
        let started = Instant::now();
        tokio::spawn(async move {
            let uri = format!("http://{addr}/work/{ms}").parse()?;
            let res = client.get(uri).await?;
            let status = res.status().as_u16();
            res.into_body().collect().await?;
            println!(
                "   {name}: {status} after {} ms",
                started.elapsed().as_millis()
            );
            Ok::<u16, BoxError>(status)
        })
    };
    let fast: Vec<_> = (0..3)
        .map(|_| get_work("fast request (200 ms)", 200))
        .collect();
    let slow: Vec<_> = (0..2)
        .map(|_| get_work("slow request (30 s)", 30_000))
        .collect();
    while shutdown.in_flight() < 5 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("   5 requests in flight; shutting down with a 1 s drain deadline");
    let drain = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { shutdown.drain(Duration::from_secs(1)).await }
    });
    while !shutdown.is_draining() {
        tokio::task::yield_now().await;
    }
    let late = get_work("request sent during the drain", 10);

    let report = drain.await?;
    let mut statuses = Vec::new();
    for call in fast.into_iter().chain(slow) {
        statuses.push(call.await??);
    }
    let late = late
        .await?
        .map_or_else(|_| "connection refused".to_owned(), |s| s.to_string());
    server.await??;
    println!("   late request: {late}");
    println!("   drain: {report} in {} ms", report.elapsed().as_millis());

    let expected = [200, 200, 200, 499, 499];
    if statuses != expected
        || report.completed() != 3
        || report.cancelled() != 2
        || cleanups.load(Ordering::SeqCst) != 2
        || !(late == "connection refused" || late == "503")
    {
        return Err(format!("unexpected outcome: {statuses:?}, {report}, late: {late}").into());
    }
    println!("   fast requests completed, slow ones cancelled with cleanup, nothing admitted late");
    Ok(())
}
