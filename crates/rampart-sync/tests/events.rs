//! tracing events carry the layer's name.

use rampart_core::{CancellationToken, Context, ErrorKind};
use rampart_sync::{CoalesceLayer, KeyedLockLayer};
use rampart_testkit::EventCapture;
use std::time::Duration;
use tower::{Layer, ServiceExt, service_fn};

/// Captures this thread's events (the current-thread runtime's tasks
/// run on it too).
fn capture() -> (EventCapture, tracing::subscriber::DefaultGuard) {
    EventCapture::install()
}

fn slow() -> impl tower::Service<u32, Response = u32, Error = std::io::Error, Future: Send>
+ Clone
+ Send
+ 'static {
    service_fn(|n: u32| async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok::<_, std::io::Error>(n)
    })
}

#[tokio::test(start_paused = true)]
async fn giving_up_on_a_lock_or_a_shared_call_is_a_debug_event_naming_the_layer() {
    let (out, _guard) = capture();
    let lock = KeyedLockLayer::new(|_: &u32| ())
        .name("accounts")
        .layer(slow());
    let coalesce = CoalesceLayer::new(|_: &u32| ())
        .name("profiles")
        .layer(slow());
    let held = tokio::spawn(lock.clone().oneshot(1));
    let led = tokio::spawn(coalesce.clone().oneshot(1));
    tokio::task::yield_now().await;
    for svc_is_lock in [true, false] {
        let token = CancellationToken::new();
        token.cancel();
        let ctx = Context::new().with_cancellation(token);
        let e = if svc_is_lock {
            ctx.scope(lock.clone().oneshot(2)).await.unwrap_err()
        } else {
            ctx.scope(coalesce.clone().oneshot(2)).await.unwrap_err()
        };
        assert_eq!(e.kind(), ErrorKind::Cancelled);
    }
    held.await.unwrap().unwrap();
    led.await.unwrap().unwrap();
    let text = out.text();
    let gave_up = |what: &str, layer: &str| {
        text.lines().any(|l| {
            l.contains("DEBUG")
                && l.contains(&format!("gave up waiting for a {what}"))
                && l.contains(&format!("layer={layer}"))
        })
    };
    assert!(gave_up("keyed lock", "accounts"), "{text}");
    assert!(gave_up("coalesced call", "profiles"), "{text}");
}
