//! Tour section: fan-out (`rampart-fanout`): the article's
//! `gather(return_exceptions=True)` and `wait(timeout=...)` shrunk to
//! milliseconds, a bound on concurrency, and a quorum over replicas (the
//! `error_handling` and `collective_timeout` examples run the longer
//! versions).

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use rampart::BoxError;
use rampart::fanout::{FanOutLayer, Outcome, Reason, gather, wait};
use rampart::prelude::*;
use rampart_testkit::{MockReply, MockService};
use tower::{ServiceBuilder, ServiceExt};

pub(crate) async fn run() -> Result<(), BoxError> {
    crate::heading("fan-out: gather and collective timeout (rampart-fanout)");
    errors_as_values().await?;
    collective_timeout().await?;
    bounded().await?;
    quorum().await
}

/// gather(risky(), risky(), return_exceptions=True): one fails, one not.
async fn errors_as_values() -> Result<(), BoxError> {
    let risky = MockService::<u32, &str>::new(|i| {
        let reply = if i % 2 == 0 {
            MockReply::err("Something went wrong")
        } else {
            MockReply::ok("success")
        };
        reply.after(Duration::from_millis(20))
    });
    let results = gather(risky, [0, 1]).await;
    let shown: Vec<String> = results
        .iter()
        .enumerate()
        .map(|(i, o)| match o {
            Outcome::Ok(r) => format!("task {i} succeeded: {r}"),
            Outcome::Err(e) => format!("task {i} failed: {}", e.message()),
            Outcome::NotDone(n) => format!("task {i} not done: {n}"),
        })
        .collect();
    crate::line(format_args!(
        "gather, errors as values: {}",
        shown.join("; ")
    ));
    if !(results[0].is_err() && results[1].is_ok()) {
        return Err(format!("expected task 0 to fail and task 1 to succeed: {shown:?}").into());
    }
    Ok(())
}

/// asyncio.wait([1, 3, 5] units, timeout=2 units): 1 completed, 2 cancelled.
async fn collective_timeout() -> Result<(), BoxError> {
    let unit = Duration::from_millis(20);
    let op = MockService::<u32, u32>::new(move |n| MockReply::ok(n).after(unit * n));
    let started = Instant::now();
    let res = wait(op.clone(), [1, 3, 5], unit * 2).await;
    let cancelled = res
        .iter()
        .filter_map(Outcome::not_done)
        .filter(|n| n.reason() == Reason::Timeout && n.was_sent())
        .count();
    crate::line(format_args!(
        "wait 1/3/5 units under 2 ({} ms): Completed: {}, Pending: {} ({} cancelled, {} still running)",
        started.elapsed().as_millis(),
        res.completed(),
        res.not_done(),
        op.dropped(),
        op.inflight()
    ));
    if res.completed() != 1 || cancelled != 2 || op.dropped() != 2 || op.inflight() != 0 {
        return Err("expected 1 completed and 2 cancelled at the timeout".into());
    }
    Ok(())
}

/// Ten calls through a `ServiceBuilder`, at most 3 at once.
async fn bounded() -> Result<(), BoxError> {
    let backend =
        MockService::<u32, u32>::new(|n| MockReply::ok(n * n).after(Duration::from_millis(10)));
    let svc = ServiceBuilder::new()
        .fan_out(FanOutLayer::new().concurrency(NonZeroUsize::new(3).ok_or("zero")?))
        .service(backend.clone());
    let squares = svc.oneshot((0..10).collect::<Vec<u32>>()).await?;
    let got: Vec<u32> = squares.into_iter().filter_map(Outcome::ok).collect();
    crate::line(format_args!(
        "10 calls, at most 3 at once: {got:?} in input order, peak {} in flight",
        backend.peak_inflight()
    ));
    if got != (0..10).map(|n| n * n).collect::<Vec<_>>() || backend.peak_inflight() != 3 {
        return Err("expected 10 squares in order with 3 in flight at most".into());
    }
    Ok(())
}

/// Two of three replicas are enough; the slow one is cancelled.
async fn quorum() -> Result<(), BoxError> {
    let replicas =
        MockService::<u64, u64>::new(|ms| MockReply::ok(ms).after(Duration::from_millis(ms)));
    let svc = ServiceBuilder::new()
        .fan_out(FanOutLayer::new().quorum(NonZeroUsize::new(2).ok_or("zero")?))
        .service(replicas.clone());
    let started = Instant::now();
    let res = svc.oneshot(vec![10, 2_000, 30]).await?;
    crate::line(format_args!(
        "quorum 2 of 3 replicas (10 ms, 2 s, 30 ms): done in {} ms, {} answered, slow one cancelled: {}",
        started.elapsed().as_millis(),
        res.succeeded(),
        res[1]
            .not_done()
            .is_some_and(|n| n.reason() == Reason::Decided)
    ));
    if res.succeeded() != 2 || replicas.dropped() != 1 || replicas.inflight() != 0 {
        return Err("expected a quorum of 2 and the slow replica cancelled".into());
    }
    Ok(())
}
