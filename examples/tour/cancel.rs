//! Tour section: cancellation with cleanup and graceful drain
//! (`rampart-cancel`): the article's cancellable task shrunk to
//! milliseconds, then a drain of requests in flight (the `cancellation`
//! example runs the longer version against an axum server).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rampart::BoxError;
use rampart::CancellationToken;
use rampart::cancel::{CancelLayer, CancelReason};
use rampart::prelude::*;
use tower::{ServiceBuilder, ServiceExt, service_fn};

pub(crate) async fn run() -> Result<(), BoxError> {
    crate::heading("cancellation with cleanup, graceful drain (rampart-cancel)");
    cancellable_task().await?;
    drain().await
}

/// The article's task: "Working..." every 100 ms, cancelled after 250 ms.
async fn cancellable_task() -> Result<(), BoxError> {
    let lines = Arc::new(Mutex::new(Vec::<&'static str>::new()));
    let (log, hook_log) = (lines.clone(), lines.clone());
    let task = ServiceBuilder::new()
        .cancel_scope(CancelLayer::new().on_cancel(move |_| {
            hook_log
                .lock()
                .unwrap()
                .push("Task cancelled, cleaning up...");
        }))
        .service(service_fn(move |()| {
            let log = log.clone();
            async move {
                loop {
                    log.lock().unwrap().push("Working...");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                #[allow(unreachable_code)]
                Ok::<(), BoxError>(())
            }
        }));
    let cancel = CancellationToken::new();
    let running = tokio::spawn(
        Context::new()
            .with_cancellation(cancel.clone())
            .scope(task.oneshot(())),
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    cancel.cancel();
    let outcome = running.await?;
    if outcome
        .as_ref()
        .is_err_and(|e| e.kind() == ErrorKind::Cancelled)
    {
        lines.lock().unwrap().push("Cancellation completed");
    }
    let lines = lines.lock().unwrap().clone();
    for l in &lines {
        crate::line(l);
    }
    let expected = [
        "Working...",
        "Working...",
        "Working...",
        "Task cancelled, cleaning up...",
        "Cancellation completed",
    ];
    if lines != expected {
        return Err(format!("the cancellable task printed {lines:?}").into());
    }
    Ok(())
}

/// Three requests in flight, a 150 ms drain: two finish, one is cancelled.
async fn drain() -> Result<(), BoxError> {
    let reasons = Arc::new(Mutex::new(Vec::new()));
    let seen = reasons.clone();
    let layer = CancelLayer::new().on_cancel(move |info| seen.lock().unwrap().push(info.reason()));
    let shutdown = layer.shutdown().clone();
    let svc = ServiceBuilder::new()
        .cancel_scope(layer)
        .service(service_fn(|ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<u64, BoxError>(ms)
        }));
    let calls: Vec<_> = [20, 50, 10_000]
        .into_iter()
        .map(|ms| tokio::spawn(svc.clone().oneshot(ms)))
        .collect();
    while shutdown.in_flight() < 3 {
        tokio::task::yield_now().await;
    }
    let report = shutdown.drain(Duration::from_millis(150)).await;
    let refused = svc.oneshot(1).await;
    let mut outcomes = Vec::new();
    for call in calls {
        outcomes.push(call.await?.map_err(|e| e.kind()));
    }
    crate::line(format_args!(
        "in flight at shutdown: 20 ms, 50 ms, 10 s requests"
    ));
    crate::line(format_args!("outcomes: {outcomes:?}"));
    crate::line(format_args!("drain: {report}"));
    crate::line(format_args!(
        "call after the drain: {:?}",
        refused.as_ref().map_err(rampart::Error::kind)
    ));
    let ok = outcomes == [Ok(20), Ok(50), Err(ErrorKind::Cancelled)]
        && report.completed() == 2
        && report.cancelled() == 1
        && *reasons.lock().unwrap() == [CancelReason::Shutdown]
        && refused.is_err_and(|e| e.kind() == ErrorKind::Closed);
    if !ok {
        return Err("the drain did not end as expected".into());
    }
    Ok(())
}
