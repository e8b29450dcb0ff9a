//! Circuit breaker shared by every clone.
//!
//! Under construction: this crate is being written.
