//! gRPC status codes, read from and written to plain `http` headers (no tonic
//! dependency).

use http::HeaderMap;
use std::fmt;

/// A gRPC status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

const ALL: [Code; 17] = [
    Code::Ok,
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

impl Code {
    /// The code for a number; unknown numbers are [`Code::Unknown`], as the
    /// gRPC spec says.
    pub fn from_i32(n: i32) -> Code {
        usize::try_from(n)
            .ok()
            .and_then(|i| ALL.get(i).copied())
            .unwrap_or(Code::Unknown)
    }

    /// Parses a `grpc-status` value (ASCII digits); garbage is `None`.
    pub fn parse(value: &[u8]) -> Option<Code> {
        if value.is_empty() || value.len() > 3 || !value.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = value
            .iter()
            .fold(0i32, |a, &b| a * 10 + i32::from(b - b'0'));
        Some(Code::from_i32(n))
    }

    /// The status in a `grpc-status` header of `headers`, if present and
    /// well formed.
    pub fn from_headers(headers: &HeaderMap) -> Option<Code> {
        headers
            .get(&crate::codec::GRPC_STATUS)
            .and_then(|v| Code::parse(v.as_bytes()))
    }

    /// The gRPC code for an HTTP status of a response that carried no
    /// `grpc-status` (gRPC's "HTTP to gRPC status code mapping").
    pub fn from_http_status(status: http::StatusCode) -> Code {
        match status.as_u16() {
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502..=504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }

    /// The numeric value.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The value as a static header value, e.g. `"14"`.
    pub fn header_value(self) -> http::HeaderValue {
        const TEXT: [&str; 17] = [
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
            "16",
        ];
        http::HeaderValue::from_static(TEXT[self as usize])
    }

    pub(crate) fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?} ({})", *self as i32)
    }
}

/// True when a request's `content-type` says gRPC (`application/grpc…`,
/// gRPC-Web included).
pub fn is_grpc_request<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| is_grpc_content_type(v.as_bytes()))
}

/// True for a gRPC `content-type` (`application/grpc…`, gRPC-Web
/// included), matched case-insensitively as media types are.
pub fn is_grpc_content_type(value: &[u8]) -> bool {
    value
        .get(..16)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"application/grpc"))
}

/// True for a gRPC-Web `content-type` (`application/grpc-web`,
/// `application/grpc-web+proto`, `application/grpc-web-text`, …), matched
/// case-insensitively.
pub fn is_grpc_web_content_type(value: &[u8]) -> bool {
    value
        .get(..20)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"application/grpc-web"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_type_is_matched_case_insensitively() {
        for (ct, grpc) in [
            ("application/grpc", true),
            ("Application/GRPC+proto", true),
            ("application/grpc-web", true),
            ("application/json", false),
            ("application/grp", false),
        ] {
            let req = http::Request::post("/")
                .header("content-type", ct)
                .body(())
                .unwrap();
            assert_eq!(is_grpc_request(&req), grpc, "{ct}");
        }
    }

    #[test]
    fn grpc_web_content_types_are_told_apart() {
        for (ct, web) in [
            (&b"application/grpc-web"[..], true),
            (b"application/grpc-web+proto", true),
            (b"Application/gRPC-Web-Text", true),
            (b"application/grpc-web-text+proto", true),
            (b"application/grpc", false),
            (b"application/grpc+proto", false),
            (b"application/grpc-we", false),
            (b"", false),
        ] {
            assert_eq!(is_grpc_web_content_type(ct), web, "{ct:?}");
        }
    }

    #[test]
    fn status_parsing_is_total() {
        assert_eq!(Code::parse(b"14"), Some(Code::Unavailable));
        assert_eq!(Code::parse(b"0"), Some(Code::Ok));
        assert_eq!(Code::parse(b"99"), Some(Code::Unknown));
        assert_eq!(Code::parse(b"-1"), None);
        assert_eq!(Code::parse(b""), None);
        assert_eq!(Code::parse(b"1234"), None);
        assert_eq!(Code::from_i32(-5), Code::Unknown);
        for c in ALL {
            assert_eq!(Code::parse(c.header_value().as_bytes()), Some(c));
        }
    }
}
