//! Tracing events: each carries the queue's name (`layer=…`); a shed or
//! skipped request is a `debug` event, a panic in the inner service a
//! `warn` event.

use rampart_queue::{Queue, QueueLayer};
use rampart_testkit::{EventCapture, Gate, MockReply, MockService};
use tower::{Layer, Service, ServiceExt};

type Q = Queue<u32, u32>;

/// Captures this thread's events (the current-thread runtime's tasks
/// run on it too).
fn capture() -> (EventCapture, tracing::subscriber::DefaultGuard) {
    EventCapture::install()
}

async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn each_shed_is_a_debug_event_naming_the_queue() {
    let (out, _guard) = capture();
    let gate = Gate::new();
    let g = gate.clone();
    let svc: Q = QueueLayer::new(1, 1)
        .shed()
        .name("emails")
        .layer(MockService::new(move |n: u32| {
            MockReply::ok(n).after_gate(&g)
        }));
    let running = tokio::spawn(svc.clone().oneshot(1));
    settle().await;
    let queued = tokio::spawn(svc.clone().oneshot(2));
    settle().await;
    svc.clone().oneshot(3).await.unwrap_err();
    svc.try_submit(4).unwrap_err();
    gate.open();
    running.await.unwrap().unwrap();
    queued.await.unwrap().unwrap();
    let shed = out.lines_with("shed");
    assert_eq!(shed.len(), 2, "{shed:#?}");
    for l in &shed {
        assert!(l.contains("DEBUG") && l.contains("layer=emails"), "{l}");
    }
}

#[tokio::test(start_paused = true)]
async fn each_skipped_request_is_a_debug_event_naming_the_queue() {
    let (out, _guard) = capture();
    let gate = Gate::new();
    let g = gate.clone();
    let svc: Q = QueueLayer::new(4, 1)
        .name("emails")
        .layer(MockService::new(move |n: u32| {
            MockReply::ok(n).after_gate(&g)
        }));
    let running = tokio::spawn(svc.clone().oneshot(1));
    settle().await;
    for n in [2, 3] {
        let mut s = svc.clone();
        drop(s.call(n)); // queued, its caller gone at once
    }
    gate.open();
    running.await.unwrap().unwrap();
    settle().await;
    let skipped = out.lines_with("skipped");
    assert_eq!(skipped.len(), 2, "{skipped:#?}");
    for l in &skipped {
        assert!(l.contains("DEBUG") && l.contains("layer=emails"), "{l}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_is_a_warn_event_naming_the_queue_and_unnamed_queues_say_default() {
    let (out, _guard) = capture();
    let svc: Q = Queue::new(MockService::new(|_| MockReply::panic("unlucky")), 4, 1);
    svc.clone().oneshot(1).await.unwrap_err();
    let warns = out.lines_with("WARN");
    assert_eq!(warns.len(), 1, "{warns:#?}");
    assert!(
        warns[0].contains("panicked") && warns[0].contains("layer=default"),
        "{warns:?}"
    );
}
