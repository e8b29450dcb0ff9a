//! [`DeadlineLayer`]: the configuration of a total deadline.

use super::{Deadline, FromHeaders, NoHeaders, OnMalformed};
use crate::DeadlineHeaders;
use crate::error::nonzero;
use crate::metrics::{Kind, Metrics};
use rampart_core::ConfigError;
use rampart_core::telemetry::LayerName;
use std::time::Duration;
use tower_layer::Layer;

/// Gives each request a deadline — `budget` from its arrival, or the
/// caller's earlier one — puts it in the request's
/// [`Context`](rampart_core::Context), and fails the call with
/// [`ErrorKind::DeadlineExceeded`](rampart_core::ErrorKind::DeadlineExceeded)
/// when it passes.
///
/// - **Earliest wins**: a deadline already in the current `Context` (set
///   further out, or by the server this call is made from) is never
///   extended; the inner work sees the effective one through
///   [`Context::current()`](rampart_core::Context::current) and
///   [`Context::current_deadline()`](rampart_core::Context::current_deadline).
/// - **Whole call**: the wait for the inner service's readiness counts, as
///   for [`TimeoutLayer`](crate::TimeoutLayer); the inner call is dropped
///   when the deadline fires.
/// - **Expired on arrival**: a request whose deadline has already passed
///   fails at once; the inner service is not called.
///
/// On a server, [`DeadlineLayer::from_headers`] also starts the deadline
/// from the caller's `grpc-timeout` or HTTP deadline header; on a client,
/// [`PropagateDeadlineLayer`](crate::PropagateDeadlineLayer) writes the
/// time that remains on outgoing requests.
///
/// ```
/// use rampart_core::Context;
/// use rampart_timeout::DeadlineLayer;
/// use std::time::Duration;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let svc = ServiceBuilder::new()
///     .layer(DeadlineLayer::new(Duration::from_millis(300)))
///     .service(service_fn(|()| async {
///         // The inner work sees the deadline.
///         let left = Context::current().and_then(|c| c.remaining()).unwrap();
///         Ok::<_, std::convert::Infallible>(left)
///     }));
/// let left = svc.oneshot(()).await?;
/// assert!(left <= Duration::from_millis(300));
/// # Ok(())
/// # }
/// ```
///
/// [`name`](Self::name) labels its metrics (with the `metrics` feature:
/// `rampart.deadline.exceeded`, `rampart.deadline.expired_on_arrival`, and
/// `rampart.deadline.header.malformed` for
/// [`from_headers`](DeadlineLayer::from_headers)) and the `layer` field of
/// its tracing events.
#[derive(Clone, Debug)]
pub struct DeadlineLayer<H = NoHeaders> {
    budget: Duration,
    source: H,
    name: LayerName,
    /// The series its services record (registered by `Layer::layer`).
    kind: Kind,
}

impl<H: PartialEq> PartialEq for DeadlineLayer<H> {
    /// Same budget, source and name.
    fn eq(&self, other: &Self) -> bool {
        self.budget == other.budget && self.source == other.source && self.name == other.name
    }
}

impl<H: Eq> Eq for DeadlineLayer<H> {}

impl DeadlineLayer {
    /// A deadline `budget` after each call (or the caller's, if earlier).
    /// Never fails, never panics: a zero budget means "already expired"
    /// (every request fails with `DeadlineExceeded` without reaching the
    /// inner service); a budget too large for the clock saturates.
    pub fn new(budget: Duration) -> Self {
        DeadlineLayer {
            budget,
            source: NoHeaders,
            name: LayerName::default(),
            kind: Kind::Deadline { headers: false },
        }
    }

    /// Like [`new`](Self::new), for a value read at run time: a zero
    /// budget is refused with a [`ConfigError`] naming the field `budget`.
    pub fn try_new(budget: Duration) -> Result<Self, ConfigError> {
        Ok(DeadlineLayer::new(nonzero("budget", budget)?))
    }
}

impl DeadlineLayer<FromHeaders> {
    /// The server side: the deadline starts from the caller's header
    /// (`grpc-timeout` on gRPC requests, the HTTP deadline header on the
    /// others; see [`DeadlineHeaders`]), capped by `budget`, which also
    /// applies when the request carries no header. A malformed header is
    /// ignored unless [`on_malformed`](Self::on_malformed) says otherwise.
    ///
    /// ```
    /// use rampart_timeout::{DeadlineHeaders, DeadlineLayer, OnMalformed};
    /// use std::time::Duration;
    ///
    /// let layer = DeadlineLayer::from_headers(Duration::from_secs(5), DeadlineHeaders::new())
    ///     .on_malformed(OnMalformed::Reject);
    /// assert_eq!(layer.budget(), Duration::from_secs(5));
    /// ```
    ///
    /// Never fails: a zero budget means "already expired", as for
    /// [`DeadlineLayer::new`].
    pub fn from_headers(budget: Duration, headers: DeadlineHeaders) -> Self {
        DeadlineLayer {
            budget,
            source: FromHeaders {
                headers,
                on_malformed: OnMalformed::Ignore,
            },
            name: LayerName::default(),
            kind: Kind::Deadline { headers: true },
        }
    }

    /// What to do with a malformed deadline header.
    pub fn on_malformed(mut self, policy: OnMalformed) -> Self {
        self.source.on_malformed = policy;
        self
    }
}

impl<H> DeadlineLayer<H> {
    /// Names the layer (default `"default"`): the `layer` label of its
    /// metrics with the `metrics` feature (registered when the layer wraps
    /// a service, under the name it has then), and the `layer` field of its tracing events
    /// (with the feature: without it the services keep no name, so that
    /// they stay the size they are). A name tells layers apart, never
    /// request data.
    ///
    /// ```
    /// use rampart_timeout::{DeadlineHeaders, DeadlineLayer};
    /// use std::time::Duration;
    ///
    /// let layer = DeadlineLayer::from_headers(Duration::from_secs(5), DeadlineHeaders::new())
    ///     .name("api");
    /// assert_eq!(layer.layer_name().as_str(), "api");
    /// ```
    pub fn name(mut self, name: impl Into<LayerName>) -> Self {
        self.name = name.into();
        self
    }

    /// The layer's name (`"default"` unless set with [`name`](Self::name)).
    pub fn layer_name(&self) -> &LayerName {
        &self.name
    }

    /// The budget of a request (and the cap on a caller's deadline).
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Where the caller's deadline is read from: [`NoHeaders`], or the
    /// server's [`FromHeaders`].
    pub fn source(&self) -> &H {
        &self.source
    }
}

impl<S, H: Clone> Layer<S> for DeadlineLayer<H> {
    type Service = Deadline<S, H>;

    fn layer(&self, inner: S) -> Deadline<S, H> {
        Deadline::from_parts(
            inner,
            self.budget,
            self.source.clone(),
            // Registered here, under the name the layer ends up with.
            Metrics::new(&self.name, self.kind),
        )
    }
}
