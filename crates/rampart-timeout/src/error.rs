//! Why a configuration was refused.

use http::HeaderName;
use rampart_core::codec::HeaderNameError;
use std::fmt;

/// An invalid timeout or deadline configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The duration is zero: every call that is not ready on its first poll
    /// would fail. Leave the layer out (e.g. `option_layer(None)`) to
    /// disable it.
    ZeroDuration,
    /// The header name is not a valid HTTP header name.
    InvalidHeaderName(String),
    /// The header is one HTTP framing or gRPC owns (`content-length`,
    /// `host`, `te`, `grpc-*`, …): a deadline written there would corrupt
    /// the message.
    ReservedHeader(HeaderName),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::ZeroDuration => f.write_str(
                "a timeout of zero fails every call that is not ready at once; leave the layer out to disable it",
            ),
            ConfigError::InvalidHeaderName(name) => {
                write!(f, "{name:?} is not a valid HTTP header name")
            }
            ConfigError::ReservedHeader(name) => write!(
                f,
                "header {name} is owned by HTTP or gRPC and cannot carry a deadline"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

impl From<HeaderNameError> for ConfigError {
    fn from(e: HeaderNameError) -> Self {
        match e {
            HeaderNameError::InvalidHeaderName(name) => ConfigError::InvalidHeaderName(name),
            HeaderNameError::ReservedHeader(name) => ConfigError::ReservedHeader(name),
        }
    }
}

/// Checks a configured duration.
pub(crate) fn nonzero(d: std::time::Duration) -> Result<std::time::Duration, ConfigError> {
    if d.is_zero() {
        Err(ConfigError::ZeroDuration)
    } else {
        Ok(d)
    }
}
