//! `Mutex`, from loom under `--cfg rampart_loom` (model checks of the
//! shutdown's waiter slab), else std.

#[cfg(rampart_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(rampart_loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};
