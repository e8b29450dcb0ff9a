//! A debug event per retry and per give-up, with the layer's name, attempt,
//! delay, reason and the request id of the current context; a warning when
//! the retry budget runs dry.

use rampart_core::{Context, RequestId};
use rampart_retry::{Backoff, Budget, RetryLayer};
use rampart_testkit::{MockReply, MockService};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::{Layer, ServiceExt};

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

fn capture() -> (Buf, tracing::subscriber::DefaultGuard) {
    let buf = Buf::default();
    let b = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || b.clone())
        .finish();
    (buf, tracing::subscriber::set_default(subscriber))
}

#[tokio::test(start_paused = true)]
async fn each_retry_and_the_give_up_are_traced_with_the_request_id() {
    let (buf, _guard) = capture();

    let svc = MockService::new(|_: u8| MockReply::<u8>::err("refused"));
    let retry = RetryLayer::builder()
        .max_attempts(3)
        .backoff(Backoff::constant(Duration::from_millis(250)))
        .build()
        .unwrap()
        .layer(svc);
    let ctx = Context::new().with_request_id(RequestId::parse(b"req-7").unwrap());
    ctx.scope(retry.oneshot(1)).await.unwrap_err();

    let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<_> = out
        .lines()
        .filter(|l| l.contains("rampart_retry"))
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    for line in &lines {
        assert!(line.contains("layer=default"), "{line}");
    }
    for (line, attempt) in lines[..2].iter().zip([2, 3]) {
        assert!(line.contains("retry: next attempt"), "{line}");
        assert!(line.contains(&format!("attempt={attempt}")), "{line}");
        assert!(line.contains("delay_ms=250"), "{line}");
        assert!(line.contains("reason=\"retryable error\""), "{line}");
        assert!(line.contains("error=refused"), "{line}");
        assert!(line.contains("request_id=\"req-7\""), "{line}");
    }
    assert!(lines[2].contains("retry: giving up"), "{}", lines[2]);
    assert!(
        lines[2].contains("reason=\"max attempts reached\""),
        "{}",
        lines[2]
    );
    assert!(lines[2].contains("attempts=3"), "{}", lines[2]);
}

#[tokio::test(start_paused = true)]
async fn the_budget_running_dry_is_one_warning_then_debug_events_until_it_grants_again() {
    let (buf, _guard) = capture();
    let svc = MockService::new(|_: u8| MockReply::<u8>::err("refused"));
    // One retry per second, over a 1 s window.
    let retry = RetryLayer::builder()
        .name("payments")
        .max_attempts(2)
        .backoff(Backoff::none())
        .budget(Budget::new(0.0, 1, Duration::from_secs(1)))
        .build()
        .unwrap()
        .layer(svc);
    // Retried with the only token, then two refusals.
    for _ in 0..3 {
        retry.clone().oneshot(1).await.unwrap_err();
    }
    // The window passes: a granted retry, then the budget runs dry again.
    tokio::time::advance(Duration::from_millis(1100)).await;
    for _ in 0..2 {
        retry.clone().oneshot(1).await.unwrap_err();
    }

    let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<_> = out
        .lines()
        .filter(|l| l.contains("rampart_retry"))
        .collect();
    for line in &lines {
        assert!(line.contains("layer=payments"), "{line}");
    }
    let warnings: Vec<_> = lines.iter().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 2, "{out}");
    for w in warnings {
        assert!(w.contains("retry: budget ran dry"), "{w}");
        assert!(w.contains("reason=\"retry budget exhausted\""), "{w}");
    }
    let refused_quietly = lines
        .iter()
        .filter(|l| l.contains("DEBUG") && l.contains("retry budget exhausted"))
        .count();
    assert_eq!(refused_quietly, 1, "{out}");
}
