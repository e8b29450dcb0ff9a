//! Tour section: rate limiting (`rampart-rate`) on an axum server: one
//! bucket shared by every clone axum makes (a burst gets exactly the quota,
//! the rest 429 + Retry-After), and a bucket per tenant. The `rate_limit`
//! example adds a client stack that honours `Retry-After`.

use std::num::NonZeroU32;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rampart::rate::{HeaderKey, KeyedRateLimitLayer, Quota, RateLimitLayer};
use rampart::{BoxError, HandleErrorsLayer};
use tokio::net::TcpListener;
use tower::ServiceBuilder;

use crate::line;

/// Serves `/` (5 per second for everyone) and `/tenant` (2 per second per
/// `x-tenant`) on a loopback port; returns the base URI.
async fn serve() -> Result<String, BoxError> {
    let per_second = |n| Quota::per_second(NonZeroU32::new(n).expect("not zero"));
    let app = Router::new()
        .route(
            "/",
            get(|| async { "ok" }).layer(
                ServiceBuilder::new()
                    .layer(HandleErrorsLayer::new())
                    .layer(RateLimitLayer::new(per_second(5))),
            ),
        )
        .route(
            "/tenant",
            get(|| async { "ok" }).layer(
                ServiceBuilder::new().layer(HandleErrorsLayer::new()).layer(
                    KeyedRateLimitLayer::new(per_second(2), HeaderKey::from_static("x-tenant")),
                ),
            ),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

/// Sends every request at once; returns (status, Retry-After) in order.
async fn burst(reqs: Vec<Request<Empty<Bytes>>>) -> Result<Vec<(u16, String)>, BoxError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let calls = reqs.into_iter().map(|req| {
        let fut = client.request(req);
        async move {
            let res = fut.await?;
            let after = res
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            Ok::<_, BoxError>((res.status().as_u16(), after))
        }
    });
    futures_util::future::try_join_all(calls).await
}

pub(crate) async fn run() -> Result<(), BoxError> {
    crate::heading("rate limiting (GCRA, shared by every clone, keyed)");
    let base = serve().await?;

    let reqs = (0..20)
        .map(|_| Request::get(format!("{base}/")).body(Empty::new()))
        .collect::<Result<_, _>>()?;
    let out = burst(reqs).await?;
    let ok = out.iter().filter(|(s, _)| *s == 200).count();
    let limited: Vec<_> = out.iter().filter(|(s, _)| *s == 429).collect();
    line(format_args!(
        "burst of 20 at 5/s through axum: {ok} x 200, {} x 429 with Retry-After {}",
        limited.len(),
        limited.first().map_or("-", |(_, a)| a.as_str())
    ));
    if ok != 5 || limited.len() != 15 || limited.iter().any(|(_, a)| a != "1") {
        return Err("expected exactly 5 admitted and 15 refused with Retry-After: 1".into());
    }

    let tenants = ["a", "a", "a", "b", "b", "b"];
    let reqs = tenants
        .iter()
        .map(|t| {
            Request::get(format!("{base}/tenant"))
                .header("x-tenant", *t)
                .body(Empty::new())
        })
        .collect::<Result<_, _>>()?;
    let statuses: Vec<u16> = burst(reqs).await?.into_iter().map(|(s, _)| s).collect();
    let admitted = |t: &str| {
        tenants
            .iter()
            .zip(&statuses)
            .filter(|(x, s)| **x == t && **s == 200)
            .count()
    };
    line(format_args!(
        "per tenant at 2/s, 3 requests each: tenant a {} admitted, tenant b {} admitted",
        admitted("a"),
        admitted("b")
    ));
    if admitted("a") != 2 || admitted("b") != 2 {
        return Err("expected 2 admitted per tenant".into());
    }
    Ok(())
}
