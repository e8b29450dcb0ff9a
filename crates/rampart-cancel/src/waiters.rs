//! The wakers of the requests that went pending, for
//! [`Shutdown::cancel_all`](crate::Shutdown::cancel_all): a slab of wakers
//! under one mutex (a `tokio::sync::Notify` registration costs more: an
//! intrusive list entry, an `Arc` clone, state checks on both sides).
//!
//! A request registers its waker at its first `Pending` and gets a key;
//! it replaces the waker when a later poll comes with another one (the
//! request moved to another task); it removes it when it ends, however it
//! ends. [`Waiters::stop`] marks the slab stopped and takes every waker:
//! a request registering after it is refused (and so cancelled), one
//! registered before is woken. The flag is read and written under the
//! mutex, so no wake-up is lost between a registration and a stop.
//!
//! Model-checked with loom (`RUSTFLAGS="--cfg rampart_loom" cargo test
//! --release -p rampart-cancel --lib loom`).

use crate::sync::{Mutex, MutexGuard};
use std::task::Waker;

/// The slab (see the module).
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    inner: Mutex<Slab>,
}

#[derive(Debug, Default)]
struct Slab {
    stopped: bool,
    slots: Vec<Option<Waker>>,
    /// Keys of the empty slots.
    free: Vec<u32>,
}

impl Waiters {
    /// The slab, locked (a panic never happens with it locked: poisoning
    /// is ignored).
    #[inline]
    fn lock(&self) -> MutexGuard<'_, Slab> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers `waker`: its key, or `None` once stopped (the request is
    /// cancelled).
    pub(crate) fn register(&self, waker: &Waker) -> Option<u32> {
        let mut slab = self.lock();
        if slab.stopped {
            return None;
        }
        let waker = Some(waker.clone());
        if let Some(key) = slab.free.pop() {
            slab.slots[key as usize] = waker;
            Some(key)
        } else {
            let key = u32::try_from(slab.slots.len()).expect("fewer than 2^32 requests pending");
            slab.slots.push(waker);
            Some(key)
        }
    }

    /// Keeps `waker` registered under `key`: replaces the waker there
    /// unless it would wake the same task (`Waker::will_wake`); false once
    /// stopped.
    pub(crate) fn update(&self, key: u32, waker: &Waker) -> bool {
        let mut slab = self.lock();
        if slab.stopped {
            return false;
        }
        let slot = &mut slab.slots[key as usize];
        if slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            return true;
        }
        let old = slot.replace(waker.clone());
        drop(slab);
        drop(old);
        true
    }

    /// Removes the waker registered under `key` (the request ended).
    pub(crate) fn remove(&self, key: u32) {
        let mut slab = self.lock();
        if slab.stopped {
            // `stop` took every waker; nothing registers any more.
            return;
        }
        let old = slab.slots[key as usize].take();
        slab.free.push(key);
        drop(slab);
        drop(old);
    }

    /// Stops the slab and wakes every registered waker (once: later calls
    /// find it stopped and empty). Tests and models; the `Shutdown` uses
    /// [`stop_and_take`](Waiters::stop_and_take).
    #[cfg(test)]
    pub(crate) fn stop(&self) {
        for waker in self.stop_and_take() {
            waker.wake();
        }
    }

    /// Stops the slab and hands back every registered waker, for the caller
    /// to wake (so that [`Shutdown::cancel_all`](crate::Shutdown::cancel_all)
    /// stops every lane before it runs any waker's code).
    pub(crate) fn stop_and_take(&self) -> impl Iterator<Item = Waker> {
        let mut slab = self.lock();
        slab.stopped = true;
        let slots = std::mem::take(&mut slab.slots);
        slab.free = Vec::new();
        drop(slab);
        slots.into_iter().flatten()
    }

    /// How many wakers are registered (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let slab = self.lock();
        slab.slots.iter().flatten().count()
    }
}

#[cfg(all(test, not(rampart_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Waker, Arc<Count>) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (Waker::from(c.clone()), c)
    }

    #[test]
    fn stop_wakes_every_registered_waker_once_and_refuses_later_ones() {
        let w = Waiters::default();
        let (a, ca) = waker();
        let (b, cb) = waker();
        let ka = w.register(&a).unwrap();
        let kb = w.register(&b).unwrap();
        assert_ne!(ka, kb);
        w.stop();
        w.stop();
        assert_eq!(ca.0.load(Ordering::SeqCst), 1);
        assert_eq!(cb.0.load(Ordering::SeqCst), 1);
        assert!(w.register(&a).is_none());
        assert!(!w.update(ka, &a));
        w.remove(kb);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn removed_wakers_are_not_woken_and_their_slots_are_reused() {
        let w = Waiters::default();
        let (a, ca) = waker();
        let (b, cb) = waker();
        let ka = w.register(&a).unwrap();
        w.remove(ka);
        assert_eq!(w.register(&b), Some(ka));
        w.stop();
        assert_eq!(ca.0.load(Ordering::SeqCst), 0);
        assert_eq!(cb.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn an_update_with_the_same_tasks_waker_keeps_the_registered_one() {
        let w = Waiters::default();
        let (a, ca) = waker();
        let k = w.register(&a).unwrap();
        // The task's strong count: the test's waker, the slab's clone.
        let before = Arc::strong_count(&ca);
        assert!(w.update(k, &a.clone()));
        assert_eq!(Arc::strong_count(&ca), before, "no second clone kept");
        assert_eq!(w.len(), 1);
        w.stop();
        assert_eq!(ca.0.load(Ordering::SeqCst), 1, "woken once");
    }

    #[test]
    fn stop_wakes_the_waker_of_the_latest_update() {
        let w = Waiters::default();
        let (a, ca) = waker();
        let (b, cb) = waker();
        let k = w.register(&a).unwrap();
        assert!(w.update(k, &b));
        w.stop();
        assert_eq!(ca.0.load(Ordering::SeqCst), 0);
        assert_eq!(cb.0.load(Ordering::SeqCst), 1);
    }
}

#[cfg(all(test, rampart_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicBool, Ordering};
    use loom::thread;
    use std::future::poll_fn;
    use std::task::Poll;

    /// A request goes pending (registers its waker, or is refused) while
    /// another thread stops the slab: the request is either refused or
    /// woken, never left waiting; it then removes its key.
    #[test]
    fn loom_a_request_registering_while_stop_runs_is_refused_or_woken() {
        loom::model(|| {
            let w = Arc::new(Waiters::default());
            let stopped = Arc::new(AtomicBool::new(false));
            let (w2, s2) = (w.clone(), stopped.clone());
            let stopper = thread::spawn(move || {
                s2.store(true, Ordering::SeqCst);
                w2.stop();
            });
            let mut key = None;
            loom::future::block_on(poll_fn(|cx| {
                if key.is_none() {
                    match w.register(cx.waker()) {
                        Some(k) => key = Some(k),
                        None => return Poll::Ready(()),
                    }
                }
                if stopped.load(Ordering::SeqCst) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }));
            if let Some(k) = key {
                w.remove(k);
            }
            stopper.join().unwrap();
            assert_eq!(w.len(), 0);
        });
    }

    /// A request moved to another task replaces its waker while the slab
    /// is stopped: the waker it registered last is woken (or the update is
    /// refused), so the task that polls it now is never left waiting.
    #[test]
    fn loom_an_update_racing_stop_wakes_the_latest_waker_or_is_refused() {
        loom::model(|| {
            let w = Arc::new(Waiters::default());
            let stopped = Arc::new(AtomicBool::new(false));
            let first = loom::future::block_on(poll_fn(|cx| Poll::Ready(w.register(cx.waker()))))
                .expect("not stopped yet");
            let (w2, s2) = (w.clone(), stopped.clone());
            let stopper = thread::spawn(move || {
                s2.store(true, Ordering::SeqCst);
                w2.stop();
            });
            // A second `block_on`: another waker, as another task's.
            let mut updated = false;
            loom::future::block_on(poll_fn(|cx| {
                if !updated {
                    updated = true;
                    if !w.update(first, cx.waker()) {
                        return Poll::Ready(());
                    }
                }
                if stopped.load(Ordering::SeqCst) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }));
            w.remove(first);
            stopper.join().unwrap();
        });
    }

    /// Requests on one lane end (remove their keys, one slot reused by a
    /// new registration) while the slab is stopped: nothing panics, the
    /// request still registered is woken or refused, and the slab ends
    /// empty.
    #[test]
    fn loom_requests_ending_and_registering_while_stop_runs_leave_nothing_behind() {
        loom::model(|| {
            let w = Arc::new(Waiters::default());
            let (a, b) = loom::future::block_on(poll_fn(|cx| {
                Poll::Ready((w.register(cx.waker()), w.register(cx.waker())))
            }));
            let (a, b) = (a.expect("not stopped"), b.expect("not stopped"));
            let w2 = w.clone();
            let stopper = thread::spawn(move || w2.stop());
            w.remove(a);
            let again = loom::future::block_on(poll_fn(|cx| Poll::Ready(w.register(cx.waker()))));
            w.remove(b);
            if let Some(k) = again {
                w.remove(k);
            }
            stopper.join().unwrap();
            assert_eq!(w.len(), 0);
            assert!(w.register(Waker::noop()).is_none());
        });
    }
}
