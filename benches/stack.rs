//! The five-layer stack, outermost first: request id (set + propagate) →
//! timeout (1 s) → retry (never) → buffer (1024) → concurrency limit (64),
//! against the bare inner service; ct and mt, one and 64 callers, ready
//! inner.
//!
//! The `tower` id is built from tower and tower-http parts. A `rampart` id
//! (the same five patterns from rampart, same order and settings) goes next
//! to it, registered with `common::bench_layer(&mut g, "rampart", case,
//! layer)`.

mod common;

use std::time::Duration;

use common::{
    InnerKind::Ready,
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

/// Timeout of the stack: long enough never to fire.
const TIMEOUT: Duration = Duration::from_secs(1);
/// Queue bound of the stack.
const BOUND: usize = 1024;
/// Concurrency limit of the stack.
const LIMIT: usize = 64;

fn stack(c: &mut Criterion) {
    let mut g = group(c, "stack");
    for case in cases(&[Ct, Mt], &[Ready], &[1, 64]) {
        bench_floor(&mut g, case);
        let tower_stack = ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(TimeoutLayer::new(TIMEOUT))
            .layer(RetryLayer::new(NeverRetry))
            .layer(BufferLayer::new(BOUND))
            .layer(ConcurrencyLimitLayer::new(LIMIT))
            .into_inner();
        bench_layer(&mut g, "tower", case, tower_stack);
        // rampart: bench_layer(&mut g, "rampart", case, <rampart stack, same order>);
    }
    g.finish();
}

fn main() {
    common::main(&[stack]);
}
