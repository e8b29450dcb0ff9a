//! Concurrency limit: tower `ConcurrencyLimit` against the bare inner
//! service.
//!
//! - group `limit` (limit 64, never reached): one caller and 64 callers
//!   (ready and remote inner; yielding with 64), ct and mt;
//! - group `limit_contended_64x8` (limit 8): 64 callers, yielding and
//!   remote inner, so 56 callers wait at any time; ct and mt.
//!
//! The layer is applied once and the service cloned per request, so tower
//! pays for a new `PollSemaphore` per clone, as it does behind axum.
//! `rampart` ids: `rampart_limit::ConcurrencyLimitLayer` with the same
//! limits, waiting (FIFO) rather than shedding, built once per benchmark so
//! every clone shares it (as `tower`'s semaphore is shared by its clones).

mod common;

use common::{
    InnerKind::{Ready, Remote, Yield},
    Rt::{Ct, Mt},
    bench_floor, bench_layer, cases, group,
};
use criterion::Criterion;
use tower::limit::ConcurrencyLimitLayer;

/// rampart's fixed limit, waiting callers in line.
fn rampart(limit: usize) -> rampart::limit::ConcurrencyLimitLayer {
    rampart::limit::ConcurrencyLimitLayer::new(limit)
}

fn limit(c: &mut Criterion) {
    let mut g = group(c, "limit");
    let mut all = cases(&[Ct, Mt], &[Ready, Remote], &[1, 64]);
    all.extend(cases(&[Ct, Mt], &[Yield], &[64]));
    for case in all {
        bench_floor(&mut g, case);
        bench_layer(&mut g, "tower", case, ConcurrencyLimitLayer::new(64));
        bench_layer(&mut g, "rampart", case, rampart(64));
    }
    g.finish();

    let mut g = group(c, "limit_contended_64x8");
    for case in cases(&[Ct, Mt], &[Yield, Remote], &[64]) {
        bench_floor(&mut g, case);
        bench_layer(&mut g, "tower", case, ConcurrencyLimitLayer::new(8));
        bench_layer(&mut g, "rampart", case, rampart(8));
    }
    g.finish();
}

fn main() {
    common::main(&[limit]);
}
