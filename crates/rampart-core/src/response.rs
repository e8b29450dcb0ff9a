//! Mapping rampart errors to HTTP and gRPC responses, and the
//! [`HandleErrors`] layer that does it for a whole server stack.
//!
//! | kind | HTTP | gRPC |
//! |---|---|---|
//! | Timeout, DeadlineExceeded | 504 | DEADLINE_EXCEEDED (4) |
//! | Overloaded | 503 + `Retry-After` | RESOURCE_EXHAUSTED (8) + `grpc-retry-pushback-ms` |
//! | RateLimited | 429 + `Retry-After` | RESOURCE_EXHAUSTED (8) + `grpc-retry-pushback-ms` |
//! | Cancelled | 499 | CANCELLED (1) |
//! | Closed | 503 | UNAVAILABLE (14) |
//! | RetriesExhausted | 502 | UNAVAILABLE (14) |
//! | InvalidRequest | 400 | INVALID_ARGUMENT (3) |
//! | Inner | 500 | UNKNOWN (2) |
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
use crate::grpc::{Code, is_grpc_request};
use crate::{BoxError, Error, ErrorKind};
use http::{HeaderValue, Response, StatusCode, header};
use pin_project_lite::pin_project;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tower_layer::Layer;
use tower_service::Service;

impl Error {
    /// The HTTP status for this error (see the module table).
    pub fn http_status(&self) -> StatusCode {
        match self.kind() {
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
    pub fn to_http_response<B: Default>(&self) -> Response<B> {
        let mut res = Response::new(B::default());
        *res.status_mut() = self.http_status();
        if let Some(after) = self.retry_after() {
            res.headers_mut()
                .insert(header::RETRY_AFTER, encode_retry_after(after));
        }
        res
    }

    /// A gRPC trailers-only response: HTTP 200, `content-type:
    /// application/grpc`, `grpc-status`, `grpc-message`, and
    /// `grpc-retry-pushback-ms` when a retry delay is known.
    pub fn to_grpc_response<B: Default>(&self) -> Response<B> {
        let mut res = Response::new(B::default());
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
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
/// or [`Error::to_grpc_response`] for requests with a gRPC content-type), so
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
        let grpc = is_grpc_request(&req);
        let state = match self.ready_error.take() {
            Some(e) => State::Failed { error: Some(e) },
            None => State::Called {
                fut: self.inner.call(req),
            },
        };
        HandleErrorsFuture { state, grpc }
    }
}

pin_project! {
    /// The response future of [`HandleErrors`].
    pub struct HandleErrorsFuture<F> {
        #[pin]
        state: State<F>,
        grpc: bool,
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
            Err(e) => {
                if *this.grpc {
                    e.to_grpc_response()
                } else {
                    e.to_http_response()
                }
            }
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
            (Error::retries_exhausted(2, Error::timeout()), 502),
            (Error::from_inner("boom"), 500),
        ];
        for (e, status) in cases {
            let r: Response<()> = e.to_http_response();
            assert_eq!(r.status().as_u16(), status, "{e}");
        }
        let r: Response<()> =
            Error::overloaded(Some(Duration::from_millis(1500))).to_http_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
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
