//! Cancellation: a cancellation scope per request, cleanup hooks, graceful drain.
//!
//! Under construction: this crate is being written.
