//! The config deserializes (feature `serde`), with defaults for missing
//! fields and unknown fields refused.

use rampart_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, State, TripModel, Window};
use serde::Deserialize;
use serde::de::value::{Error, MapDeserializer};

fn from_pairs<'de, T: Deserialize<'de>>(pairs: &[(&'de str, u64)]) -> Result<T, Error> {
    T::deserialize(MapDeserializer::new(pairs.iter().copied()))
}

#[test]
fn config_deserializes_with_defaults_and_builds() {
    let config: CircuitBreakerConfig = from_pairs(&[("probes", 3)]).unwrap();
    assert_eq!(config.probes, 3);
    assert_eq!(
        config.trip,
        TripModel::default(),
        "missing fields take defaults"
    );
    let layer = CircuitBreakerLayer::from_config(&config).unwrap();
    assert_eq!(layer.handle().state(), State::Closed);
    assert!(from_pairs::<CircuitBreakerConfig>(&[("probs", 3)]).is_err());
    let zero: CircuitBreakerConfig = from_pairs(&[("probes", 0)]).unwrap();
    assert_eq!(
        CircuitBreakerLayer::from_config(&zero).unwrap_err().field(),
        "probes"
    );
}

#[test]
fn an_invalid_config_is_refused_by_build() {
    let config = CircuitBreakerConfig {
        trip: TripModel::FailureRatio {
            ratio: 0.5,
            window: Window::Calls(10),
            min_calls: 20,
        },
        ..CircuitBreakerConfig::default()
    };
    let e = CircuitBreakerLayer::from_config(&config).unwrap_err();
    assert_eq!(e.field(), "min_calls");
}
