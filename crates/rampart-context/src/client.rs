//! Client side: [`PropagateContextLayer`] writes the current [`Context`] into
//! every outgoing request.
//!
//! Wrap any client that is a `Service<http::Request<B>>` — hyper-util's
//! `Client`, an axum-style service, a tonic `Channel` (tonic clients are tower
//! services over `http::Request<tonic::body::Body>`). For every request made
//! while a [`Context`] is current (inside a request handled under
//! [`RequestIdLayer`](crate::RequestIdLayer), in a task started with
//! `rampart::spawn`, or in a future wrapped with `.in_context()`), the layer
//!
//! - sets the request id header (default `x-request-id`);
//! - when deadline propagation is on, writes the time left until the
//!   context's deadline: `grpc-timeout` on gRPC requests (`content-type:
//!   application/grpc…`, gRPC-Web included), the configured milliseconds header (default
//!   `x-request-timeout-ms`) on others, rounding down so a deadline never
//!   grows on the way. The rules are core's
//!   [`DeadlineHeaders`], the same `rampart-timeout` reads and writes with.
//!
//! A request id header the request already has is kept, unless
//! [`overwrite`](PropagateContextBuilder::overwrite) is set. A deadline
//! header already there is kept when it is a single well-formed value not
//! later than the context's deadline (the earliest deadline wins) and
//! replaced otherwise.
//!
//! **An expired deadline is never sent.** When deadline propagation is on
//! and the context's deadline has passed (less than one unit of the header
//! is left: a nanosecond for `grpc-timeout`, a millisecond for the
//! milliseconds header, which would go out as zero), the request is not
//! sent and the call fails at once with
//! [`ErrorKind::DeadlineExceeded`](rampart_core::ErrorKind::DeadlineExceeded),
//! the rule `rampart-timeout`'s `PropagateDeadlineLayer` follows too. The
//! inner service was made ready and is not called; a service that reserves
//! capacity in `poll_ready` holds it until this handle is called again or
//! dropped, as tower's contract allows.
//!
//! When no task-local context is current, a [`Context`] in the request's
//! extensions is used instead (a request forwarded from an incoming one
//! carries it). Without either, the request goes out untouched.
//!
//! A task started with a bare `tokio::spawn` sees no context: use
//! `rampart::spawn` (or `rampart_core::spawn`) or `.in_context()`.
//!
//! Its error is rampart's [`Error`]: the inner service's errors pass
//! through [`Error::from_inner`] (a rampart error comes back out as it is,
//! anything else as [`ErrorKind::Inner`](rampart_core::ErrorKind::Inner)
//! with the original as its source).

use crate::config;
use crate::metrics::{PropagateMetrics, Telemetry};
use http::{HeaderMap, HeaderName, Request};
use pin_project_lite::pin_project;
use rampart_core::codec::{DeadlineHeaders, X_REQUEST_TIMEOUT_MS};
use rampart_core::grpc::is_grpc_request;
use rampart_core::telemetry::LayerName;
use rampart_core::{BoxError, ConfigError, Context, Error, X_REQUEST_ID};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};
use tower_layer::Layer;
use tower_service::Service;

/// The configuration of a [`PropagateContextLayer`], e.g. read from a file.
///
/// ```
/// use rampart_context::{PropagateConfig, PropagateContextLayer};
/// let config = PropagateConfig { deadline: true, ..PropagateConfig::default() };
/// let layer = PropagateContextLayer::from_config(&config).unwrap();
/// assert_eq!(layer.deadline_header().unwrap(), "x-request-timeout-ms");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct PropagateConfig {
    /// Write the request id (default `true`).
    pub request_id: bool,
    /// The header that carries it (default `x-request-id`).
    pub request_id_header: String,
    /// Write the remaining deadline (default `false`).
    pub deadline: bool,
    /// The milliseconds header used for non-gRPC requests (default
    /// `x-request-timeout-ms`); gRPC requests get `grpc-timeout`.
    pub deadline_header: String,
    /// Replace a request id header the outgoing request already has, and a
    /// deadline header even when it is earlier (default `false`).
    pub overwrite: bool,
}

impl Default for PropagateConfig {
    fn default() -> Self {
        PropagateConfig {
            request_id: true,
            request_id_header: X_REQUEST_ID.as_str().to_owned(),
            deadline: false,
            deadline_header: X_REQUEST_TIMEOUT_MS.as_str().to_owned(),
            overwrite: false,
        }
    }
}

/// Builds a [`PropagateContextLayer`] and checks its configuration.
#[derive(Clone, Debug, Default)]
pub struct PropagateContextBuilder {
    config: PropagateConfig,
    name: LayerName,
}

impl PropagateContextBuilder {
    /// The request id header (default `x-request-id`).
    pub fn request_id_header(mut self, name: impl Into<String>) -> Self {
        self.config.request_id = true;
        self.config.request_id_header = name.into();
        self
    }

    /// Do not write the request id (deadline propagation only).
    pub fn without_request_id(mut self) -> Self {
        self.config.request_id = false;
        self
    }

    /// Write the remaining deadline: `grpc-timeout` on gRPC requests,
    /// `x-request-timeout-ms` on others.
    pub fn deadline(mut self) -> Self {
        self.config.deadline = true;
        self
    }

    /// Write the remaining deadline, in this milliseconds header on non-gRPC
    /// requests.
    pub fn deadline_header(mut self, name: impl Into<String>) -> Self {
        self.config.deadline = true;
        self.config.deadline_header = name.into();
        self
    }

    /// Replace headers the outgoing request already has (default: keep them).
    pub fn overwrite(mut self, overwrite: bool) -> Self {
        self.config.overwrite = overwrite;
        self
    }

    /// The layer's name: the `layer` label of its metrics and the `layer`
    /// field of its tracing events (default `"default"`).
    pub fn name(mut self, name: impl Into<LayerName>) -> Self {
        self.name = name.into();
        self
    }

    /// The layer, or why the configuration is refused (an invalid header
    /// name, or one HTTP or gRPC owns).
    pub fn build(self) -> Result<PropagateContextLayer, ConfigError> {
        PropagateContextLayer::from_config_named(&self.config, self.name)
    }
}

/// Writes the current [`Context`]'s request id (and, when configured, its
/// remaining deadline) into every outgoing request (see the
/// [module docs](crate::client)).
///
/// ```
/// use rampart_context::PropagateContextLayer;
/// use rampart_core::{Context, RequestId};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// use http::{Request, Response};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // A stand-in for an HTTP client: answers with the id it was sent.
/// let client = ServiceBuilder::new()
///     .layer(PropagateContextLayer::new())
///     .service(service_fn(|req: Request<()>| async move {
///         let sent = req.headers().get("x-request-id").cloned();
///         Ok::<_, std::convert::Infallible>(Response::new(sent))
///     }));
/// let ctx = Context::new().with_request_id(RequestId::parse(b"req-7").unwrap());
/// let res = ctx.scope(client.oneshot(Request::new(()))).await.unwrap();
/// assert_eq!(res.body().as_ref().unwrap(), "req-7");
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct PropagateContextLayer {
    request_id: Option<HeaderName>,
    deadline: Option<DeadlineHeaders>,
    overwrite: bool,
    telemetry: Telemetry<PropagateMetrics>,
}

impl Default for PropagateContextLayer {
    fn default() -> Self {
        PropagateContextLayer::new()
    }
}

impl PropagateContextLayer {
    /// The default: the request id in `x-request-id`, no deadline, existing
    /// headers kept.
    pub fn new() -> PropagateContextLayer {
        PropagateContextLayer {
            request_id: Some(X_REQUEST_ID.clone()),
            deadline: None,
            overwrite: false,
            telemetry: Telemetry::new(LayerName::default()),
        }
    }

    /// Names the layer: the `layer` label of its metrics (feature
    /// `metrics`) and the `layer` field of its tracing events (default
    /// `"default"`). Its metric handles are registered when the layer
    /// wraps a service, under the name it has then: naming the layer
    /// registers nothing.
    ///
    /// ```
    /// use rampart_context::PropagateContextLayer;
    /// let layer = PropagateContextLayer::new().with_deadline().name("billing-client");
    /// # drop(layer);
    /// ```
    pub fn name(mut self, name: impl Into<LayerName>) -> Self {
        self.telemetry = Telemetry::new(name.into());
        self
    }

    /// Writes the request id in `name` instead of `x-request-id`. The name
    /// is taken as it is; for a name from configuration use the
    /// [`builder`](Self::builder), which checks it.
    pub fn with_request_id_header(mut self, name: HeaderName) -> Self {
        self.request_id = Some(name);
        self
    }

    /// Does not write the request id (deadline propagation only).
    pub fn without_request_id(mut self) -> Self {
        self.request_id = None;
        self
    }

    /// Writes the remaining deadline: `grpc-timeout` on gRPC requests,
    /// `x-request-timeout-ms` (or the header of
    /// [`with_deadline_header`](Self::with_deadline_header)) on others; an
    /// expired one fails the call instead.
    pub fn with_deadline(mut self) -> Self {
        if self.deadline.is_none() {
            self.deadline = Some(DeadlineHeaders::new());
        }
        self
    }

    /// Writes the remaining deadline, in the milliseconds header `name` on
    /// non-gRPC requests. The name is taken as it is; for a name from
    /// configuration use the [`builder`](Self::builder), which checks it.
    pub fn with_deadline_header(mut self, name: HeaderName) -> Self {
        self.deadline = Some(DeadlineHeaders::new().http_header(name));
        self
    }

    /// Replaces headers the outgoing request already has (default: keeps
    /// them).
    pub fn with_overwrite(mut self, overwrite: bool) -> Self {
        self.overwrite = overwrite;
        self
    }

    /// A builder for deadline propagation, custom headers or overwriting.
    ///
    /// ```
    /// use rampart_context::PropagateContextLayer;
    /// let layer = PropagateContextLayer::builder()
    ///     .deadline_header("x-timeout-ms")
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(layer.deadline_header().unwrap(), "x-timeout-ms");
    /// assert!(PropagateContextLayer::builder().deadline_header("grpc-timeout").build().is_err());
    /// ```
    pub fn builder() -> PropagateContextBuilder {
        PropagateContextBuilder::default()
    }

    /// The layer a [`PropagateConfig`] describes, or why it is refused (a
    /// header name that is not valid, or one HTTP framing or gRPC owns; the
    /// [`ConfigError`] names the field and the value).
    pub fn from_config(config: &PropagateConfig) -> Result<PropagateContextLayer, ConfigError> {
        PropagateContextLayer::from_config_named(config, LayerName::default())
    }

    fn from_config_named(
        config: &PropagateConfig,
        name: LayerName,
    ) -> Result<PropagateContextLayer, ConfigError> {
        let request_id = if config.request_id {
            Some(config::header_name(&config.request_id_header)?)
        } else {
            None
        };
        let deadline = if config.deadline {
            let ms_header = config::header_name(&config.deadline_header)?;
            Some(DeadlineHeaders::new().http_header(ms_header))
        } else {
            None
        };
        Ok(PropagateContextLayer {
            request_id,
            deadline,
            overwrite: config.overwrite,
            telemetry: Telemetry::new(name),
        })
    }

    /// The request id header, if the id is written.
    pub fn request_id_header(&self) -> Option<&HeaderName> {
        self.request_id.as_ref()
    }

    /// The milliseconds header for non-gRPC requests, if the deadline is
    /// written.
    pub fn deadline_header(&self) -> Option<&HeaderName> {
        self.deadline
            .as_ref()
            .and_then(DeadlineHeaders::http_header_name)
    }

    /// Writes `ctx` into the headers of a request (`grpc`: a gRPC one) as
    /// configured; `Err` when the deadline it would write has expired (the
    /// request must not be sent).
    fn inject(&self, ctx: &Context, headers: &mut HeaderMap, grpc: bool) -> Result<(), Expired> {
        if let Some(deadline) = &self.deadline
            && let Some(left) = ctx.remaining()
        {
            if deadline.reads_as_expired(grpc, left) {
                return Err(Expired);
            }
            if self.overwrite {
                deadline.overwrite(headers, grpc, left);
            } else {
                deadline.write(headers, grpc, left);
            }
        }
        if let (Some(name), Some(id)) = (&self.request_id, ctx.request_id())
            && (self.overwrite || !headers.contains_key(name))
        {
            headers.insert(name.clone(), id.header_value().clone());
        }
        Ok(())
    }
}

impl<S> Layer<S> for PropagateContextLayer {
    type Service = PropagateContext<S>;

    fn layer(&self, inner: S) -> PropagateContext<S> {
        PropagateContext {
            inner,
            layer: PropagateContextLayer {
                request_id: self.request_id.clone(),
                deadline: self.deadline.clone(),
                overwrite: self.overwrite,
                telemetry: self.telemetry.registered(PropagateMetrics::new),
            },
        }
    }
}

/// The service [`PropagateContextLayer`] builds.
#[derive(Clone, Debug)]
pub struct PropagateContext<S> {
    inner: S,
    layer: PropagateContextLayer,
}

impl<S> PropagateContext<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the wrapper.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// The context's deadline has passed: the request is not sent.
struct Expired;

impl<S, B> Service<Request<B>> for PropagateContext<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = PropagateContextFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Error::from_inner)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let layer = &self.layer;
        let grpc = layer.deadline.is_some() && is_grpc_request(&req);
        let injected =
            Context::with_current(|ctx| ctx.map(|ctx| layer.inject(ctx, req.headers_mut(), grpc)));
        let injected = match injected {
            Some(done) => done,
            None => {
                if let Some(ctx) = req.extensions().get::<Context>().cloned() {
                    layer.inject(&ctx, req.headers_mut(), grpc)
                } else {
                    layer.telemetry.record(|m| m.missing.increment(1));
                    Ok(())
                }
            }
        };
        if let Err(Expired) = injected {
            layer.telemetry.record(|m| m.expired.increment(1));
            tracing::debug!(
                target: "rampart_context",
                layer = %layer.telemetry.name(),
                grpc,
                "the context's deadline has passed, request not sent"
            );
            return PropagateContextFuture {
                state: State::Expired,
            };
        }
        PropagateContextFuture {
            state: State::Called {
                fut: self.inner.call(req),
            },
        }
    }
}

pin_project! {
    /// The response future of [`PropagateContext`]: the inner service's,
    /// or a `DeadlineExceeded` failure when the deadline had passed.
    pub struct PropagateContextFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called { #[pin] fut: F },
        Expired,
    }
}

impl<F, T, E> Future for PropagateContextFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { fut } => {
                Poll::Ready(ready!(fut.poll(cx)).map_err(Error::from_inner))
            }
            StateProj::Expired => Poll::Ready(Err(Error::deadline_exceeded())),
        }
    }
}
