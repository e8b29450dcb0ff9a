//! The FIFO of waiters: a doubly linked list threaded through a slab of
//! slots, so that pushing, granting the head and removing a cancelled
//! waiter are all O(1) and allocate nothing once the slab has grown to the
//! peak number of waiters (it is emptied when the last waiter leaves).
//!
//! Every waiter gets a sequence number, in arrival order. Permits are only
//! ever granted to the head, so the waiters granted so far are exactly the
//! live ones whose number is below the last granted number + 1 — which the
//! semaphore publishes in an atomic, letting a granted waiter see its grant
//! without taking the lock. A granted waiter's slot is freed at once.

use std::task::Waker;

const NIL: u32 = u32::MAX;

/// Slabs at least this large are shrunk when they empty.
const SHRINK_ABOVE: usize = 1024;

/// A waiter's place: its slot (index and generation) and its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    idx: u32,
    generation: u32,
    pub(crate) seq: u64,
}

#[derive(Debug)]
enum State {
    Free { next_free: u32 },
    Waiting { waker: Option<Waker> },
}

#[derive(Debug)]
struct Entry {
    generation: u32,
    prev: u32,
    next: u32,
    seq: u64,
    state: State,
}

/// The head waiter was granted a permit.
#[derive(Debug)]
pub(crate) struct Granted {
    /// Its number.
    pub(crate) seq: u64,
    /// Its waker.
    pub(crate) waker: Option<Waker>,
}

#[derive(Debug)]
pub(crate) struct Queue {
    entries: Vec<Entry>,
    head: u32,
    tail: u32,
    free: u32,
    len: usize,
    next_seq: u64,
}

impl Queue {
    pub(crate) const fn new() -> Queue {
        Queue {
            entries: Vec::new(),
            head: NIL,
            tail: NIL,
            free: NIL,
            len: 0,
            next_seq: 0,
        }
    }

    /// Waiters in line.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues a new waiter at the back, to be woken with `waker`; `None`
    /// only if the slab is full (`u32::MAX - 1` waiters).
    pub(crate) fn push_back(&mut self, waker: &Waker) -> Option<Slot> {
        let seq = self.next_seq;
        let state = State::Waiting {
            waker: Some(waker.clone()),
        };
        let idx = if self.free == NIL {
            let idx = u32::try_from(self.entries.len())
                .ok()
                .filter(|i| *i != NIL)?;
            self.entries.push(Entry {
                generation: 0,
                prev: NIL,
                next: NIL,
                seq,
                state,
            });
            idx
        } else {
            let idx = self.free;
            let e = &mut self.entries[idx as usize];
            self.free = match e.state {
                State::Free { next_free } => next_free,
                State::Waiting { .. } => unreachable!("free list holds only free slots"),
            };
            e.state = state;
            e.seq = seq;
            idx
        };
        self.next_seq += 1;
        let e = &mut self.entries[idx as usize];
        e.prev = self.tail;
        e.next = NIL;
        let generation = e.generation;
        if self.tail == NIL {
            self.head = idx;
        } else {
            self.entries[self.tail as usize].next = idx;
        }
        self.tail = idx;
        self.len += 1;
        Some(Slot {
            idx,
            generation,
            seq,
        })
    }

    /// Takes the head waiter out of line (it has been granted a permit);
    /// `None` when the line is empty.
    pub(crate) fn grant_front(&mut self) -> Option<Granted> {
        if self.head == NIL {
            return None;
        }
        let idx = self.head;
        let seq = self.entries[idx as usize].seq;
        let waker = self.unlink_and_free(idx);
        Some(Granted { seq, waker })
    }

    /// Stores the waker of a waiter still in line.
    pub(crate) fn set_waker(&mut self, slot: Slot, waker: &Waker) {
        if let Some(Entry {
            state: State::Waiting { waker: stored },
            ..
        }) = self.entry_mut(slot)
        {
            match stored {
                Some(w) if w.will_wake(waker) => {}
                _ => *stored = Some(waker.clone()),
            }
        }
    }

    /// Takes a waiter out of line; `false` if it was not in line.
    pub(crate) fn remove(&mut self, slot: Slot) -> bool {
        if !matches!(
            self.entry_mut(slot),
            Some(Entry {
                state: State::Waiting { .. },
                ..
            })
        ) {
            return false;
        }
        drop(self.unlink_and_free(slot.idx));
        true
    }

    fn entry_mut(&mut self, slot: Slot) -> Option<&mut Entry> {
        self.entries
            .get_mut(slot.idx as usize)
            .filter(|e| e.generation == slot.generation && e.seq == slot.seq)
    }

    /// Unlinks a waiting entry, frees its slot, returns its waker.
    fn unlink_and_free(&mut self, idx: u32) -> Option<Waker> {
        let (prev, next) = {
            let e = &self.entries[idx as usize];
            (e.prev, e.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.entries[next as usize].prev = prev;
        }
        self.len -= 1;
        let e = &mut self.entries[idx as usize];
        let waker = match std::mem::replace(
            &mut e.state,
            State::Free {
                next_free: self.free,
            },
        ) {
            State::Waiting { waker } => waker,
            State::Free { .. } => unreachable!("only waiting entries are linked"),
        };
        e.generation = e.generation.wrapping_add(1);
        self.free = idx;
        if self.len == 0 {
            // Nobody is in line: forget every slot (no trace left behind),
            // and give memory back after a large burst.
            self.entries.clear();
            if self.entries.capacity() > SHRINK_ABOVE {
                self.entries.shrink_to(SHRINK_ABOVE / 8);
            }
            self.free = NIL;
        }
        waker
    }

    #[cfg(test)]
    pub(crate) fn slab_len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }

    #[test]
    fn grants_in_fifo_order_and_skips_removed_waiters() {
        let mut queue = Queue::new();
        let wk = Waker::from(Arc::new(Noop));
        let first = queue.push_back(&wk).unwrap();
        let second = queue.push_back(&wk).unwrap();
        let third = queue.push_back(&wk).unwrap();
        assert_eq!((first.seq, second.seq, third.seq), (0, 1, 2));
        assert!(queue.remove(second));
        assert!(!queue.remove(second), "already gone");
        assert_eq!(queue.len(), 2);
        let g = queue.grant_front().unwrap();
        assert_eq!(g.seq, first.seq);
        assert!(g.waker.is_some());
        assert!(!queue.remove(first), "a granted waiter is out of line");
        assert_eq!(queue.grant_front().unwrap().seq, third.seq);
        assert!(queue.grant_front().is_none());
        assert_eq!(queue.slab_len(), 0, "an empty queue leaves no slots behind");
    }

    #[test]
    fn stale_slots_are_ignored_after_reuse() {
        let mut queue = Queue::new();
        let wk = Waker::from(Arc::new(Noop));
        let gone = queue.push_back(&wk).unwrap();
        let keep = queue.push_back(&wk).unwrap();
        assert!(queue.remove(gone));
        let reused = queue.push_back(&wk).unwrap();
        assert_eq!(reused.idx, gone.idx, "slot reused");
        assert!(!queue.remove(gone), "old generation");
        queue.set_waker(gone, &wk);
        assert_eq!(queue.len(), 2);
        assert!(queue.remove(keep));
        assert!(queue.remove(reused));
        assert_eq!(queue.slab_len(), 0);
    }
}
