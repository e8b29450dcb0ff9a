//! `grpc-retry-pushback-ms`: total; a delay only for (trimmed) digits, and
//! bounded; anything else means "do not retry".
#![no_main]
use libfuzzer_sys::fuzz_target;
use rampart_core::codec::{MAX_DURATION, Pushback, parse_grpc_pushback};

fuzz_target!(|data: &[u8]| {
    if let Pushback::After(d) = parse_grpc_pushback(data) {
        assert!(d <= MAX_DURATION, "{d:?}");
        let digits: Vec<u8> = data
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        assert!(
            !digits.is_empty() && digits.iter().all(u8::is_ascii_digit),
            "{data:?}"
        );
    }
});
