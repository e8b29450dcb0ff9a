//! `Retry-After` (delta seconds or an HTTP date) at any "now": total and
//! bounded, and an encoded delay parses back to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rampart_core::codec::{MAX_DURATION, encode_retry_after, parse_retry_after};
use std::time::{Duration, SystemTime};

fuzz_target!(|data: &[u8]| {
    // The first 4 bytes pick "now" (any second from 1970 to 2106).
    let (now, value) = match data.split_first_chunk::<4>() {
        Some((secs, rest)) => (u32::from_le_bytes(*secs), rest),
        None => (1_700_000_000, data),
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(now));
    if let Some(d) = parse_retry_after(value, now) {
        assert!(d <= MAX_DURATION, "{d:?}");
        let secs = Duration::from_secs(d.as_secs());
        assert_eq!(
            parse_retry_after(encode_retry_after(secs).as_bytes(), now),
            Some(secs)
        );
    }
});
