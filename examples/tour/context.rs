//! Tour section: context (being written; see its issue).

use rampart::BoxError;

pub(crate) async fn run() -> Result<(), BoxError> {
    crate::heading("context");
    crate::line("planned: not built yet");
    Ok(())
}
