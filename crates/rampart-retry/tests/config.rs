//! Builder validation: bad settings are a typed error, never a panic.

use rampart_retry::{Backoff, Budget, BudgetConfig, ConfigError, RetryConfig, RetryLayer};
use std::time::Duration;

const S: Duration = Duration::from_secs(1);

#[test]
fn zero_attempts_is_a_config_error_naming_max_attempts() {
    let err = RetryLayer::builder().max_attempts(0).build().unwrap_err();
    assert_eq!(err.field(), "max_attempts");
    assert_eq!(err.value(), "0");
    assert!(err.to_string().contains("at least 1"), "{err}");
    // One attempt is valid: it just never retries.
    assert!(RetryLayer::http().max_attempts(1).build().is_ok());
}

#[test]
fn cap_below_base_is_a_config_error_naming_backoff_max_delay() {
    let err = RetryLayer::builder()
        .backoff(Backoff::exponential(S * 2).max_delay(S))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "backoff.max_delay");
    assert_eq!(err.value(), "1s");
    assert!(err.to_string().contains("2s"), "{err}");
}

#[test]
fn multiplier_below_one_or_not_finite_is_a_config_error() {
    for m in [0.99, 0.0, -2.0, f64::NAN, f64::INFINITY] {
        let err = RetryLayer::builder()
            .backoff(Backoff::exponential(S).multiplier(m))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "backoff.multiplier", "{m}: {err}");
    }
}

#[test]
fn budget_ratio_outside_0_to_1_is_a_config_error() {
    for r in [-0.01, 1.01, f64::NAN] {
        let err = Budget::try_new(r, 10, S).unwrap_err();
        assert_eq!(err.field(), "budget.ratio");
        let cfg = RetryConfig {
            budget: Some(BudgetConfig {
                ratio: r,
                ..BudgetConfig::default()
            }),
            ..RetryConfig::default()
        };
        let err = RetryLayer::builder().config(cfg).build().unwrap_err();
        assert_eq!(err.field(), "budget.ratio");
    }
}

#[test]
#[should_panic(expected = "invalid budget.ratio = -0.5: expected a number within 0..=1")]
fn budget_new_panics_naming_the_ratio() {
    let _ = Budget::new(-0.5, 0, S);
}

#[test]
fn zero_max_elapsed_is_a_config_error() {
    let err = RetryLayer::builder()
        .max_elapsed(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_elapsed");
}

#[test]
fn the_config_error_is_the_one_of_rampart_core() {
    fn takes_core(e: rampart_core::ConfigError) -> String {
        e.to_string()
    }
    let err: ConfigError = RetryLayer::http().max_attempts(0).build().unwrap_err();
    assert!(takes_core(err).starts_with("invalid max_attempts = 0"));
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
