//! Configuration errors and the header-name check shared by both layers.

use http::HeaderName;
use std::fmt;

/// Why a layer configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The text is not a valid HTTP header name.
    InvalidHeaderName(String),
    /// The header is one the transport or gRPC owns (`content-length`,
    /// `host`, `te`, `grpc-*`, …): writing a request id or a deadline there
    /// would corrupt the message.
    ReservedHeader(HeaderName),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::InvalidHeaderName(name) => {
                write!(f, "{name:?} is not a valid HTTP header name")
            }
            ConfigError::ReservedHeader(name) => write!(
                f,
                "header {name} is owned by HTTP or gRPC and cannot carry a request id or deadline"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Headers HTTP framing or gRPC own; none may be configured as the request
/// id or deadline header.
const RESERVED: &[&str] = &[
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Parses and checks a configured header name (case-insensitive).
pub(crate) fn header_name(name: &str) -> Result<HeaderName, ConfigError> {
    let parsed = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ConfigError::InvalidHeaderName(name.to_owned()))?;
    check(parsed)
}

/// Refuses the headers in [`RESERVED`] and the `grpc-` prefix.
pub(crate) fn check(name: HeaderName) -> Result<HeaderName, ConfigError> {
    let s = name.as_str();
    if RESERVED.contains(&s) || s.starts_with("grpc-") {
        Err(ConfigError::ReservedHeader(name))
    } else {
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_lowercased_and_checked() {
        assert_eq!(header_name("X-Correlation-Id").unwrap(), "x-correlation-id");
        assert_eq!(
            header_name("bad header"),
            Err(ConfigError::InvalidHeaderName("bad header".into()))
        );
        assert!(matches!(
            header_name(""),
            Err(ConfigError::InvalidHeaderName(_))
        ));
        for reserved in [
            "Content-Length",
            "host",
            "te",
            "grpc-timeout",
            "grpc-status",
        ] {
            assert!(
                matches!(header_name(reserved), Err(ConfigError::ReservedHeader(_))),
                "{reserved}"
            );
        }
        let err = header_name("transfer-encoding").unwrap_err();
        assert!(err.to_string().contains("transfer-encoding"));
    }
}
