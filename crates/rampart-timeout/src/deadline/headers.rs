//! The server side: reading the caller's deadline ([`FromHeaders`]) and
//! what to do with a malformed one ([`OnMalformed`]).

use http::{HeaderValue, Response};
use rampart_core::codec::{DeadlineHeaders, GRPC_MESSAGE};
use rampart_core::{Error, ErrorFormat};

/// The plain [`DeadlineLayer`](crate::DeadlineLayer): the deadline comes from
/// the budget and the current [`Context`](rampart_core::Context) only, for
/// any request type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoHeaders;

/// What a server does with a deadline header it cannot use (unparsable,
/// empty, or sent more than once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum OnMalformed {
    /// Carry on as if the header were absent (the budget applies). The
    /// default: a garbled header never makes a request fail.
    #[default]
    Ignore,
    /// Answer at once, without calling the inner service, with the response
    /// for [`ErrorKind::InvalidRequest`](rampart_core::ErrorKind::InvalidRequest):
    /// HTTP 400, or for gRPC requests `grpc-status: 3` (INVALID_ARGUMENT)
    /// with `grpc-message: malformed grpc-timeout`.
    Reject,
}

/// The server side of [`DeadlineLayer::from_headers`](crate::DeadlineLayer::from_headers):
/// which headers to read the caller's deadline from, and the policy for
/// malformed ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FromHeaders {
    pub(crate) headers: DeadlineHeaders,
    pub(crate) on_malformed: OnMalformed,
}

impl FromHeaders {
    /// The headers read.
    pub fn headers(&self) -> &DeadlineHeaders {
        &self.headers
    }

    /// The policy for malformed values.
    pub fn on_malformed(&self) -> OnMalformed {
        self.on_malformed
    }
}

/// The answer to a request whose deadline header was rejected: core's
/// mapping of [`Error::invalid_request`] in the request's own format (HTTP,
/// gRPC, or gRPC-Web with its content type), saying which header was wrong.
pub(crate) fn reject<B: Default>(format: &ErrorFormat) -> Response<B> {
    let mut res = Error::invalid_request().to_response(format);
    if !matches!(format, ErrorFormat::Http) {
        res.headers_mut().insert(
            &GRPC_MESSAGE,
            HeaderValue::from_static("malformed grpc-timeout"),
        );
    }
    res
}
