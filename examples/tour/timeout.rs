//! Tour section: timeouts and deadlines (`rampart-timeout`): the article's
//! `wait_for` shrunk to milliseconds, the wait for readiness bounded, and a
//! deadline that shrinks across two real hops (the `timeouts` example runs
//! the longer version).

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rampart::timeout::{
    DeadlineHeaders, DeadlineLayer, OnMalformed, PropagateDeadlineLayer, TimeoutLayer,
};
use rampart::{BoxError, Error, ErrorKind, HandleErrorsLayer};
use rampart_testkit::{FlakyServer, Gate, MockReply, MockService, ReadyMode};
use tower::{Layer, ServiceBuilder, ServiceExt, service_fn};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub(crate) async fn run() -> Result<(), BoxError> {
    crate::heading("timeouts and deadlines (rampart-timeout)");
    wait_for().await?;
    readiness().await?;
    two_hops().await
}

/// asyncio.wait_for(slow_operation(), 2.0), in milliseconds.
async fn wait_for() -> Result<(), BoxError> {
    let slow = service_fn(|()| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok::<_, BoxError>("done")
    });
    let started = Instant::now();
    let res = TimeoutLayer::new(Duration::from_millis(200))
        .layer(slow)
        .oneshot(())
        .await;
    match res {
        Err(e) if e.kind() == ErrorKind::Timeout => crate::line(format_args!(
            "a 10 s operation under a 200 ms timeout: timed out after {} ms",
            started.elapsed().as_millis()
        )),
        other => return Err(format!("expected a timeout, got {other:?}").into()),
    }
    Ok(())
}

/// A service that never becomes ready: tower's `Timeout` waits in
/// `poll_ready` (tower#648), rampart's counts that wait.
async fn readiness() -> Result<(), BoxError> {
    let stuck = MockService::<(), ()>::new(|()| MockReply::ok(()));
    stuck.set_ready(ReadyMode::Gated(Gate::new()));
    let limit = Duration::from_millis(100);
    let tower_svc = tower::timeout::TimeoutLayer::new(limit).layer(stuck.clone());
    let tower_hung = tokio::time::timeout(limit * 3, tower_svc.oneshot(()))
        .await
        .is_err();
    let started = Instant::now();
    let ours = TimeoutLayer::new(limit).layer(stuck).oneshot(()).await;
    let kind = ours.err().map(|e| e.kind());
    crate::line(format_args!(
        "a service never ready, 100 ms timeout: tower still waiting after 300 ms: {tower_hung}; rampart: {kind:?} after {} ms",
        started.elapsed().as_millis()
    ));
    if !tower_hung || kind != Some(ErrorKind::Timeout) {
        return Err("readiness was not bounded as expected".into());
    }
    Ok(())
}

/// client (300 ms) -> edge (axum, works 50 ms) -> downstream (records the
/// header it receives).
async fn two_hops() -> Result<(), BoxError> {
    let downstream = FlakyServer::builder().start().await?;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let to_downstream = ServiceBuilder::new()
        .layer(PropagateDeadlineLayer::new())
        .service(client.clone());
    let url = downstream.url("/");
    let edge = Router::new()
        .route(
            "/",
            get(move |headers: HeaderMap| {
                let (to_downstream, url) = (to_downstream.clone(), url.clone());
                async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let req = Request::get(url)
                        .body(Full::default())
                        .map_err(Error::from_inner)?;
                    to_downstream.oneshot(req).await?;
                    Ok::<_, Error>(header(&headers))
                }
            }),
        )
        .layer(
            ServiceBuilder::new().layer(HandleErrorsLayer::new()).layer(
                DeadlineLayer::from_headers(Duration::from_secs(5), DeadlineHeaders::new())
                    .on_malformed(OnMalformed::Reject),
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let edge_url = format!("http://{}/", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, edge).await });

    let caller = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_millis(300)))
        .layer(PropagateDeadlineLayer::new())
        .service(client.clone());
    let res = caller
        .oneshot(Request::get(&edge_url).body(Full::default())?)
        .await?;
    let at_edge = String::from_utf8_lossy(
        &http_body_util::BodyExt::collect(res.into_body())
            .await?
            .to_bytes(),
    )
    .into_owned();
    let at_downstream = downstream.requests()[0]
        .header("x-request-timeout-ms")
        .unwrap_or("nothing")
        .to_owned();
    crate::line(format_args!(
        "deadline 300 ms at the client; the edge received {at_edge} ms, worked 50 ms; the downstream received {at_downstream} ms (edge budget 5 s did not extend it)"
    ));

    // Garbled or already-expired deadlines never reach the handler.
    let mut garbled = Request::get(&edge_url).body(Full::default())?;
    garbled
        .headers_mut()
        .insert("x-request-timeout-ms", "abc".parse()?);
    let mut expired = Request::get(&edge_url).body(Full::default())?;
    expired
        .headers_mut()
        .insert("x-request-timeout-ms", "0".parse()?);
    let garbled = client.request(garbled).await?.status();
    let expired = client.request(expired).await?.status();
    crate::line(format_args!(
        "a garbled deadline header: {garbled}; an expired one: {expired}; downstream calls: {}",
        downstream.request_count()
    ));
    server.abort();
    if garbled != 400 || expired != 504 || downstream.request_count() != 1 {
        return Err("unexpected answers to hostile deadline headers".into());
    }
    downstream.shutdown().await;
    Ok(())
}

fn header(headers: &HeaderMap) -> String {
    headers
        .get("x-request-timeout-ms")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("nothing")
        .to_owned()
}
