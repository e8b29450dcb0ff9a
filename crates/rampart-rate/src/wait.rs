//! What both services share: the layer's state, and turning a store's
//! [`Decision`] into go, wait or refuse for the current request.

use crate::Stats;
use crate::metrics::{Metrics, WaitTimer};
use crate::quota::Quota;
use crate::store::{Decision, RateStore};
use rampart_core::telemetry::{LayerName, Registered};
use rampart_core::{Context, Error};
use std::future::Future;
use std::pin::Pin;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// The state every service of one layer shares.
#[derive(Debug)]
pub(crate) struct Shared<St> {
    pub(crate) store: St,
    pub(crate) quota: Quota,
    pub(crate) max_wait: Duration,
    rejected: AtomicU64,
    waited: AtomicU64,
    /// The `layer` label of the metrics and field of tracing events.
    name: LayerName,
    /// Registered when the layer makes its first service
    /// ([`register_metrics`](Self::register_metrics)), under `name`.
    metrics: Registered<Metrics>,
    /// The store's [`RateStore::register_metrics`] was called.
    store_named: Once,
}

impl<St: RateStore> Shared<St> {
    /// The shared state of a layer named `name`: its metric handles (and
    /// the store's) are registered when the layer makes its first service.
    pub(crate) fn new(store: St, quota: Quota, max_wait: Duration, name: LayerName) -> Shared<St> {
        Shared {
            store,
            quota,
            max_wait,
            rejected: AtomicU64::new(0),
            waited: AtomicU64::new(0),
            name,
            metrics: Registered::new(),
            store_named: Once::new(),
        }
    }

    /// Registers the handles (and the store's) under the layer's name,
    /// with the recorder installed now, unless done already
    /// (`Layer::layer`).
    pub(crate) fn register_metrics(&self) {
        self.store_named
            .call_once(|| self.store.register_metrics(&self.name));
        self.metrics.register(|| Metrics::new(&self.name));
    }

    /// Renames a state no one else holds: the handles are registered
    /// under the new name when the layer makes its next service.
    pub(crate) fn rename(&mut self, name: LayerName) {
        self.metrics = Registered::new();
        self.store_named = Once::new();
        self.name = name;
    }
}

impl<St> Shared<St> {
    pub(crate) fn name(&self) -> &LayerName {
        &self.name
    }

    pub(crate) fn stats(&self) -> Stats {
        Stats {
            rejected: self.rejected.load(Ordering::Relaxed),
            waited: self.waited.load(Ordering::Relaxed),
        }
    }

    /// The longest the current request may wait: `max_wait`, shortened to
    /// what is left of its [`Context`] deadline. Zero (the default) never
    /// looks the context up.
    #[inline]
    pub(crate) fn wait_bound(&self) -> Duration {
        if self.max_wait.is_zero() {
            return Duration::ZERO;
        }
        self.deadline_bound()
    }

    /// [`wait_bound`](Self::wait_bound) with a `max_wait`: looks the
    /// context up.
    #[inline(never)]
    fn deadline_bound(&self) -> Duration {
        match Context::current_deadline() {
            Some(at) => self
                .max_wait
                .min(at.saturating_duration_since(Instant::now())),
            None => self.max_wait,
        }
    }

    /// Counts a request admitted at once: all that the hot path (an
    /// immediate store admitting with no wait) does besides calling.
    #[inline]
    pub(crate) fn admitted_now(&self) {
        if let Some(m) = self.metrics.get() {
            m.admitted.increment(1);
        }
    }

    fn rejected_metric(&self) {
        if let Some(m) = self.metrics.get() {
            m.rejected.increment(1);
        }
    }

    /// [`settle`](Self::settle) off the hot path of a decision taken in
    /// `call` with no wait allowed: the refusal (or `None`, go). Kept out
    /// of line so that `call` stays small.
    #[cold]
    #[inline(never)]
    pub(crate) fn settle_cold(&self, d: Result<Decision, Error>) -> Option<Error> {
        match self.settle(d, Duration::ZERO) {
            Settled::Refused(e) => Some(e),
            Settled::Go | Settled::Wait(_) => None,
        }
    }

    /// Go, wait or refuse, given the store's answer under `bound`.
    pub(crate) fn settle(&self, d: Result<Decision, Error>, bound: Duration) -> Settled {
        match d {
            Ok(Decision::Admit { wait }) if wait.is_zero() => {
                self.admitted_now();
                Settled::Go
            }
            Ok(Decision::Admit { wait }) => {
                self.admitted_now();
                self.waited.fetch_add(1, Ordering::Relaxed);
                let token = Context::with_current(|c| c.and_then(|c| c.cancellation().cloned()));
                let timer = WaitTimer::new(self.metrics.get());
                Settled::Wait(Box::pin(wait_for(wait, token, timer)))
            }
            Ok(Decision::Reject { retry_after }) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                self.rejected_metric();
                if retry_after <= self.max_wait && bound < self.max_wait {
                    // The wait was allowed, the request's deadline was not.
                    tracing::debug!(
                        layer = %self.name,
                        ?retry_after,
                        "rate limit: request refused, its deadline comes before its slot"
                    );
                    Settled::Refused(Error::deadline_exceeded())
                } else {
                    tracing::debug!(layer = %self.name, ?retry_after, "rate limit: request refused");
                    Settled::Refused(Error::rate_limited(Some(retry_after)))
                }
            }
            Err(e) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                self.rejected_metric();
                tracing::debug!(layer = %self.name, error = %e, "rate limit: request refused by the store");
                Settled::Refused(e)
            }
        }
    }
}

/// A wait for an admitted slot, ended early by the request's cancellation.
pub(crate) type Wait = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + Sync>>;

/// Sleeps `wait`, or until `token` is cancelled; `timer` records the time
/// waited however the wait ends (it is dropped with the future).
async fn wait_for(
    wait: Duration,
    token: Option<rampart_core::CancellationToken>,
    // Held (an async fn keeps its parameters) until the wait ends.
    _timer: WaitTimer,
) -> Result<(), Error> {
    let sleep = tokio::time::sleep(wait);
    if let Some(token) = token {
        tokio::select! {
            biased;
            () = token.cancelled() => Err(Error::cancelled()),
            () = sleep => Ok(()),
        }
    } else {
        sleep.await;
        Ok(())
    }
}

/// What to do with one request.
pub(crate) enum Settled {
    /// Call now.
    Go,
    /// Call when the wait ends (or fail if it is cancelled).
    Wait(Wait),
    /// Do not call.
    Refused(Error),
}
