//! rampart
pub use rampart_core as core;
