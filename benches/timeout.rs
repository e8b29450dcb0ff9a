//! Timeout: tower `Timeout` (1 s, never fires) against the bare inner
//! service, with a ready, a yielding and a remote inner (answered by another
//! task, as a network client is), current-thread and multi-thread runtimes,
//! one caller (and 64 callers for the yielding and remote inners).
//!
//! Group `timeout`; ids `floor`, `tower` and `rampart` (the per-attempt
//! `TimeoutLayer` of `rampart-timeout`, also 1 s), registered with the same
//! `common::bench_layer` call.

mod common;

use std::time::Duration;

use common::{
    InnerKind::{Ready, Remote, Yield},
    Rt::{Ct, Mt},
    bench_floor, bench_layer, cases, group,
};
use criterion::Criterion;
use tower::timeout::TimeoutLayer;

/// The timeout every id uses: long enough never to fire.
const TIMEOUT: Duration = Duration::from_secs(1);

fn timeout(c: &mut Criterion) {
    let mut g = group(c, "timeout");
    let mut all = cases(&[Ct, Mt], &[Ready, Yield, Remote], &[1]);
    all.extend(cases(&[Ct, Mt], &[Ready, Yield, Remote], &[64]));
    for case in all {
        bench_floor(&mut g, case);
        bench_layer(&mut g, "tower", case, TimeoutLayer::new(TIMEOUT));
        let rampart = rampart::timeout::TimeoutLayer::new(TIMEOUT);
        bench_layer(&mut g, "rampart", case, rampart);
    }
    g.finish();
}

fn main() {
    common::main(&[timeout]);
}
