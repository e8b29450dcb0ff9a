//! With the `metrics` feature the debug events of the timeout and deadline
//! layers carry `layer = <name>`. A test binary of its own: tracing caches
//! whether a callsite is enabled process-wide, so layers driven on other
//! test threads without a subscriber could hide these events.
#![cfg(feature = "metrics")]

mod common;
use common::ms;
use http::{HeaderValue, Request, Response};
use rampart_core::Context;
use rampart_testkit::{MockReply, MockService};
use rampart_timeout::{DeadlineHeaders, DeadlineLayer, TimeoutLayer};
use std::io::Write;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

fn http(value: &'static [u8]) -> Request<()> {
    Request::get("/")
        .header(
            "x-request-timeout-ms",
            HeaderValue::from_bytes(value).unwrap(),
        )
        .body(())
        .unwrap()
}

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn the_tracing_events_carry_the_layer_name() {
    let buf = Buf::default();
    let b = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || b.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mock = MockService::new(|(): ()| MockReply::<u8>::pending());
    let timeout = TimeoutLayer::new(ms(100)).name("attempt");
    timeout.layer(mock.clone()).oneshot(()).await.unwrap_err();
    let deadline = DeadlineLayer::new(ms(100)).name("request");
    deadline.layer(mock.clone()).oneshot(()).await.unwrap_err();
    let ctx = Context::new().with_deadline(Instant::now());
    ctx.scope(deadline.layer(mock).oneshot(()))
        .await
        .unwrap_err();
    let server = DeadlineLayer::from_headers(ms(100), DeadlineHeaders::new()).name("api");
    let ok = MockService::<Request<()>, Response<()>>::new(|_| MockReply::ok(Response::new(())));
    server.layer(ok).oneshot(http(b"x")).await.unwrap();

    let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<_> = out
        .lines()
        .filter(|l| l.contains("rampart_timeout"))
        .collect();
    let expect = [
        ("layer=attempt", "timer fired"),
        ("layer=request", "timer fired"),
        ("layer=request", "already passed on arrival"),
        ("layer=api", "malformed deadline header ignored"),
    ];
    assert_eq!(lines.len(), expect.len(), "{out}");
    for (line, (layer, what)) in lines.iter().zip(expect) {
        assert!(line.contains(layer) && line.contains(what), "{line}");
    }
}
