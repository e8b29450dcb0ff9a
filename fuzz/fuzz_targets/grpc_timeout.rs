//! `grpc-timeout`: total, bounded, and what is encoded back parses again,
//! never longer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rampart_core::codec::{MAX_DURATION, encode_grpc_timeout, parse_grpc_timeout};
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    if let Some(d) = parse_grpc_timeout(data) {
        assert!(d <= MAX_DURATION, "{d:?}");
        assert!((2..=9).contains(&data.len()), "{data:?}");
        let again = parse_grpc_timeout(encode_grpc_timeout(d).as_bytes());
        assert!(
            again.is_some_and(|a| a <= d.max(Duration::from_nanos(1))),
            "{d:?} -> {again:?}"
        );
    }
});
