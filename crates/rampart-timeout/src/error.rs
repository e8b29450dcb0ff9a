//! Why a configuration was refused.

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
        }
    }
}

impl std::error::Error for ConfigError {}

/// Checks a configured duration.
pub(crate) fn nonzero(d: std::time::Duration) -> Result<std::time::Duration, ConfigError> {
    if d.is_zero() {
        Err(ConfigError::ZeroDuration)
    } else {
        Ok(d)
    }
}

/// Parses a configured header name.
pub(crate) fn header_name(name: &str) -> Result<http::HeaderName, ConfigError> {
    http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ConfigError::InvalidHeaderName(name.to_owned()))
}
