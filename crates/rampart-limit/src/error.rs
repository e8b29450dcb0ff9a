//! [`ConfigError`]: what is wrong with a limit's configuration.

use std::fmt;

/// An invalid configuration, reported by the builders instead of a panic.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A limit (or a bound of an adaptive limit) of zero: nothing could
    /// ever run.
    ZeroLimit {
        /// Which setting.
        field: &'static str,
    },
    /// A limit above [`MAX_LIMIT`](crate::MAX_LIMIT).
    LimitTooLarge {
        /// Which setting.
        field: &'static str,
        /// The value given.
        value: u32,
    },
    /// The minimum of an adaptive limit is above its maximum.
    MinAboveMax {
        /// The minimum given.
        min: u32,
        /// The maximum given.
        max: u32,
    },
    /// The initial limit is outside `min..=max`.
    InitialOutOfBounds {
        /// The initial limit given.
        initial: u32,
        /// The minimum.
        min: u32,
        /// The maximum.
        max: u32,
    },
    /// A factor (smoothing, backoff ratio, tolerance) outside its range or
    /// not a number.
    InvalidFactor {
        /// Which setting.
        field: &'static str,
        /// The value given.
        value: f64,
        /// The range it must be in.
        expected: &'static str,
    },
    /// A count or duration that must be positive is zero.
    Zero {
        /// Which setting.
        field: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::ZeroLimit { field } => {
                write!(f, "{field} is 0: no request could ever run")
            }
            ConfigError::LimitTooLarge { field, value } => write!(
                f,
                "{field} is {value}, above the largest limit {}",
                crate::MAX_LIMIT
            ),
            ConfigError::MinAboveMax { min, max } => {
                write!(f, "min_limit {min} is above max_limit {max}")
            }
            ConfigError::InitialOutOfBounds { initial, min, max } => write!(
                f,
                "initial_limit {initial} is outside min_limit..=max_limit ({min}..={max})"
            ),
            ConfigError::InvalidFactor {
                field,
                value,
                expected,
            } => write!(f, "{field} is {value}, expected {expected}"),
            ConfigError::Zero { field } => write!(f, "{field} must be greater than 0"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Checks a limit-like value: not zero, not above [`crate::MAX_LIMIT`].
pub(crate) fn check_limit(field: &'static str, value: u32) -> Result<u32, ConfigError> {
    if value == 0 {
        Err(ConfigError::ZeroLimit { field })
    } else if value > crate::MAX_LIMIT {
        Err(ConfigError::LimitTooLarge { field, value })
    } else {
        Ok(value)
    }
}

/// Checks `min <= initial <= max`, each a valid limit.
pub(crate) fn check_bounds(initial: u32, min: u32, max: u32) -> Result<(), ConfigError> {
    check_limit("min_limit", min)?;
    check_limit("max_limit", max)?;
    check_limit("initial_limit", initial)?;
    if min > max {
        return Err(ConfigError::MinAboveMax { min, max });
    }
    if !(min..=max).contains(&initial) {
        return Err(ConfigError::InitialOutOfBounds { initial, min, max });
    }
    Ok(())
}

/// Checks that `value` lies in the range described by `ok` (NaN fails).
pub(crate) fn check_factor(
    field: &'static str,
    value: f64,
    expected: &'static str,
    ok: impl Fn(f64) -> bool,
) -> Result<f64, ConfigError> {
    if value.is_finite() && ok(value) {
        Ok(value)
    } else {
        Err(ConfigError::InvalidFactor {
            field,
            value,
            expected,
        })
    }
}
