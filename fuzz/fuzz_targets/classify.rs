//! `HttpOrGrpcClassify` over arbitrary requests and responses (status,
//! grpc-status, Retry-After, pushback, method, content type): never
//! panics, and a server's hint is capped at the classifier's 60 s.
#![no_main]
use http::{HeaderValue, Request, Response};
use libfuzzer_sys::fuzz_target;
use rampart_core::classify::HttpOrGrpcClassify;
use rampart_core::{Classify, ClassifyResult, Outcome};
use std::time::Duration;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "HEAD"];

fuzz_target!(|data: &[u8]| {
    let [status_hi, status_lo, flags, rest @ ..] = data else {
        return;
    };
    let status = 100 + u16::from_be_bytes([*status_hi, *status_lo]) % 900;
    // Three header values, split on 0xff.
    let mut parts = rest.split(|&b| b == 0xff);
    let mut req = Request::builder()
        .method(METHODS[usize::from(flags & 7) % METHODS.len()])
        .uri("/pkg.Svc/Method");
    if flags & 8 != 0 {
        req = req.header("content-type", "application/grpc");
    }
    let Ok(req) = req.body(()) else { return };
    let mut res = Response::builder().status(status);
    for name in ["grpc-status", "retry-after", "grpc-retry-pushback-ms"] {
        if let Some(v) = parts.next().and_then(|p| HeaderValue::from_bytes(p).ok()) {
            res = res.header(name, v);
        }
    }
    let Ok(res) = res.body(()) else { return };
    let classify = HttpOrGrpcClassify::default();
    let outcome =
        Classify::<Request<()>, Response<()>>::classify_request(&classify, &req).classify(Ok(&res));
    if let Outcome::Retryable { after: Some(d) } = outcome {
        assert!(d <= Duration::from_secs(60), "{d:?}");
    }
});
