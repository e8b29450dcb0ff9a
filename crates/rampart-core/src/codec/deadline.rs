//! [`DeadlineHeaders`]: which request headers carry a caller's deadline, how
//! a server reads it and how a client writes the time that remains.

use super::{
    GRPC_TIMEOUT, X_REQUEST_TIMEOUT_MS, encode_deadline_ms, encode_grpc_timeout, parse_deadline_ms,
    parse_grpc_timeout,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::fmt;
use std::time::Duration;

/// Which request headers carry the caller's remaining time, read by servers
/// and written by clients, so that both ends of a call agree:
///
/// - gRPC requests (`content-type: application/grpc…`, see
///   [`is_grpc_request`](crate::grpc::is_grpc_request)): `grpc-timeout`, 1
///   to 8 digits and a unit, as the gRPC spec says;
/// - other requests: an HTTP header holding whole milliseconds (1 to 12
///   digits), by default `x-request-timeout-ms`.
///
/// Each kind can be switched off. The same rules hold wherever rampart
/// reads or writes a deadline (`rampart-timeout`'s `DeadlineLayer` and
/// `PropagateDeadlineLayer`, `rampart-context`'s `PropagateContextLayer`):
///
/// - **Reading** ([`read`](Self::read)) tells an absent header
///   (`Ok(None)`) from a valid one (`Ok(Some(timeout))`) and from one that
///   cannot be used ([`MalformedDeadline`]: unparsable, empty, or sent more
///   than once). Parsing is total: no value panics, none yields more than
///   [`MAX_DURATION`](super::MAX_DURATION).
/// - **Writing** ([`write`](Self::write)) puts the remaining time, rounded
///   *down*, so a deadline never grows on the way; a single well-formed
///   value already on the request that is not longer is kept (the earliest
///   deadline wins); a longer, garbled or repeated one is replaced by one
///   value.
/// - **An expired deadline** is written as zero, never left out: a request
///   without the header would give the next hop its whole default budget,
///   more time than the caller has. A receiver treats zero as expired on
///   arrival. Whether such a request should be sent at all is the caller's
///   policy, not the header's: [`reads_as_expired`](Self::reads_as_expired)
///   tells it (a layer that can fail refuses to send it with
///   `DeadlineExceeded`; an infallible one sends the zero).
///
/// ```
/// use rampart_core::codec::{DeadlineHeaders, MalformedDeadline};
/// use http::HeaderMap;
/// use std::time::Duration;
///
/// let deadline = DeadlineHeaders::new().try_http_header("x-deadline-ms")?;
/// let mut headers = HeaderMap::new();
/// deadline.write(&mut headers, false, Duration::from_micros(1_500_900));
/// assert_eq!(headers["x-deadline-ms"], "1500"); // rounded down
/// assert_eq!(deadline.read(&headers, false), Ok(Some(Duration::from_millis(1500))));
/// assert_eq!(deadline.read(&headers, true), Ok(None)); // gRPC reads grpc-timeout
///
/// headers.insert("x-deadline-ms", "soon".parse()?);
/// assert_eq!(deadline.read(&headers, false), Err(MalformedDeadline));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadlineHeaders {
    grpc_timeout: bool,
    http_header: Option<HeaderName>,
}

impl Default for DeadlineHeaders {
    fn default() -> Self {
        DeadlineHeaders {
            grpc_timeout: true,
            http_header: Some(X_REQUEST_TIMEOUT_MS.clone()),
        }
    }
}

/// A deadline header that cannot be used: unparsable, empty, or sent more
/// than once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MalformedDeadline;

impl fmt::Display for MalformedDeadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed deadline header")
    }
}

impl std::error::Error for MalformedDeadline {}

/// What [`DeadlineHeaders::write`] (or [`overwrite`](DeadlineHeaders::overwrite))
/// did to a request's headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// The remaining time (rounded down, zero if it expired) was written.
    Remaining,
    /// A well-formed value already there was not longer, and was kept.
    KeptExisting,
    /// Requests of this kind carry no deadline header: nothing was written.
    NoHeader,
}

/// One way of writing a timeout in a header.
struct Codec {
    parse: fn(&[u8]) -> Option<Duration>,
    encode: fn(Duration) -> HeaderValue,
    /// Less than this is written as zero.
    unit: Duration,
}

const GRPC: Codec = Codec {
    parse: parse_grpc_timeout,
    encode: encode_grpc_timeout,
    unit: Duration::from_nanos(1),
};

const MILLIS: Codec = Codec {
    parse: parse_deadline_ms,
    encode: encode_deadline_ms,
    unit: Duration::from_millis(1),
};

impl DeadlineHeaders {
    /// `grpc-timeout` on gRPC requests, `x-request-timeout-ms` on others.
    pub fn new() -> Self {
        DeadlineHeaders::default()
    }

    /// Uses `name` for the HTTP deadline (milliseconds) instead. The name is
    /// taken as it is; for a name from configuration use
    /// [`try_http_header`](Self::try_http_header), which checks it.
    pub fn http_header(mut self, name: HeaderName) -> Self {
        self.http_header = Some(name);
        self
    }

    /// [`http_header`](Self::http_header) from a string, checked by
    /// [`parse_header_name`]: a valid name, not one HTTP framing or gRPC owns.
    pub fn try_http_header(self, name: &str) -> Result<Self, HeaderNameError> {
        Ok(self.http_header(parse_header_name(name)?))
    }

    /// No HTTP deadline header: non-gRPC requests carry no deadline.
    pub fn without_http_header(mut self) -> Self {
        self.http_header = None;
        self
    }

    /// No `grpc-timeout`: gRPC requests carry no deadline.
    pub fn without_grpc_timeout(mut self) -> Self {
        self.grpc_timeout = false;
        self
    }

    /// The HTTP deadline header, if any.
    pub fn http_header_name(&self) -> Option<&HeaderName> {
        self.http_header.as_ref()
    }

    /// Whether gRPC requests carry `grpc-timeout`.
    pub fn reads_grpc_timeout(&self) -> bool {
        self.grpc_timeout
    }

    /// The header a request of this kind (`grpc`: a gRPC one) carries its
    /// deadline in, if any.
    pub fn header_for(&self, grpc: bool) -> Option<&HeaderName> {
        self.codec_for(grpc).map(|(name, _)| name)
    }

    fn codec_for(&self, grpc: bool) -> Option<(&HeaderName, &'static Codec)> {
        if grpc {
            self.grpc_timeout.then_some((&GRPC_TIMEOUT, &GRPC))
        } else {
            self.http_header.as_ref().map(|name| (name, &MILLIS))
        }
    }

    /// The caller's timeout on a request of this kind: `Ok(None)` when the
    /// header is absent (or this kind carries none), `Err` when it is there
    /// but unusable (unparsable, empty, or repeated).
    pub fn read(
        &self,
        headers: &HeaderMap,
        grpc: bool,
    ) -> Result<Option<Duration>, MalformedDeadline> {
        match self.codec_for(grpc) {
            Some((name, codec)) => read_one(headers, name, codec),
            None => Ok(None),
        }
    }

    /// Whether `remaining` reads as an expired deadline on a request of
    /// this kind: less than one unit of its header (a nanosecond for
    /// `grpc-timeout`, a millisecond for the HTTP header), which is written
    /// as zero; with no header for this kind, exactly zero.
    pub fn reads_as_expired(&self, grpc: bool, remaining: Duration) -> bool {
        let unit = self
            .codec_for(grpc)
            .map_or(Duration::from_nanos(1), |(_, codec)| codec.unit);
        remaining < unit
    }

    /// Writes `remaining` (rounded down; zero when it expired) on a request
    /// of this kind, keeping a single well-formed value already there that
    /// is not longer. A longer, garbled or repeated value is replaced by
    /// one value.
    pub fn write(&self, headers: &mut HeaderMap, grpc: bool, remaining: Duration) -> Written {
        self.put(headers, grpc, remaining, true)
    }

    /// Like [`write`](Self::write), but replaces whatever value is there,
    /// even a shorter one.
    pub fn overwrite(&self, headers: &mut HeaderMap, grpc: bool, remaining: Duration) -> Written {
        self.put(headers, grpc, remaining, false)
    }

    fn put(
        &self,
        headers: &mut HeaderMap,
        grpc: bool,
        remaining: Duration,
        keep_shorter: bool,
    ) -> Written {
        let Some((name, codec)) = self.codec_for(grpc) else {
            return Written::NoHeader;
        };
        if keep_shorter
            && let Ok(Some(there)) = read_one(headers, name, codec)
            && there <= remaining
        {
            return Written::KeptExisting;
        }
        headers.insert(name, (codec.encode)(remaining));
        Written::Remaining
    }
}

/// The value of `name`: absent, one that parses, or malformed.
fn read_one(
    headers: &HeaderMap,
    name: &HeaderName,
    codec: &Codec,
) -> Result<Option<Duration>, MalformedDeadline> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(MalformedDeadline);
    }
    (codec.parse)(value.as_bytes())
        .map(Some)
        .ok_or(MalformedDeadline)
}

/// Why a configured header name was refused ([`parse_header_name`]).
///
/// `rampart-context` re-exports it as its `ConfigError`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderNameError {
    /// The text is not a valid HTTP header name.
    InvalidHeaderName(String),
    /// The header is one HTTP framing or gRPC owns (`content-length`,
    /// `host`, `te`, `grpc-*`, …): writing a request id or a deadline there
    /// would corrupt the message.
    ReservedHeader(HeaderName),
}

impl fmt::Display for HeaderNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderNameError::InvalidHeaderName(name) => {
                write!(f, "{name:?} is not a valid HTTP header name")
            }
            HeaderNameError::ReservedHeader(name) => write!(
                f,
                "header {name} is owned by HTTP or gRPC and cannot carry a request id or deadline"
            ),
        }
    }
}

impl std::error::Error for HeaderNameError {}

impl From<HeaderNameError> for crate::ConfigError {
    fn from(e: HeaderNameError) -> Self {
        match e {
            HeaderNameError::InvalidHeaderName(name) => {
                crate::ConfigError::new("header", name, "a valid HTTP header name")
            }
            HeaderNameError::ReservedHeader(name) => crate::ConfigError::new(
                "header",
                name.as_str(),
                "a header HTTP framing and gRPC do not own (not content-length, host, te, grpc-*, …)",
            ),
        }
    }
}

/// Headers HTTP framing or gRPC own; none may be configured to carry a
/// request id or a deadline.
const RESERVED: &[&str] = &[
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Parses a header name from configuration (case-insensitive; the result is
/// lower-case) and refuses the ones HTTP framing or gRPC own: `connection`,
/// `content-length`, `content-type`, `host`, `te`, `transfer-encoding`, …
/// and every `grpc-*` header.
///
/// ```
/// use rampart_core::codec::{HeaderNameError, parse_header_name};
/// assert_eq!(parse_header_name("X-Deadline-Ms").unwrap(), "x-deadline-ms");
/// assert!(matches!(parse_header_name("bad name"), Err(HeaderNameError::InvalidHeaderName(_))));
/// assert!(matches!(parse_header_name("grpc-timeout"), Err(HeaderNameError::ReservedHeader(_))));
/// ```
pub fn parse_header_name(name: &str) -> Result<HeaderName, HeaderNameError> {
    let parsed = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| HeaderNameError::InvalidHeaderName(name.to_owned()))?;
    let s = parsed.as_str();
    if RESERVED.contains(&s) || s.starts_with("grpc-") {
        Err(HeaderNameError::ReservedHeader(parsed))
    } else {
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn with(name: &str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn each_request_kind_uses_its_own_header() {
        let d = DeadlineHeaders::new();
        assert_eq!(d.header_for(true), Some(&GRPC_TIMEOUT));
        assert_eq!(d.header_for(false), Some(&X_REQUEST_TIMEOUT_MS));
        let mut both = with("grpc-timeout", &["100m"]);
        both.insert("x-request-timeout-ms", HeaderValue::from_static("200"));
        assert_eq!(d.read(&both, true), Ok(Some(ms(100))));
        assert_eq!(d.read(&both, false), Ok(Some(ms(200))));

        let custom = DeadlineHeaders::new()
            .try_http_header("X-Deadline-Ms")
            .unwrap();
        assert_eq!(custom.http_header_name().unwrap(), "x-deadline-ms");
        assert_eq!(custom.read(&both, false), Ok(None));

        let off = DeadlineHeaders::new()
            .without_grpc_timeout()
            .without_http_header();
        assert!(!off.reads_grpc_timeout());
        assert_eq!(off.header_for(true), None);
        assert_eq!(off.header_for(false), None);
        assert_eq!(off.read(&both, true), Ok(None));
        assert_eq!(off.read(&both, false), Ok(None));
    }

    #[test]
    fn reading_tells_absent_valid_and_malformed_apart() {
        let d = DeadlineHeaders::new();
        assert_eq!(d.read(&HeaderMap::new(), true), Ok(None));
        assert_eq!(
            d.read(&with("grpc-timeout", &["5S"]), true),
            Ok(Some(ms(5000)))
        );
        assert_eq!(
            d.read(&with("grpc-timeout", &["0n"]), true),
            Ok(Some(Duration::ZERO))
        );
        for bad in [&["5s"][..], &[""], &["1S", "1S"], &["123456789S"], &["-1S"]] {
            assert_eq!(
                d.read(&with("grpc-timeout", bad), true),
                Err(MalformedDeadline),
                "{bad:?}"
            );
        }
        for bad in [&["1e3"][..], &[""], &["10", "20"], &["9999999999999"]] {
            assert_eq!(
                d.read(&with("x-request-timeout-ms", bad), false),
                Err(MalformedDeadline),
                "{bad:?}"
            );
        }
        assert_eq!(MalformedDeadline.to_string(), "malformed deadline header");
    }

    #[test]
    fn writing_rounds_down_and_keeps_a_shorter_value() {
        let d = DeadlineHeaders::new();
        let mut h = HeaderMap::new();
        assert_eq!(d.write(&mut h, true, ms(300)), Written::Remaining);
        assert_eq!(h["grpc-timeout"], "300000u");
        assert_eq!(
            d.write(&mut h, false, Duration::from_micros(1999)),
            Written::Remaining
        );
        assert_eq!(h["x-request-timeout-ms"], "1");

        for (there, expected, outcome) in [
            ("200m", "200m", Written::KeptExisting),
            ("1S", "1S", Written::KeptExisting), // equal: kept
            ("5S", "1000000u", Written::Remaining),
            ("garbage", "1000000u", Written::Remaining),
        ] {
            let mut h = with("grpc-timeout", &[there]);
            assert_eq!(d.write(&mut h, true, ms(1000)), outcome, "{there}");
            assert_eq!(h["grpc-timeout"], expected, "{there}");
        }
        // A repeated value is malformed: replaced by one value.
        let mut h = with("x-request-timeout-ms", &["10", "20"]);
        assert_eq!(d.write(&mut h, false, ms(1000)), Written::Remaining);
        assert_eq!(h.get_all("x-request-timeout-ms").iter().count(), 1);
        assert_eq!(h["x-request-timeout-ms"], "1000");
        // overwrite replaces even a shorter one.
        let mut h = with("x-request-timeout-ms", &["10"]);
        assert_eq!(d.overwrite(&mut h, false, ms(1000)), Written::Remaining);
        assert_eq!(h["x-request-timeout-ms"], "1000");
    }

    #[test]
    fn an_expired_deadline_is_written_as_zero_and_reads_as_expired() {
        let d = DeadlineHeaders::new();
        let mut h = with("grpc-timeout", &["5S"]);
        assert!(d.reads_as_expired(true, Duration::ZERO));
        assert_eq!(d.write(&mut h, true, Duration::ZERO), Written::Remaining);
        assert_eq!(h["grpc-timeout"], "0n");
        assert!(!d.reads_as_expired(true, Duration::from_nanos(1)));

        let mut h = HeaderMap::new();
        assert!(d.reads_as_expired(false, Duration::from_micros(999)));
        assert!(!d.reads_as_expired(false, ms(1)));
        d.write(&mut h, false, Duration::from_micros(999));
        assert_eq!(h["x-request-timeout-ms"], "0");
        assert_eq!(d.read(&h, false), Ok(Some(Duration::ZERO)));

        // No header for the kind: only zero is expired, nothing is written.
        let off = DeadlineHeaders::new().without_http_header();
        assert!(off.reads_as_expired(false, Duration::ZERO));
        assert!(!off.reads_as_expired(false, Duration::from_micros(1)));
        let mut h = HeaderMap::new();
        assert_eq!(off.write(&mut h, false, Duration::ZERO), Written::NoHeader);
        assert!(h.is_empty());
    }

    #[test]
    fn configured_header_names_are_lowercased_and_checked() {
        assert_eq!(
            parse_header_name("X-Correlation-Id").unwrap(),
            "x-correlation-id"
        );
        assert_eq!(
            parse_header_name("bad header"),
            Err(HeaderNameError::InvalidHeaderName("bad header".into()))
        );
        assert!(matches!(
            parse_header_name(""),
            Err(HeaderNameError::InvalidHeaderName(_))
        ));
        for reserved in [
            "Content-Length",
            "host",
            "te",
            "grpc-timeout",
            "grpc-status",
        ] {
            assert!(
                matches!(
                    parse_header_name(reserved),
                    Err(HeaderNameError::ReservedHeader(_))
                ),
                "{reserved}"
            );
        }
        assert!(matches!(
            DeadlineHeaders::new().try_http_header("content-type"),
            Err(HeaderNameError::ReservedHeader(_))
        ));
        let err = parse_header_name("transfer-encoding").unwrap_err();
        assert!(err.to_string().contains("transfer-encoding"));
    }

    /// What may already be on a request.
    #[derive(Clone, Debug)]
    enum There {
        Nothing,
        /// One valid value, this many microseconds off the remaining time
        /// (either side, so the keep-the-shorter boundary is exercised).
        Near(i64),
        /// Arbitrary bytes: garbage, valid values, or a repeated header.
        Bytes(Vec<Vec<u8>>),
    }

    fn there() -> impl Strategy<Value = There> {
        prop_oneof![
            Just(There::Nothing),
            (-3_000i64..3_000).prop_map(There::Near),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..16), 1..3)
                .prop_map(There::Bytes),
        ]
    }

    proptest! {
        // Seeded: the same cases on every run.
        #![proptest_config(ProptestConfig {
            cases: 512,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x0dea_d11e),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn reading_is_total_and_bounded(
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..3),
            grpc in any::<bool>(),
        ) {
            let d = DeadlineHeaders::new();
            let name = d.header_for(grpc).unwrap().clone();
            let mut h = HeaderMap::new();
            for v in &values {
                if let Ok(v) = HeaderValue::from_bytes(v) {
                    h.append(&name, v);
                }
            }
            let count = h.get_all(&name).iter().count();
            match d.read(&h, grpc) {
                Ok(None) => prop_assert_eq!(count, 0),
                Ok(Some(t)) => {
                    prop_assert_eq!(count, 1);
                    prop_assert!(t <= super::super::MAX_DURATION);
                }
                Err(MalformedDeadline) => prop_assert!(count >= 1),
            }
        }

        /// After a write the request carries one value, never longer than
        /// the remaining time nor than a valid value that was there; it
        /// reads as zero exactly when `reads_as_expired` says so.
        #[test]
        fn a_written_deadline_never_grows(
            there in there(),
            remaining_us in 0u64..10_000_000,
            grpc in any::<bool>(),
        ) {
            let d = DeadlineHeaders::new();
            let name = d.header_for(grpc).unwrap().clone();
            let remaining = Duration::from_micros(remaining_us);
            let mut h = HeaderMap::new();
            match there {
                There::Nothing => {}
                There::Near(delta) => {
                    let us = remaining_us.saturating_add_signed(delta);
                    let encode = if grpc { encode_grpc_timeout } else { encode_deadline_ms };
                    h.insert(&name, encode(Duration::from_micros(us)));
                }
                There::Bytes(values) => {
                    for v in values.iter().filter_map(|v| HeaderValue::from_bytes(v).ok()) {
                        h.append(&name, v);
                    }
                }
            }
            let before = d.read(&h, grpc);
            let outcome = d.write(&mut h, grpc, remaining);
            prop_assert_eq!(h.get_all(&name).iter().count(), 1);
            let after = d.read(&h, grpc).unwrap().unwrap();
            prop_assert!(after <= remaining, "grew: {:?} > {:?}", after, remaining);
            match before {
                Ok(Some(b)) if b <= remaining => {
                    prop_assert_eq!(outcome, Written::KeptExisting);
                    prop_assert_eq!(after, b);
                }
                _ => prop_assert_eq!(outcome, Written::Remaining),
            }
            if outcome == Written::Remaining {
                prop_assert_eq!(after.is_zero(), d.reads_as_expired(grpc, remaining));
                // Rounded down by less than one unit of the header.
                let unit = if grpc { Duration::from_nanos(1) } else { Duration::from_millis(1) };
                prop_assert!(remaining.saturating_sub(after) < unit);
            }
        }
    }
}
