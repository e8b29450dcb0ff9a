//! Queue: tower `Buffer` (bound 1024, one worker that only dispatches)
//! against rampart's `Queue` (bound 1024, workers that drive the calls) and
//! the bare inner service.
//!
//! - group `queue`: 1 caller (latency) and 64 callers (throughput), ct and
//!   mt, with the ready, yielding and remote inners;
//! - group `queue_many_callers`: 1 000 and 10 000 callers (ready, yielding
//!   and remote inners, ct and mt), to show that the cost per request stays
//!   flat when far more callers than the bound wait for space.
//!
//! In probe mode only (callgrind, never timed by criterion), the ablation
//! id `abl_handoff` (current thread): the bare handoff rampart's queue
//! makes, with tokio's channels and none of the queue's semantics — a
//! caller sends its request and a `tokio::sync::oneshot` sender over an
//! unbounded `tokio::sync::mpsc` to one of [`WORKERS`] worker tasks (round
//! robin), each of which drives the inner call to completion and answers
//! through the oneshot. What any "workers drive the call" design pays (a
//! floor for it, not a queue: no bound, no skip of abandoned work, no
//! deadline, no panic isolation; see [`common::handoff`]).
//!
//! Each queue is built inside the case's runtime (its workers are spawned
//! there) once per benchmark, and cloned per request. rampart's queue runs
//! [`WORKERS`] workers, each with its own clone of the inner service.

mod common;

use common::{
    InnerKind::{Ready, Remote, Yield},
    Rt::{Ct, Mt},
    bench_floor, bench_layer, cases, group,
};
use criterion::Criterion;
use tower::buffer::BufferLayer;

/// Queue bound every id uses.
const BOUND: usize = 1024;

/// rampart's workers (calls run at once): 8, the best of 1/2/4/8/16 for
/// the yielding and remote inners by instruction count (the ready inner is
/// flat across them).
const WORKERS: usize = 8;

fn rampart() -> rampart::queue::QueueLayer<common::Req> {
    rampart::queue::QueueLayer::new(BOUND, WORKERS)
}

fn queue(c: &mut Criterion) {
    let mut g = group(c, "queue");
    for case in cases(&[Ct, Mt], &[Ready, Yield, Remote], &[1, 64]) {
        bench_floor(&mut g, case);
        bench_layer(&mut g, "tower", case, BufferLayer::new(BOUND));
        bench_layer(&mut g, "rampart", case, rampart());
        if common::probing() && case.rt == Ct {
            bench_layer(
                &mut g,
                "abl_handoff",
                case,
                common::handoff::HandoffLayer { workers: WORKERS },
            );
        }
    }
    g.finish();

    let mut g = group(c, "queue_many_callers");
    for case in cases(&[Ct, Mt], &[Ready, Yield, Remote], &[1_000, 10_000]) {
        bench_floor(&mut g, case);
        bench_layer(&mut g, "tower", case, BufferLayer::new(BOUND));
        bench_layer(&mut g, "rampart", case, rampart());
        if common::probing() && case.rt == Ct {
            bench_layer(
                &mut g,
                "abl_handoff",
                case,
                common::handoff::HandoffLayer { workers: WORKERS },
            );
        }
    }
    g.finish();
}

fn main() {
    common::main(&[queue]);
}
