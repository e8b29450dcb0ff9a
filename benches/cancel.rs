//! Cancellation scope: rampart's `CancelLayer` (a child cancellation token
//! per request, tracked for a graceful drain, no hooks) against the bare
//! inner service. tower has no equivalent, so there is no `tower` id: the
//! figure to read is Δ = rampart − floor (target ≤ 100 ns, ≤ 1 allocation
//! per request).
//!
//! Group `cancel`: ready, yielding and remote (answered by another task)
//! inners, current-thread and multi-thread runtimes, one caller; and 64
//! callers on the multi-thread runtime (every request's token is a child of
//! the same server-wide token).

mod common;

use common::{
    InnerKind::{Ready, Remote, Yield},
    Rt::{Ct, Mt},
    bench_floor, bench_layer, cases, group,
};
use criterion::Criterion;

fn cancel(c: &mut Criterion) {
    let mut g = group(c, "cancel");
    let mut all = cases(&[Ct, Mt], &[Ready, Yield, Remote], &[1]);
    all.extend(cases(&[Mt], &[Ready, Yield, Remote], &[64]));
    for case in all {
        bench_floor(&mut g, case);
        bench_layer(&mut g, "rampart", case, rampart::cancel::CancelLayer::new());
    }
    g.finish();
}

fn main() {
    common::main(&[cancel]);
}
