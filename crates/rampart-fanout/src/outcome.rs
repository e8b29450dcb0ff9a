//! What a fan-out gives back: one [`Outcome`] per request, in input order,
//! gathered in [`Gathered`].

use rampart_core::{Error, ErrorKind};
use std::fmt;

/// Why a request did not finish: the group stopped before it did.
///
/// Every request a group leaves unfinished shares the group's reason (a
/// group stops once).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The group's result was decided without it (fail-fast's first error,
    /// first-ok's winner, a quorum reached or become impossible): it was
    /// cancelled as no longer needed.
    Decided,
    /// The collective timeout ([`wait`](crate::wait),
    /// [`FanOutLayer::timeout`](crate::FanOutLayer::timeout)) passed first.
    Timeout,
    /// The caller's [`Context`](rampart_core::Context) deadline passed first.
    DeadlineExceeded,
    /// The caller's cancellation token fired.
    Cancelled,
    /// Never sent: the inner service failed in `poll_ready` (a failed
    /// service takes no more requests; the request that waited for it holds
    /// that error), or panicked in `poll_ready` or `call`.
    NotReady,
    /// The inner service panicked: in the call's future (that call alone
    /// fails), or in its `poll_ready` or `call` (the rest are then never
    /// sent, [`Reason::NotReady`]).
    Panicked,
}

impl Reason {
    /// The rampart [`ErrorKind`] this reason stands for: `Decided` and
    /// `Cancelled` → `Cancelled`, `Timeout` → `Timeout`, `DeadlineExceeded`
    /// → `DeadlineExceeded`, `NotReady` → `Closed`, `Panicked` → `Inner`.
    pub fn kind(self) -> ErrorKind {
        match self {
            Reason::Decided | Reason::Cancelled => ErrorKind::Cancelled,
            Reason::Timeout => ErrorKind::Timeout,
            Reason::DeadlineExceeded => ErrorKind::DeadlineExceeded,
            Reason::NotReady => ErrorKind::Closed,
            Reason::Panicked => ErrorKind::Inner,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Decided => "not needed: the group was decided",
            Reason::Timeout => "the collective timeout passed",
            Reason::DeadlineExceeded => "the request deadline passed",
            Reason::Cancelled => "the caller cancelled",
            Reason::NotReady => "the service failed before it was sent",
            Reason::Panicked => "the service panicked",
        })
    }
}

/// A request that did not finish, and whether it had been sent.
///
/// A request that was sent (its call made) had its future dropped: it was
/// cancelled mid-flight, and whatever it did at the far end is unknown. One
/// never sent is safe to send again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NotDone {
    reason: Reason,
    sent: bool,
}

impl NotDone {
    pub(crate) const fn new(reason: Reason, sent: bool) -> NotDone {
        NotDone { reason, sent }
    }

    /// Why it did not finish.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// True when its call had been made (and its future was then dropped);
    /// false when it was never sent.
    pub fn was_sent(&self) -> bool {
        self.sent
    }

    /// The rampart error kind of [`reason`](NotDone::reason).
    pub fn kind(&self) -> ErrorKind {
        self.reason.kind()
    }

    /// A rampart [`Error`] of [`kind`](NotDone::kind).
    pub fn to_error(&self) -> Error {
        Error::new(self.kind())
    }
}

impl fmt::Display for NotDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sent = if self.sent { "cancelled" } else { "never sent" };
        write!(f, "{sent}: {}", self.reason)
    }
}

/// What became of one request: its response, its error, or not done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<T, E> {
    /// The service answered.
    Ok(T),
    /// The service failed (or failed in `poll_ready` while this request
    /// waited to be sent).
    Err(E),
    /// The group stopped first; see [`NotDone`].
    NotDone(NotDone),
}

impl<T, E> Outcome<T, E> {
    /// True for [`Outcome::Ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }

    /// True for [`Outcome::Err`].
    pub fn is_err(&self) -> bool {
        matches!(self, Outcome::Err(_))
    }

    /// True when the request finished, with a response or an error
    /// (asyncio's "done").
    pub fn is_done(&self) -> bool {
        !matches!(self, Outcome::NotDone(_))
    }

    /// The response, if any.
    pub fn ok(self) -> Option<T> {
        match self {
            Outcome::Ok(t) => Some(t),
            _ => None,
        }
    }

    /// The error, if any.
    pub fn err(self) -> Option<E> {
        match self {
            Outcome::Err(e) => Some(e),
            _ => None,
        }
    }

    /// Why it did not finish, if it did not.
    pub fn not_done(&self) -> Option<NotDone> {
        match self {
            Outcome::NotDone(n) => Some(*n),
            _ => None,
        }
    }

    /// Borrows the response or error.
    pub fn as_ref(&self) -> Outcome<&T, &E> {
        match self {
            Outcome::Ok(t) => Outcome::Ok(t),
            Outcome::Err(e) => Outcome::Err(e),
            Outcome::NotDone(n) => Outcome::NotDone(*n),
        }
    }

    /// A `Result` in rampart's terms: the response, or the error as a
    /// rampart [`Error`] (an inner rampart error comes back out as it was,
    /// others become [`ErrorKind::Inner`] with it as the source; not done
    /// becomes its [`NotDone::kind`]).
    pub fn into_result(self) -> Result<T, Error>
    where
        E: Into<rampart_core::BoxError>,
    {
        match self {
            Outcome::Ok(t) => Ok(t),
            Outcome::Err(e) => Err(Error::from_inner(e)),
            Outcome::NotDone(n) => Err(n.to_error()),
        }
    }
}

/// Every request's [`Outcome`], in the order the requests were given,
/// whatever order they finished in.
///
/// ```
/// use rampart_fanout::{Outcome, gather};
/// use tower::service_fn;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let svc = service_fn(|n: u32| async move {
///     if n % 2 == 0 { Ok(n * 10) } else { Err(format!("{n} is odd")) }
/// });
/// let all = gather(svc, [1, 2, 3, 4]).await;
/// assert_eq!((all.succeeded(), all.failed(), all.not_done()), (2, 2, 0));
/// assert_eq!(all[1], Outcome::Ok(20));
/// assert_eq!(all[2], Outcome::Err("3 is odd".to_string()));
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gathered<T, E> {
    outcomes: Vec<Outcome<T, E>>,
    ok: usize,
    err: usize,
    first_err: Option<usize>,
}

impl<T, E> Gathered<T, E> {
    pub(crate) fn new(
        outcomes: Vec<Outcome<T, E>>,
        ok: usize,
        err: usize,
        first_err: Option<usize>,
    ) -> Gathered<T, E> {
        Gathered {
            outcomes,
            ok,
            err,
            first_err,
        }
    }

    /// The number of requests.
    pub fn len(&self) -> usize {
        self.outcomes.len()
    }

    /// True when there were no requests.
    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }

    /// How many finished with a response.
    pub fn succeeded(&self) -> usize {
        self.ok
    }

    /// How many finished with an error.
    pub fn failed(&self) -> usize {
        self.err
    }

    /// How many finished, with a response or an error (asyncio's `done`).
    pub fn completed(&self) -> usize {
        self.ok + self.err
    }

    /// How many did not finish (asyncio's `pending`, here already
    /// cancelled).
    pub fn not_done(&self) -> usize {
        self.outcomes.len() - self.ok - self.err
    }

    /// True when every request finished with a response.
    pub fn all_ok(&self) -> bool {
        self.ok == self.outcomes.len()
    }

    /// The outcomes, in input order.
    pub fn outcomes(&self) -> &[Outcome<T, E>] {
        &self.outcomes
    }

    /// The outcomes, in input order.
    pub fn into_outcomes(self) -> Vec<Outcome<T, E>> {
        self.outcomes
    }

    /// Iterates over the outcomes in input order.
    pub fn iter(&self) -> std::slice::Iter<'_, Outcome<T, E>> {
        self.outcomes.iter()
    }

    /// The responses with their input positions, in input order.
    pub fn oks(&self) -> impl Iterator<Item = (usize, &T)> {
        self.outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| match o {
                Outcome::Ok(t) => Some((i, t)),
                _ => None,
            })
    }

    /// The errors with their input positions, in input order.
    pub fn errs(&self) -> impl Iterator<Item = (usize, &E)> {
        self.outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| match o {
                Outcome::Err(e) => Some((i, e)),
                _ => None,
            })
    }

    /// The input position of the error that arrived first in time (the one
    /// that decided a fail-fast group), if any failed.
    pub fn first_error_index(&self) -> Option<usize> {
        self.first_err
    }

    /// The error that arrived first in time, if any failed.
    pub fn first_error(&self) -> Option<&E> {
        match self.outcomes.get(self.first_err?) {
            Some(Outcome::Err(e)) => Some(e),
            _ => None,
        }
    }

    /// Takes the first error out (see [`first_error`](Gathered::first_error)).
    pub(crate) fn take_first_error(&mut self) -> Option<E> {
        let i = self.first_err?;
        match std::mem::replace(
            &mut self.outcomes[i],
            Outcome::NotDone(NotDone::new(Reason::Decided, true)),
        ) {
            Outcome::Err(e) => Some(e),
            other => {
                self.outcomes[i] = other;
                None
            }
        }
    }
}

impl<T, E> std::ops::Index<usize> for Gathered<T, E> {
    type Output = Outcome<T, E>;

    fn index(&self, i: usize) -> &Outcome<T, E> {
        &self.outcomes[i]
    }
}

impl<T, E> IntoIterator for Gathered<T, E> {
    type Item = Outcome<T, E>;
    type IntoIter = std::vec::IntoIter<Outcome<T, E>>;

    fn into_iter(self) -> Self::IntoIter {
        self.outcomes.into_iter()
    }
}

impl<'a, T, E> IntoIterator for &'a Gathered<T, E> {
    type Item = &'a Outcome<T, E>;
    type IntoIter = std::slice::Iter<'a, Outcome<T, E>>;

    fn into_iter(self) -> Self::IntoIter {
        self.outcomes.iter()
    }
}
