//! Tour section: retry (being written; see its issue).

use rampart::BoxError;

pub(crate) async fn run() -> Result<(), BoxError> {
    crate::heading("retry");
    crate::line("planned: not built yet");
    Ok(())
}
