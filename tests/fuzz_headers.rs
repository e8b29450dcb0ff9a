//! Property-based fuzzing of every header decoder, through the public API
//! and through a server stack (request id → handle errors → deadline from
//! headers): arbitrary bytes never panic, and always give a typed error or
//! a safe default.
//!
//! (cargo-fuzz needs a nightly toolchain; these run in the normal test
//! suite. `PROPTEST_CASES=100000 cargo test --test fuzz_headers` runs
//! longer.)

use std::time::{Duration, SystemTime};

use http::{HeaderValue, Request, Response, StatusCode};
use proptest::prelude::*;
use rampart::ClassifyResult;
use rampart::codec::{self, MAX_DURATION, Pushback};
use rampart::core::{MAX_REQUEST_ID_LEN, is_request_id_byte};
use rampart::prelude::*;
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// Cases per property unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 2_000;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES);
    ProptestConfig {
        cases,
        // Fixed seed behaviour comes from proptest's own persistence; no
        // file is written for integration tests without a source dir.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Header-ish bytes: arbitrary, plus near-misses of each format (digits,
/// units, signs, spaces, dates) that reach deeper into the parsers.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..48),
        "[0-9]{0,11}[HMSmunx]?".prop_map(String::into_bytes),
        "[ \t]?-?[0-9]{0,22}[ \t]?".prop_map(String::into_bytes),
        "(Mon|Tue|Wed|Xyz), [0-9]{1,2} (Jan|Oct|Foo) [0-9]{1,5} [0-9]{2}:[0-9]{2}:[0-9]{2} (GMT|UTC)"
            .prop_map(String::into_bytes),
        "[A-Za-z0-9._~:-]{0,140}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn grpc_timeout_parser_is_total_and_bounded(bytes in header_bytes()) {
        if let Some(d) = codec::parse_grpc_timeout(&bytes) {
            prop_assert!(d <= MAX_DURATION);
            prop_assert!(bytes.len() >= 2 && bytes.len() <= 9, "{bytes:?}");
            // What is encoded back parses again, never longer.
            let again = codec::parse_grpc_timeout(codec::encode_grpc_timeout(d).as_bytes());
            prop_assert!(again.is_some_and(|a| a <= d.max(Duration::from_nanos(1))), "{d:?} -> {again:?}");
        }
    }

    #[test]
    fn deadline_ms_parser_is_total_and_bounded(bytes in header_bytes()) {
        if let Some(d) = codec::parse_deadline_ms(&bytes) {
            prop_assert!(d <= MAX_DURATION);
            prop_assert!(bytes.iter().all(u8::is_ascii_digit), "{bytes:?}");
            let again = codec::parse_deadline_ms(codec::encode_deadline_ms(d).as_bytes());
            prop_assert_eq!(again, Some(d));
        }
    }

    #[test]
    fn retry_after_parser_is_total_and_bounded(bytes in header_bytes(), secs in 0u64..4_000_000_000) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        if let Some(d) = codec::parse_retry_after(&bytes, now) {
            prop_assert!(d <= MAX_DURATION);
        }
    }

    #[test]
    fn pushback_parser_is_total_and_garbage_means_stop(bytes in header_bytes()) {
        match codec::parse_grpc_pushback(&bytes) {
            Pushback::After(d) => {
                prop_assert!(d <= MAX_DURATION);
                let trimmed: Vec<u8> = bytes.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
                prop_assert!(!trimmed.is_empty() && trimmed.iter().all(u8::is_ascii_digit), "{bytes:?}");
            }
            Pushback::Stop => {}
        }
    }

    #[test]
    fn request_id_accepts_only_bounded_safe_ids(bytes in header_bytes()) {
        match RequestId::parse(&bytes) {
            Ok(id) => {
                prop_assert!(!id.as_str().is_empty() && id.as_str().len() <= MAX_REQUEST_ID_LEN);
                prop_assert!(id.as_str().bytes().all(is_request_id_byte));
                prop_assert_eq!(id.as_str().as_bytes(), &bytes[..]);
            }
            Err(e) => {
                // A typed error with a message, never a panic.
                prop_assert!(!e.to_string().is_empty());
            }
        }
        if let Ok(v) = HeaderValue::from_bytes(&bytes) {
            prop_assert_eq!(RequestId::from_header(&v).is_ok(), RequestId::parse(&bytes).is_ok());
        }
    }

    #[test]
    fn classify_never_panics_and_caps_the_delay(
        status in 100u16..1000,
        grpc in any::<bool>(),
        method in prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("DELETE")],
        grpc_status in header_bytes(),
        retry_after in header_bytes(),
        pushback in header_bytes(),
    ) {
        let mut req = Request::builder().method(method).uri("/svc/Method");
        if grpc {
            req = req.header("content-type", "application/grpc");
        }
        let req = req.body(()).unwrap();
        let mut res = Response::builder().status(status);
        for (name, value) in [("grpc-status", &grpc_status), ("retry-after", &retry_after), ("grpc-retry-pushback-ms", &pushback)] {
            if let Ok(v) = HeaderValue::from_bytes(value) {
                res = res.header(name, v);
            }
        }
        let res = res.body(()).unwrap();
        let classify = HttpOrGrpcClassify::default();
        let outcome = rampart::Classify::<Request<()>, Response<()>>::classify_request(&classify, &req)
            .classify(Ok(&res));
        if let Outcome::Retryable { after: Some(d) } = outcome {
            // The classifiers' default cap on a server's hint.
            prop_assert!(d <= Duration::from_secs(60), "{d:?}");
        }
    }
}

/// One request with arbitrary id and deadline headers through request id →
/// handle errors → deadline from headers → handler.
async fn through_stack(
    id: &[u8],
    deadline: &[u8],
    grpc_timeout: &[u8],
    grpc: bool,
) -> (StatusCode, Option<String>, Option<String>, bool) {
    let svc = ServiceBuilder::new()
        .request_id()
        .handle_errors()
        .deadline_from_headers(Duration::from_secs(5))
        .service(service_fn(|_req: Request<()>| async {
            let ctx = Context::current().expect("a context");
            // The handler sees a valid id and a deadline within the cap.
            assert!(ctx.request_id().is_some());
            assert!(ctx.remaining().is_some_and(|r| r <= Duration::from_secs(5)));
            Ok::<_, rampart::Error>(Response::new(String::new()))
        }));
    let mut req = Request::builder();
    if grpc {
        req = req.header("content-type", "application/grpc");
    }
    for (name, value) in [
        ("x-request-id", id),
        ("x-request-timeout-ms", deadline),
        ("grpc-timeout", grpc_timeout),
    ] {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            req = req.header(name, v);
        }
    }
    let res = svc.oneshot(req.body(()).unwrap()).await.unwrap();
    let text = |n: &str| {
        res.headers()
            .get(n)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let sent_valid_id = RequestId::parse(id).is_ok() && HeaderValue::from_bytes(id).is_ok();
    (
        res.status(),
        text("x-request-id"),
        text("grpc-status"),
        sent_valid_id,
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn hostile_headers_through_the_server_stack_get_an_answer_never_a_panic(
        id in header_bytes(),
        deadline in header_bytes(),
        grpc_timeout in header_bytes(),
        grpc in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let (status, echoed, grpc_status, sent_valid) =
            rt.block_on(through_stack(&id, &deadline, &grpc_timeout, grpc));
        // An id is always echoed, always valid, and is the caller's only if
        // the caller's was valid.
        let echoed = echoed.expect("an id is echoed");
        prop_assert!(RequestId::parse(echoed.as_bytes()).is_ok(), "{echoed:?}");
        if sent_valid {
            prop_assert_eq!(echoed.as_bytes(), &id[..]);
        } else {
            prop_assert_ne!(echoed.as_bytes(), &id[..]);
        }
        if grpc {
            // gRPC answers HTTP 200; an expired deadline is DEADLINE_EXCEEDED.
            prop_assert_eq!(status, StatusCode::OK);
            prop_assert!(grpc_status.is_none() || grpc_status.as_deref() == Some("4"), "{grpc_status:?}");
        } else {
            prop_assert!(status == StatusCode::OK || status == StatusCode::GATEWAY_TIMEOUT, "{status}");
        }
    }
}
