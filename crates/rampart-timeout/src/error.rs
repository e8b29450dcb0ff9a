//! Configuration checks. Every refused value is a
//! [`rampart_core::ConfigError`] naming the field and the value.

use rampart_core::ConfigError;
use std::time::Duration;

/// Checks a duration given to a `try_` constructor or a config: zero is
/// refused there (it is accepted by the infallible constructors, meaning
/// "already expired").
pub(crate) fn nonzero(field: &'static str, d: Duration) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        Err(ConfigError::new(
            field,
            d,
            "greater than zero (a zero duration fails every call that is not ready at once; leave the layer out to disable it)",
        ))
    } else {
        Ok(d)
    }
}
