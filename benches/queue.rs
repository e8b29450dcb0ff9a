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
//! deadline, no panic isolation; see [`handoff`]).
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
            bench_layer(&mut g, "abl_handoff", case, handoff::HandoffLayer);
        }
    }
    g.finish();

    let mut g = group(c, "queue_many_callers");
    for case in cases(&[Ct, Mt], &[Ready, Yield, Remote], &[1_000, 10_000]) {
        bench_floor(&mut g, case);
        bench_layer(&mut g, "tower", case, BufferLayer::new(BOUND));
        bench_layer(&mut g, "rampart", case, rampart());
        if common::probing() && case.rt == Ct {
            bench_layer(&mut g, "abl_handoff", case, handoff::HandoffLayer);
        }
    }
    g.finish();
}

/// The `abl_handoff` ablation (see the module docs): requests handed to
/// [`WORKERS`] worker tasks over tokio's mpsc, answers back over a tokio
/// oneshot.
mod handoff {
    use super::WORKERS;
    use crate::common::{Inner, Req, Res};
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::task::{Context, Poll};
    use tokio::sync::{mpsc, oneshot};
    use tower::{BoxError, Layer, Service, ServiceExt};

    type Job = (Req, oneshot::Sender<Result<Res, BoxError>>);

    /// Spawns the workers (inside the case's runtime) and hands out the
    /// service that feeds them.
    pub(crate) struct HandoffLayer;

    #[derive(Clone)]
    pub(crate) struct Handoff {
        workers: Arc<[mpsc::UnboundedSender<Job>]>,
        next: Arc<AtomicUsize>,
    }

    impl Layer<Inner> for HandoffLayer {
        type Service = Handoff;

        fn layer(&self, inner: Inner) -> Handoff {
            let workers = (0..WORKERS)
                .map(|_| {
                    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
                    let mut svc = inner.clone();
                    tokio::spawn(async move {
                        while let Some((req, answer)) = rx.recv().await {
                            let res = match svc.ready().await {
                                Ok(svc) => svc.call(req).await,
                                Err(e) => Err(e),
                            };
                            let _ = answer.send(res);
                        }
                    });
                    tx
                })
                .collect();
            Handoff {
                workers,
                next: Arc::new(AtomicUsize::new(0)),
            }
        }
    }

    impl Service<Req> for Handoff {
        type Response = Res;
        type Error = BoxError;
        type Future = Answer;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: Req) -> Answer {
            let (tx, rx) = oneshot::channel();
            let i = self.next.fetch_add(1, Relaxed) % self.workers.len();
            let _ = self.workers[i].send((req, tx));
            Answer(rx)
        }
    }

    /// The caller's wait for its answer.
    pub(crate) struct Answer(oneshot::Receiver<Result<Res, BoxError>>);

    impl Future for Answer {
        type Output = Result<Res, BoxError>;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            Pin::new(&mut self.0)
                .poll(cx)
                .map(|r| r.unwrap_or_else(|_| Err("worker gone".into())))
        }
    }
}

fn main() {
    common::main(&[queue]);
}
