//! Every transition and refusal is a tracing event whose `layer` field
//! names the circuit.

use rampart_breaker::{CircuitBreakerLayer, State};
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

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_transition_is_a_tracing_event() {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let layer = CircuitBreakerLayer::builder()
        .name("payments")
        .consecutive_failures(1)
        .break_duration(Duration::from_secs(1))
        .probes(1)
        .build()
        .unwrap();
    let h = layer.handle();
    let svc = layer.layer(service_fn(|fail: bool| async move {
        if fail {
            Err(std::io::Error::other("down"))
        } else {
            Ok(())
        }
    }));
    let _ = svc.clone().oneshot(true).await; // closed -> open
    tokio::time::advance(Duration::from_secs(1)).await;
    svc.clone().oneshot(false).await.unwrap(); // open -> half-open -> closed
    h.force_open();
    assert_eq!(h.state(), State::ForcedOpen);
    assert!(svc.clone().oneshot(false).await.is_err()); // refused

    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<_> = text.lines().collect();
    let find = |from: &str, to: &str| {
        lines.iter().any(|l| {
            l.contains("layer=payments")
                && l.contains(&format!("from={from}"))
                && l.contains(&format!("to={to}"))
        })
    };
    assert!(find("closed", "open") && text.contains("WARN"), "{text}");
    assert!(find("open", "half-open"), "{text}");
    assert!(find("half-open", "closed"), "{text}");
    assert!(find("closed", "forced open"), "{text}");
    assert!(
        lines.iter().any(|l| l.contains("DEBUG")
            && l.contains("call refused")
            && l.contains("layer=payments")),
        "{text}"
    );
}
