//! The limiters' tracing events carry the layer's name in `layer`.

use rampart_core::Context;
use rampart_rate::{KeyedRateLimitLayer, KeyedStore, Quota, RateLimitLayer};
use std::convert::Infallible;
use std::io::Write;
use std::num::{NonZeroU32, NonZeroUsize};
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

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_refusal_is_a_debug_event_naming_the_layer() {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let echo = service_fn(|n: u32| async move { Ok::<_, Infallible>(n) });
    let one = NonZeroU32::new(1).unwrap();

    // Rate limited.
    let svc = RateLimitLayer::new(Quota::per_second(one))
        .name("api")
        .layer(echo);
    svc.clone().oneshot(1).await.unwrap();
    svc.clone().oneshot(2).await.unwrap_err();
    // The slot comes after the request's deadline.
    let svc = RateLimitLayer::builder(Quota::every(Duration::from_secs(10)))
        .max_wait(Duration::from_secs(60))
        .name("deadline")
        .build()
        .layer(echo);
    svc.clone().oneshot(1).await.unwrap();
    let ctx = Context::new().with_timeout(Duration::from_secs(1));
    ctx.scope(svc.clone().oneshot(2)).await.unwrap_err();
    // The key store is full of active keys.
    let svc = KeyedRateLimitLayer::builder(Quota::per_second(one), |n: &u32| *n)
        .store(KeyedStore::new(NonZeroUsize::new(1).unwrap()))
        .name("tenants")
        .build()
        .layer(echo);
    let mut full = false;
    for k in 0..100 {
        if svc.clone().oneshot(k).await.is_err() {
            full = true;
            break;
        }
    }
    assert!(full);

    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let refused = |layer: &str, what: &str| {
        text.lines().any(|l| {
            l.contains("DEBUG") && l.contains(&format!("layer={layer}")) && l.contains(what)
        })
    };
    assert!(refused("api", "rate limit: request refused"), "{text}");
    assert!(
        refused("deadline", "its deadline comes before its slot"),
        "{text}"
    );
    assert!(refused("tenants", "refused by the store"), "{text}");
}

#[test]
fn naming_a_layer_whose_state_is_shared_keeps_its_name_and_warns() {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let quota = Quota::per_second(NonZeroU32::new(1).unwrap());

    let named = RateLimitLayer::new(quota).name("first");
    assert_eq!(named.layer_name(), "first");
    let clone = named.clone();
    let renamed = named.name("second");
    assert_eq!(renamed.layer_name(), "first");
    assert_eq!(clone.layer_name(), "first");
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("WARN")
            && text.contains("keeps its name")
            && text.contains("new_name=second"),
        "{text}"
    );
}
