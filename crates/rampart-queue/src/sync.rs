//! `Arc` and `Mutex`, from loom under `--cfg rampart_loom` (model checks
//! of the queue and the answer slots), else std's `Arc` and parking_lot's
//! `Mutex` (no poisoning: nothing panics under these locks, and a lock or
//! unlock is one compare-exchange, without std's poison checks).

#[cfg(rampart_loom)]
pub(crate) use loom::sync::{Arc, MutexGuard};
#[cfg(not(rampart_loom))]
pub(crate) use parking_lot::{Mutex, MutexGuard};
#[cfg(not(rampart_loom))]
pub(crate) use std::sync::Arc;

/// loom's `Mutex` with parking_lot's `lock` (no `LockResult`).
#[cfg(rampart_loom)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

#[cfg(rampart_loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Mutex(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
