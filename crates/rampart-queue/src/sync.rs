//! `Arc` and `Mutex`, from loom under `--cfg rampart_loom` (model checks
//! of the answer slots), else std.

#[cfg(rampart_loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};
#[cfg(not(rampart_loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};
