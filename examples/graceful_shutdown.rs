//! Graceful drain of a plain hyper server (hyper-util's `GracefulShutdown`)
//! with `rampart-cancel`'s `Shutdown`.
//!
//! On the shutdown signal the accept loop stops, hyper-util lets every
//! connection finish its request in flight and then closes it, and the
//! `Shutdown` bounds how long that may take: requests still running at the
//! drain deadline are cancelled (their handler is dropped, the client gets
//! 499) so the connections can close. Requests arriving on a kept-alive
//! connection meanwhile get 503 (`ErrorKind::Closed`).
//!
//! Run it with `cargo run --example graceful_shutdown`.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rampart::BoxError;
use rampart::prelude::*;
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// The handler: sleeps for the milliseconds given in the path.
async fn work(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let ms: u64 = req
        .uri()
        .path()
        .trim_start_matches('/')
        .parse()
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(Response::new(Full::new(Bytes::from(format!(
        "worked {ms} ms"
    )))))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let shutdown = Shutdown::new();
    let app = ServiceBuilder::new()
        .handle_errors()
        .drain_with(&shutdown)
        .service(service_fn(work));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn({
        let draining = shutdown.draining();
        async move {
            let graceful = GracefulShutdown::new();
            let mut draining = std::pin::pin!(draining);
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let app = app.clone();
                        let svc = hyper::service::service_fn(move |req| app.clone().oneshot(req));
                        let conn = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), svc)
                            .into_owned();
                        tokio::spawn(graceful.watch(conn));
                    }
                    () = &mut draining => break,
                }
            }
            // Stop accepting; wait for every connection to finish.
            graceful.shutdown().await;
        }
    });

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let started = Instant::now();
    let calls: Vec<_> = [100_u64, 300, 60_000]
        .into_iter()
        .map(|ms| {
            let client = client.clone();
            tokio::spawn(async move {
                let res = client.get(format!("http://{addr}/{ms}").parse()?).await?;
                let status = res.status().as_u16();
                res.into_body().collect().await?;
                println!(
                    "request of {ms:>5} ms: {status} after {} ms",
                    started.elapsed().as_millis()
                );
                Ok::<u16, BoxError>(status)
            })
        })
        .collect();
    while shutdown.in_flight() < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("shutdown signal: draining with a 1 s deadline");
    let report = shutdown.drain(Duration::from_secs(1)).await;
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call.await??);
    }
    tokio::time::timeout(Duration::from_secs(5), server).await??;
    println!("drain: {report} in {} ms", report.elapsed().as_millis());
    println!("server stopped: every connection closed");
    if statuses != [200, 200, 499] || report.completed() != 2 || report.cancelled() != 1 {
        return Err(format!("unexpected outcome: {statuses:?}, {report}").into());
    }
    Ok(())
}
