//! Atomics, from loom under `--cfg rampart_loom` (model checks), else std.

#[cfg(rampart_loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
#[cfg(not(rampart_loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
