//! Keyed limits: keys do not block each other; the key map is capped.

mod common;

use common::{poll_once, until};
use rampart_core::ErrorKind;
use rampart_limit::{HeaderKey, KeyedConcurrencyLimitLayer};
use rampart_testkit::{Gate, MockReply, MockService, cancel_at_every_poll};
use std::task::Poll;
use std::time::Duration;
use tower::{Layer, ServiceExt};

type Req = (u32, u32); // (key, payload)

#[allow(clippy::trivially_copy_pass_by_ref)] // a key extractor takes &Req
fn by_key(req: &Req) -> u32 {
    req.0
}

fn gated(gate: &Gate) -> MockService<Req, u32> {
    let g = gate.clone();
    MockService::new(move |(_, n): Req| {
        if n == 0 {
            MockReply::ok(n).after_gate(&g)
        } else {
            MockReply::ok(n)
        }
    })
}

#[tokio::test(start_paused = true)]
async fn two_keys_do_not_block_each_other() {
    let gate = Gate::new();
    let mock = gated(&gate);
    let layer = KeyedConcurrencyLimitLayer::new(by_key, 1);
    let svc = layer.layer(mock.clone());
    // Key 1 is at its limit, with a caller waiting behind it.
    let held = tokio::spawn(svc.clone().oneshot((1, 0)));
    until(|| mock.inflight() == 1, "key 1 busy").await;
    let behind = tokio::spawn(svc.clone().oneshot((1, 5)));
    until(|| layer.stats().waiting == 1, "second key-1 call waits").await;
    // Key 2 goes straight through, on the first poll.
    for n in 1..=3 {
        let mut fut = std::pin::pin!(svc.clone().oneshot((2, n)));
        assert!(matches!(poll_once(fut.as_mut()), Poll::Ready(Ok(m)) if m == n));
    }
    assert!(!behind.is_finished(), "key 1 still waits for key 1");
    gate.open();
    assert_eq!(held.await.unwrap().unwrap(), 0);
    assert_eq!(behind.await.unwrap().unwrap(), 5);
    let s = layer.stats();
    assert_eq!((s.in_flight, s.waiting, s.keys), (0, 0, 2));
}

#[tokio::test(start_paused = true)]
async fn key_map_stays_under_its_cap_with_100_000_distinct_keys() {
    const CAP: usize = 1_000;
    let mock = MockService::<Req, u32>::new(|(_, n)| MockReply::ok(n));
    let layer = KeyedConcurrencyLimitLayer::builder(by_key, 2)
        .max_keys(CAP)
        .build()
        .unwrap();
    let svc = layer.layer(mock.clone());
    for key in 0..100_000u32 {
        assert_eq!(svc.clone().oneshot((key, 1)).await.unwrap(), 1);
        if key % 997 == 0 {
            assert!(layer.stats().keys <= CAP, "{} keys", layer.stats().keys);
        }
    }
    let s = layer.stats();
    assert!(s.keys <= CAP && s.keys > 0, "{} keys", s.keys);
    assert_eq!((s.in_flight, s.key_map_full), (0, 0));
    assert_eq!(mock.calls(), 100_000);
}

#[tokio::test(start_paused = true)]
async fn a_map_full_of_busy_keys_refuses_new_keys_until_one_is_idle() {
    let gate = Gate::new();
    let mock = gated(&gate);
    let layer = KeyedConcurrencyLimitLayer::builder(by_key, 1)
        .max_keys(3)
        .build()
        .unwrap();
    let svc = layer.layer(mock.clone());
    let held: Vec<_> = (0..3)
        .map(|k| tokio::spawn(svc.clone().oneshot((k, 0))))
        .collect();
    until(|| mock.inflight() == 3, "three busy keys").await;
    let e = svc.clone().oneshot((99, 1)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overloaded);
    assert!(e.retry_after().is_some());
    assert_eq!(layer.stats().key_map_full, 1);
    // A busy key that is already tracked is still served.
    gate.open();
    for h in held {
        h.await.unwrap().unwrap();
    }
    assert_eq!(
        svc.clone().oneshot((99, 1)).await.unwrap(),
        1,
        "idle keys evicted"
    );
    assert!(layer.stats().keys <= 3);
}

#[tokio::test(start_paused = true)]
async fn each_key_sheds_on_its_own() {
    let gate = Gate::new();
    let mock = gated(&gate);
    let layer = KeyedConcurrencyLimitLayer::builder(by_key, 1)
        .shed()
        .build()
        .unwrap();
    let svc = layer.layer(mock.clone());
    let held = tokio::spawn(svc.clone().oneshot((1, 0)));
    until(|| mock.inflight() == 1, "key 1 busy").await;
    let e = svc.clone().oneshot((1, 1)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overloaded);
    assert_eq!(svc.clone().oneshot((2, 1)).await.unwrap(), 1);
    assert_eq!(layer.stats().shed, 1);
    gate.open();
    held.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn header_key_limits_by_header_and_groups_requests_without_it() {
    let gate = Gate::new();
    let g = gate.clone();
    let mock = MockService::<http::Request<()>, u32>::new(move |req| {
        if req.uri() == "/hold" {
            MockReply::ok(0).after_gate(&g)
        } else {
            MockReply::ok(1)
        }
    });
    let layer = KeyedConcurrencyLimitLayer::builder(HeaderKey::from_static("x-tenant"), 1)
        .shed()
        .build()
        .unwrap();
    let svc = layer.layer(mock.clone());
    let req = |uri: &str, tenant: Option<&str>| {
        let mut b = http::Request::builder().uri(uri);
        if let Some(t) = tenant {
            b = b.header("x-tenant", t);
        }
        b.body(()).unwrap()
    };
    let a = tokio::spawn(svc.clone().oneshot(req("/hold", Some("acme"))));
    let none = tokio::spawn(svc.clone().oneshot(req("/hold", None)));
    until(|| mock.inflight() == 2, "acme and the header-less busy").await;
    let shed = |r: Result<u32, rampart_core::Error>| r.unwrap_err().kind() == ErrorKind::Overloaded;
    assert!(shed(svc.clone().oneshot(req("/", Some("acme"))).await));
    assert!(shed(svc.clone().oneshot(req("/", None)).await));
    assert_eq!(
        svc.clone().oneshot(req("/", Some("globex"))).await.unwrap(),
        1
    );
    gate.open();
    a.await.unwrap().unwrap();
    none.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn cancelled_keyed_waiters_and_dropped_calls_leave_nothing_behind() {
    let mock = MockService::<Req, u32>::new(|(_, n)| {
        MockReply::ok(n)
            .after_yield()
            .after(Duration::from_millis(2))
    });
    let layer = KeyedConcurrencyLimitLayer::new(by_key, 1);
    let svc = layer.layer(mock.clone());
    let drops = cancel_at_every_poll(
        || {
            let (a, b, c) = (
                svc.clone().oneshot((1, 1)),
                svc.clone().oneshot((1, 2)),
                svc.clone().oneshot((2, 3)),
            );
            async move {
                let (a, b, c) = tokio::join!(a, b, c);
                (a.unwrap(), b.unwrap(), c.unwrap())
            }
        },
        || {
            let s = layer.stats();
            match (s.in_flight, s.waiting, mock.inflight()) {
                (0, 0, 0) => Ok(()),
                other => Err(format!("in flight / waiting / inner: {other:?}")),
            }
        },
    )
    .await
    .unwrap();
    assert!(drops >= 4, "{drops} drop points");
}

#[test]
fn invalid_keyed_configs_are_config_errors_naming_the_field() {
    let e = KeyedConcurrencyLimitLayer::try_new(by_key, 0).unwrap_err();
    assert_eq!((e.field(), e.value()), ("limit_per_key", "0"));
    let e = KeyedConcurrencyLimitLayer::builder(by_key, 1)
        .max_keys(0)
        .build()
        .unwrap_err();
    assert_eq!((e.field(), e.value()), ("max_keys", "0"));
}

#[test]
#[should_panic(expected = "KeyedConcurrencyLimitLayer::new: limit_per_key is 0")]
fn a_zero_limit_per_key_panics_in_the_simple_constructor() {
    let _ = KeyedConcurrencyLimitLayer::new(by_key, 0);
}

#[tokio::test(start_paused = true)]
async fn a_keyed_waiter_resolves_to_cancelled_the_moment_its_token_fires() {
    let gate = Gate::new();
    let mock = gated(&gate);
    let layer = KeyedConcurrencyLimitLayer::builder(by_key, 1)
        .build()
        .unwrap();
    let svc = layer.layer(mock.clone());
    let held = tokio::spawn(svc.clone().oneshot((1, 0)));
    until(|| mock.inflight() == 1, "key 1 busy").await;
    let token = rampart_core::CancellationToken::new();
    let waiting = tokio::spawn(
        rampart_core::Context::new()
            .with_cancellation(token.clone())
            .scope(svc.clone().oneshot((1, 1))),
    );
    until(|| layer.stats().waiting == 1, "in line").await;
    let t0 = tokio::time::Instant::now();
    token.cancel();
    let e = waiting.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(layer.stats().waiting, 0);
    gate.open();
    held.await.unwrap().unwrap();
    assert_eq!(mock.calls(), 1);
}
