//! Tour section: a circuit breaker (`rampart-breaker`) in front of a local
//! server that goes down and comes back. The `circuit_breaker` example runs
//! the long version with a growing break.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::client;
use http::Request;
use http_body_util::Empty;
use rampart::BoxError;
use rampart::breaker::{CircuitBreakerLayer, State};
use rampart::prelude::*;
use rampart_testkit::{FlakyServer, Reply};
use tower::{ServiceBuilder, ServiceExt};

pub(crate) async fn run() -> Result<(), BoxError> {
    crate::heading("circuit breaker: stop calling a failing backend, probe, recover");
    let down = Arc::new(AtomicBool::new(true));
    let server = {
        let down = down.clone();
        FlakyServer::builder()
            .handler(move |_req| {
                Some(if down.load(Ordering::Relaxed) {
                    Reply::status(503).body("down")
                } else {
                    Reply::ok()
                })
            })
            .start()
            .await?
    };
    let breaker = CircuitBreakerLayer::http_builder()
        .consecutive_failures(3)
        .break_duration(Duration::from_millis(300))
        .probes(1)
        .build()?;
    let handle = breaker.handle();
    let svc = ServiceBuilder::new()
        .handle_errors()
        .circuit_breaker(breaker)
        .service(client());
    let get = || -> Result<_, BoxError> {
        let req = Request::get(server.uri("/")).body(Empty::new())?;
        Ok(svc.clone().oneshot(req))
    };

    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get()?.await?.status().as_u16());
    }
    let reached = server.request_count();
    crate::line(format_args!(
        "backend down: 6 calls answered {statuses:?}; {reached} reached the server, circuit {}",
        handle.state()
    ));
    let refused = get()?.await?;
    let retry_after = refused
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    crate::line(format_args!(
        "refused at once: {} with Retry-After: {retry_after}",
        refused.status()
    ));

    down.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(320)).await;
    let probe = get()?.await?.status();
    let after = get()?.await?.status();
    crate::line(format_args!(
        "backend back, after the 300 ms break: probe {probe}, then {after}; circuit {}",
        handle.state()
    ));
    server.shutdown().await;

    let expected = statuses == [503, 503, 503, 503, 503, 503]
        && reached == 3
        && refused.status() == 503
        && retry_after != "-"
        && probe == 200
        && after == 200
        && handle.state() == State::Closed;
    if expected {
        Ok(())
    } else {
        Err("the circuit did not trip after 3 failures, refuse, and close after one probe".into())
    }
}
