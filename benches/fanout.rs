//! Fan-out: one group of 1 000 requests through one service, gathered in
//! input order, against `futures::future::join_all` (the floor) and tower's
//! `ServiceExt::call_all` (ordered results; the tower equivalent) in the
//! same run; ready, yielding and remote inner services, current-thread and
//! multi-thread runtimes.
//!
//! - `fanout`: unbounded. `floor` = `join_all` of the inner calls,
//!   `tower` = `call_all` collected, `rampart` = `rampart::fanout::gather`.
//! - `fanout_bounded_64`: at most 64 in flight. `floor` =
//!   `stream::iter(..).map(call).buffered(64)` collected, `tower` =
//!   `call_all` over `ConcurrencyLimit(64)`, `rampart` = `FanOutLayer` with
//!   `concurrency(64)`.
//!
//! Every id collects every result in input order (a `Vec`), as `gather`
//! does. One criterion iteration is one request (a batch of 1 000 counts 1 000);
//! the parameter's last number is the batch size (`ct/ready/1000`). Every id
//! gets the same inner service (`common::inner`, cloned once per batch),
//! the same request vector, and runs in a spawned task. The floor skips
//! `poll_ready` waits (the inner is always ready; it checks that with a
//! no-op waker). Probe mode (`RAMPART_BENCH_PROBE`) runs
//! `RAMPART_BENCH_PROBE_N` requests in batches of 1 000.

mod common;

use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use common::{
    Case, Inner,
    InnerKind::{Ready, Remote, Yield},
    Req,
    Rt::{Ct, Mt},
    cases, group,
};
use criterion::{BenchmarkId, Criterion};
use futures_util::StreamExt;
use futures_util::stream;
use rampart::fanout::{FanOutLayer, gather};
use tower::{Layer, Service, ServiceExt};

/// Requests per group.
const BATCH: usize = 1000;
/// The bound of the `fanout_bounded_64` group.
const BOUND: usize = 64;

type Batch = Pin<Box<dyn Future<Output = usize> + Send>>;
/// Runs one batch on the given service; resolves to the number of successes.
type Runner = fn(Inner, Vec<Req>) -> Batch;

/// Calls the always-ready inner service without waiting (checked).
fn call_ready(svc: &mut Inner, req: Req) -> <Inner as Service<Req>>::Future {
    let ready = svc.poll_ready(&mut Context::from_waker(Waker::noop()));
    assert!(
        matches!(ready, Poll::Ready(Ok(()))),
        "the inner is always ready"
    );
    svc.call(req)
}

fn floor(mut svc: Inner, reqs: Vec<Req>) -> Batch {
    let calls: Vec<_> = reqs.into_iter().map(|r| call_ready(&mut svc, r)).collect();
    Box::pin(async move {
        let all = futures_util::future::join_all(calls).await;
        all.iter().filter(|r| r.is_ok()).count()
    })
}

fn tower_call_all(svc: Inner, reqs: Vec<Req>) -> Batch {
    Box::pin(async move {
        let all: Vec<_> = svc.call_all(stream::iter(reqs)).collect().await;
        all.iter().filter(|r| r.is_ok()).count()
    })
}

fn rampart_gather(svc: Inner, reqs: Vec<Req>) -> Batch {
    Box::pin(async move { gather(svc, reqs).await.succeeded() })
}

fn floor_bounded(mut svc: Inner, reqs: Vec<Req>) -> Batch {
    Box::pin(async move {
        let all: Vec<_> = stream::iter(reqs)
            .map(move |r| call_ready(&mut svc, r))
            .buffered(BOUND)
            .collect()
            .await;
        all.iter().filter(|r| r.is_ok()).count()
    })
}

fn tower_bounded(svc: Inner, reqs: Vec<Req>) -> Batch {
    Box::pin(async move {
        let all: Vec<_> = tower::limit::ConcurrencyLimit::new(svc, BOUND)
            .call_all(stream::iter(reqs))
            .collect()
            .await;
        all.iter().filter(|r| r.is_ok()).count()
    })
}

fn rampart_bounded(svc: Inner, reqs: Vec<Req>) -> Batch {
    let bound = NonZeroUsize::new(BOUND).expect("non-zero");
    Box::pin(async move {
        let fan = FanOutLayer::new().concurrency(bound).layer(svc);
        match fan.oneshot(reqs).await {
            Ok(g) => g.succeeded(),
            Err(_) => 0,
        }
    })
}

/// Runs `n` requests in batches of [`BATCH`] in a spawned task; returns the
/// wall time.
async fn run(svc: Inner, n: u64, runner: Runner) -> Duration {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut left = n as usize;
        while left > 0 {
            let size = left.min(BATCH);
            let reqs: Vec<Req> = (0..size).map(|_| common::plain_request()).collect();
            let ok = runner(svc.clone(), reqs).await;
            assert_eq!(ok, size, "every request succeeds");
            left -= size;
        }
        start.elapsed()
    })
    .await
    .expect("driver task panicked")
}

fn bench(g: &mut common::Group<'_>, id: &str, case: Case, runner: Runner) {
    let name = format!("{}/{id}/{case}", g.name());
    if let Some(target) = common::probe() {
        if target == "list" {
            println!("{name}");
        } else if target == name {
            let n = common::probe_requests();
            let rt = common::runtime(case.rt);
            let svc = rt.block_on(async { common::inner(case.inner) });
            let elapsed = rt.block_on(run(svc, n, runner));
            eprintln!("PROBE {name}: {n} requests in {elapsed:?}");
        }
        return;
    }
    let rt = common::runtime(case.rt);
    let svc = rt.block_on(async { common::inner(case.inner) });
    let crit = g.criterion().expect("criterion group outside probe mode");
    crit.bench_function(BenchmarkId::new(id, case.param()), |b| {
        b.iter_custom(|iters| rt.block_on(run(svc.clone(), iters, runner)));
    });
    rt.block_on(run(svc.clone(), BATCH as u64, runner));
    let before = common::allocations();
    rt.block_on(run(svc.clone(), common::ALLOC_REQUESTS, runner));
    let count = common::allocations() - before;
    common::record_allocs(&name, count, common::ALLOC_REQUESTS);
    drop(svc);
    drop(rt);
}

fn fanout(c: &mut Criterion) {
    let mut g = group(c, "fanout");
    for case in cases(&[Ct, Mt], &[Ready, Yield, Remote], &[BATCH]) {
        bench(&mut g, "floor", case, floor);
        bench(&mut g, "tower", case, tower_call_all);
        bench(&mut g, "rampart", case, rampart_gather);
    }
    g.finish();
    let mut g = group(c, "fanout_bounded_64");
    for case in cases(&[Ct, Mt], &[Ready, Yield, Remote], &[BATCH]) {
        bench(&mut g, "floor", case, floor_bounded);
        bench(&mut g, "tower", case, tower_bounded);
        bench(&mut g, "rampart", case, rampart_bounded);
    }
    g.finish();
}

fn main() {
    common::main(&[fanout]);
}
