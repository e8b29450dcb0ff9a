//! Fan-out: gather and wait with a collective deadline.
//!
//! Under construction: this crate is being written.
