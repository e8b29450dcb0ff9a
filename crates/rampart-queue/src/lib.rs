//! Bounded queue with N workers: buffer and producer/consumer.
//!
//! Under construction: this crate is being written.
