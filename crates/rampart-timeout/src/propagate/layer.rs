//! [`PropagateDeadlineLayer`]: the client side of deadline propagation.

use super::PropagateDeadline;
use crate::DeadlineHeaders;
use crate::metrics::{Kind, Metrics};
use rampart_core::telemetry::LayerName;
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
///
/// [`name`](Self::name) labels its metric (with the `metrics` feature:
/// `rampart.deadline.expired_on_arrival`, requests not sent for lack of
/// time) and the `layer` field of its tracing events.
#[derive(Clone, Debug)]
pub struct PropagateDeadlineLayer {
    headers: DeadlineHeaders,
    name: LayerName,
}

impl Default for PropagateDeadlineLayer {
    fn default() -> Self {
        PropagateDeadlineLayer::with_headers(DeadlineHeaders::default())
    }
}

impl PartialEq for PropagateDeadlineLayer {
    /// Same headers and same name.
    fn eq(&self, other: &Self) -> bool {
        self.headers == other.headers && self.name == other.name
    }
}

impl Eq for PropagateDeadlineLayer {}

impl PropagateDeadlineLayer {
    /// `grpc-timeout` on gRPC requests, `x-request-timeout-ms` on others.
    pub fn new() -> Self {
        PropagateDeadlineLayer::default()
    }

    /// Writes the deadline in `headers` instead.
    pub fn with_headers(headers: DeadlineHeaders) -> Self {
        PropagateDeadlineLayer {
            headers,
            name: LayerName::default(),
        }
    }

    /// Names the layer (default `"default"`): the `layer` label of its
    /// metric with the `metrics` feature (registered when the layer wraps a
    /// service, under the name it has then), and the `layer` field of its tracing events
    /// (with the feature: without it the services keep no name).
    ///
    /// ```
    /// use rampart_timeout::PropagateDeadlineLayer;
    ///
    /// let layer = PropagateDeadlineLayer::new().name("billing-client");
    /// assert_eq!(layer.layer_name().as_str(), "billing-client");
    /// ```
    pub fn name(mut self, name: impl Into<LayerName>) -> Self {
        self.name = name.into();
        self
    }

    /// The layer's name (`"default"` unless set with [`name`](Self::name)).
    pub fn layer_name(&self) -> &LayerName {
        &self.name
    }

    /// The headers written.
    pub fn headers(&self) -> &DeadlineHeaders {
        &self.headers
    }
}

impl<S> Layer<S> for PropagateDeadlineLayer {
    type Service = PropagateDeadline<S>;

    fn layer(&self, inner: S) -> PropagateDeadline<S> {
        // Registered here, under the name the layer ends up with.
        let metrics = Metrics::new(&self.name, Kind::Propagate);
        PropagateDeadline::from_parts(inner, self.headers.clone(), metrics)
    }
}
