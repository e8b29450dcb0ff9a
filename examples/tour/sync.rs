//! Tour section: keyed locks and single-flight coalescing (`rampart-sync`):
//! the article's two workers incrementing a counter through a service with
//! an `.await` inside its read-modify-write (10 with `KeyedLockLayer`, fewer
//! without), then 50 concurrent identical requests to a local server
//! through `CoalesceLayer` (one reaches it). The `locks` example runs the
//! long version.

use crate::client;
use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use rampart::BoxError;
use rampart::sync::{CoalesceLayer, KeyedLockLayer};
use rampart_testkit::FlakyServer;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

/// A counter whose increment reads, awaits, then writes.
fn counter(
    value: Arc<AtomicU32>,
) -> impl Service<&'static str, Response = u32, Error = BoxError, Future: Send> + Clone + Send {
    service_fn(move |_: &'static str| {
        let value = value.clone();
        async move {
            let read = value.load(Ordering::SeqCst);
            tokio::task::yield_now().await;
            value.store(read + 1, Ordering::SeqCst);
            Ok::<_, BoxError>(read + 1)
        }
    })
}

/// Two workers, five increments each; the final value.
async fn two_workers<S>(svc: S, value: &AtomicU32) -> Result<u32, BoxError>
where
    S: Service<&'static str, Response = u32> + Clone,
    S::Error: Into<BoxError>,
{
    let worker = |svc: S| async move {
        for _ in 0..5 {
            svc.clone().oneshot("counter").await.map_err(Into::into)?;
        }
        Ok::<_, BoxError>(())
    };
    let (a, b) = tokio::join!(worker(svc.clone()), worker(svc));
    a?;
    b?;
    Ok(value.load(Ordering::SeqCst))
}

pub(crate) async fn run() -> Result<(), BoxError> {
    crate::heading("keyed lock and single-flight (rampart-sync)");

    let value = Arc::new(AtomicU32::new(0));
    let unlocked = two_workers(counter(value.clone()), &value).await?;
    let value = Arc::new(AtomicU32::new(0));
    let lock = KeyedLockLayer::new(|name: &&'static str| *name);
    let locked = two_workers(lock.layer(counter(value.clone())), &value).await?;
    crate::line(format_args!(
        "two workers x 5 increments: {unlocked} without a lock, {locked} with KeyedLockLayer"
    ));
    if unlocked >= 10 || locked != 10 || lock.stats().keys != 0 {
        return Err(format!("expected < 10 then 10, got {unlocked} then {locked}").into());
    }

    let server = FlakyServer::builder()
        .latency(Duration::from_millis(100))
        .body("report")
        .start()
        .await?;
    let coalesce = CoalesceLayer::new(|req: &Request<Empty<Bytes>>| req.uri().to_string());
    let svc = ServiceBuilder::new()
        .layer(coalesce.clone())
        .map_response(Arc::new)
        .service(client());
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let svc = svc.clone();
            let req = Request::get(server.uri("/report")).body(Empty::new());
            tokio::spawn(async move {
                let res = svc.oneshot(req?).await?;
                Ok::<_, BoxError>(res)
            })
        })
        .collect();
    let mut answered = 0;
    for c in calls {
        if c.await??.body() == "report" {
            answered += 1;
        }
    }
    let seen = server.request_count();
    crate::line(format_args!(
        "50 identical concurrent requests through CoalesceLayer: {answered} answered, {seen} reached the server"
    ));
    if answered != 50 || seen != 1 {
        return Err(
            format!("expected 50 answers from 1 request, got {answered} from {seen}").into(),
        );
    }
    Ok(())
}
