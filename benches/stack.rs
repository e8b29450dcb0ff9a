//! The five-layer stack, outermost first: request id (set + propagate) →
//! timeout (1 s) → retry (never) → buffer (1024) → concurrency limit (64),
//! against the bare inner service.
//!
//! - group `stack`: ct and mt, one and 64 callers, ready, yielding and
//!   remote inners;
//! - group `stack_callers`: 1 000 and 10 000 callers (ct and mt, ready and
//!   remote inners), far more than the limit (64) and, at 10 000, than the
//!   queue bound (1024): with `stack`'s 1 and 64 callers they give the time
//!   per request against callers that `benches/chart.py` draws. Its timeout
//!   is 60 s, not 1 s (see [`CALLERS_TIMEOUT`]).
//!
//! - `tower`: tower and tower-http parts (`SetRequestId` + `PropagateRequestId`
//!   with a v4 UUID, `Timeout`, `Retry` with [`NeverRetry`], `Buffer`,
//!   `ConcurrencyLimit`).
//! - `rampart`: the same five patterns from rampart, same order and
//!   settings: `RequestIdLayer` (mint a v7 id, echo it on the response),
//!   `TimeoutLayer::new(1 s)`, `RetryLayer::builder().build()` (3 attempts,
//!   budget off; an `Ok` is a success, so nothing is retried; `Request<()>`
//!   is cloned per attempt like tower's), `QueueLayer::new(1024, 8)` (8
//!   workers, as in the `queue` bench), `ConcurrencyLimitLayer::new(64)`.
//!
//! [`NeverRetry`]: common::NeverRetry

mod common;

use std::time::Duration;

use common::{
    Case, Group,
    InnerKind::{Ready, Remote, Yield},
    NeverRetry,
    Rt::{Ct, Mt},
    bench_floor, bench_layer, cases, group,
};
use criterion::Criterion;
use tower::ServiceBuilder;
use tower::buffer::BufferLayer;
use tower::limit::ConcurrencyLimitLayer;
use tower::retry::RetryLayer;
use tower::timeout::TimeoutLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

/// Timeout of the stack in group `stack` (1 and 64 callers): long enough
/// never to fire.
const TIMEOUT: Duration = Duration::from_secs(1);
/// Timeout of the stack in group `stack_callers`: long enough never to fire
/// there either. rampart's timeout times from `call()`, so it includes the
/// wait for a place in the queue (first come, first served: at 10 000
/// callers, the time of ~10 000 requests); tower's starts once `Buffer`'s
/// `poll_ready` admitted the request (at most bound + limit ahead of it).
/// Under callgrind (~50× slower) that wait reaches 1 s, rampart's 1 s
/// timeout fires, every caller fails, and the probe measures panics instead
/// of requests.
const CALLERS_TIMEOUT: Duration = Duration::from_secs(60);
/// Queue bound of the stack.
const BOUND: usize = 1024;
/// Concurrency limit of the stack.
const LIMIT: usize = 64;
/// Workers of rampart's queue (the `queue` bench's choice).
const WORKERS: usize = 8;

/// Registers `floor`, `tower` and `rampart` for `case`, both stacks with
/// `timeout`.
fn register(g: &mut Group<'_>, case: Case, timeout: Duration) {
    bench_floor(g, case);
    let tower_stack = ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TimeoutLayer::new(timeout))
        .layer(RetryLayer::new(NeverRetry))
        .layer(BufferLayer::new(BOUND))
        .layer(ConcurrencyLimitLayer::new(LIMIT))
        .into_inner();
    bench_layer(g, "tower", case, tower_stack);
    let retry = rampart::retry::RetryLayer::builder()
        .build()
        .expect("valid retry config");
    let rampart_stack = ServiceBuilder::new()
        .layer(rampart::context::RequestIdLayer::new())
        .layer(rampart::timeout::TimeoutLayer::new(timeout))
        .layer(retry)
        .layer(rampart::queue::QueueLayer::<common::Req>::new(
            BOUND, WORKERS,
        ))
        .layer(rampart::limit::ConcurrencyLimitLayer::new(LIMIT))
        .into_inner();
    bench_layer(g, "rampart", case, rampart_stack);
}

fn stack(c: &mut Criterion) {
    let mut g = group(c, "stack");
    for case in cases(&[Ct, Mt], &[Ready, Yield, Remote], &[1, 64]) {
        register(&mut g, case, TIMEOUT);
    }
    g.finish();

    let mut g = group(c, "stack_callers");
    for case in cases(&[Ct, Mt], &[Ready, Remote], &[1_000, 10_000]) {
        register(&mut g, case, CALLERS_TIMEOUT);
    }
    g.finish();
}

fn main() {
    common::main(&[stack]);
}
