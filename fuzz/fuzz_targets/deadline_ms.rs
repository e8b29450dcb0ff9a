//! The deadline milliseconds header: total, bounded, digits only, and it
//! round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rampart_core::codec::{MAX_DURATION, encode_deadline_ms, parse_deadline_ms};

fuzz_target!(|data: &[u8]| {
    if let Some(d) = parse_deadline_ms(data) {
        assert!(d <= MAX_DURATION, "{d:?}");
        assert!(data.iter().all(u8::is_ascii_digit), "{data:?}");
        assert_eq!(parse_deadline_ms(encode_deadline_ms(d).as_bytes()), Some(d));
    }
});
