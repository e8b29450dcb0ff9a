//! [`breaker_classify`]: what counts as a failure for a circuit over HTTP
//! or gRPC, and how a [`Classify`] outcome becomes a verdict.

use crate::circuit::Verdict;
use rampart_core::classify::{Classify, ClassifyResult, ErrorClass, ErrorRef, classify_error};
use rampart_core::grpc::{Code, is_grpc_request};
use rampart_core::{Error, ErrorKind, Outcome};

/// The classification a circuit wants for HTTP and gRPC (chosen per request
/// by `content-type`): a judgement of the backend's health, not of whether
/// a request may be repeated, so every method counts the same and no
/// pushback or `Retry-After` changes a verdict.
///
/// - failure: HTTP 500, 502, 503, 504; gRPC UNAVAILABLE, INTERNAL, UNKNOWN,
///   DATA_LOSS, DEADLINE_EXCEEDED (with or without
///   `grpc-retry-pushback-ms`); transport errors, refused connections and
///   per-attempt timeouts, for every method;
/// - success: every other HTTP status (a 404: the backend is up and
///   answering) and gRPC OK;
/// - not counted either way: HTTP 429 and every other gRPC code
///   (RESOURCE_EXHAUSTED is how a rate limiter answers, NOT_FOUND is an
///   answer), the caller's own cancellation or deadline, a closed service,
///   an invalid request, and a local shed: an error whose source chain
///   holds a rampart [`Error`] of kind [`Overloaded`](ErrorKind::Overloaded)
///   or [`RateLimited`](ErrorKind::RateLimited) (a concurrency or rate limit
///   inside the breaker, an inner breaker that is open) says nothing about
///   the backend.
///
/// A gRPC response without `grpc-status` is read by its HTTP status: 200 is
/// OK, 429 is not counted, others go through gRPC's HTTP-to-gRPC table
/// (502, 503, 504 → UNAVAILABLE, a failure).
///
/// Failures are reported [`Outcome::Retryable`], successes
/// [`Outcome::Success`], the rest [`Outcome::Fatal`]; a circuit maps them to
/// failure, success and "not counted", so any [`Classify`] can drive it.
///
/// ```
/// use rampart_breaker::breaker_classify;
/// use rampart_core::{Classify, ClassifyResult, Outcome};
/// use http::{Request, Response};
///
/// let post = Request::post("/").body(()).unwrap();
/// let judge = Classify::<_, Response<()>>::classify_request(&breaker_classify(), &post);
/// let res = |s: u16| Response::builder().status(s).body(()).unwrap();
/// assert!(judge.classify(Ok(&res(503))).is_retryable()); // failure, any method
/// assert_eq!(judge.classify(Ok(&res(404))), Outcome::Success); // the backend answered
/// assert_eq!(judge.classify(Ok(&res(429))), Outcome::Fatal); // not counted
/// ```
pub fn breaker_classify() -> BreakerClassify {
    BreakerClassify
}

/// The circuit's health judgement of HTTP and gRPC results; see
/// [`breaker_classify`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BreakerClassify;

/// The per-request judge of [`BreakerClassify`]: whether the request is
/// gRPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerClassifier {
    grpc: bool,
}

impl<B, B2> Classify<http::Request<B>, http::Response<B2>> for BreakerClassify {
    type Classifier = BreakerClassifier;
    fn classify_request(&self, req: &http::Request<B>) -> BreakerClassifier {
        BreakerClassifier {
            grpc: is_grpc_request(req),
        }
    }
}

const FAILURE: Outcome = Outcome::Retryable { after: None };

impl<B> ClassifyResult<http::Response<B>> for BreakerClassifier {
    fn classify(&self, result: Result<&http::Response<B>, ErrorRef<'_>>) -> Outcome {
        let res = match result {
            Err(e) => return error_outcome(e),
            Ok(res) => res,
        };
        let status = res.status().as_u16();
        if !self.grpc {
            return match status {
                500 | 502 | 503 | 504 => FAILURE,
                429 => Outcome::Fatal,
                _ => Outcome::Success,
            };
        }
        let code = match Code::from_headers(res.headers()) {
            Some(code) => code,
            None if status == 200 => return Outcome::Success,
            None if status == 429 => return Outcome::Fatal,
            None => Code::from_http_status(res.status()),
        };
        match code {
            Code::Ok => Outcome::Success,
            Code::Unavailable
            | Code::Internal
            | Code::Unknown
            | Code::DataLoss
            | Code::DeadlineExceeded => FAILURE,
            _ => Outcome::Fatal,
        }
    }
}

/// An error: a local shed and a final error (cancelled, deadline passed,
/// closed, invalid) are not counted; any other (refused, reset, timed out)
/// is a failure, whatever the method.
fn error_outcome(e: ErrorRef<'_>) -> Outcome {
    if is_local_shed(e) {
        return Outcome::Fatal;
    }
    match classify_error(e) {
        ErrorClass::Final => Outcome::Fatal,
        ErrorClass::NeverSent { .. } | ErrorClass::MaybeSent | ErrorClass::TimedOut => FAILURE,
    }
}

/// True when `e`'s source chain holds a rampart [`Error`] of kind
/// `Overloaded` or `RateLimited`: the call was refused on this side (a
/// limit inside the breaker, an inner open circuit), not by the backend.
pub(crate) fn is_local_shed(e: ErrorRef<'_>) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<Error>()
            && matches!(r.kind(), ErrorKind::Overloaded | ErrorKind::RateLimited)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// The verdict of an outcome.
pub(crate) fn verdict(o: Outcome) -> Verdict {
    match o {
        Outcome::Success => Verdict::Success,
        Outcome::Retryable { .. } => Verdict::Failure,
        Outcome::Fatal => Verdict::Ignored,
    }
}
