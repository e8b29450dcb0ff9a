//! Configs deserialize (feature `serde`), with defaults for missing fields
//! and unknown fields refused.

use rampart_context::{PropagateConfig, PropagateContextLayer, RequestIdConfig, RequestIdLayer};
use serde::Deserialize;
use serde::de::value::{Error, MapDeserializer};

fn from_pairs<'de, T: Deserialize<'de>>(pairs: &[(&'de str, &'de str)]) -> Result<T, Error> {
    T::deserialize(MapDeserializer::new(pairs.iter().copied()))
}

#[test]
fn request_id_config_deserializes_with_defaults() {
    let config: RequestIdConfig = from_pairs(&[("header", "X-Correlation-Id")]).unwrap();
    assert!(config.accept_incoming, "missing fields take their defaults");
    let layer = RequestIdLayer::from_config(&config).unwrap();
    assert_eq!(layer.header_name(), "x-correlation-id");
    assert!(from_pairs::<RequestIdConfig>(&[("headr", "x")]).is_err());
}

#[test]
fn propagate_config_deserializes_with_defaults() {
    let config: PropagateConfig = from_pairs(&[("deadline_header", "x-timeout-ms")]).unwrap();
    assert!(config.request_id);
    assert!(
        !config.deadline,
        "naming a header does not switch deadlines on"
    );
    let layer = PropagateContextLayer::from_config(&config).unwrap();
    assert_eq!(layer.request_id_header().unwrap(), "x-request-id");
    assert!(layer.deadline_header().is_none());
    assert!(from_pairs::<PropagateConfig>(&[("overwrite_all", "x")]).is_err());
}
