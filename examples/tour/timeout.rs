//! Tour section: timeout (being written; see its issue).

use rampart::BoxError;

pub(crate) async fn run() -> Result<(), BoxError> {
    crate::heading("timeout");
    crate::line("planned: not built yet");
    Ok(())
}
