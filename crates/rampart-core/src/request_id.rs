//! Request ids: validation of ids that arrive from outside, and UUIDv7
//! generation.

use http::HeaderValue;
use http::header::HeaderName;
use std::fmt;

/// The conventional request id header, `x-request-id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id accepted from outside, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// A validated request id: 1 to [`MAX_REQUEST_ID_LEN`] bytes of visible
/// ASCII, without quotes, backslashes or the separators that break log lines
/// and structured fields (`"` `'` `\` `` ` `` `,` `;` `<` `>` `(` `)` `[` `]`
/// `{` `}`).
///
/// Cloning is cheap: the bytes are shared (a [`HeaderValue`] inside), so the
/// id can be put in a header without copying.
///
/// ```
/// use rampart_core::RequestId;
/// assert!(RequestId::parse(b"req-1").is_ok());
/// assert!(RequestId::parse(b"evil\r\nSet-Cookie: x").is_err());
/// let id = RequestId::new_v7();
/// assert_eq!(id.as_str().len(), 36);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(HeaderValue);

/// Why a request id was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidRequestId {
    /// Zero bytes.
    Empty,
    /// More than [`MAX_REQUEST_ID_LEN`] bytes.
    TooLong,
    /// A byte outside the allowed set (control, space, non-ASCII, separator).
    BadByte,
}

impl fmt::Display for InvalidRequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvalidRequestId::Empty => "request id is empty",
            InvalidRequestId::TooLong => "request id is longer than 128 bytes",
            InvalidRequestId::BadByte => {
                "request id has a byte outside visible ASCII or a separator"
            }
        })
    }
}

impl std::error::Error for InvalidRequestId {}

/// True for the bytes a request id may contain.
pub const fn is_request_id_byte(b: u8) -> bool {
    matches!(b, 0x21..=0x7e)
        && !matches!(
            b,
            b'"' | b'\''
                | b'\\'
                | b'`'
                | b','
                | b';'
                | b'<'
                | b'>'
                | b'('
                | b')'
                | b'['
                | b']'
                | b'{'
                | b'}'
        )
}

/// [`is_request_id_byte`] for every byte value: one load per byte when
/// validating (a request id is checked on every request).
static ID_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = is_request_id_byte(b as u8);
        b += 1;
    }
    table
};

#[inline]
fn validate(bytes: &[u8]) -> Result<(), InvalidRequestId> {
    if bytes.is_empty() {
        Err(InvalidRequestId::Empty)
    } else if bytes.len() > MAX_REQUEST_ID_LEN {
        Err(InvalidRequestId::TooLong)
    } else if !bytes
        .iter()
        .fold(true, |ok, &b| ok & ID_BYTES[usize::from(b)])
    {
        Err(InvalidRequestId::BadByte)
    } else {
        Ok(())
    }
}

impl RequestId {
    /// Validates and copies `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<RequestId, InvalidRequestId> {
        validate(bytes)?;
        Ok(RequestId(
            HeaderValue::from_bytes(bytes).map_err(|_| InvalidRequestId::BadByte)?,
        ))
    }

    /// Validates a header value, sharing its bytes (no copy).
    #[inline]
    pub fn from_header(value: &HeaderValue) -> Result<RequestId, InvalidRequestId> {
        validate(value.as_bytes())?;
        Ok(RequestId(value.clone()))
    }

    /// A new UUIDv7 (ordered by millisecond), hyphenated lower-case (36
    /// bytes): 48 bits of Unix milliseconds, then 74 random bits from the
    /// thread's CSPRNG (`rand`'s `ThreadRng`, ChaCha12 seeded by the OS), so
    /// generating an id takes no lock and no system call.
    ///
    /// Ids are cut from a per-thread buffer shared by up to 64 ids (as hyper
    /// cuts header values from its read buffer): one allocation per 64 ids,
    /// and clones are reference-count increments. A long-lived id keeps its
    /// 2.3 KiB buffer alive.
    pub fn new_v7() -> RequestId {
        use rand::RngCore;
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut rng = rand::rng();
        let text = v7_text(millis, rng.next_u64(), rng.next_u64());
        let bytes = ID_BUFFER
            .try_with(|buf| carve(&mut buf.borrow_mut(), &text))
            .unwrap_or_else(|_| bytes::Bytes::copy_from_slice(&text));
        RequestId(HeaderValue::from_maybe_shared(bytes).expect("a UUID is a valid header value"))
    }

    /// The id as text (always ASCII).
    #[inline]
    pub fn as_str(&self) -> &str {
        // Validation admits visible ASCII only.
        self.0.to_str().unwrap_or_default()
    }

    /// The id as a header value (a cheap clone).
    #[inline]
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

/// Two lower-case hex digits for every byte value: one load per byte when
/// writing an id.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut table = [[0u8; 2]; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = [DIGITS[b >> 4], DIGITS[b & 0xf]];
        b += 1;
    }
    table
};

/// The hyphenated text of the UUIDv7 (RFC 9562) with Unix time `millis`
/// (its low 48 bits), `rand_a` from the low 12 bits of `r1` and `rand_b` from
/// the low 62 bits of `r2`.
fn v7_text(millis: u64, r1: u64, r2: u64) -> [u8; 36] {
    let hi = (millis << 16) | 0x7000 | (r1 & 0x0fff);
    let lo = (r2 & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&hi.to_be_bytes());
    raw[8..].copy_from_slice(&lo.to_be_bytes());
    let mut text = [b'-'; 36];
    let mut at = 0;
    for (i, byte) in raw.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        text[at..at + 2].copy_from_slice(&HEX_PAIRS[usize::from(*byte)]);
        at += 2;
    }
    text
}

/// How many generated ids share one buffer allocation.
const IDS_PER_BUFFER: usize = 64;

thread_local! {
    static ID_BUFFER: std::cell::RefCell<bytes::BytesMut> =
        std::cell::RefCell::new(bytes::BytesMut::new());
}

/// Appends `text` to `buf` and splits it off as shared bytes, starting a new
/// buffer for [`IDS_PER_BUFFER`] ids when this one is full.
fn carve(buf: &mut bytes::BytesMut, text: &[u8]) -> bytes::Bytes {
    if buf.capacity() - buf.len() < text.len() {
        *buf = bytes::BytesMut::with_capacity(text.len() * IDS_PER_BUFFER);
    }
    buf.extend_from_slice(text);
    buf.split().freeze()
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RequestId {
    type Err = InvalidRequestId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RequestId::parse(s.as_bytes())
    }
}

impl From<RequestId> for HeaderValue {
    #[inline]
    fn from(id: RequestId) -> HeaderValue {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_ids_are_refused() {
        assert_eq!(RequestId::parse(b""), Err(InvalidRequestId::Empty));
        assert_eq!(
            RequestId::parse(&[b'a'; 10 * 1024]),
            Err(InvalidRequestId::TooLong)
        );
        assert_eq!(
            RequestId::parse(&[b'a'; 129]),
            Err(InvalidRequestId::TooLong)
        );
        assert!(RequestId::parse(&[b'a'; 128]).is_ok());
        for bad in [
            &b"a b"[..],
            b"a\r\nb",
            b"a\tb",
            b"\x00",
            b"caf\xc3\xa9",
            b"\xff\xfe",
            b"a\"b",
            b"a,b",
            b"a;b",
            b"{json}",
        ] {
            assert_eq!(
                RequestId::parse(bad),
                Err(InvalidRequestId::BadByte),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ordinary_ids_are_accepted() {
        for ok in [
            "req-1",
            "0190f4f6-7f0e-7cc4-9f5e-1d2c3b4a5968",
            "a.b:c/d+e=f_g~h@i",
        ] {
            assert_eq!(RequestId::parse(ok.as_bytes()).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn hyphenated_text_matches_the_uuid_crate() {
        // splitmix64, seeded: the same inputs on every run.
        let mut seed = 0x5eed_u64;
        let mut next = move || {
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        for millis in [0, 1, 1_733_443_200_000, (1 << 48) - 1, u64::MAX] {
            for _ in 0..200 {
                let (r1, r2) = (next(), next());
                let text = v7_text(millis, r1, r2);
                let mut random = [0u8; 10];
                random[..2].copy_from_slice(&((r1 & 0x0fff) as u16).to_be_bytes());
                random[2..].copy_from_slice(&r2.to_be_bytes());
                let expected =
                    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
                let parsed = uuid::Uuid::parse_str(std::str::from_utf8(&text).unwrap()).unwrap();
                assert_eq!(parsed, expected, "millis {millis} r1 {r1:#x} r2 {r2:#x}");
                assert_eq!(parsed.get_version_num(), 7);
                assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
                assert_eq!(
                    std::str::from_utf8(&text).unwrap(),
                    expected.hyphenated().to_string()
                );
            }
        }
    }

    #[test]
    fn generated_ids_are_valid_and_time_ordered() {
        let a = RequestId::new_v7();
        let b = RequestId::new_v7();
        assert!(RequestId::parse(a.as_str().as_bytes()).is_ok());
        assert!(a.as_str() < b.as_str() || a.as_str()[..13] == b.as_str()[..13]);
        assert_eq!(
            uuid::Uuid::parse_str(a.as_str()).unwrap().get_version_num(),
            7
        );
    }

    #[test]
    fn generated_ids_share_buffers_but_never_bytes() {
        let ids: Vec<RequestId> = (0..3 * IDS_PER_BUFFER)
            .map(|_| RequestId::new_v7())
            .collect();
        let mut seen = std::collections::HashSet::new();
        for id in &ids {
            assert!(RequestId::parse(id.as_str().as_bytes()).is_ok());
            assert!(seen.insert(id.as_str().to_owned()), "ids are unique");
        }
        // A clone shares the bytes; dropping the others does not change them.
        let kept = ids[5].clone();
        let text = kept.as_str().to_owned();
        assert_eq!(kept.as_str().as_ptr(), ids[5].as_str().as_ptr());
        drop(ids);
        assert_eq!(kept.as_str(), text);
    }

    #[test]
    fn id_byte_table_matches_the_predicate() {
        for b in 0..=255u8 {
            assert_eq!(ID_BYTES[usize::from(b)], is_request_id_byte(b), "{b}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { rng_seed: proptest::test_runner::RngSeed::Fixed(12), ..ProptestConfig::default() })]
        #[test]
        fn parse_is_total_and_accepted_ids_are_clean(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(id) = RequestId::parse(&bytes) {
                prop_assert!(id.as_str().len() <= MAX_REQUEST_ID_LEN);
                prop_assert!(id.as_str().bytes().all(is_request_id_byte));
                prop_assert_eq!(id.as_str().as_bytes(), &bytes[..]);
            }
        }

        #[test]
        fn valid_ids_round_trip(s in "[A-Za-z0-9._:/+=@~-]{1,128}") {
            let id = RequestId::parse(s.as_bytes()).unwrap();
            prop_assert_eq!(RequestId::from_header(id.header_value()).unwrap(), id);
        }
    }
}
