//! What both services share: the layer's state, and turning a store's
//! [`Decision`] into go, wait or refuse for the current request.

use crate::Stats;
use crate::quota::Quota;
use crate::store::Decision;
use rampart_core::{Context, Error};
use std::future::Future;
use std::pin::Pin;
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
}

impl<St> Shared<St> {
    pub(crate) fn new(store: St, quota: Quota, max_wait: Duration) -> Shared<St> {
        Shared {
            store,
            quota,
            max_wait,
            rejected: AtomicU64::new(0),
            waited: AtomicU64::new(0),
        }
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
    pub(crate) fn wait_bound(&self) -> Duration {
        if self.max_wait.is_zero() {
            return Duration::ZERO;
        }
        match Context::current_deadline() {
            Some(at) => self
                .max_wait
                .min(at.saturating_duration_since(Instant::now())),
            None => self.max_wait,
        }
    }

    /// Go, wait or refuse, given the store's answer under `bound`.
    pub(crate) fn settle(&self, d: Result<Decision, Error>, bound: Duration) -> Settled {
        match d {
            Ok(Decision::Admit { wait }) if wait.is_zero() => Settled::Go,
            Ok(Decision::Admit { wait }) => {
                self.waited.fetch_add(1, Ordering::Relaxed);
                let token = Context::with_current(|c| c.and_then(|c| c.cancellation().cloned()));
                Settled::Wait(Box::pin(wait_for(wait, token)))
            }
            Ok(Decision::Reject { retry_after }) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                if retry_after <= self.max_wait && bound < self.max_wait {
                    // The wait was allowed, the request's deadline was not.
                    Settled::Refused(Error::deadline_exceeded())
                } else {
                    tracing::debug!(?retry_after, "rate limit: request refused");
                    Settled::Refused(Error::rate_limited(Some(retry_after)))
                }
            }
            Err(e) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                Settled::Refused(e)
            }
        }
    }
}

/// A wait for an admitted slot, ended early by the request's cancellation.
pub(crate) type Wait = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + Sync>>;

async fn wait_for(
    wait: Duration,
    token: Option<rampart_core::CancellationToken>,
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
