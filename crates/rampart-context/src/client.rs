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
//! A deadline that already passed is written as zero (`0n`, `0`), which
//! the next hop treats as expired on arrival. It is not left out: without
//! the header the next hop would take its whole default budget, more time
//! than the caller has. This layer cannot fail, so the request is still
//! sent; to fail it locally with `DeadlineExceeded` instead, put
//! `rampart-timeout`'s `PropagateDeadlineLayer` (or a `DeadlineLayer`)
//! under it.
//!
//! When no task-local context is current, a [`Context`] in the request's
//! extensions is used instead (a request forwarded from an incoming one
//! carries it). Without either, the request goes out untouched.
//!
//! A task started with a bare `tokio::spawn` sees no context: use
//! `rampart::spawn` (or `rampart_core::spawn`) or `.in_context()`.
//!
//! The layer cannot fail and adds no future of its own: the response future
//! is the inner service's.

use crate::config::{self, ConfigError};
use http::{HeaderMap, HeaderName, Request};
use rampart_core::codec::{DeadlineHeaders, X_REQUEST_TIMEOUT_MS};
use rampart_core::grpc::is_grpc_request;
use rampart_core::{Context, X_REQUEST_ID};
use std::task::{Context as TaskContext, Poll};
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

    /// The layer, or why the configuration is refused (an invalid header
    /// name, or one HTTP or gRPC owns).
    pub fn build(self) -> Result<PropagateContextLayer, ConfigError> {
        PropagateContextLayer::from_config(&self.config)
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
        }
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

    /// The layer a [`PropagateConfig`] describes.
    pub fn from_config(config: &PropagateConfig) -> Result<PropagateContextLayer, ConfigError> {
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
    /// configured.
    fn inject(&self, ctx: &Context, headers: &mut HeaderMap, grpc: bool) {
        if let (Some(name), Some(id)) = (&self.request_id, ctx.request_id())
            && (self.overwrite || !headers.contains_key(name))
        {
            headers.insert(name.clone(), id.header_value().clone());
        }
        if let Some(deadline) = &self.deadline
            && let Some(left) = ctx.remaining()
        {
            // An expired deadline goes out as zero (see the module docs).
            if self.overwrite {
                deadline.overwrite(headers, grpc, left);
            } else {
                deadline.write(headers, grpc, left);
            }
        }
    }
}

impl<S> Layer<S> for PropagateContextLayer {
    type Service = PropagateContext<S>;

    fn layer(&self, inner: S) -> PropagateContext<S> {
        PropagateContext {
            inner,
            layer: self.clone(),
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

impl<S, B> Service<Request<B>> for PropagateContext<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        let layer = &self.layer;
        let grpc = layer.deadline.is_some() && is_grpc_request(&req);
        let done = Context::with_current(|ctx| {
            ctx.map(|ctx| layer.inject(ctx, req.headers_mut(), grpc))
                .is_some()
        });
        if !done && let Some(ctx) = req.extensions().get::<Context>().cloned() {
            layer.inject(&ctx, req.headers_mut(), grpc);
        }
        self.inner.call(req)
    }
}
