//! Tour section: concurrency limits (`rampart-limit`) against local servers:
//! the article's semaphore (0.1 s requests instead of 0.5 s), shedding with
//! 503 + Retry-After, a per-tenant limit, and an adaptive limit finding a
//! server's knee. The `semaphore` example runs the long version.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rampart::limit::{
    ConcurrencyLimitLayer, HeaderKey, KeyedConcurrencyLimitLayer, SampleWindow, VegasConfig,
};
use rampart::{BoxError, HandleErrorsLayer};
use rampart_testkit::FlakyServer;
use tower::{Layer, Service, ServiceExt, service_fn};

/// A hyper client whose responses carry the whole body (`Bytes` has the
/// `Default` that `HandleErrorsLayer` needs).
fn client()
-> impl Service<Request<Empty<Bytes>>, Response = Response<Bytes>, Error = BoxError, Future: Send>
+ Clone
+ Send {
    let c = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    service_fn(move |req| {
        let fut = c.request(req);
        async move {
            let (parts, body) = fut.await?.into_parts();
            Ok::<_, BoxError>(Response::from_parts(
                parts,
                body.collect().await?.to_bytes(),
            ))
        }
    })
}

fn get(server: &FlakyServer, tenant: &str) -> Result<Request<Empty<Bytes>>, BoxError> {
    Ok(Request::get(server.uri("/"))
        .header("x-tenant", tenant)
        .body(Empty::new())?)
}

/// Sends one request per tenant, all at once, through `svc`; returns their
/// statuses in order.
async fn burst<S>(svc: &S, server: &FlakyServer, tenants: &[&str]) -> Result<Vec<u16>, BoxError>
where
    S: Service<Request<Empty<Bytes>>, Response = Response<Bytes>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    let calls: Vec<_> = tenants
        .iter()
        .map(|t| {
            let (svc, req) = (svc.clone(), get(server, t));
            tokio::spawn(async move { svc.oneshot(req?).await.map_err(Into::into) })
        })
        .collect();
    let mut statuses = Vec::new();
    for c in calls {
        let res: Response<Bytes> = c.await??;
        statuses.push(res.status().as_u16());
    }
    Ok(statuses)
}

pub(crate) async fn run() -> Result<(), BoxError> {
    crate::heading("concurrency limits: shared, shedding, keyed, adaptive (rampart-limit)");
    let server = FlakyServer::builder()
        .latency(Duration::from_millis(100))
        .start()
        .await?;

    // The article: Semaphore(3), 10 requests.
    let svc = ConcurrencyLimitLayer::new(3).layer(client());
    let started = Instant::now();
    let ok = burst(&svc, &server, &["a"; 10]).await?;
    let (elapsed, peak) = (started.elapsed(), server.peak_inflight());
    crate::line(format_args!(
        "Semaphore(3), 10 requests of 0.1 s: {} ok in {:.2} s, the server saw at most {peak} at once",
        ok.iter().filter(|s| **s == 200).count(),
        elapsed.as_secs_f64()
    ));
    if peak != 3 {
        return Err(format!("peak concurrency {peak}, expected 3").into());
    }

    // Shedding: 6 at once against a limit of 2, answered 503 + Retry-After.
    let limit = ConcurrencyLimitLayer::builder(2).shed().build()?;
    let svc = HandleErrorsLayer::new().layer(limit.layer(client()));
    let statuses = burst(&svc, &server, &["a"; 6]).await?;
    crate::line(format_args!(
        "shed mode, limit 2, burst of 6: {statuses:?} (503s carry Retry-After: 1; shed count {})",
        limit.stats().shed
    ));
    if limit.stats().shed != 4 {
        return Err("expected 4 requests shed".into());
    }

    // Per tenant: acme's two requests contend for its one permit; globex's
    // request is not held up by acme.
    let keyed = KeyedConcurrencyLimitLayer::builder(HeaderKey::from_static("x-tenant"), 1)
        .shed()
        .build()?;
    let svc = HandleErrorsLayer::new().layer(keyed.layer(client()));
    let statuses = burst(&svc, &server, &["acme", "acme", "globex"]).await?;
    crate::line(format_args!(
        "per-tenant limit 1, requests from acme, acme, globex: {statuses:?} ({} tenants tracked)",
        keyed.stats().keys
    ));
    if statuses[2] != 200 || !(statuses[..2].contains(&200) && statuses[..2].contains(&503)) {
        return Err(format!("per-tenant limit: unexpected {statuses:?}").into());
    }
    server.shutdown().await;
    adaptive().await
}

/// Vegas against a server whose latency grows with load, for about 1 s.
async fn adaptive() -> Result<(), BoxError> {
    let server = FlakyServer::builder()
        .latency(Duration::from_millis(5))
        .latency_per_inflight(Duration::from_millis(1))
        .start()
        .await?;
    let vegas = VegasConfig {
        initial_limit: 2,
        seed: Some(1),
        ..VegasConfig::default()
    };
    let limit = ConcurrencyLimitLayer::builder(vegas)
        .sample_window(Some(SampleWindow {
            min_time: Duration::from_millis(50),
            max_time: Duration::from_millis(50),
            min_samples: 3,
            ..SampleWindow::default()
        }))
        .build()?;
    let svc = limit.layer(client());
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..32)
        .map(|_| {
            let (svc, stop, uri) = (svc.clone(), stop.clone(), server.uri("/"));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    svc.clone()
                        .oneshot(Request::get(uri.clone()).body(Empty::new())?)
                        .await?;
                }
                Ok::<_, BoxError>(())
            })
        })
        .collect();
    let mut limits = vec![limit.limit()];
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        limits.push(limit.limit());
    }
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.await??;
    }
    crate::line(format_args!(
        "Vegas, 32 callers, server latency 5 ms + 1 ms per request in flight: limit every 0.2 s {limits:?}"
    ));
    server.shutdown().await;
    Ok(())
}
