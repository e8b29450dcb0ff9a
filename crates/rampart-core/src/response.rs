//! Mapping rampart errors to HTTP and gRPC responses, and the
//! [`HandleErrors`] layer that does it for a whole server stack.
//!
//! | kind | HTTP | gRPC |
//! |---|---|---|
//! | Timeout, DeadlineExceeded | 504 | DEADLINE_EXCEEDED (4) |
//! | Overloaded | 503 + `Retry-After` | RESOURCE_EXHAUSTED (8) + `grpc-retry-pushback-ms` |
//! | RateLimited | 429 + `Retry-After` | RESOURCE_EXHAUSTED (8) + `grpc-retry-pushback-ms` |
//! | Cancelled | 499 | CANCELLED (1) |
//! | Closed | 503 + `Connection: close` | UNAVAILABLE (14) |
//! | RetriesExhausted, last attempt timed out | 504 | DEADLINE_EXCEEDED (4) |
//! | RetriesExhausted, other last failure | 502 | UNAVAILABLE (14) |
//! | InvalidRequest | 400 | INVALID_ARGUMENT (3) |
//! | Inner | 500 | UNKNOWN (2) |
//!
//! Retries that ran out because every attempt (the last one, precisely)
//! timed out are reported as the timeout they are, so a caller sees the
//! same 504 / DEADLINE_EXCEEDED with or without a retry layer: the last
//! failure in the error's source chain decides (a rampart `Timeout` or
//! `DeadlineExceeded`, or an `io::Error` of kind `TimedOut`).
//!
//! A gRPC error is a trailers-only response: HTTP 200, `grpc-status`,
//! `grpc-message`, and `grpc-retry-pushback-ms` when a retry delay is known,
//! with the request's gRPC `content-type`: `application/grpc`, or for
//! gRPC-Web (`application/grpc-web`, `application/grpc-web-text`, …) the
//! request's own, which a gRPC-Web client needs to read the status
//! ([`ErrorFormat`]).
//!
//! Every hint is written saturated: `Retry-After` and
//! `grpc-retry-pushback-ms` never overflow, whatever the duration (see
//! [`codec`](crate::codec)).
//!
//! ```
//! use rampart_core::HandleErrorsLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use http::{Request, Response};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(HandleErrorsLayer::new())
//!     .service(service_fn(|_req: Request<String>| async {
//!         Err::<Response<String>, _>(rampart_core::Error::overloaded(Some(std::time::Duration::from_secs(2))))
//!     }));
//! let res = svc.oneshot(Request::new(String::new())).await.unwrap(); // Infallible
//! assert_eq!(res.status(), 503);
//! assert_eq!(res.headers()["retry-after"], "2");
//! # }
//! ```

use crate::codec::{
    GRPC_MESSAGE, GRPC_RETRY_PUSHBACK_MS, GRPC_STATUS, encode_grpc_pushback, encode_retry_after,
};
use crate::grpc::{Code, is_grpc_content_type, is_grpc_web_content_type};
use crate::{BoxError, Error, ErrorKind};
use http::{HeaderValue, Response, StatusCode, header};
use pin_project_lite::pin_project;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tower_layer::Layer;
use tower_service::Service;

/// How an error is written as a response, chosen from the request's
/// `content-type` ([`ErrorFormat::of`]).
///
/// ```
/// use rampart_core::{Error, ErrorFormat};
///
/// let req = http::Request::post("/a.B/C")
///     .header("content-type", "application/grpc-web+proto")
///     .body(())
///     .unwrap();
/// let format = ErrorFormat::of(&req);
/// let res: http::Response<()> = Error::timeout().to_response(&format);
/// assert_eq!(res.headers()["content-type"], "application/grpc-web+proto");
/// assert_eq!(res.headers()["grpc-status"], "4");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorFormat {
    /// A plain HTTP response ([`Error::to_http_response`]).
    Http,
    /// A gRPC trailers-only response with `content-type: application/grpc`
    /// ([`Error::to_grpc_response`]).
    Grpc,
    /// A gRPC-Web trailers-only response carrying this `content-type`, the
    /// request's (`application/grpc-web…`).
    GrpcWeb(HeaderValue),
}

impl ErrorFormat {
    /// The format a request's errors are answered in: gRPC-Web for an
    /// `application/grpc-web…` content type (kept as the request sent it),
    /// gRPC for another `application/grpc…` one, HTTP otherwise.
    pub fn of<B>(req: &http::Request<B>) -> ErrorFormat {
        match req.headers().get(header::CONTENT_TYPE) {
            Some(ct) if is_grpc_web_content_type(ct.as_bytes()) => ErrorFormat::GrpcWeb(ct.clone()),
            Some(ct) if is_grpc_content_type(ct.as_bytes()) => ErrorFormat::Grpc,
            _ => ErrorFormat::Http,
        }
    }
}

impl Error {
    /// Whether the last failure behind this error was a timeout: this error
    /// is a `Timeout` or `DeadlineExceeded`, or (for `RetriesExhausted` and
    /// `Inner`) the first rampart error or `io::Error` in its source chain
    /// says so.
    fn last_failure_timed_out(&self) -> bool {
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = next {
            if let Some(r) = e.downcast_ref::<Error>() {
                match r.kind() {
                    ErrorKind::Timeout | ErrorKind::DeadlineExceeded => return true,
                    ErrorKind::RetriesExhausted | ErrorKind::Inner => {}
                    _ => return false,
                }
            } else if let Some(io) = e.downcast_ref::<std::io::Error>() {
                return io.kind() == std::io::ErrorKind::TimedOut;
            }
            next = e.source();
        }
        false
    }

    /// The HTTP status for this error (see the module table).
    pub fn http_status(&self) -> StatusCode {
        match self.kind() {
            ErrorKind::RetriesExhausted if self.last_failure_timed_out() => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ErrorKind::Timeout | ErrorKind::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Overloaded | ErrorKind::Closed => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Cancelled => StatusCode::from_u16(499).expect("499 is a valid status"),
            ErrorKind::RetriesExhausted => StatusCode::BAD_GATEWAY,
            ErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC status code for this error (see the module table).
    pub fn grpc_code(&self) -> Code {
        match self.kind() {
            ErrorKind::RetriesExhausted if self.last_failure_timed_out() => Code::DeadlineExceeded,
            ErrorKind::Timeout | ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
            ErrorKind::Overloaded | ErrorKind::RateLimited => Code::ResourceExhausted,
            ErrorKind::Cancelled => Code::Cancelled,
            ErrorKind::Closed | ErrorKind::RetriesExhausted => Code::Unavailable,
            ErrorKind::InvalidRequest => Code::InvalidArgument,
            _ => Code::Unknown,
        }
    }

    /// An HTTP response: the status, `Retry-After` (whole seconds, rounded
    /// up) when known, and an empty body.
    ///
    /// A [`Closed`](ErrorKind::Closed) service (shutting down, draining)
    /// also sends `Connection: close`, so an HTTP/1 client opens its next
    /// request elsewhere instead of on a connection that is going away
    /// (HTTP/2 servers drop the header and send GOAWAY instead).
    pub fn to_http_response<B: Default>(&self) -> Response<B> {
        let mut res = Response::new(B::default());
        *res.status_mut() = self.http_status();
        if let Some(after) = self.retry_after() {
            res.headers_mut()
                .insert(header::RETRY_AFTER, encode_retry_after(after));
        }
        if self.kind() == ErrorKind::Closed {
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res
    }

    /// A gRPC trailers-only response: HTTP 200, `content-type:
    /// application/grpc`, `grpc-status`, `grpc-message`, and
    /// `grpc-retry-pushback-ms` when a retry delay is known.
    pub fn to_grpc_response<B: Default>(&self) -> Response<B> {
        self.grpc_response(HeaderValue::from_static("application/grpc"))
    }

    /// The response for a request whose errors are answered in `format`:
    /// [`to_http_response`](Error::to_http_response),
    /// [`to_grpc_response`](Error::to_grpc_response), or the gRPC one with
    /// the request's gRPC-Web content type.
    pub fn to_response<B: Default>(&self, format: &ErrorFormat) -> Response<B> {
        match format {
            ErrorFormat::Http => self.to_http_response(),
            ErrorFormat::Grpc => self.to_grpc_response(),
            ErrorFormat::GrpcWeb(ct) => self.grpc_response(ct.clone()),
        }
    }

    fn grpc_response<B: Default>(&self, content_type: HeaderValue) -> Response<B> {
        let mut res = Response::new(B::default());
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, content_type);
        h.insert(&GRPC_STATUS, self.grpc_code().header_value());
        h.insert(
            &GRPC_MESSAGE,
            HeaderValue::from_static(self.kind().describe()),
        );
        if let Some(after) = self.retry_after() {
            h.insert(&GRPC_RETRY_PUSHBACK_MS, encode_grpc_pushback(after));
        }
        res
    }
}

/// Turns errors of the inner service into responses ([`Error::to_http_response`],
/// or [`Error::to_grpc_response`] for requests with a gRPC content-type, with
/// the request's content type kept for gRPC-Web: see [`ErrorFormat`]), so
/// the stack's error type is [`Infallible`] as axum and hyper want.
///
/// Errors that are not rampart errors become 500 / UNKNOWN.
#[derive(Clone, Copy, Debug, Default)]
pub struct HandleErrorsLayer {
    _priv: (),
}

impl HandleErrorsLayer {
    /// A new layer.
    pub fn new() -> Self {
        HandleErrorsLayer { _priv: () }
    }
}

impl<S> Layer<S> for HandleErrorsLayer {
    type Service = HandleErrors<S>;
    fn layer(&self, inner: S) -> HandleErrors<S> {
        HandleErrors::new(inner)
    }
}

/// The service of [`HandleErrorsLayer`].
#[derive(Debug)]
pub struct HandleErrors<S> {
    inner: S,
    /// The inner service failed `poll_ready`: the next call answers with
    /// this error instead of calling it (tower forbids calling a service
    /// whose `poll_ready` failed).
    ready_error: Option<Error>,
}

impl<S: Clone> Clone for HandleErrors<S> {
    fn clone(&self) -> Self {
        HandleErrors::new(self.inner.clone())
    }
}

impl<S> HandleErrors<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        HandleErrors {
            inner,
            ready_error: None,
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
    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqB, ResB> Service<http::Request<ReqB>> for HandleErrors<S>
where
    S: Service<http::Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ResB: Default,
{
    type Response = Response<ResB>;
    type Error = Infallible;
    type Future = HandleErrorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.ready_error.is_some() {
            return Poll::Ready(Ok(()));
        }
        // A not-ready inner service stays not ready; an error in poll_ready
        // is answered on the next call, without calling the inner service.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                self.ready_error = Some(Error::from_inner(e));
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, req: http::Request<ReqB>) -> Self::Future {
        let format = ErrorFormat::of(&req);
        let state = match self.ready_error.take() {
            Some(e) => State::Failed { error: Some(e) },
            None => State::Called {
                fut: self.inner.call(req),
            },
        };
        HandleErrorsFuture { state, format }
    }
}

pin_project! {
    /// The response future of [`HandleErrors`].
    pub struct HandleErrorsFuture<F> {
        #[pin]
        state: State<F>,
        format: ErrorFormat,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called { #[pin] fut: F },
        Failed { error: Option<Error> },
    }
}

impl<F, B, E> Future for HandleErrorsFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Default,
{
    type Output = Result<Response<B>, Infallible>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.state.project() {
            StateProj::Called { fut } => ready!(fut.poll(cx)).map_err(Error::from_inner),
            StateProj::Failed { error } => Err(error.take().unwrap_or_else(Error::closed)),
        };
        Poll::Ready(Ok(match result {
            Ok(res) => res,
            Err(e) => e.to_response(this.format),
        }))
    }
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for Error {
    fn into_response(self) -> axum::response::Response {
        self.to_http_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tower::{ServiceExt, service_fn};

    #[test]
    fn http_mapping() {
        let cases = [
            (Error::timeout(), 504),
            (Error::deadline_exceeded(), 504),
            (Error::overloaded(None), 503),
            (Error::rate_limited(None), 429),
            (Error::cancelled(), 499),
            (Error::closed(), 503),
            (Error::retries_exhausted(2, Error::closed()), 502),
            (Error::from_inner("boom"), 500),
        ];
        for (e, status) in cases {
            let r: Response<()> = e.to_http_response();
            assert_eq!(r.status().as_u16(), status, "{e}");
        }
        let r: Response<()> =
            Error::overloaded(Some(Duration::from_millis(1500))).to_http_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        assert!(r.headers().get(header::CONNECTION).is_none());
        let closed: Response<()> = Error::closed().to_http_response();
        assert_eq!(closed.headers()[header::CONNECTION], "close");
    }

    #[test]
    fn grpc_mapping() {
        let cases = [
            (Error::timeout(), Code::DeadlineExceeded),
            (Error::deadline_exceeded(), Code::DeadlineExceeded),
            (Error::overloaded(None), Code::ResourceExhausted),
            (Error::rate_limited(None), Code::ResourceExhausted),
            (Error::cancelled(), Code::Cancelled),
            (Error::closed(), Code::Unavailable),
            (Error::from_inner("boom"), Code::Unknown),
        ];
        for (e, code) in cases {
            let r: Response<()> = e.to_grpc_response();
            assert_eq!(r.status(), 200);
            assert_eq!(Code::from_headers(r.headers()), Some(code), "{e}");
            assert_eq!(r.headers()[header::CONTENT_TYPE], "application/grpc");
        }
        let r: Response<()> =
            Error::overloaded(Some(Duration::from_millis(250))).to_grpc_response();
        assert_eq!(r.headers()[&GRPC_RETRY_PUSHBACK_MS], "250");
    }

    #[test]
    fn retries_exhausted_by_timeouts_is_a_timeout_and_otherwise_unavailable() {
        let timed_out = [
            Error::retries_exhausted(3, Error::timeout()),
            Error::retries_exhausted(3, Error::deadline_exceeded()),
            Error::retries_exhausted(2, std::io::Error::from(std::io::ErrorKind::TimedOut)),
            // Nested retry layers, and a timeout wrapped as an inner error.
            Error::retries_exhausted(2, Error::retries_exhausted(3, Error::timeout())),
            Error::retries_exhausted(
                2,
                Error::new(ErrorKind::Inner).with_source(Error::timeout()),
            ),
        ];
        for e in timed_out {
            assert_eq!(e.http_status(), StatusCode::GATEWAY_TIMEOUT, "{e:?}");
            assert_eq!(e.grpc_code(), Code::DeadlineExceeded, "{e:?}");
            let r: Response<()> = e.to_grpc_response();
            assert_eq!(r.headers()[&GRPC_STATUS], "4");
            assert_eq!(e.to_http_response::<()>().status(), 504);
        }
        let other = [
            Error::retries_exhausted(3, Error::closed()),
            Error::retries_exhausted(3, Error::overloaded(None)),
            Error::retries_exhausted(3, std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
            Error::retries_exhausted(3, "boom"),
        ];
        for e in other {
            assert_eq!(e.http_status(), StatusCode::BAD_GATEWAY, "{e:?}");
            assert_eq!(e.grpc_code(), Code::Unavailable, "{e:?}");
        }
        // Only RetriesExhausted looks at its source: an inner error stays 500.
        let inner = Error::new(ErrorKind::Inner).with_source(Error::timeout());
        assert_eq!(inner.http_status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn a_huge_retry_hint_is_written_saturated_not_overflowed() {
        for e in [
            Error::overloaded(Some(Duration::MAX)),
            Error::rate_limited(Some(Duration::MAX)),
            Error::closed().with_retry_after(Some(Duration::new(u64::MAX, 1))),
        ] {
            let h: Response<()> = e.to_http_response();
            assert_eq!(h.headers()[header::RETRY_AFTER], "1000000000");
            let g: Response<()> = e.to_grpc_response();
            assert_eq!(g.headers()[&GRPC_RETRY_PUSHBACK_MS], "1000000000000");
            let w: Response<()> = e.to_response(&ErrorFormat::GrpcWeb(HeaderValue::from_static(
                "application/grpc-web",
            )));
            assert_eq!(w.headers()[&GRPC_RETRY_PUSHBACK_MS], "1000000000000");
        }
    }

    #[tokio::test]
    async fn grpc_web_errors_keep_the_requests_content_type() {
        let svc = HandleErrorsLayer::new().layer(service_fn(|_req: http::Request<()>| async {
            Err::<Response<()>, _>(Error::overloaded(Some(Duration::from_millis(20))))
        }));
        for ct in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpc-web-text",
            "Application/gRPC-Web-Text+proto",
        ] {
            let req = http::Request::post("/a.B/C")
                .header("content-type", ct)
                .body(())
                .unwrap();
            let res = svc.clone().oneshot(req).await.unwrap();
            assert_eq!(res.status(), 200, "{ct}");
            assert_eq!(res.headers()[header::CONTENT_TYPE], ct);
            assert_eq!(res.headers()[&GRPC_STATUS], "8");
            assert_eq!(res.headers()[&GRPC_RETRY_PUSHBACK_MS], "20");
        }
        // Plain gRPC answers application/grpc, HTTP answers HTTP.
        let grpc = http::Request::post("/a.B/C")
            .header("content-type", "application/grpc+proto")
            .body(())
            .unwrap();
        let res = svc.clone().oneshot(grpc).await.unwrap();
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/grpc");
        let json = http::Request::post("/x")
            .header("content-type", "application/json")
            .body(())
            .unwrap();
        let res = svc.oneshot(json).await.unwrap();
        assert_eq!(res.status(), 503);
        assert!(res.headers().get(&GRPC_STATUS).is_none());
    }

    #[test]
    fn error_format_is_read_from_the_content_type() {
        let with = |ct: Option<&str>| {
            let mut b = http::Request::post("/");
            if let Some(ct) = ct {
                b = b.header("content-type", ct);
            }
            ErrorFormat::of(&b.body(()).unwrap())
        };
        assert_eq!(with(None), ErrorFormat::Http);
        assert_eq!(with(Some("text/plain")), ErrorFormat::Http);
        assert_eq!(with(Some("application/grpc")), ErrorFormat::Grpc);
        assert_eq!(with(Some("application/grpc+json")), ErrorFormat::Grpc);
        assert_eq!(
            with(Some("application/grpc-web+json")),
            ErrorFormat::GrpcWeb(HeaderValue::from_static("application/grpc-web+json"))
        );
    }

    #[tokio::test]
    async fn invalid_request_is_400_or_invalid_argument() {
        let e = Error::invalid_request();
        assert_eq!(e.http_status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.grpc_code(), Code::InvalidArgument);
        let r: Response<()> = e.to_grpc_response();
        assert_eq!(r.headers()[&GRPC_STATUS], "3");
        assert_eq!(r.headers()[&GRPC_MESSAGE], "invalid request");
        let svc = HandleErrorsLayer::new().layer(service_fn(|_req: http::Request<()>| async {
            Err::<Response<()>, _>(Error::invalid_request())
        }));
        let res = svc.clone().oneshot(http::Request::new(())).await.unwrap();
        assert_eq!(res.status(), 400);
        let grpc = http::Request::post("/a.B/C")
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let res = svc.oneshot(grpc).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(
            Code::from_headers(res.headers()),
            Some(Code::InvalidArgument)
        );
    }

    #[tokio::test]
    async fn handle_errors_answers_grpc_requests_in_grpc() {
        let svc = HandleErrorsLayer::new().layer(service_fn(|_req: http::Request<()>| async {
            Err::<Response<String>, _>(Error::timeout())
        }));
        let grpc = http::Request::post("/a.B/C")
            .header("content-type", "application/grpc+proto")
            .body(())
            .unwrap();
        let res = svc.clone().oneshot(grpc).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["grpc-status"], "4");
        let res = svc.oneshot(http::Request::new(())).await.unwrap();
        assert_eq!(res.status(), 504);
    }

    #[tokio::test]
    async fn poll_ready_failure_is_answered_without_calling_the_inner_service() {
        use failing::FailingReady;
        let mut svc = HandleErrorsLayer::new().layer(FailingReady { calls: 0 });
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(()))
            .await
            .unwrap();
        assert_eq!(res.status(), 503);
        assert_eq!(svc.get_ref().calls, 0);
    }

    mod failing {
        use super::*;
        /// A service whose `poll_ready` always fails with `Closed`.
        pub(super) struct FailingReady {
            pub(super) calls: usize,
        }
        impl Service<http::Request<()>> for FailingReady {
            type Response = Response<()>;
            type Error = Error;
            type Future = std::future::Ready<Result<Response<()>, Error>>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
                Poll::Ready(Err(Error::closed()))
            }
            fn call(&mut self, _: http::Request<()>) -> Self::Future {
                self.calls += 1;
                std::future::ready(Ok(Response::new(())))
            }
        }
    }

    #[tokio::test]
    async fn handle_errors_maps_foreign_errors_to_500_and_passes_successes() {
        let svc = HandleErrorsLayer::new().layer(service_fn(|req: http::Request<()>| async move {
            if req.uri() == "/ok" {
                Ok(Response::new(String::from("fine")))
            } else {
                Err(std::io::Error::other("disk on fire"))
            }
        }));
        let res = svc
            .clone()
            .oneshot(http::Request::get("/ok").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.into_body(), "fine");
        let res = svc
            .oneshot(http::Request::get("/bad").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 500);
    }
}
