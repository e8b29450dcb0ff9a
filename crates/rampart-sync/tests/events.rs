//! tracing events carry the layer's name.

use rampart_core::{CancellationToken, Context, ErrorKind};
use rampart_sync::{CoalesceLayer, KeyedLockLayer};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::{Layer, ServiceExt, service_fn};

/// A writer collecting everything the fmt subscriber prints.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    (out, tracing::subscriber::set_default(subscriber))
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
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
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
