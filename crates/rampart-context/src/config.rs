//! The header-name check shared by both layers: core's
//! [`parse_header_name`](rampart_core::codec::parse_header_name), the same
//! check `rampart-timeout` applies to its deadline header, reporting a
//! refused name as rampart's one [`ConfigError`] (field `header`).

use http::HeaderName;
use rampart_core::ConfigError;

/// Parses and checks a configured header name (case-insensitive).
pub(crate) fn header_name(name: &str) -> Result<HeaderName, ConfigError> {
    Ok(rampart_core::codec::parse_header_name(name)?)
}
