//! Request ids: accepted only when bounded and made of safe bytes, kept
//! byte for byte; refused with a typed error otherwise; the header path
//! agrees with the byte path.
#![no_main]
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use rampart_core::{MAX_REQUEST_ID_LEN, RequestId, is_request_id_byte};

fuzz_target!(|data: &[u8]| {
    match RequestId::parse(data) {
        Ok(id) => {
            let s = id.as_str();
            assert!(!s.is_empty() && s.len() <= MAX_REQUEST_ID_LEN);
            assert!(s.bytes().all(is_request_id_byte));
            assert_eq!(s.as_bytes(), data);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    if let Ok(v) = HeaderValue::from_bytes(data) {
        assert_eq!(
            RequestId::from_header(&v).is_ok(),
            RequestId::parse(data).is_ok()
        );
    }
});
