//! [`PropagateDeadlineLayer`]: the client side of deadline propagation.

use super::PropagateDeadline;
use crate::DeadlineHeaders;
use tower_layer::Layer;

/// Writes the time left before the current request's deadline on outgoing
/// `http::Request`s, so the next hop can start its deadline from it.
///
/// The deadline is the earliest of the task's
/// [`Context`](rampart_core::Context) (set by a
/// [`DeadlineLayer`](crate::DeadlineLayer) further out, or by the server
/// handling the request this call is made for) and a `Context` in the
/// outgoing request's extensions. The header carries the *remaining* time,
/// computed when the request is handed to the inner client, so each hop
/// sees a smaller value than the last (see [`DeadlineHeaders`] for which
/// header):
///
/// - gRPC requests: `grpc-timeout`, in the finest unit that fits its 8
///   digits, rounded down;
/// - other requests: the HTTP header (default `x-request-timeout-ms`),
///   whole milliseconds, rounded down.
///
/// A header already on the request (say, tonic's own `grpc-timeout`) is
/// kept when it is shorter, replaced otherwise. Without a deadline the
/// request goes out untouched. With no time left (less than a millisecond
/// for the HTTP header: it would be written as zero, see
/// [`DeadlineHeaders::reads_as_expired`]) the call fails at once with
/// [`ErrorKind::DeadlineExceeded`](rampart_core::ErrorKind::DeadlineExceeded)
/// and nothing is sent. (`rampart-context`'s infallible
/// `PropagateContextLayer` sends such a request with the zero instead.)
///
/// ```
/// use rampart_timeout::{DeadlineHeaders, PropagateDeadlineLayer};
///
/// let default = PropagateDeadlineLayer::new(); // grpc-timeout + x-request-timeout-ms
/// let custom = PropagateDeadlineLayer::with_headers(
///     DeadlineHeaders::new().try_http_header("x-deadline-ms")?,
/// );
/// assert_eq!(custom.headers().http_header_name().unwrap(), "x-deadline-ms");
/// # Ok::<(), rampart_timeout::ConfigError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PropagateDeadlineLayer {
    headers: DeadlineHeaders,
}

impl PropagateDeadlineLayer {
    /// `grpc-timeout` on gRPC requests, `x-request-timeout-ms` on others.
    pub fn new() -> Self {
        PropagateDeadlineLayer::default()
    }

    /// Writes the deadline in `headers` instead.
    pub fn with_headers(headers: DeadlineHeaders) -> Self {
        PropagateDeadlineLayer { headers }
    }

    /// The headers written.
    pub fn headers(&self) -> &DeadlineHeaders {
        &self.headers
    }
}

impl<S> Layer<S> for PropagateDeadlineLayer {
    type Service = PropagateDeadline<S>;

    fn layer(&self, inner: S) -> PropagateDeadline<S> {
        PropagateDeadline::from_parts(inner, self.headers.clone())
    }
}
