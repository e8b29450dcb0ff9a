//! The bare hand-off to worker tasks that a queue with workers is built on,
//! for ablations (probe-only ids): requests handed to `workers` worker tasks
//! over tokio's unbounded mpsc, round robin, each answer back over a tokio
//! oneshot. No bound, no skip of a caller that left, no deadline, no panic
//! isolation, no context carried: the least a "workers drive the call"
//! design on tokio's channels costs.

use super::{Req, Res};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};
use tower::{BoxError, Layer, Service, ServiceExt};

type Job = (Req, oneshot::Sender<Result<Res, BoxError>>);

/// Spawns the workers (inside the case's runtime) and hands out the service
/// that feeds them.
pub(crate) struct HandoffLayer {
    /// Worker tasks to spawn.
    pub(crate) workers: usize,
}

/// Feeds the workers, round robin.
#[derive(Clone)]
pub(crate) struct Handoff {
    workers: Arc<[mpsc::UnboundedSender<Job>]>,
    next: Arc<AtomicUsize>,
}

impl<S> Layer<S> for HandoffLayer
where
    S: Service<Req, Response = Res> + Clone + Send + 'static,
    S::Error: Into<BoxError> + Send,
    S::Future: Send,
{
    type Service = Handoff;

    fn layer(&self, inner: S) -> Handoff {
        let workers = (0..self.workers)
            .map(|_| {
                let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
                let mut svc = inner.clone();
                tokio::spawn(async move {
                    while let Some((req, answer)) = rx.recv().await {
                        let res = match svc.ready().await {
                            Ok(svc) => svc.call(req).await.map_err(Into::into),
                            Err(e) => Err(e.into()),
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
