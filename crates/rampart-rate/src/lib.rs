//! Rate limiting: GCRA, keyed, shared by every clone.
//!
//! Under construction: this crate is being written.
