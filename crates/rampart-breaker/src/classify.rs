//! [`breaker_classify`]: what counts as a failure for a circuit over HTTP
//! or gRPC, and how a [`Classify`](rampart_core::Classify) outcome becomes
//! a verdict.

use crate::circuit::Verdict;
use http::StatusCode;
use rampart_core::Outcome;
use rampart_core::classify::{GrpcClassify, HttpClassify, HttpOrGrpcClassify};
use rampart_core::grpc::Code;
use std::time::Duration;

/// The classification a circuit wants for HTTP and gRPC (chosen per request
/// by `content-type`, as [`HttpOrGrpcClassify`]).
///
/// A circuit judges the backend's health, not whether a request may be
/// repeated, so every method counts and no `Retry-After` is too long:
///
/// - failure: HTTP 500, 502, 503, 504; gRPC UNAVAILABLE, INTERNAL, UNKNOWN,
///   DATA_LOSS, DEADLINE_EXCEEDED; transport errors, refused connections
///   and per-attempt timeouts;
/// - success: 1xx–3xx answers and gRPC OK;
/// - not counted either way: other statuses and codes (a 404, a 429, a gRPC
///   NOT_FOUND: the backend is up and answering), the caller's own
///   cancellation or deadline, a closed service, an invalid request (all
///   reported [`Outcome::Fatal`]).
///
/// A circuit maps [`Outcome::Retryable`] to a failure, [`Outcome::Success`]
/// to a success and [`Outcome::Fatal`] to "ignored" (not counted); so any
/// [`Classify`](rampart_core::Classify) can drive it.
///
/// ```
/// use rampart_breaker::breaker_classify;
/// use rampart_core::{Classify, ClassifyResult};
/// use http::{Request, Response};
///
/// let post = Request::post("/").body(()).unwrap();
/// let judge = Classify::<_, Response<()>>::classify_request(&breaker_classify(), &post);
/// let res = |s: u16| Response::builder().status(s).body(()).unwrap();
/// assert!(judge.classify(Ok(&res(503))).is_retryable()); // failure, any method
/// assert!(!judge.classify(Ok(&res(404))).is_retryable()); // not a failure
/// ```
pub fn breaker_classify() -> HttpOrGrpcClassify {
    HttpOrGrpcClassify {
        http: HttpClassify::new()
            .retry_any_method()
            .retry_statuses(&[
                StatusCode::INTERNAL_SERVER_ERROR,
                StatusCode::BAD_GATEWAY,
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::GATEWAY_TIMEOUT,
            ])
            .max_retry_after(Duration::MAX),
        grpc: GrpcClassify::new()
            // A failure after the call may have been sent (a reset, a
            // per-attempt timeout) says the backend is failing, whatever
            // the method: the breaker counts it (it never repeats a call).
            .retry_any_method()
            .retry_codes(&[
                Code::Unavailable,
                Code::Internal,
                Code::Unknown,
                Code::DataLoss,
                Code::DeadlineExceeded,
            ])
            .max_retry_after(Duration::MAX),
    }
}

/// The verdict of an outcome.
pub(crate) fn verdict(o: Outcome) -> Verdict {
    match o {
        Outcome::Success => Verdict::Success,
        Outcome::Retryable { .. } => Verdict::Failure,
        Outcome::Fatal => Verdict::Ignored,
    }
}
