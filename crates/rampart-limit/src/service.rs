//! [`ConcurrencyLimit`]: the service of [`ConcurrencyLimitLayer`](crate::ConcurrencyLimitLayer).

use crate::future::ResponseFuture;
use crate::permit::Permit;
use crate::shared::Shared;
use crate::stats::Stats;
use crate::wait::{Waiter, shed};
use rampart_core::classify::{Classify, ErrorClassify};
use rampart_core::{BoxError, Error};
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tower_service::Service;

/// Limits how many calls to `S` run at once; made by
/// [`ConcurrencyLimitLayer`](crate::ConcurrencyLimitLayer), whose limit it
/// shares with every clone.
///
/// The permit is taken in [`poll_ready`](Service::poll_ready), as tower's
/// `ConcurrencyLimit` does, so any service can be wrapped, `Clone` or not
/// (a `BoxService`, a hyper `SendRequest`), and an unready service is never
/// called:
///
/// - a free permit (nobody waiting) is one compare-and-swap, then the inner
///   service's own `poll_ready`;
/// - otherwise `poll_ready` waits in line (FIFO), `Pending`, so a timeout
///   layer above bounds the wait (rampart's
///   [`TimeoutLayer`](https://docs.rs/rampart-timeout) does; tower's does
///   not, tower#648). The wait ends early, with an error, when the line is
///   full or the maximum wait passes (`Overloaded`), or when the current
///   [`Context`](rampart_core::Context)'s deadline passes
///   (`DeadlineExceeded`) or its cancellation token fires (`Cancelled`, at
///   once);
/// - a refused call (shed mode, or a wait that ended early) makes
///   `poll_ready` answer `Ready(Ok(()))` and the next `call` fail at once
///   with that error, without calling the inner service — as tower's
///   `LoadShed` does, so the service stays usable for the next request.
///
/// The permit moves into the response future and comes back when the inner
/// response future completes or is dropped; a permit taken by `poll_ready`
/// but never used comes back when the service is dropped. Each clone waits
/// for its own permit (axum clones the service for every request).
pub struct ConcurrencyLimit<S, C = ErrorClassify> {
    inner: S,
    shared: Arc<Shared>,
    classify: C,
    admission: Admission,
}

/// Where this handle's next call stands.
enum Admission {
    /// Nothing taken yet.
    Idle,
    /// In line for a permit.
    Waiting(Waiter<Shared>),
    /// Holds a permit (in flight counting it).
    Held {
        permit: Permit<Shared>,
        in_flight: u32,
    },
    /// The next call fails with this error.
    Refused(Error),
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Admission::Idle => f.write_str("Idle"),
            Admission::Waiting(w) => f.debug_tuple("Waiting").field(w).finish(),
            Admission::Held { in_flight, .. } => f
                .debug_struct("Held")
                .field("in_flight", in_flight)
                .finish_non_exhaustive(),
            Admission::Refused(e) => f.debug_tuple("Refused").field(&e.kind()).finish(),
        }
    }
}

impl<S, C> ConcurrencyLimit<S, C> {
    pub(crate) fn from_parts(inner: S, shared: Arc<Shared>, classify: C) -> Self {
        ConcurrencyLimit {
            inner,
            shared,
            classify,
            admission: Admission::Idle,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service (a permit this handle held is given back).
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// In flight, waiting, the current limit, and what was refused so far.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }
}

impl<S: Clone, C: Clone> Clone for ConcurrencyLimit<S, C> {
    fn clone(&self) -> Self {
        // A clone holds no permit and waits for its own.
        ConcurrencyLimit::from_parts(
            self.inner.clone(),
            Arc::clone(&self.shared),
            self.classify.clone(),
        )
    }
}

impl<S: fmt::Debug, C> fmt::Debug for ConcurrencyLimit<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("inner", &self.inner)
            .field("admission", &self.admission)
            .field("stats", &self.shared.stats())
            .finish_non_exhaustive()
    }
}

impl<S, C, Req> Service<Req> for ConcurrencyLimit<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<Req, S::Response>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S, Req, C::Classifier>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            match &mut self.admission {
                Admission::Held { .. } => {
                    return match self.inner.poll_ready(cx) {
                        Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
                        Poll::Ready(Err(e)) => {
                            self.admission = Admission::Idle; // the permit goes back
                            Poll::Ready(Err(Error::from_inner(e)))
                        }
                        Poll::Pending => Poll::Pending,
                    };
                }
                Admission::Idle => self.admission = self.admit(),
                Admission::Waiting(waiter) => {
                    self.admission = match ready!(waiter.poll_permit(cx)) {
                        Ok((permit, in_flight)) => Admission::Held { permit, in_flight },
                        Err(e) => Admission::Refused(e),
                    };
                }
                Admission::Refused(_) => return Poll::Ready(Ok(())),
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let (permit, in_flight) = match std::mem::replace(&mut self.admission, Admission::Idle) {
            Admission::Held { permit, in_flight } => (permit, in_flight),
            Admission::Refused(e) => {
                return ResponseFuture::rejected(e);
            }
            // `call` without `poll_ready` answering `Ready` first breaks the
            // `Service` contract; the limit still holds: a free permit is
            // taken, otherwise the call is refused.
            Admission::Idle | Admission::Waiting(_) => match self.shared.sem.try_acquire() {
                Some(in_flight) => (Permit::taken(Arc::clone(&self.shared)), in_flight),
                None => {
                    return ResponseFuture::rejected(shed(&*self.shared));
                }
            },
        };
        let judge = self
            .shared
            .adaptive
            .is_some()
            .then(|| self.classify.classify_request(&req));
        ResponseFuture::calling(self.inner.call(req), permit, in_flight, judge)
    }
}

impl<S, C> ConcurrencyLimit<S, C> {
    /// The first step of `poll_ready`: a free permit (one CAS), a refusal
    /// in shed mode, or a place in line.
    #[inline]
    fn admit(&self) -> Admission {
        if let Some(in_flight) = self.shared.sem.try_acquire() {
            return Admission::Held {
                permit: Permit::taken(Arc::clone(&self.shared)),
                in_flight,
            };
        }
        if self.shared.policy.max_waiting == 0 {
            return Admission::Refused(shed(&*self.shared));
        }
        Admission::Waiting(Waiter::new(Arc::clone(&self.shared)))
    }
}
