//! Feature `tonic`: rampart failures reach a tonic client as the
//! [`tonic::Status`] the error mapping defines (see the table in
//! [`HandleErrorsLayer`](crate::HandleErrorsLayer)'s module): a timeout as
//! `DEADLINE_EXCEEDED`, a shed or rate limit as `RESOURCE_EXHAUSTED` with
//! `grpc-retry-pushback-ms` metadata when a retry hint exists, a closed
//! service as `UNAVAILABLE`, a cancellation as `CANCELLED`.
//!
//! A tonic client turns the error of the service stack under it into a
//! `Status` with `Status::from_error`, which knows nothing of rampart: every
//! rampart failure would reach the caller as `UNKNOWN`. Put
//! [`GrpcStatusLayer`] outermost in the stack under the client (the
//! `ServiceBuilder` around the `Channel`), and it hands tonic the right
//! `Status`. Errors that are not rampart's (a transport failure of the
//! channel) are left to tonic's own mapping, so a refused connection is
//! still `UNAVAILABLE`.
//!
//! ```
//! use rampart_core::{Error, GrpcStatusLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // A stand-in for a tonic `Channel` behind a limit that shed the call.
//! let stack = ServiceBuilder::new()
//!     .layer(GrpcStatusLayer::new())
//!     .service(service_fn(|_req: http::Request<()>| async {
//!         Err::<http::Response<()>, _>(Error::overloaded(Some(Duration::from_millis(250))))
//!     }));
//! let status = stack.oneshot(http::Request::new(())).await.unwrap_err();
//! assert_eq!(status.code(), tonic::Code::ResourceExhausted);
//! assert_eq!(status.metadata().get("grpc-retry-pushback-ms").unwrap(), "250");
//! # }
//! ```
//!
//! A failure in `poll_ready` (a closed queue, a limit that refuses while
//! waiting for readiness) is kept and answered by the next call: tonic's
//! generated clients turn every readiness error into `UNKNOWN` ("Service
//! was not ready"), so the layer is always ready and the call fails with the
//! right status instead, without calling the inner service.
//!
//! `From<Error> for tonic::Status` does the same for a handler that fails
//! with a rampart error (`Err(e)?` in a tonic service method).

use crate::codec::{GRPC_RETRY_PUSHBACK_MS, encode_grpc_pushback};
use crate::grpc::Code;
use crate::{BoxError, Error, ErrorKind};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tower_layer::Layer;
use tower_service::Service;

impl Error {
    /// This error as the `tonic::Status` the mapping defines: the code of
    /// [`grpc_code`](Error::grpc_code), the error's text as the message, and
    /// `grpc-retry-pushback-ms` metadata when a retry delay is known
    /// (milliseconds, rounded up and saturated as the response header is).
    ///
    /// An [`ErrorKind::Inner`] error is mapped by tonic's own
    /// `Status::from_error` instead ([`status_from_error`]), so a status or
    /// transport failure inside it keeps its code.
    pub fn to_tonic_status(&self) -> tonic::Status {
        let mut metadata = tonic::metadata::MetadataMap::new();
        if let Some(after) = self.retry_after() {
            let mut headers = http::HeaderMap::with_capacity(1);
            headers.insert(&GRPC_RETRY_PUSHBACK_MS, encode_grpc_pushback(after));
            metadata = tonic::metadata::MetadataMap::from_headers(headers);
        }
        tonic::Status::with_metadata(tonic_code(self.grpc_code()), self.to_string(), metadata)
    }
}

fn tonic_code(code: Code) -> tonic::Code {
    tonic::Code::from_i32(code.as_i32())
}

/// Any error as a `tonic::Status`: the first rampart [`Error`] in its source
/// chain that is not [`ErrorKind::Inner`] decides, as
/// [`Error::to_tonic_status`] says, unless a `tonic::Status` comes first;
/// everything else is tonic's `Status::from_error`. The status's source is
/// the error.
pub fn status_from_error(e: impl Into<BoxError>) -> tonic::Status {
    let e = e.into();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&*e);
    while let Some(err) = next {
        if err.is::<tonic::Status>() {
            break;
        }
        // A `Channel` enforces the `grpc-timeout` that deadline propagation
        // wrote, and tonic reports its expiry as CANCELLED; for the caller
        // it is its deadline passing.
        if err.is::<tonic::TimeoutExpired>() {
            let mut status = Error::deadline_exceeded().to_tonic_status();
            status.set_source(Arc::from(e));
            return status;
        }
        if let Some(r) = err.downcast_ref::<Error>()
            && r.kind() != ErrorKind::Inner
        {
            let mut status = r.to_tonic_status();
            status.set_source(Arc::from(e));
            return status;
        }
        next = err.source();
    }
    tonic::Status::from_error(e)
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        status_from_error(e)
    }
}

/// Maps the errors of the stack under a tonic client to the right
/// `tonic::Status` (see the [module docs](crate::tonic_status)). Outermost
/// in the `ServiceBuilder` wrapped around a tonic `Channel`.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcStatusLayer {
    _priv: (),
}

impl GrpcStatusLayer {
    /// A new layer.
    pub fn new() -> Self {
        GrpcStatusLayer { _priv: () }
    }
}

impl<S> Layer<S> for GrpcStatusLayer {
    type Service = GrpcStatus<S>;
    fn layer(&self, inner: S) -> GrpcStatus<S> {
        GrpcStatus::new(inner)
    }
}

/// The service of [`GrpcStatusLayer`]: its error is a `tonic::Status`.
#[derive(Debug)]
pub struct GrpcStatus<S> {
    inner: S,
    /// The inner service failed `poll_ready`: the next call answers with
    /// this status instead of calling it.
    ready_error: Option<tonic::Status>,
}

impl<S: Clone> Clone for GrpcStatus<S> {
    fn clone(&self) -> Self {
        GrpcStatus::new(self.inner.clone())
    }
}

impl<S> GrpcStatus<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        GrpcStatus {
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

impl<S, Req> Service<Req> for GrpcStatus<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = tonic::Status;
    type Future = GrpcStatusFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tonic::Status>> {
        if self.ready_error.is_some() {
            return Poll::Ready(Ok(()));
        }
        // A readiness failure is answered by the next call (see the module
        // docs); the inner service is not called after it.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                self.ready_error = Some(status_from_error(e));
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let state = match self.ready_error.take() {
            Some(status) => State::Failed {
                status: Some(status),
            },
            None => State::Called {
                fut: self.inner.call(req),
            },
        };
        GrpcStatusFuture { state }
    }
}

pin_project! {
    /// The response future of [`GrpcStatus`].
    pub struct GrpcStatusFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called { #[pin] fut: F },
        Failed { status: Option<tonic::Status> },
    }
}

impl<F, T, E> Future for GrpcStatusFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, tonic::Status>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { fut } => {
                Poll::Ready(ready!(fut.poll(cx)).map_err(status_from_error))
            }
            StateProj::Failed { status } => Poll::Ready(Err(status
                .take()
                .unwrap_or_else(|| tonic::Status::unavailable(ErrorKind::Closed.describe())))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_channel_timeout_is_the_callers_deadline_not_a_cancellation() {
        // What tonic's Channel returns when the propagated grpc-timeout
        // expires; tonic alone maps it to CANCELLED.
        assert_eq!(
            tonic::Status::from_error(Box::new(tonic::TimeoutExpired(()))).code(),
            tonic::Code::Cancelled
        );
        let status = status_from_error(tonic::TimeoutExpired(()));
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    }

    #[test]
    fn every_kind_maps_to_its_code_and_hints_become_pushback_metadata() {
        let cases = [
            (Error::timeout(), tonic::Code::DeadlineExceeded),
            (Error::deadline_exceeded(), tonic::Code::DeadlineExceeded),
            (Error::overloaded(None), tonic::Code::ResourceExhausted),
            (Error::rate_limited(None), tonic::Code::ResourceExhausted),
            (Error::cancelled(), tonic::Code::Cancelled),
            (Error::closed(), tonic::Code::Unavailable),
            (
                Error::retries_exhausted(3, Error::closed()),
                tonic::Code::Unavailable,
            ),
            (
                Error::retries_exhausted(3, Error::timeout()),
                tonic::Code::DeadlineExceeded,
            ),
            (Error::invalid_request(), tonic::Code::InvalidArgument),
            (Error::from_inner("boom"), tonic::Code::Unknown),
        ];
        for (e, code) in cases {
            let text = e.to_string();
            let s = tonic::Status::from(e);
            assert_eq!(s.code(), code, "{text}");
            assert_eq!(s.message(), text);
            assert!(s.metadata().get("grpc-retry-pushback-ms").is_none());
        }
        let s = tonic::Status::from(Error::rate_limited(Some(Duration::from_micros(1500))));
        assert_eq!(s.metadata().get("grpc-retry-pushback-ms").unwrap(), "2");
        let s = tonic::Status::from(Error::overloaded(Some(Duration::MAX)));
        assert_eq!(
            s.metadata().get("grpc-retry-pushback-ms").unwrap(),
            "1000000000000"
        );
    }

    #[test]
    fn the_status_source_is_the_rampart_error() {
        let s = status_from_error(Error::cancelled());
        let src = std::error::Error::source(&s).expect("a source");
        assert_eq!(
            src.downcast_ref::<Error>().map(Error::kind),
            Some(ErrorKind::Cancelled)
        );
    }

    /// A foreign error wrapping a rampart one.
    #[derive(Debug)]
    struct Wrapper(Error);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_status_inside_an_inner_error_keeps_its_code() {
        let inner = Error::from_inner(tonic::Status::not_found("no such order"));
        let s = status_from_error(inner);
        assert_eq!(s.code(), tonic::Code::NotFound);
        assert_eq!(s.message(), "no such order");
        // A rampart error found deeper in a foreign wrapper still counts.
        assert_eq!(
            status_from_error(Wrapper(Error::timeout())).code(),
            tonic::Code::DeadlineExceeded
        );
        assert_eq!(status_from_error("plain").code(), tonic::Code::Unknown);
    }

    #[test]
    fn codes_agree_with_tonic_numbering() {
        for n in 0..=16 {
            assert_eq!(tonic_code(Code::from_i32(n)) as i32, n);
        }
    }
}
