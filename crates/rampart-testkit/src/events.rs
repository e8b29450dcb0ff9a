//! [`EventCapture`]: the tracing events a test's own thread prints, as text.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

/// Collects what a `tracing_subscriber::fmt` subscriber prints (level,
/// fields, message; no time, no colours) on the thread that installed it,
/// so a test can check an event's level and its `layer=…` field.
///
/// ```
/// let (out, _guard) = rampart_testkit::EventCapture::install();
/// tracing::debug!(layer = "payments", "call shed");
/// assert_eq!(out.lines_with("layer=\"payments\"").len(), 1);
/// ```
#[derive(Clone, Debug, Default)]
pub struct EventCapture(Arc<Mutex<Vec<u8>>>);

impl EventCapture {
    /// Installs a `DEBUG` subscriber writing here as this thread's default
    /// until the guard is dropped (a current-thread runtime's tasks run on
    /// this thread too).
    pub fn install() -> (EventCapture, tracing::subscriber::DefaultGuard) {
        let out = EventCapture::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .without_time()
            .with_writer(move || writer.clone())
            .finish();
        (out, tracing::subscriber::set_default(subscriber))
    }

    /// Everything printed so far.
    pub fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The lines printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_owned).collect()
    }

    /// The lines printed so far that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

impl Write for EventCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
