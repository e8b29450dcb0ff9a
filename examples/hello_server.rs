//! An axum hello-world for the end-to-end load bench (`benches/e2e_wrk.sh`),
//! served bare or behind rampart's full server stack:
//!
//! ```text
//! request id → handle errors → cancel scope (drain) → deadline from headers → concurrency limit → handler
//! ```
//!
//! `cargo run --release --example hello_server -- MODE PORT [SECS]` serves
//! `GET /` ("Hello, World!") on 127.0.0.1:PORT (loopback only) until Ctrl-C
//! or, when SECS is given, for SECS seconds, then drains and exits.
//!
//! MODE is `bare`, `stacked`, or, for `benches/e2e_layers.sh`, one layer of
//! the stack alone (`request_id`, `handle_errors`, `drain`, `deadline`,
//! `limit`; the last three behind `handle_errors`), or a comparison:
//! `tower_request_id` (tower-http's set + propagate request id) or
//! `echo_header` (a constant 36-byte `x-request-id` on every response), or
//! `stacked_service`: the same stack as `stacked` around the whole router
//! (`ServiceBuilder::service(router)`) instead of `Router::layer`, which
//! boxes the layered route once more (a second `Route`, cloned per request;
//! it also puts the stack around the router's 404s).

use std::time::Duration;

use axum::routing::get;
use axum::{Router, ServiceExt};
use http::{HeaderName, HeaderValue};
use rampart::BoxError;
use rampart::cancel::Shutdown;
use rampart::prelude::*;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;

/// Concurrent handlers at most: far above the bench's 64 connections, so
/// the limit is paid for but never waited on.
const LIMIT: usize = 1024;
/// Deadline of a request whose caller sent none (and cap of those sent).
const SERVER_BUDGET: Duration = Duration::from_secs(5);

async fn hello() -> &'static str {
    "Hello, World!"
}

fn usage(got: &str) -> BoxError {
    format!(
        "usage: hello_server bare|stacked|stacked_service|request_id|handle_errors|drain|deadline|limit|tower_request_id|echo_header PORT [SECS], got {got:?}"
    ).into()
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, port) = match args.as_slice() {
        [mode, port] | [mode, port, _] => (mode.as_str(), port),
        _ => return Err(usage(&args.join(" "))),
    };
    let port: u16 = port.parse().map_err(|_| usage(port))?;
    let secs: Option<u64> = match args.get(2) {
        Some(s) => Some(s.parse().map_err(|_| usage(s))?),
        None => None,
    };
    let shutdown = Shutdown::new();
    let router = Router::new().route("/", get(hello));
    if mode == "stacked_service" {
        let service = ServiceBuilder::new()
            .request_id()
            .handle_errors()
            .drain_with(&shutdown)
            .deadline_from_headers(SERVER_BUDGET)
            .limit_concurrency(ConcurrencyLimitLayer::new(LIMIT))
            // `with_state` turns the handlers into routes once, as
            // `Router::into_make_service` does (not on every request).
            .service(router.with_state::<()>(()));
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        println!("hello_server {mode} on http://{}", listener.local_addr()?);
        let server = tokio::spawn(
            axum::serve(
                listener,
                ServiceExt::<axum::extract::Request>::into_make_service(service),
            )
            .with_graceful_shutdown(shutdown.draining())
            .into_future(),
        );
        return run(mode, secs, shutdown, server).await;
    }
    let router = match mode {
        "bare" => router,
        "stacked" => router.layer(
            ServiceBuilder::new()
                .request_id()
                .handle_errors()
                .drain_with(&shutdown)
                .deadline_from_headers(SERVER_BUDGET)
                .limit_concurrency(ConcurrencyLimitLayer::new(LIMIT)),
        ),
        // One layer of the stack at a time (behind `handle_errors` where the
        // layer's error is rampart's), for `benches/e2e_layers.sh`.
        "request_id" => router.layer(ServiceBuilder::new().request_id()),
        // For comparison: tower-http's request id (v4 UUID, set on the
        // request and propagated to the response), and a constant header of
        // the same length added to the response (what echoing an id costs
        // hyper, with no id made).
        "tower_request_id" => router.layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id()),
        ),
        "echo_header" => router.layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("x-request-id"),
            HeaderValue::from_static("0190f4f6-7f0e-7cc4-9f5e-1d2c3b4a5968"),
        )),
        "handle_errors" => router.layer(ServiceBuilder::new().handle_errors()),
        "drain" => router.layer(ServiceBuilder::new().handle_errors().drain_with(&shutdown)),
        "deadline" => router.layer(
            ServiceBuilder::new()
                .handle_errors()
                .deadline_from_headers(SERVER_BUDGET),
        ),
        "limit" => router.layer(
            ServiceBuilder::new()
                .handle_errors()
                .limit_concurrency(ConcurrencyLimitLayer::new(LIMIT)),
        ),
        other => return Err(usage(other)),
    };
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("hello_server {mode} on http://{}", listener.local_addr()?);
    // The listener stops accepting as soon as the drain begins.
    let server = tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.draining())
            .into_future(),
    );
    run(mode, secs, shutdown, server).await
}

/// Serves until Ctrl-C or SECS seconds, then drains and waits (2 s at most)
/// for the server task.
async fn run(
    mode: &str,
    secs: Option<u64>,
    shutdown: Shutdown,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
) -> Result<(), BoxError> {
    match secs {
        Some(s) => {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(s)) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        None => tokio::signal::ctrl_c().await?,
    }
    let report = shutdown.drain(Duration::from_secs(1)).await;
    println!(
        "hello_server {mode}: drained ({} in flight at start)",
        report.in_flight_at_start()
    );
    // Keep-alive connections close once idle; do not wait for ever.
    if let Ok(joined) = tokio::time::timeout(Duration::from_secs(2), server).await {
        joined??;
    }
    Ok(())
}
