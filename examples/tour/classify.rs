//! Tour section: classification and error mapping (rampart-core).

use rampart::BoxError;

pub(crate) async fn run() -> Result<(), BoxError> {
    crate::heading("classification and error mapping (rampart-core)");
    crate::line("being written");
    Ok(())
}
