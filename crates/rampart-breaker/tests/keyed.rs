//! `KeyedCircuitBreakerLayer`: a circuit per key, with a capped key map.

use http::{Request, Response};
use rampart_breaker::{CircuitBreakerLayer, HeaderKey, KeyedCircuitBreakerLayer, State};
use rampart_core::ErrorKind;
use tower::{BoxError, Layer, ServiceExt, service_fn};

/// A backend whose hosts named `bad…` answer 503.
fn backend()
-> impl tower::Service<Request<()>, Response = Response<()>, Error = BoxError, Future: Send> + Clone
{
    service_fn(|req: Request<()>| async move {
        let bad = req
            .headers()
            .get("host")
            .is_some_and(|h| h.as_bytes().starts_with(b"bad"));
        Ok::<_, BoxError>(
            Response::builder()
                .status(if bad { 503 } else { 200 })
                .body(())
                .unwrap(),
        )
    })
}

fn req(host: &str) -> Request<()> {
    Request::get("/").header("host", host).body(()).unwrap()
}

fn template() -> CircuitBreakerLayer<rampart_breaker::BreakerClassify> {
    CircuitBreakerLayer::http_builder()
        .consecutive_failures(2)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn one_failing_key_opens_only_its_own_circuit() {
    let layer = KeyedCircuitBreakerLayer::new(HeaderKey::from_static("host"), template(), 100);
    let svc = layer.layer(backend());
    for _ in 0..2 {
        assert_eq!(
            svc.clone().oneshot(req("bad-1")).await.unwrap().status(),
            503
        );
    }
    let e = svc.clone().oneshot(req("bad-1")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overloaded);
    for _ in 0..10 {
        assert_eq!(
            svc.clone().oneshot(req("good")).await.unwrap().status(),
            200
        );
    }
    let bad = layer.handle(&Some(&b"bad-1"[..])).expect("tracked");
    assert_eq!(bad.state(), State::Open);
    let good = layer.handle(&Some(&b"good"[..])).expect("tracked");
    assert_eq!(good.state(), State::Closed);
    assert_eq!(layer.keys(), 2);
    assert_eq!(layer.keys_not_closed(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_key_map_never_exceeds_max_keys() {
    let layer = KeyedCircuitBreakerLayer::new(HeaderKey::from_static("host"), template(), 8);
    let svc = layer.layer(backend());
    for i in 0..1_000 {
        let _ = svc.clone().oneshot(req(&format!("good-{i}"))).await;
        assert!(layer.keys() <= 8);
    }
    assert_eq!(layer.keys(), 8);
    assert_eq!(layer.overflowed(), 0, "idle closed keys were evicted");
}

#[tokio::test(start_paused = true)]
async fn a_map_full_of_open_keys_sends_new_keys_to_the_overflow_circuit() {
    let layer = KeyedCircuitBreakerLayer::new(HeaderKey::from_static("host"), template(), 4);
    let svc = layer.layer(backend());
    for i in 0..4 {
        for _ in 0..2 {
            let _ = svc.clone().oneshot(req(&format!("bad-{i}"))).await;
        }
    }
    assert_eq!(layer.keys_not_closed(), 4);
    // Open keys are not evicted: their circuits stay open.
    assert_eq!(
        svc.clone().oneshot(req("good")).await.unwrap().status(),
        200
    );
    assert_eq!(layer.keys(), 4);
    assert_eq!(layer.overflowed(), 1);
    assert!(svc.clone().oneshot(req("bad-0")).await.is_err());
    assert_eq!(layer.overflow_handle().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn zero_max_keys_puts_every_key_on_the_overflow_circuit() {
    let layer = KeyedCircuitBreakerLayer::new(|_: &Request<()>| 0u8, template(), 0);
    let svc = layer.layer(backend());
    for _ in 0..2 {
        let _ = svc.clone().oneshot(req("bad")).await;
    }
    assert_eq!(layer.keys(), 0);
    assert_eq!(layer.overflow_handle().state(), State::Open);
    assert!(svc.clone().oneshot(req("good")).await.is_err());
}
