//! [`DeadlineHeaders`]: which headers carry a deadline between services,
//! read by servers and written by clients.

use crate::error::{ConfigError, header_name};
use http::{HeaderMap, HeaderName, HeaderValue};
use rampart_core::codec::{
    GRPC_TIMEOUT, X_REQUEST_TIMEOUT_MS, encode_deadline_ms, encode_grpc_timeout, parse_deadline_ms,
    parse_grpc_timeout,
};
use std::time::Duration;

/// Which request headers carry the caller's remaining time: the same
/// value configures a server ([`DeadlineLayer::from_headers`]) and a client
/// ([`PropagateDeadlineLayer::with_headers`]), so both ends agree.
///
/// - gRPC requests (`content-type: application/grpc…`): `grpc-timeout`,
///   1 to 8 digits and a unit, as the gRPC spec says;
/// - other requests: an HTTP header holding whole milliseconds (1 to 12
///   digits), by default `x-request-timeout-ms`.
///
/// Parsing is total: no header value makes it panic, and none yields more
/// than [`MAX_DURATION`](rampart_core::codec::MAX_DURATION).
///
/// ```
/// use rampart_timeout::DeadlineHeaders;
///
/// let headers = DeadlineHeaders::new().try_http_header("x-deadline-ms")?;
/// assert_eq!(headers.http_header_name().unwrap(), "x-deadline-ms");
/// assert!(headers.reads_grpc_timeout());
/// # Ok::<(), rampart_timeout::ConfigError>(())
/// ```
///
/// [`DeadlineLayer::from_headers`]: crate::DeadlineLayer::from_headers
/// [`PropagateDeadlineLayer::with_headers`]: crate::PropagateDeadlineLayer::with_headers
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadlineHeaders {
    grpc_timeout: bool,
    http_header: Option<HeaderName>,
}

impl Default for DeadlineHeaders {
    fn default() -> Self {
        DeadlineHeaders {
            grpc_timeout: true,
            http_header: Some(X_REQUEST_TIMEOUT_MS.clone()),
        }
    }
}

/// A deadline header that could not be used: unparsable, empty, or sent
/// more than once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Malformed;

/// No time was left to write (less than the header's unit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NoTimeLeft;

/// One way of writing a timeout in a header.
struct Codec {
    parse: fn(&[u8]) -> Option<Duration>,
    encode: fn(Duration) -> HeaderValue,
    /// Less than this cannot be written (it would read as zero).
    unit: Duration,
}

const GRPC: Codec = Codec {
    parse: parse_grpc_timeout,
    encode: encode_grpc_timeout,
    unit: Duration::from_nanos(1),
};

const MILLIS: Codec = Codec {
    parse: parse_deadline_ms,
    encode: encode_deadline_ms,
    unit: Duration::from_millis(1),
};

impl DeadlineHeaders {
    /// `grpc-timeout` on gRPC requests, `x-request-timeout-ms` on others.
    pub fn new() -> Self {
        DeadlineHeaders::default()
    }

    /// Uses `name` for the HTTP deadline (milliseconds) instead.
    pub fn http_header(mut self, name: HeaderName) -> Self {
        self.http_header = Some(name);
        self
    }

    /// [`http_header`](Self::http_header) from a string, checked.
    pub fn try_http_header(self, name: &str) -> Result<Self, ConfigError> {
        Ok(self.http_header(header_name(name)?))
    }

    /// No HTTP deadline header: non-gRPC requests carry no deadline.
    pub fn without_http_header(mut self) -> Self {
        self.http_header = None;
        self
    }

    /// No `grpc-timeout`: gRPC requests carry no deadline.
    pub fn without_grpc_timeout(mut self) -> Self {
        self.grpc_timeout = false;
        self
    }

    /// The HTTP deadline header, if any.
    pub fn http_header_name(&self) -> Option<&HeaderName> {
        self.http_header.as_ref()
    }

    /// Whether gRPC requests carry `grpc-timeout`.
    pub fn reads_grpc_timeout(&self) -> bool {
        self.grpc_timeout
    }

    /// The header and codec for a request of this kind, if it carries one.
    fn for_request(&self, grpc: bool) -> Option<(&HeaderName, &'static Codec)> {
        if grpc {
            self.grpc_timeout.then_some((&GRPC_TIMEOUT, &GRPC))
        } else {
            self.http_header.as_ref().map(|name| (name, &MILLIS))
        }
    }

    /// The caller's timeout, if the request carries one.
    pub(crate) fn read(
        &self,
        headers: &HeaderMap,
        grpc: bool,
    ) -> Result<Option<Duration>, Malformed> {
        let Some((name, codec)) = self.for_request(grpc) else {
            return Ok(None);
        };
        let mut values = headers.get_all(name).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(Malformed);
        }
        (codec.parse)(value.as_bytes()).map(Some).ok_or(Malformed)
    }

    /// Writes `remaining` on a request of this kind, keeping a shorter
    /// well-formed value already there. `Err` when `remaining` is too short
    /// to be written (zero, or under a millisecond for the HTTP header).
    pub(crate) fn write(
        &self,
        headers: &mut HeaderMap,
        grpc: bool,
        remaining: Duration,
    ) -> Result<(), NoTimeLeft> {
        let Some((name, codec)) = self.for_request(grpc) else {
            return if remaining.is_zero() {
                Err(NoTimeLeft)
            } else {
                Ok(())
            };
        };
        if remaining < codec.unit {
            return Err(NoTimeLeft);
        }
        let existing = headers.get(name).and_then(|v| (codec.parse)(v.as_bytes()));
        if existing.is_none_or(|e| e > remaining) {
            headers.insert(name.clone(), (codec.encode)(remaining));
        }
        Ok(())
    }
}
