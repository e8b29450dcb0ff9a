//! Queue: tower `Buffer` (bound 1024, one worker) against the bare inner
//! service, one caller and 64 callers, ct and mt, ready inner.
//!
//! The buffer is built inside the case's runtime (its worker is spawned
//! there) once per benchmark, and cloned per request. `rampart` ids (the
//! bounded queue of `rampart-queue`, bound 1024) go next to the `tower` line,
//! registered with `common::bench_layer(&mut g, "rampart", case, layer)`.

mod common;

use common::{
    InnerKind::Ready,
    Rt::{Ct, Mt},
    bench_floor, bench_layer, cases, group,
};
use criterion::Criterion;
use tower::buffer::BufferLayer;

/// Queue bound every id uses.
const BOUND: usize = 1024;

fn queue(c: &mut Criterion) {
    let mut g = group(c, "queue");
    for case in cases(&[Ct, Mt], &[Ready], &[1, 64]) {
        bench_floor(&mut g, case);
        bench_layer(&mut g, "tower", case, BufferLayer::new(BOUND));
        // rampart: bench_layer(&mut g, "rampart", case, <rampart queue, BOUND>);
    }
    g.finish();
}

fn main() {
    common::main(&[queue]);
}
