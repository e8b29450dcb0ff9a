//! The one error type every rampart layer returns.

use std::fmt;
use std::time::Duration;

/// The boxed error convention of tower: `Box<dyn Error + Send + Sync>`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, in terms a caller can act on.
///
/// New kinds may be added; match with a wildcard arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A per-attempt timeout fired.
    Timeout,
    /// The request's deadline (the budget for the whole logical request) passed.
    DeadlineExceeded,
    /// A limit or queue refused the request instead of waiting.
    Overloaded,
    /// A rate limit refused the request; `retry_after` says when the next
    /// request would be admitted (HTTP 429, gRPC RESOURCE_EXHAUSTED).
    RateLimited,
    /// The request was cancelled (its cancellation token fired or it was drained).
    Cancelled,
    /// The service is closed: shut down, draining, or its workers stopped.
    Closed,
    /// Every allowed attempt failed; the last failure is the source.
    RetriesExhausted,
    /// The inner service failed; its error is the source.
    Inner,
    /// The request itself is unusable (say, a malformed deadline header):
    /// sending it again unchanged cannot help.
    InvalidRequest,
}

impl ErrorKind {
    /// A few plain ASCII words (also used as a `grpc-message`, so they need
    /// no percent-encoding).
    pub(crate) fn describe(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "request timed out",
            ErrorKind::DeadlineExceeded => "deadline exceeded",
            ErrorKind::Overloaded => "service overloaded",
            ErrorKind::RateLimited => "rate limited",
            ErrorKind::Cancelled => "request cancelled",
            ErrorKind::Closed => "service closed",
            ErrorKind::RetriesExhausted => "retries exhausted",
            ErrorKind::Inner => "inner service error",
            ErrorKind::InvalidRequest => "invalid request",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// The error of every rampart layer.
///
/// It carries a [`ErrorKind`], an optional hint of when to try again
/// ([`retry_after`](Error::retry_after)), and the underlying failure as its
/// [`source`](std::error::Error::source). A layer whose inner service already
/// failed with a rampart `Error` passes it through unchanged
/// ([`Error::from_inner`]), so stacks never build `Error<Error<E>>`.
///
/// `Error` is `Send + Sync + 'static` and converts into tower's [`BoxError`].
///
/// ```
/// use rampart_core::{Error, ErrorKind};
/// use std::time::Duration;
///
/// let shed = Error::overloaded(Some(Duration::from_secs(1)));
/// assert_eq!(shed.kind(), ErrorKind::Overloaded);
/// assert_eq!(shed.retry_after(), Some(Duration::from_secs(1)));
///
/// // A rampart error that went through a BoxError comes back out, not wrapped.
/// let boxed: rampart_core::BoxError = shed.into();
/// assert_eq!(Error::from_inner(boxed).kind(), ErrorKind::Overloaded);
/// ```
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    retry_after: Option<Duration>,
    attempts: Option<u32>,
    source: Option<BoxError>,
}

impl Error {
    /// An error of `kind` with no source.
    pub fn new(kind: ErrorKind) -> Error {
        Error {
            inner: Box::new(Inner {
                kind,
                retry_after: None,
                attempts: None,
                source: None,
            }),
        }
    }

    /// Wraps an inner service's error as [`ErrorKind::Inner`].
    ///
    /// If `e` already is a rampart `Error` (directly or as a [`BoxError`]) it
    /// is returned as it is, so errors never nest.
    pub fn from_inner(e: impl Into<BoxError>) -> Error {
        match e.into().downcast::<Error>() {
            Ok(e) => *e,
            Err(source) => Error::new(ErrorKind::Inner).with_source(source),
        }
    }

    /// [`ErrorKind::Timeout`].
    pub fn timeout() -> Error {
        Error::new(ErrorKind::Timeout)
    }

    /// [`ErrorKind::DeadlineExceeded`].
    pub fn deadline_exceeded() -> Error {
        Error::new(ErrorKind::DeadlineExceeded)
    }

    /// [`ErrorKind::Overloaded`], with an optional hint of when to try again.
    pub fn overloaded(retry_after: Option<Duration>) -> Error {
        Error::new(ErrorKind::Overloaded).with_retry_after(retry_after)
    }

    /// [`ErrorKind::RateLimited`], with an optional hint of when the next
    /// request would be admitted.
    pub fn rate_limited(retry_after: Option<Duration>) -> Error {
        Error::new(ErrorKind::RateLimited).with_retry_after(retry_after)
    }

    /// [`ErrorKind::Cancelled`].
    pub fn cancelled() -> Error {
        Error::new(ErrorKind::Cancelled)
    }

    /// [`ErrorKind::Closed`].
    pub fn closed() -> Error {
        Error::new(ErrorKind::Closed)
    }

    /// [`ErrorKind::InvalidRequest`].
    pub fn invalid_request() -> Error {
        Error::new(ErrorKind::InvalidRequest)
    }

    /// [`ErrorKind::RetriesExhausted`] after `attempts` calls; `last` is the
    /// last failure and becomes the source.
    pub fn retries_exhausted(attempts: u32, last: impl Into<BoxError>) -> Error {
        let mut e = Error::new(ErrorKind::RetriesExhausted).with_source(last);
        e.inner.attempts = Some(attempts);
        e
    }

    /// Sets the source (the underlying failure).
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Error {
        self.inner.source = Some(source.into());
        self
    }

    /// Sets the hint of when the caller may try again.
    pub fn with_retry_after(mut self, after: Option<Duration>) -> Error {
        self.inner.retry_after = after;
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// When the caller may try again, if the failure said so
    /// (a shed limit, an upstream `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// How many attempts were made, for [`ErrorKind::RetriesExhausted`].
    pub fn attempts(&self) -> Option<u32> {
        self.inner.attempts
    }

    /// True for [`ErrorKind::Timeout`] and [`ErrorKind::DeadlineExceeded`].
    pub fn is_timeout(&self) -> bool {
        matches!(
            self.inner.kind,
            ErrorKind::Timeout | ErrorKind::DeadlineExceeded
        )
    }

    /// The first error of type `T` in the source chain (this error excluded).
    pub fn find_source<T: std::error::Error + 'static>(&self) -> Option<&T> {
        let mut next = std::error::Error::source(self);
        while let Some(e) = next {
            if let Some(t) = e.downcast_ref::<T>() {
                return Some(t);
            }
            next = e.source();
        }
        None
    }

    /// Takes the source out, consuming the error.
    pub fn into_source(self) -> Option<BoxError> {
        self.inner.source
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind);
        if let Some(a) = self.inner.retry_after {
            d.field("retry_after", &a);
        }
        if let Some(n) = self.inner.attempts {
            d.field("attempts", &n);
        }
        if let Some(s) = &self.inner.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.inner.kind.describe())?;
        if let Some(n) = self.inner.attempts {
            write!(f, " after {n} attempts")?;
        }
        if let Some(a) = self.inner.retry_after {
            write!(f, " (retry after {a:?})")?;
        }
        if self.inner.kind == ErrorKind::Inner
            && let Some(s) = &self.inner.source
        {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Error {
        Error::new(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Boom;
    impl fmt::Display for Boom {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("boom")
        }
    }
    impl std::error::Error for Boom {}

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn error_is_send_sync_static_and_pointer_sized() {
        assert_send_sync::<Error>();
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn inner_rampart_error_passes_through_without_nesting() {
        let e = Error::from_inner(Error::timeout());
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert!(std::error::Error::source(&e).is_none());
        let boxed: BoxError = Error::overloaded(None).into();
        let e = Error::from_inner(Error::from_inner(boxed));
        assert_eq!(e.kind(), ErrorKind::Overloaded);
    }

    #[test]
    fn foreign_error_becomes_inner_with_source_chain() {
        let e = Error::from_inner(Boom);
        assert_eq!(e.kind(), ErrorKind::Inner);
        assert_eq!(e.to_string(), "inner service error: boom");
        assert!(e.find_source::<Boom>().is_some());
    }

    #[test]
    fn invalid_request_has_its_kind_and_message() {
        let e = Error::invalid_request();
        assert_eq!(e.kind(), ErrorKind::InvalidRequest);
        assert_eq!(e.to_string(), "invalid request");
        assert!(!e.is_timeout());
        let boxed: BoxError = e.into();
        assert_eq!(Error::from_inner(boxed).kind(), ErrorKind::InvalidRequest);
    }

    #[test]
    fn retries_exhausted_carries_attempts_and_last_error() {
        let e = Error::retries_exhausted(3, Boom);
        assert_eq!(e.kind(), ErrorKind::RetriesExhausted);
        assert_eq!(e.attempts(), Some(3));
        assert_eq!(e.to_string(), "retries exhausted after 3 attempts");
        assert!(e.find_source::<Boom>().is_some());
    }
}
