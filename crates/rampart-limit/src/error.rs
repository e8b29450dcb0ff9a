//! [`LimitConfigError`]: what is wrong with a limit's configuration, and
//! its conversion into the one [`ConfigError`](rampart_core::ConfigError).

use std::fmt;

/// An invalid adaptive-limit or wait configuration, in detail (the
/// adaptive configs' `build()` return it). The layer builders
/// ([`LimitBuilder::build`](crate::LimitBuilder::build),
/// [`ConcurrencyLimitLayer::try_new`](crate::ConcurrencyLimitLayer::try_new),
/// the keyed ones) return it converted into rampart's one
/// [`ConfigError`](rampart_core::ConfigError), whose message names the
/// field and the value; `?` converts it the same way.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum LimitConfigError {
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
        value: usize,
    },
    /// The minimum of an adaptive limit is above its maximum.
    MinAboveMax {
        /// The minimum given.
        min: usize,
        /// The maximum given.
        max: usize,
    },
    /// The initial limit is outside `min..=max`.
    InitialOutOfBounds {
        /// The initial limit given.
        initial: usize,
        /// The minimum.
        min: usize,
        /// The maximum.
        max: usize,
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

impl fmt::Display for LimitConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitConfigError::ZeroLimit { field } => {
                write!(f, "{field} is 0: no request could ever run")
            }
            LimitConfigError::LimitTooLarge { field, value } => write!(
                f,
                "{field} is {value}, above the largest limit {}",
                crate::MAX_LIMIT
            ),
            LimitConfigError::MinAboveMax { min, max } => {
                write!(f, "min_limit {min} is above max_limit {max}")
            }
            LimitConfigError::InitialOutOfBounds { initial, min, max } => write!(
                f,
                "initial_limit {initial} is outside min_limit..=max_limit ({min}..={max})"
            ),
            LimitConfigError::InvalidFactor {
                field,
                value,
                expected,
            } => write!(f, "{field} is {value}, expected {expected}"),
            LimitConfigError::Zero { field } => write!(f, "{field} must be greater than 0"),
        }
    }
}

impl std::error::Error for LimitConfigError {}

/// Checks a limit-like value: not zero, not above [`crate::MAX_LIMIT`].
pub(crate) fn check_limit(
    field: &'static str,
    value: impl TryInto<usize>,
) -> Result<u32, LimitConfigError> {
    let value = value.try_into().unwrap_or(usize::MAX);
    match u32::try_from(value) {
        _ if value == 0 => Err(LimitConfigError::ZeroLimit { field }),
        Ok(v) if v <= crate::MAX_LIMIT => Ok(v),
        _ => Err(LimitConfigError::LimitTooLarge { field, value }),
    }
}

/// A count as `usize` (every count rampart reports is one).
#[inline]
pub(crate) fn count(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Checks `min <= initial <= max`, each a valid limit.
pub(crate) fn check_bounds(initial: usize, min: usize, max: usize) -> Result<(), LimitConfigError> {
    check_limit("min_limit", min)?;
    check_limit("max_limit", max)?;
    check_limit("initial_limit", initial)?;
    if min > max {
        return Err(LimitConfigError::MinAboveMax { min, max });
    }
    if !(min..=max).contains(&initial) {
        return Err(LimitConfigError::InitialOutOfBounds { initial, min, max });
    }
    Ok(())
}

/// Checks that `value` lies in the range described by `ok` (NaN fails).
pub(crate) fn check_factor(
    field: &'static str,
    value: f64,
    expected: &'static str,
    ok: impl Fn(f64) -> bool,
) -> Result<f64, LimitConfigError> {
    if value.is_finite() && ok(value) {
        Ok(value)
    } else {
        Err(LimitConfigError::InvalidFactor {
            field,
            value,
            expected,
        })
    }
}

impl From<LimitConfigError> for rampart_core::ConfigError {
    fn from(e: LimitConfigError) -> Self {
        use rampart_core::ConfigError;
        match e {
            LimitConfigError::ZeroLimit { field } => ConfigError::new(field, 0, "at least 1"),
            LimitConfigError::LimitTooLarge { field, value } => ConfigError::new(
                field,
                value,
                format!("at most {} (MAX_LIMIT)", crate::MAX_LIMIT),
            ),
            LimitConfigError::MinAboveMax { min, max } => {
                ConfigError::new("min_limit", min, format!("at most max_limit ({max})"))
            }
            LimitConfigError::InitialOutOfBounds { initial, min, max } => ConfigError::new(
                "initial_limit",
                initial,
                format!("within min_limit..=max_limit ({min}..={max})"),
            ),
            LimitConfigError::InvalidFactor {
                field,
                value,
                expected,
            } => ConfigError::new(field, value, expected),
            LimitConfigError::Zero { field } => ConfigError::new(field, 0, "greater than 0"),
        }
    }
}
