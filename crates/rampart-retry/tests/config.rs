//! Builder validation: bad settings are a typed error, never a panic.

use rampart_retry::{Backoff, Budget, BudgetConfig, ConfigError, RetryConfig, RetryLayer};
use std::time::Duration;

const S: Duration = Duration::from_secs(1);

#[test]
fn zero_attempts_is_rejected() {
    let err = RetryLayer::builder().max_attempts(0).build().unwrap_err();
    assert_eq!(err, ConfigError::ZeroAttempts);
    assert!(err.to_string().contains("at least 1"));
    // One attempt is valid: it just never retries.
    assert!(RetryLayer::http().max_attempts(1).build().is_ok());
}

#[test]
fn cap_below_base_is_rejected() {
    let err = RetryLayer::builder()
        .backoff(Backoff::exponential(S * 2).max_delay(S))
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        ConfigError::CapBelowBase {
            base: S * 2,
            cap: S
        }
    );
}

#[test]
fn multiplier_below_one_or_not_finite_is_rejected() {
    for m in [0.99, 0.0, -2.0, f64::NAN, f64::INFINITY] {
        let err = RetryLayer::builder()
            .backoff(Backoff::exponential(S).multiplier(m))
            .build()
            .unwrap_err();
        assert!(
            matches!(err, ConfigError::InvalidMultiplier(_)),
            "{m}: {err}"
        );
    }
}

#[test]
fn budget_ratio_outside_0_to_1_is_rejected() {
    for r in [-0.01, 1.01, f64::NAN] {
        assert!(matches!(
            Budget::new(r, 10, S),
            Err(ConfigError::InvalidRatio(_))
        ));
        let cfg = RetryConfig {
            budget: Some(BudgetConfig {
                ratio: r,
                ..BudgetConfig::default()
            }),
            ..RetryConfig::default()
        };
        assert!(matches!(
            RetryLayer::builder().config(cfg).build(),
            Err(ConfigError::InvalidRatio(_))
        ));
    }
}

#[test]
fn zero_max_elapsed_is_rejected() {
    assert_eq!(
        RetryLayer::builder()
            .max_elapsed(Duration::ZERO)
            .build()
            .unwrap_err(),
        ConfigError::ZeroMaxElapsed
    );
}

#[test]
fn defaults_are_valid_and_documented() {
    let cfg = RetryConfig::default();
    assert_eq!(cfg.max_attempts, 3);
    assert_eq!(
        cfg.backoff,
        Backoff::exponential(Duration::from_millis(100))
    );
    assert_eq!(cfg.backoff.cap(), Duration::from_secs(10));
    assert!(RetryLayer::builder().config(cfg).build().is_ok());
    let b = BudgetConfig::default();
    assert_eq!(
        (b.ratio, b.min_per_sec, b.ttl),
        (0.2, 10, Duration::from_secs(10))
    );
    assert!(b.build().is_ok());
}

#[cfg(feature = "serde")]
#[test]
fn config_enums_deserialize_from_snake_case_names() {
    use rampart_retry::{Jitter, OnExhausted};
    use serde::Deserialize;
    use serde::de::IntoDeserializer;
    use serde::de::value::Error;

    let j = Jitter::deserialize("decorrelated".into_deserializer()).map_err(|e: Error| e);
    assert_eq!(j.unwrap(), Jitter::Decorrelated);
    let o = OnExhausted::deserialize("last_error".into_deserializer()).map_err(|e: Error| e);
    assert_eq!(o.unwrap(), OnExhausted::LastError);
    let bad = Jitter::deserialize("sometimes".into_deserializer()).map_err(|e: Error| e);
    assert!(bad.is_err());
}

#[test]
fn default_layer_matches_the_builders_defaults() {
    let plain = format!("{:?}", RetryLayer::default());
    assert_eq!(
        plain,
        format!("{:?}", RetryLayer::builder().build().unwrap())
    );
}
