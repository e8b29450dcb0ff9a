//! Tour section: limit (being written; see its issue).

use rampart::BoxError;

pub(crate) async fn run() -> Result<(), BoxError> {
    crate::heading("limit");
    crate::line("planned: not built yet");
    Ok(())
}
