//! Keyed lock and single-flight coalescing.
//!
//! Under construction: this crate is being written.
