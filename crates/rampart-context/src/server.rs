//! Server side: [`RequestIdLayer`] gives every incoming request an id and runs
//! it inside a [`Context`].
//!
//! For each request the layer
//!
//! 1. keeps the id a layer further out already set (in the request's
//!    extensions or the current [`Context`]) — it never overwrites one;
//! 2. otherwise accepts the incoming header when it passes
//!    [`RequestId::from_header`] (the bytes are shared, not copied), or
//!    generates a UUIDv7. A refused id (too long, control characters, CR/LF,
//!    non-ASCII, separators, repeated header) is replaced, logged as a debug
//!    event without its bytes, and never echoed;
//! 3. runs the inner `call` and its future inside [`Context::scope`] with
//!    the request's [`Context`] (merged with any context a layer further out
//!    set), so [`Context::current`] sees it in every layer, handler and
//!    `rampart::spawn`ed task below. A [`Context`] already in the request's
//!    extensions is updated; with
//!    [`store_in_extensions`](RequestIdBuilder::store_in_extensions) one is
//!    always stored there, for code that handles the request outside its task
//!    (e.g. behind tower's `Buffer`). That is off by default: the task-local
//!    context reaches everything in the request's task (and the extractors
//!    read it), and `http::Extensions` costs three allocations per request
//!    when the request has none yet;
//! 4. records the id in the request's tracing span (see below);
//! 5. echoes the id in the response header.
//!
//! After the layer, the request's own header is either absent (none
//! arrived) or holds exactly the request's id: a refused or superseded value
//! is overwritten, so nothing inside can read it.
//!
//! # Tracing
//!
//! When the current span declares a `request_id` field (say, tower-http's
//! `TraceLayer` with `request_id = tracing::field::Empty` in its
//! `make_span_with`), the id is recorded there and no span is added.
//! Otherwise the layer opens a `DEBUG` span `request{layer=…, request_id=…}`
//! (target `rampart_context`; `layer` is the layer's
//! [`name`](RequestIdLayer::name)) and enters it on every poll, so every event of the
//! request carries the id. A disabled span costs a level check: with no
//! subscriber, or one that filters out `DEBUG` for this target, the layer
//! creates nothing and allocates nothing for tracing.

use crate::config;
use crate::metrics::RequestIdMetrics;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use rampart_core::ConfigError;
use rampart_core::telemetry::LayerName;
use rampart_core::{Context, InvalidRequestId, RequestId, Scoped, X_REQUEST_ID};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Span;

/// Target of the layer's tracing span and events.
const TARGET: &str = "rampart_context";

/// Up to this many distinct header names, [`RequestIdLayer`] finds the id's
/// header by a linear scan rather than a hashed lookup.
const LINEAR_SCAN: usize = 8;

/// The configuration of a [`RequestIdLayer`], e.g. read from a file.
///
/// ```
/// use rampart_context::{RequestIdConfig, RequestIdLayer};
/// let config = RequestIdConfig {
///     header: "X-Correlation-Id".into(),
///     ..RequestIdConfig::default()
/// };
/// let layer = RequestIdLayer::from_config(&config).unwrap();
/// assert_eq!(layer.header_name(), "x-correlation-id");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct RequestIdConfig {
    /// The request and response header that carries the id (case-insensitive;
    /// default `x-request-id`).
    pub header: String,
    /// Accept a valid id the caller sent (default `true`). An edge facing
    /// untrusted clients may set `false` to always generate its own.
    pub accept_incoming: bool,
    /// Also store the [`Context`] in the request's extensions (default
    /// `false`), for code that reads the request outside the request's task,
    /// e.g. behind tower's `Buffer`. Costs three allocations per request
    /// (`http::Extensions`' map, its table and the boxed value) when the
    /// request has no extensions yet.
    pub store_in_extensions: bool,
}

impl Default for RequestIdConfig {
    fn default() -> Self {
        RequestIdConfig {
            header: X_REQUEST_ID.as_str().to_owned(),
            accept_incoming: true,
            store_in_extensions: false,
        }
    }
}

/// Builds a [`RequestIdLayer`] and checks its configuration.
#[derive(Clone, Debug, Default)]
pub struct RequestIdBuilder {
    config: RequestIdConfig,
    name: LayerName,
}

impl RequestIdBuilder {
    /// The header that carries the id (default `x-request-id`).
    pub fn header(mut self, name: impl Into<String>) -> Self {
        self.config.header = name.into();
        self
    }

    /// Whether a valid incoming id is kept (default `true`).
    pub fn accept_incoming(mut self, accept: bool) -> Self {
        self.config.accept_incoming = accept;
        self
    }

    /// Whether the [`Context`] is also stored in the request's extensions
    /// (default `false`; see [`RequestIdConfig::store_in_extensions`]).
    pub fn store_in_extensions(mut self, store: bool) -> Self {
        self.config.store_in_extensions = store;
        self
    }

    /// The layer's name: the `layer` label of its metrics and the `layer`
    /// field of its tracing span and events (default `"default"`).
    pub fn name(mut self, name: impl Into<LayerName>) -> Self {
        self.name = name.into();
        self
    }

    /// The layer, or why the configuration is refused (an invalid header
    /// name, or one HTTP or gRPC owns).
    pub fn build(self) -> Result<RequestIdLayer, ConfigError> {
        RequestIdLayer::from_config_named(&self.config, self.name)
    }
}

/// Gives every request an id, runs it inside a [`Context`], records the id
/// in the tracing span and echoes it in the response (see the
/// [module docs](crate::server)).
///
/// ```
/// use rampart_context::RequestIdLayer;
/// use rampart_core::Context;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// use http::{Request, Response};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let svc = ServiceBuilder::new()
///     .layer(RequestIdLayer::new())
///     .service(service_fn(|_req: Request<()>| async {
///         let id = Context::current().unwrap().request_id().unwrap().to_string();
///         Ok::<_, std::convert::Infallible>(Response::new(id))
///     }));
/// let req = Request::builder().header("x-request-id", "req-1").body(()).unwrap();
/// let res = svc.oneshot(req).await.unwrap();
/// assert_eq!(res.headers()["x-request-id"], "req-1");
/// assert_eq!(res.body(), "req-1");
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct RequestIdLayer {
    shared: Shared,
    accept_incoming: bool,
    store_in_extensions: bool,
}

impl Default for RequestIdLayer {
    fn default() -> Self {
        RequestIdLayer::new()
    }
}

impl RequestIdLayer {
    /// The default: header `x-request-id`, valid incoming ids accepted.
    pub fn new() -> RequestIdLayer {
        RequestIdLayer {
            shared: Shared::new(X_REQUEST_ID.clone(), LayerName::default()),
            accept_incoming: true,
            store_in_extensions: false,
        }
    }

    /// Names the layer: the `layer` label of its metrics (feature
    /// `metrics`) and the `layer` field of its tracing span and events
    /// (default `"default"`). Its metric handles are registered when the
    /// layer wraps a service, under the name it has then: naming the layer
    /// registers nothing.
    ///
    /// ```
    /// use rampart_context::RequestIdLayer;
    /// let layer = RequestIdLayer::new().name("edge");
    /// # drop(layer);
    /// ```
    pub fn name(mut self, name: impl Into<LayerName>) -> Self {
        self.shared = Shared::new(self.shared.header().clone(), name.into());
        self
    }

    /// A builder for a custom header name or policy.
    ///
    /// ```
    /// use rampart_context::RequestIdLayer;
    /// let layer = RequestIdLayer::builder().header("x-correlation-id").build().unwrap();
    /// assert_eq!(layer.header_name(), "x-correlation-id");
    /// let err = RequestIdLayer::builder().header("content-length").build().unwrap_err();
    /// assert_eq!((err.field(), err.value()), ("header", "\"content-length\""));
    /// ```
    pub fn builder() -> RequestIdBuilder {
        RequestIdBuilder::default()
    }

    /// Uses `name` for the id instead of `x-request-id`. The name is taken
    /// as it is; for a name from configuration use the
    /// [`builder`](Self::builder), which checks it.
    ///
    /// ```
    /// use rampart_context::RequestIdLayer;
    /// let layer = RequestIdLayer::new()
    ///     .with_header(http::HeaderName::from_static("x-correlation-id"))
    ///     .with_accept_incoming(false);
    /// assert_eq!(layer.header_name(), "x-correlation-id");
    /// ```
    pub fn with_header(mut self, name: HeaderName) -> Self {
        let layer_name = self.shared.layer_name();
        self.shared = Shared::new(name, layer_name);
        self
    }

    /// Whether a valid incoming id is kept (default `true`).
    pub fn with_accept_incoming(mut self, accept: bool) -> Self {
        self.accept_incoming = accept;
        self
    }

    /// Whether the [`Context`] is also stored in the request's extensions
    /// (default `false`; see [`RequestIdConfig::store_in_extensions`]).
    pub fn with_store_in_extensions(mut self, store: bool) -> Self {
        self.store_in_extensions = store;
        self
    }

    /// The layer a [`RequestIdConfig`] describes, or why it is refused (a
    /// header name that is not valid, or one HTTP framing or gRPC owns; the
    /// [`ConfigError`] names the field and the value).
    pub fn from_config(config: &RequestIdConfig) -> Result<RequestIdLayer, ConfigError> {
        RequestIdLayer::from_config_named(config, LayerName::default())
    }

    fn from_config_named(
        config: &RequestIdConfig,
        name: LayerName,
    ) -> Result<RequestIdLayer, ConfigError> {
        Ok(RequestIdLayer {
            shared: Shared::new(config::header_name(&config.header)?, name),
            accept_incoming: config.accept_incoming,
            store_in_extensions: config.store_in_extensions,
        })
    }

    /// The header that carries the id.
    pub fn header_name(&self) -> &HeaderName {
        self.shared.header()
    }
}

/// The id's header, the layer's name and its metric handles: nothing but a
/// static for the default layer without the `metrics` feature (so cloning
/// the layer per request, as axum does, and echoing the id copy nothing),
/// else shared by the layer's clones. One pointer wide, as the plain header
/// was: the layer and its response future keep their size.
#[derive(Clone, Debug)]
enum Shared {
    /// `x-request-id`, unnamed, no metric handles.
    XRequestId,
    /// Another header, a name or metric handles.
    Custom(Arc<Inner>),
}

#[derive(Debug)]
struct Inner {
    header: HeaderName,
    /// `header` is `x-request-id`: the response future echoes it as
    /// [`Shared::XRequestId`] and shares nothing.
    x_request_id: bool,
    name: LayerName,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    metrics: RequestIdMetrics,
}

impl Shared {
    /// A layer's state: its metric handles are not registered (no-ops)
    /// until [`registered`](Self::registered) makes a service's.
    fn new(header: HeaderName, name: LayerName) -> Shared {
        let default_header = header == X_REQUEST_ID;
        if default_header && !name.is_named() && !rampart_core::telemetry::ENABLED {
            return Shared::XRequestId;
        }
        let metrics = RequestIdMetrics::default();
        Shared::Custom(Arc::new(Inner {
            header,
            x_request_id: default_header,
            name,
            metrics,
        }))
    }

    fn header(&self) -> &HeaderName {
        match self {
            Shared::XRequestId => &X_REQUEST_ID,
            Shared::Custom(inner) => &inner.header,
        }
    }

    /// The layer's name (`"default"` when it has none).
    fn name(&self) -> &str {
        match self {
            Shared::XRequestId => rampart_core::telemetry::UNNAMED,
            Shared::Custom(inner) => inner.name.as_str(),
        }
    }

    /// The name, to rebuild with another header.
    fn layer_name(&self) -> LayerName {
        match self {
            Shared::XRequestId => LayerName::default(),
            Shared::Custom(inner) => inner.name.clone(),
        }
    }

    /// A service's state (`Layer::layer`): the same, with the metric
    /// handles registered under the layer's name with the recorder
    /// installed now. Without the `metrics` feature, the same state.
    fn registered(&self) -> Shared {
        #[cfg(feature = "metrics")]
        if let Shared::Custom(inner) = self {
            return Shared::Custom(Arc::new(Inner {
                header: inner.header.clone(),
                x_request_id: inner.x_request_id,
                name: inner.name.clone(),
                metrics: RequestIdMetrics::new(&inner.name),
            }));
        }
        self.clone()
    }

    /// What the response future needs to echo the id: the header alone.
    #[inline]
    fn echo(&self) -> Shared {
        match self {
            Shared::Custom(inner) if !inner.x_request_id => Shared::Custom(inner.clone()),
            _ => Shared::XRequestId,
        }
    }

    /// Records with the handles (nothing without the `metrics` feature).
    #[inline]
    fn record(&self, f: impl FnOnce(&RequestIdMetrics)) {
        #[cfg(feature = "metrics")]
        if let Shared::Custom(inner) = self {
            f(&inner.metrics);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (self, f);
    }
}

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;

    fn layer(&self, inner: S) -> RequestIdService<S> {
        RequestIdService {
            inner,
            layer: RequestIdLayer {
                shared: self.shared.registered(),
                accept_incoming: self.accept_incoming,
                store_in_extensions: self.store_in_extensions,
            },
        }
    }
}

/// The service [`RequestIdLayer`] builds.
#[derive(Clone, Debug)]
pub struct RequestIdService<S> {
    inner: S,
    layer: RequestIdLayer,
}

impl<S> RequestIdService<S> {
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

impl<S, B, ResB> Service<Request<B>> for RequestIdService<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let ctx = self.layer.context(&mut req);
        let span = request_span(&ctx, &self.layer.shared);
        let inner = {
            let _entered = span.as_deref().map(Span::enter);
            ctx.scope_call(|| self.inner.call(req))
        };
        // The id is echoed from the context the future ran in (moved out
        // when it completes: no clone of the id).
        ResponseFuture {
            inner,
            span,
            echo: self.layer.shared.echo(),
        }
    }
}

/// Why an incoming id was not used.
#[derive(Clone, Copy, Debug)]
enum Refused {
    Invalid(InvalidRequestId),
    Repeated,
    NotAccepted,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Invalid(why) => why.fmt(f),
            Refused::Repeated => f.write_str("the header was sent more than once"),
            Refused::NotAccepted => f.write_str("incoming ids are not accepted"),
        }
    }
}

impl RequestIdLayer {
    /// The request's context. When a layer further out set one, in the
    /// extensions or the task, its fields win over the task's, the earliest
    /// deadline wins, and an id it has is kept; otherwise (the common case)
    /// it is a new context with the request's own id.
    fn context<B>(&self, req: &mut Request<B>) -> Context {
        let in_extensions = req.extensions().get::<Context>();
        let stored = in_extensions.is_some();
        if !stored && !self.store_in_extensions && Context::with_current(|c| c.is_none()) {
            return Context::new().with_request_id(self.own_id(req.headers_mut()));
        }
        let outer = match in_extensions {
            Some(ext) => ext.clone().inherit(),
            None => Context::current().unwrap_or_default(),
        };
        let ctx = if let Some(kept) = outer.request_id() {
            self.keep(kept, req.headers_mut());
            outer
        } else {
            let id = self.own_id(req.headers_mut());
            outer.with_request_id(id)
        };
        if self.store_in_extensions {
            req.extensions_mut().insert(ctx.clone());
        } else if stored && let Some(slot) = req.extensions_mut().get_mut::<Context>() {
            // Keep a context a layer further out stored up to date (no
            // allocation: the slot exists).
            *slot = ctx.clone();
        }
        ctx
    }

    /// Leaves the request's header absent or equal to `kept`, the id a layer
    /// further out set.
    fn keep(&self, kept: &RequestId, headers: &mut HeaderMap) {
        if let Some((first, repeated)) = self.incoming(headers)
            && (repeated || first != kept.header_value())
        {
            headers.insert(self.shared.header(), kept.header_value().clone());
        }
    }

    /// The request's own id: the valid incoming header, else a new UUIDv7.
    /// Leaves the request header absent or equal to the id.
    fn own_id(&self, headers: &mut HeaderMap) -> RequestId {
        let Some((first, repeated)) = self.incoming(headers) else {
            self.shared.record(|m| m.generated.increment(1));
            return RequestId::new_v7();
        };
        match self.accept(first, repeated) {
            Ok(id) => {
                self.shared.record(|m| m.accepted.increment(1));
                id
            }
            Err(refused) => self.replace(refused, first.len(), headers),
        }
    }

    /// A new id for a refused incoming one, which it overwrites.
    #[cold]
    fn replace(&self, refused: Refused, len: usize, headers: &mut HeaderMap) -> RequestId {
        self.shared.record(|m| m.refused.increment(1));
        let id = RequestId::new_v7();
        tracing::debug!(
            target: TARGET,
            layer = %self.shared.name(),
            header = %self.shared.header(),
            reason = %refused,
            len,
            replacement = %id,
            "incoming request id refused; generated a new one"
        );
        headers.insert(self.shared.header(), id.header_value().clone());
        id
    }

    /// The first value of the id's header and whether it was sent more than
    /// once. A request with a few distinct header names is scanned: cheaper
    /// than hashing the name for the map's lookup.
    fn incoming<'h>(&self, headers: &'h HeaderMap) -> Option<(&'h HeaderValue, bool)> {
        let header = self.shared.header();
        if headers.keys_len() <= LINEAR_SCAN {
            let mut found = None;
            for (name, value) in headers {
                if name == header {
                    if found.is_some() {
                        return found.map(|first| (first, true));
                    }
                    found = Some(value);
                }
            }
            found.map(|first| (first, false))
        } else {
            let mut values = headers.get_all(header).iter();
            let first = values.next()?;
            Some((first, values.next().is_some()))
        }
    }

    fn accept(&self, value: &HeaderValue, repeated: bool) -> Result<RequestId, Refused> {
        if !self.accept_incoming {
            Err(Refused::NotAccepted)
        } else if repeated {
            Err(Refused::Repeated)
        } else {
            RequestId::from_header(value).map_err(Refused::Invalid)
        }
    }
}

/// The span that carries the id: the current one when it declares a
/// `request_id` field (recorded there, `None` returned), else a new `DEBUG`
/// span when one is enabled. Boxed: the span is rare (only with a subscriber
/// that records `DEBUG` here), the response future that holds it is not, and
/// a pointer keeps that future small.
#[inline]
fn request_span(ctx: &Context, shared: &Shared) -> Option<Box<Span>> {
    if tracing::level_filters::LevelFilter::current() == tracing::level_filters::LevelFilter::OFF {
        // No subscriber, or none that records anything: no span to look up.
        return None;
    }
    traced_request_span(ctx, shared)
}

/// [`request_span`] once a subscriber records something.
#[inline(never)]
fn traced_request_span(ctx: &Context, shared: &Shared) -> Option<Box<Span>> {
    let id = ctx.request_id()?;
    let current = Span::current();
    if current.field("request_id").is_some() {
        current.record("request_id", id.as_str());
        return None;
    }
    let span = tracing::debug_span!(
        target: TARGET,
        "request",
        layer = %shared.name(),
        request_id = %id
    );
    (!span.is_disabled()).then(|| Box::new(span))
}

pin_project! {
    /// The future of [`RequestIdService`]: runs the inner future inside the
    /// request's [`Context`] and span, then echoes the id in the response.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Scoped<F>,
        span: Option<Box<Span>>,
        // The header the id is echoed in; the id is the scope's context's.
        echo: Shared,
    }
}

impl<F, ResB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = Result<Response<ResB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.as_deref().map(Span::enter);
        let mut res = ready!(this.inner.as_mut().poll(cx))?;
        if let Some(id) = this
            .inner
            .as_mut()
            .take_context()
            .and_then(Context::into_request_id)
        {
            res.headers_mut().insert(this.echo.header(), id.into());
        }
        Poll::Ready(Ok(res))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A map with the id's header among `others` other header names.
    fn headers(others: usize, ids: &[&'static str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for i in 0..others {
            let name = HeaderName::try_from(format!("x-other-{i}")).unwrap();
            map.insert(name, HeaderValue::from_static("v"));
        }
        for id in ids {
            map.append(&X_REQUEST_ID, HeaderValue::from_static(id));
        }
        map
    }

    #[test]
    fn the_shared_part_is_one_pointer_wide_with_or_without_metrics() {
        // The layer is cloned per request under axum and the response
        // future holds the echo: naming and metrics must not grow them.
        assert_eq!(size_of::<Shared>(), size_of::<usize>());
        assert_eq!(size_of::<RequestIdLayer>(), 2 * size_of::<usize>());
    }

    #[test]
    fn scanned_and_hashed_lookups_agree() {
        let layer = RequestIdLayer::new();
        for others in [0, 1, LINEAR_SCAN - 1, LINEAR_SCAN, LINEAR_SCAN + 5] {
            let none = headers(others, &[]);
            assert!(layer.incoming(&none).is_none(), "{others}");
            let one = headers(others, &["a"]);
            assert_eq!(
                layer.incoming(&one),
                Some((&HeaderValue::from_static("a"), false))
            );
            let two = headers(others, &["a", "b"]);
            assert_eq!(
                layer.incoming(&two),
                Some((&HeaderValue::from_static("a"), true))
            );
        }
    }
}
