//! Plain-data configurations (deserializable with the `serde` feature) that
//! build the layers, validated.

use crate::error::nonzero;
use crate::{
    DeadlineHeaders, DeadlineLayer, FromHeaders, OnMalformed, PropagateDeadlineLayer, TimeoutLayer,
};
use rampart_core::ConfigError;
use std::time::Duration;

/// The configuration of a [`TimeoutLayer`].
///
/// ```
/// use rampart_timeout::config::TimeoutConfig;
/// let layer = TimeoutConfig { timeout_ms: 2000 }.build()?;
/// assert_eq!(layer.timeout().as_millis(), 2000);
/// # Ok::<(), rampart_timeout::ConfigError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct TimeoutConfig {
    /// The timeout of one attempt, in milliseconds (not zero).
    pub timeout_ms: u64,
}

impl TimeoutConfig {
    /// The layer, or why the configuration is invalid.
    pub fn build(&self) -> Result<TimeoutLayer, ConfigError> {
        nonzero("timeout_ms", Duration::from_millis(self.timeout_ms)).map(TimeoutLayer::new)
    }
}

/// The configuration of [`DeadlineHeaders`]: which headers carry a
/// deadline between services. Builds a [`PropagateDeadlineLayer`] too.
///
/// ```
/// use rampart_timeout::config::HeadersConfig;
/// let cfg = HeadersConfig { http_header: None, ..HeadersConfig::default() };
/// let client = cfg.build_propagate()?;
/// assert!(client.headers().http_header_name().is_none());
/// # Ok::<(), rampart_timeout::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct HeadersConfig {
    /// `grpc-timeout` on gRPC requests (default true).
    pub grpc_timeout: bool,
    /// The HTTP deadline header on other requests (default
    /// `x-request-timeout-ms`; `None`: no header). A header HTTP framing or
    /// gRPC owns is refused (a [`ConfigError`] naming the field `header`).
    pub http_header: Option<String>,
}

impl Default for HeadersConfig {
    fn default() -> Self {
        HeadersConfig {
            grpc_timeout: true,
            http_header: Some(
                rampart_core::codec::X_REQUEST_TIMEOUT_MS
                    .as_str()
                    .to_owned(),
            ),
        }
    }
}

impl HeadersConfig {
    /// The headers, or why the configuration is invalid.
    pub fn build(&self) -> Result<DeadlineHeaders, ConfigError> {
        let headers = match &self.http_header {
            Some(name) => DeadlineHeaders::new().try_http_header(name)?,
            None => DeadlineHeaders::new().without_http_header(),
        };
        Ok(if self.grpc_timeout {
            headers
        } else {
            headers.without_grpc_timeout()
        })
    }

    /// The client layer writing these headers.
    pub fn build_propagate(&self) -> Result<PropagateDeadlineLayer, ConfigError> {
        Ok(PropagateDeadlineLayer::with_headers(self.build()?))
    }
}

/// The configuration of a [`DeadlineLayer`], plain or (on a server) reading
/// the caller's deadline from headers.
///
/// ```
/// use rampart_timeout::config::DeadlineConfig;
/// use rampart_timeout::OnMalformed;
/// let cfg = DeadlineConfig {
///     budget_ms: 5000,
///     on_malformed: OnMalformed::Reject,
///     ..DeadlineConfig::default()
/// };
/// let server = cfg.build_from_headers()?;
/// assert_eq!(server.budget().as_secs(), 5);
/// # Ok::<(), rampart_timeout::ConfigError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct DeadlineConfig {
    /// The budget of a request, and the cap on a caller's deadline, in
    /// milliseconds (not zero).
    pub budget_ms: u64,
    /// The headers a server reads the caller's deadline from.
    pub headers: HeadersConfig,
    /// What a server does with a malformed header (default: ignore it).
    pub on_malformed: OnMalformed,
}

impl DeadlineConfig {
    /// The plain layer (the header fields are not used).
    pub fn build(&self) -> Result<DeadlineLayer, ConfigError> {
        nonzero("budget_ms", Duration::from_millis(self.budget_ms)).map(DeadlineLayer::new)
    }

    /// The server layer, reading the caller's deadline from headers.
    pub fn build_from_headers(&self) -> Result<DeadlineLayer<FromHeaders>, ConfigError> {
        let budget = nonzero("budget_ms", Duration::from_millis(self.budget_ms))?;
        Ok(DeadlineLayer::from_headers(budget, self.headers.build()?)
            .on_malformed(self.on_malformed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_build_validated_layers() {
        let err = TimeoutConfig::default().build().unwrap_err();
        assert_eq!((err.field(), err.value()), ("timeout_ms", "0ns"));
        let cfg = DeadlineConfig {
            budget_ms: 250,
            headers: HeadersConfig {
                grpc_timeout: false,
                http_header: None,
            },
            on_malformed: OnMalformed::Reject,
        };
        let layer = cfg.build_from_headers().unwrap();
        assert_eq!(layer.budget(), Duration::from_millis(250));
        assert_eq!(layer.source().on_malformed(), OnMalformed::Reject);
        assert_eq!(
            layer.source().headers(),
            &DeadlineHeaders::new()
                .without_grpc_timeout()
                .without_http_header()
        );
        assert_eq!(cfg.build().unwrap().budget(), Duration::from_millis(250));
        let bad = DeadlineConfig {
            budget_ms: 250,
            headers: HeadersConfig {
                http_header: Some("not a header".into()),
                ..HeadersConfig::default()
            },
            ..DeadlineConfig::default()
        };
        let err = bad.build_from_headers().unwrap_err();
        assert_eq!(err.field(), "header");
        assert!(err.to_string().contains("not a header"), "{err}");
        assert_eq!(
            HeadersConfig::default().build_propagate().unwrap(),
            PropagateDeadlineLayer::new()
        );
        let empty = HeadersConfig {
            http_header: Some(String::new()),
            ..HeadersConfig::default()
        };
        assert!(empty.build().is_err());
    }

    #[test]
    fn a_header_http_or_grpc_owns_cannot_carry_the_deadline() {
        for owned in ["content-length", "Host", "grpc-timeout", "grpc-status"] {
            let cfg = HeadersConfig {
                http_header: Some(owned.into()),
                ..HeadersConfig::default()
            };
            assert!(cfg.build().is_err_and(|e| e.field() == "header"), "{owned}");
        }
        let err = HeadersConfig {
            http_header: Some("te".into()),
            ..HeadersConfig::default()
        }
        .build_propagate()
        .unwrap_err();
        assert!(err.to_string().contains("te"));
    }

    #[cfg(feature = "serde")]
    #[test]
    fn configs_deserialize_with_defaults_and_refuse_unknown_fields() {
        use serde::Deserialize;
        use serde::de::value::{Error, MapDeserializer};

        let map = MapDeserializer::<_, Error>::new([("timeout_ms", 2000_u64)].into_iter());
        let cfg = TimeoutConfig::deserialize(map).unwrap();
        assert_eq!(cfg.build().unwrap().timeout(), Duration::from_secs(2));

        let map = MapDeserializer::<_, Error>::new([("budget_ms", 300_u64)].into_iter());
        let cfg = DeadlineConfig::deserialize(map).unwrap();
        assert_eq!(
            cfg,
            DeadlineConfig {
                budget_ms: 300,
                ..DeadlineConfig::default()
            }
        );

        let map = MapDeserializer::<_, Error>::new([("on_malformed", "reject")].into_iter());
        let cfg = DeadlineConfig::deserialize(map).unwrap();
        assert_eq!(cfg.on_malformed, OnMalformed::Reject);
        assert_eq!(
            cfg.build().unwrap_err().field(),
            "budget_ms",
            "no budget given"
        );

        let map = MapDeserializer::<_, Error>::new([("grpc_timeout", false)].into_iter());
        let cfg = HeadersConfig::deserialize(map).unwrap();
        assert!(!cfg.build().unwrap().reads_grpc_timeout());

        let map = MapDeserializer::<_, Error>::new([("timeout", 5_u64)].into_iter());
        assert!(TimeoutConfig::deserialize(map).is_err(), "unknown field");
    }
}
