//! [`ConfigError`]: the one configuration error of rampart.

use std::borrow::Cow;
use std::fmt;

/// A configuration value a builder refused.
///
/// Every rampart crate reports invalid configuration with this type, or with
/// a crate-level enum that converts into it (`From`), so an application that
/// builds several layers needs one error type: `rampart::ConfigError`. The
/// message names the field, the value given and what was expected:
///
/// ```
/// use rampart_core::ConfigError;
///
/// let e = ConfigError::new("max_attempts", 0, "at least 1 (it counts the first call)");
/// assert_eq!(e.field(), "max_attempts");
/// assert_eq!(e.value(), "0");
/// assert_eq!(
///     e.to_string(),
///     "invalid max_attempts = 0: expected at least 1 (it counts the first call)"
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    field: Cow<'static, str>,
    value: String,
    expected: Cow<'static, str>,
}

impl ConfigError {
    /// `field` was given `value` (written with its `Debug` form), where
    /// `expected` describes what is allowed.
    pub fn new(
        field: impl Into<Cow<'static, str>>,
        value: impl fmt::Debug,
        expected: impl Into<Cow<'static, str>>,
    ) -> ConfigError {
        ConfigError {
            field: field.into(),
            value: format!("{value:?}"),
            expected: expected.into(),
        }
    }

    /// The name of the setting, as the builder method that sets it is named
    /// (`max_attempts`, `limit`, `header`, …).
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The value that was given, in its `Debug` form.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// What the setting accepts.
    pub fn expected(&self) -> &str {
        &self.expected
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} = {}: expected {}",
            self.field, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}
