//! tracing events: each carries the layer's name; a shed is a `debug`
//! event; an adaptive limit pressed to its floor is one `warn` event per
//! time it gets there.

use rampart_limit::{AimdConfig, ConcurrencyLimitLayer};
use rampart_testkit::{EventCapture, MockReply, MockService};
use tower::{Layer, ServiceExt};

/// Captures this thread's events (the current-thread runtime's tasks
/// run on it too).
fn capture() -> (EventCapture, tracing::subscriber::DefaultGuard) {
    EventCapture::install()
}

#[tokio::test(start_paused = true)]
async fn a_shed_is_a_debug_event_naming_the_layer() {
    let (out, _guard) = capture();
    let layer = ConcurrencyLimitLayer::builder(1)
        .shed()
        .name("payments")
        .build()
        .unwrap();
    let mock = MockService::<u32, u32>::new(|n| {
        MockReply::ok(n).after(std::time::Duration::from_millis(10))
    });
    let held = tokio::spawn(layer.layer(mock.clone()).oneshot(1));
    tokio::task::yield_now().await;
    layer.layer(mock.clone()).oneshot(2).await.unwrap_err();
    held.await.unwrap().unwrap();
    let lines = out.lines();
    let shed: Vec<_> = lines.iter().filter(|l| l.contains("shed")).collect();
    assert_eq!(shed.len(), 1, "{lines:#?}");
    assert!(
        shed[0].contains("DEBUG") && shed[0].contains("layer=payments"),
        "{shed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_adaptive_limit_at_its_floor_warns_once_each_time_it_gets_there() {
    let (out, _guard) = capture();
    let layer = ConcurrencyLimitLayer::builder(AimdConfig {
        initial_limit: 4,
        min_limit: 2,
        max_limit: 10,
        ..AimdConfig::default()
    })
    .sample_window(None)
    .name("api")
    .build()
    .unwrap();
    let svc = layer.layer(MockService::<bool, ()>::new(|fail: bool| {
        if fail {
            MockReply::err("overloaded")
        } else {
            MockReply::ok(())
        }
    }));
    let warns = || {
        out.lines()
            .into_iter()
            .filter(|l| l.contains("WARN") && l.contains("floor"))
            .collect::<Vec<_>>()
    };
    // 4 -> 3 -> 2 (the floor: one warning) -> 2 -> 2 (no more).
    for _ in 0..4 {
        svc.clone().oneshot(true).await.unwrap_err();
    }
    assert_eq!(layer.limit(), 2);
    assert_eq!(warns().len(), 1, "{:#?}", out.lines());
    assert!(warns()[0].contains("layer=api"), "{:?}", warns());
    // Up to 3, then back down to the floor: a second warning.
    svc.clone().oneshot(false).await.unwrap();
    assert_eq!(layer.limit(), 3);
    svc.clone().oneshot(true).await.unwrap_err();
    assert_eq!(layer.limit(), 2);
    assert_eq!(warns().len(), 2, "{:#?}", out.lines());
}

#[tokio::test(start_paused = true)]
async fn a_limit_that_starts_at_its_floor_and_sees_no_pressure_does_not_warn() {
    let (out, _guard) = capture();
    // AIMD's defaults start at the floor (20).
    let layer = ConcurrencyLimitLayer::builder(AimdConfig::default())
        .sample_window(None)
        .build()
        .unwrap();
    let svc = layer.layer(MockService::<u32, u32>::new(MockReply::ok));
    for n in 0..5 {
        svc.clone().oneshot(n).await.unwrap();
    }
    assert_eq!(layer.limit(), 20);
    assert!(
        !out.lines().iter().any(|l| l.contains("WARN")),
        "{:#?}",
        out.lines()
    );
    // The first drop at the floor is pressure: it warns.
    let failing = layer.layer(MockService::<u32, u32>::new(|_| MockReply::err("busy")));
    failing.oneshot(0).await.unwrap_err();
    let warns = out
        .lines()
        .into_iter()
        .filter(|l| l.contains("WARN") && l.contains("layer=default"))
        .count();
    assert_eq!(warns, 1, "{:#?}", out.lines());
}
