//! Header codecs: `grpc-timeout`, an HTTP deadline header in milliseconds,
//! `Retry-After` and `grpc-retry-pushback-ms`; [`DeadlineHeaders`], the one
//! place that decides which header carries a request's deadline and how it
//! is read and written; [`parse_header_name`] for configured header names.
//!
//! Every parser is total: any bytes in give `None` (or [`Pushback::Stop`],
//! or a typed error), never a panic, and no parser returns more than
//! [`MAX_DURATION`].

use http::HeaderValue;
use http::header::HeaderName;
use std::time::{Duration, SystemTime};

mod deadline;

pub use deadline::{
    DeadlineHeaders, HeaderNameError, MalformedDeadline, Written, parse_header_name,
};

/// The `grpc-timeout` request header.
pub static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
/// The `grpc-retry-pushback-ms` response header (gRPC retry design A6).
pub static GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");
/// The `grpc-status` header (or trailer).
pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// The `grpc-message` header (or trailer).
pub static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// The default HTTP deadline header: the remaining time in milliseconds.
pub static X_REQUEST_TIMEOUT_MS: HeaderName = HeaderName::from_static("x-request-timeout-ms");

/// The largest duration any parser here returns (about 31.7 years).
///
/// It keeps `Instant::now() + d` from overflowing whatever the header says.
pub const MAX_DURATION: Duration = Duration::from_secs(1_000_000_000);

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits and a unit, one of
/// `H` (hours), `M` (minutes), `S`, `m` (ms), `u` (µs), `n` (ns).
///
/// ```
/// use rampart_core::codec::parse_grpc_timeout;
/// use std::time::Duration;
/// assert_eq!(parse_grpc_timeout(b"250m"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_grpc_timeout(b"123456789S"), None); // 9 digits
/// assert_eq!(parse_grpc_timeout(b"10x"), None);
/// ```
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n = parse_digits(digits)?;
    let d = match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    };
    Some(d.min(MAX_DURATION))
}

/// Encodes a duration as a `grpc-timeout` value, in the finest unit whose
/// value fits in 8 digits, rounding down (a propagated deadline must never
/// grow on the way).
///
/// ```
/// use rampart_core::codec::{encode_grpc_timeout, parse_grpc_timeout};
/// use std::time::Duration;
/// let v = encode_grpc_timeout(Duration::from_millis(300));
/// assert_eq!(v, "300000u"); // 300000000n would need 9 digits
/// assert_eq!(parse_grpc_timeout(v.as_bytes()), Some(Duration::from_millis(300)));
/// ```
pub fn encode_grpc_timeout(d: Duration) -> HeaderValue {
    const LIMIT: u128 = 100_000_000;
    let nanos = d.as_nanos();
    let units: [(u128, u8); 6] = [
        (1, b'n'),
        (1_000, b'u'),
        (1_000_000, b'm'),
        (1_000_000_000, b'S'),
        (60_000_000_000, b'M'),
        (3_600_000_000_000, b'H'),
    ];
    let (value, unit) = units
        .iter()
        .map(|&(per, unit)| (nanos / per, unit))
        .find(|&(v, _)| v < LIMIT)
        .unwrap_or((LIMIT - 1, b'H'));
    // Digits and a unit on the stack: the header value is the one allocation.
    let mut buf = [0u8; 24];
    let mut at = buf.len() - 1;
    buf[at] = unit;
    let mut n = value as u64;
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    HeaderValue::from_bytes(&buf[at..]).expect("digits and a unit letter are a valid header value")
}

/// Parses a deadline header in milliseconds: 1 to 12 ASCII digits.
///
/// ```
/// use rampart_core::codec::parse_deadline_ms;
/// use std::time::Duration;
/// assert_eq!(parse_deadline_ms(b"1500"), Some(Duration::from_millis(1500)));
/// assert_eq!(parse_deadline_ms(b"-1"), None);
/// ```
pub fn parse_deadline_ms(value: &[u8]) -> Option<Duration> {
    if value.is_empty() || value.len() > 12 {
        return None;
    }
    Some(Duration::from_millis(parse_digits(value)?).min(MAX_DURATION))
}

/// The largest value [`encode_deadline_ms`] writes: 12 digits, the most
/// [`parse_deadline_ms`] reads (about 31.7 years).
const MAX_DEADLINE_MS: u64 = 999_999_999_999;

/// Encodes a duration as whole milliseconds, rounding down; longer than
/// 999 999 999 999 ms (12 digits, the most [`parse_deadline_ms`] reads)
/// saturates there, so any duration, `Duration::MAX` included, is written
/// as a value the other end can read.
///
/// ```
/// use rampart_core::codec::{encode_deadline_ms, parse_deadline_ms};
/// use std::time::Duration;
/// assert_eq!(encode_deadline_ms(Duration::from_micros(1999)), "1");
/// assert_eq!(encode_deadline_ms(Duration::MAX), "999999999999");
/// assert!(parse_deadline_ms(encode_deadline_ms(Duration::MAX).as_bytes()).is_some());
/// ```
pub fn encode_deadline_ms(d: Duration) -> HeaderValue {
    HeaderValue::from(
        u64::try_from(d.as_millis())
            .unwrap_or(u64::MAX)
            .min(MAX_DEADLINE_MS),
    )
}

/// Parses `Retry-After`: delta-seconds, or an HTTP-date measured from `now`
/// (a date in the past means "now", zero).
///
/// Negative numbers, fractions, and garbage give `None`. Values are bounded by
/// [`MAX_DURATION`]; a caller applies its own, much smaller, cap.
///
/// ```
/// use rampart_core::codec::parse_retry_after;
/// use std::time::{Duration, SystemTime};
/// let now = SystemTime::now();
/// assert_eq!(parse_retry_after(b"2", now), Some(Duration::from_secs(2)));
/// assert_eq!(parse_retry_after(b"-1", now), None);
/// assert_eq!(parse_retry_after(b"Wed, 21 Oct 2015 07:28:00 GMT", now), Some(Duration::ZERO));
/// ```
pub fn parse_retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let value = trim(value);
    if value.first().is_some_and(u8::is_ascii_digit) {
        // delta-seconds; many digits saturate instead of overflowing.
        if !value.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let secs = if value.len() > 10 {
            MAX_DURATION.as_secs()
        } else {
            parse_digits(value)?
        };
        return Some(Duration::from_secs(secs).min(MAX_DURATION));
    }
    let text = std::str::from_utf8(value).ok()?;
    let at = httpdate::parse_http_date(text).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_DURATION),
    )
}

/// Encodes a `Retry-After` value in whole seconds, rounding up (a client must
/// not come back before the server said).
///
/// A duration longer than [`MAX_DURATION`] saturates there (1 000 000 000
/// seconds, which fits the 32-bit integers many clients parse it into), so
/// any duration, `Duration::MAX` included, gives a value and never
/// overflows.
///
/// ```
/// use rampart_core::codec::encode_retry_after;
/// use std::time::Duration;
/// assert_eq!(encode_retry_after(Duration::from_millis(1001)), "2");
/// assert_eq!(encode_retry_after(Duration::MAX), "1000000000");
/// ```
pub fn encode_retry_after(d: Duration) -> HeaderValue {
    let d = d.min(MAX_DURATION);
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    HeaderValue::from(secs)
}

/// What a `grpc-retry-pushback-ms` header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushback {
    /// Retry after this delay.
    After(Duration),
    /// Do not retry: the value was negative or not a number.
    Stop,
}

/// Parses `grpc-retry-pushback-ms`: a non-negative integer of milliseconds is
/// a delay; anything else (negative, garbled) means do not retry, as gRPC's
/// retry design says.
///
/// ```
/// use rampart_core::codec::{parse_grpc_pushback, Pushback};
/// use std::time::Duration;
/// assert_eq!(parse_grpc_pushback(b"100"), Pushback::After(Duration::from_millis(100)));
/// assert_eq!(parse_grpc_pushback(b"-1"), Pushback::Stop);
/// ```
pub fn parse_grpc_pushback(value: &[u8]) -> Pushback {
    let value = trim(value);
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Pushback::Stop;
    }
    let ms = if value.len() > 12 {
        u64::MAX
    } else {
        parse_digits(value).unwrap_or(u64::MAX)
    };
    Pushback::After(Duration::from_millis(ms).min(MAX_DURATION))
}

/// Encodes a pushback delay in milliseconds, rounding up.
///
/// A duration longer than [`MAX_DURATION`] saturates there
/// (1 000 000 000 000 ms), so any duration, `Duration::MAX` included, gives a
/// value and never overflows.
///
/// ```
/// use rampart_core::codec::encode_grpc_pushback;
/// use std::time::Duration;
/// assert_eq!(encode_grpc_pushback(Duration::from_micros(2500)), "3");
/// assert_eq!(encode_grpc_pushback(Duration::MAX), "1000000000000");
/// ```
pub fn encode_grpc_pushback(d: Duration) -> HeaderValue {
    let d = d.min(MAX_DURATION);
    // At most 10^12: no overflow, and it fits an i64 wherever it is read.
    let ms = d.as_millis() as u64 + u64::from(!d.subsec_nanos().is_multiple_of(1_000_000));
    HeaderValue::from(ms)
}

/// `now + d`, saturating at [`MAX_DURATION`] from now instead of overflowing.
pub fn deadline_after(now: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    now.checked_add(d.min(MAX_DURATION))
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
}

fn parse_digits(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout(b"3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout(b"4m"), Some(Duration::from_millis(4)));
        assert_eq!(parse_grpc_timeout(b"5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse_grpc_timeout(b"6n"), Some(Duration::from_nanos(6)));
        assert_eq!(
            parse_grpc_timeout(b"99999999H"),
            Some(MAX_DURATION),
            "8 digits of hours is accepted but bounded"
        );
    }

    #[test]
    fn grpc_timeout_rejects_hostile_values() {
        for bad in [
            &b"123456789S"[..],
            b"999999999S",
            b"abc",
            b"",
            b"S",
            b"10",
            b"-1S",
            b"+1S",
            b" 1S",
            b"1s",
            b"1.5S",
            b"\xff\xfeS",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
        let thousand_digits = [b'9'; 1000];
        assert_eq!(parse_grpc_timeout(&thousand_digits), None);
        let mut with_unit = thousand_digits.to_vec();
        with_unit.push(b'S');
        assert_eq!(parse_grpc_timeout(&with_unit), None);
    }

    #[test]
    fn grpc_timeout_encoding_picks_the_finest_unit_that_fits() {
        assert_eq!(encode_grpc_timeout(Duration::from_nanos(5)), "5n");
        assert_eq!(encode_grpc_timeout(Duration::from_secs(1)), "1000000u");
        assert_eq!(encode_grpc_timeout(Duration::from_secs(1000)), "1000000m");
        assert_eq!(
            encode_grpc_timeout(Duration::from_secs(3600 * 24 * 365)),
            "31536000S"
        );
        assert_eq!(encode_grpc_timeout(Duration::MAX), "99999999H");
    }

    #[test]
    fn deadline_ms_bounds() {
        assert_eq!(parse_deadline_ms(b"0"), Some(Duration::ZERO));
        assert_eq!(parse_deadline_ms(b""), None);
        assert_eq!(parse_deadline_ms(b"1e3"), None);
        assert_eq!(parse_deadline_ms(b"9999999999999"), None);
        assert_eq!(encode_deadline_ms(Duration::from_micros(1999)), "1");
        assert_eq!(encode_deadline_ms(MAX_DURATION), "999999999999");
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 21 Oct 2015 07:28:00
        assert_eq!(parse_retry_after(b"0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(b" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after(b"99999999999999999999999", now),
            Some(MAX_DURATION)
        );
        assert_eq!(parse_retry_after(b"-1", now), None);
        assert_eq!(parse_retry_after(b"1.5", now), None);
        assert_eq!(parse_retry_after(b"", now), None);
        assert_eq!(parse_retry_after(b"\xff\x00", now), None);
        assert_eq!(
            parse_retry_after(b"Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after(b"Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(encode_retry_after(Duration::from_millis(1001)), "2");
    }

    #[test]
    fn pushback_negative_or_garbled_means_stop() {
        assert_eq!(parse_grpc_pushback(b"0"), Pushback::After(Duration::ZERO));
        assert_eq!(
            parse_grpc_pushback(b"250"),
            Pushback::After(Duration::from_millis(250))
        );
        assert_eq!(parse_grpc_pushback(b"-1"), Pushback::Stop);
        assert_eq!(parse_grpc_pushback(b"soon"), Pushback::Stop);
        assert_eq!(parse_grpc_pushback(b""), Pushback::Stop);
        assert_eq!(
            parse_grpc_pushback(b"99999999999999999999"),
            Pushback::After(MAX_DURATION)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_after_never_overflows() {
        let now = tokio::time::Instant::now();
        let far = deadline_after(now, Duration::MAX);
        assert!(far > now);
    }

    #[test]
    fn encoders_saturate_on_huge_durations_and_their_output_parses_back() {
        let huge = [
            Duration::MAX,
            Duration::new(u64::MAX, 0),
            Duration::new(u64::MAX - 1, 999_999_999),
            MAX_DURATION + Duration::from_nanos(1),
            MAX_DURATION,
        ];
        for d in huge {
            assert_eq!(encode_retry_after(d), "1000000000", "{d:?}");
            assert_eq!(
                parse_retry_after(encode_retry_after(d).as_bytes(), SystemTime::now()),
                Some(MAX_DURATION)
            );
            assert_eq!(encode_grpc_pushback(d), "1000000000000", "{d:?}");
            assert_eq!(
                parse_grpc_pushback(encode_grpc_pushback(d).as_bytes()),
                Pushback::After(MAX_DURATION)
            );
            assert_eq!(encode_deadline_ms(d), "999999999999", "{d:?}");
            assert!(parse_deadline_ms(encode_deadline_ms(d).as_bytes()).is_some());
            let back = parse_grpc_timeout(encode_grpc_timeout(d).as_bytes()).unwrap();
            assert!(back <= d && back <= MAX_DURATION, "{d:?}");
        }
        assert_eq!(encode_grpc_timeout(Duration::MAX), "99999999H");
    }

    /// Any duration, from a nanosecond to `Duration::MAX`, spread over
    /// every order of magnitude.
    fn any_duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            (0u64..=u64::MAX, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
            (0u32..64, 0u32..1_000_000_000)
                .prop_map(|(bits, n)| Duration::new(u64::MAX >> bits, n)),
            (0u64..=u64::MAX).prop_map(Duration::from_nanos),
            Just(Duration::MAX),
            Just(Duration::ZERO),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { rng_seed: proptest::test_runner::RngSeed::Fixed(15), cases: 2048, ..ProptestConfig::default() })]
        #[test]
        fn every_encoder_is_total_and_its_output_parses_within_bounds(d in any_duration()) {
            // No panic, no wrap: each value parses back, never above the
            // bound, and never shorter than the duration (up to the bound)
            // for the hints, never longer for the timeouts.
            let ra = parse_retry_after(encode_retry_after(d).as_bytes(), SystemTime::now()).unwrap();
            prop_assert!(ra >= d.min(MAX_DURATION) && ra <= MAX_DURATION);
            prop_assert!(ra.saturating_sub(d) < Duration::from_secs(1));
            let Pushback::After(pb) = parse_grpc_pushback(encode_grpc_pushback(d).as_bytes()) else {
                return Err(TestCaseError::fail("pushback did not parse back"));
            };
            prop_assert!(pb >= d.min(MAX_DURATION) && pb <= MAX_DURATION);
            prop_assert!(pb.saturating_sub(d) < Duration::from_millis(1));
            let ms = parse_deadline_ms(encode_deadline_ms(d).as_bytes()).unwrap();
            prop_assert!(ms <= d && ms <= MAX_DURATION);
            let gt = parse_grpc_timeout(encode_grpc_timeout(d).as_bytes()).unwrap();
            prop_assert!(gt <= d && gt <= MAX_DURATION);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { rng_seed: proptest::test_runner::RngSeed::Fixed(13), ..ProptestConfig::default() })]
        #[test]
        fn parsers_are_total_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let now = SystemTime::now();
            if let Some(d) = parse_grpc_timeout(&bytes) { prop_assert!(d <= MAX_DURATION); }
            if let Some(d) = parse_deadline_ms(&bytes) { prop_assert!(d <= MAX_DURATION); }
            if let Some(d) = parse_retry_after(&bytes, now) { prop_assert!(d <= MAX_DURATION); }
            if let Pushback::After(d) = parse_grpc_pushback(&bytes) { prop_assert!(d <= MAX_DURATION); }
        }

        #[test]
        fn grpc_timeout_loses_under_one_unit_at_a_unit_boundary(n in 0u64..1000) {
            // 10^8 ms + n ms cannot be written in ms: seconds lose up to 1 s.
            let d = Duration::from_millis(100_000_000 + n);
            let back = parse_grpc_timeout(encode_grpc_timeout(d).as_bytes()).unwrap();
            prop_assert_eq!(back, Duration::from_secs(100_000));
        }

        #[test]
        fn grpc_timeout_round_trips_without_growing(nanos in 0u64..1_000_000_000_000_000_000) {
            let d = Duration::from_nanos(nanos);
            let v = encode_grpc_timeout(d);
            let back = parse_grpc_timeout(v.as_bytes()).expect("encoded value parses");
            prop_assert!(back <= d);
            // The finest unit that fits loses less than one unit, and a value
            // that needed a coarser unit (at most 1000 times the finer one)
            // has at least 10^8 / 1000 of them.
            prop_assert!(d.saturating_sub(back) <= d / 100_000 + Duration::from_nanos(1));
        }

        #[test]
        fn grpc_timeout_exact_for_small_values(n in 0u64..100_000_000, unit in 0usize..6) {
            let (u, d) = [
                (b'n', Duration::from_nanos(n)),
                (b'u', Duration::from_micros(n)),
                (b'm', Duration::from_millis(n)),
                (b'S', Duration::from_secs(n)),
                (b'M', Duration::from_secs(n * 60)),
                (b'H', Duration::from_secs(n * 3600)),
            ][unit];
            let text = format!("{n}{}", u as char);
            prop_assert_eq!(parse_grpc_timeout(text.as_bytes()), Some(d.min(MAX_DURATION)));
        }

        #[test]
        fn deadline_ms_round_trips(ms in 0u64..1_000_000_000_000) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse_deadline_ms(encode_deadline_ms(d).as_bytes()), Some(d.min(MAX_DURATION)));
        }

        #[test]
        fn retry_after_round_trips(secs in 0u64..1_000_000_000) {
            let d = Duration::from_secs(secs);
            prop_assert_eq!(parse_retry_after(encode_retry_after(d).as_bytes(), SystemTime::now()), Some(d));
        }

        #[test]
        fn pushback_round_trips(ms in 0u64..1_000_000_000_000) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse_grpc_pushback(encode_grpc_pushback(d).as_bytes()), Pushback::After(d));
        }
    }
}
