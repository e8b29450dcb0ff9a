//! Guards: a [`Permit`] gives its permit back when dropped; a [`Ticket`]
//! (a place in line) withdraws when dropped, passing on a permit it was
//! granted but never picked up.

use crate::adaptive::Adaptive;
use crate::config::Policy;
use crate::sem::{Admit, Sem, Slot};
use crate::stats::Counters;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Whatever owns a semaphore: the shared state of a limit, or one key's.
pub(crate) trait Owner: Send + Sync + 'static {
    fn sem(&self) -> &Sem;
    fn counters(&self) -> &Counters;
    fn policy(&self) -> &Policy;
    fn adaptive(&self) -> Option<&Adaptive> {
        None
    }
}

/// One permit; released on drop.
#[derive(Debug)]
pub(crate) struct Permit<O: Owner> {
    owner: Arc<O>,
}

impl<O: Owner> Permit<O> {
    /// Wraps a permit already taken from `owner`'s semaphore.
    #[inline]
    pub(crate) fn taken(owner: Arc<O>) -> Permit<O> {
        if let Some(m) = owner.counters().metrics() {
            m.in_flight.increment(1.0);
        }
        Permit { owner }
    }

    pub(crate) fn owner(&self) -> &O {
        &self.owner
    }
}

impl<O: Owner> Drop for Permit<O> {
    fn drop(&mut self) {
        if let Some(m) = self.owner.counters().metrics() {
            m.in_flight.decrement(1.0);
        }
        self.owner.sem().release();
    }
}

/// What [`Ticket::join`] did.
#[derive(Debug)]
pub(crate) enum Joined {
    /// Took a free permit (in use, counting it): [`Ticket::into_permit`].
    Acquired(u32),
    /// In line; [`Ticket::poll`] until granted.
    Queued,
    /// The line is full.
    Full,
}

/// A place in line (once [`joined`](Ticket::join)). While it is in line it
/// counts in the `waiting` gauge; when it leaves (granted, given up or
/// dropped) its time in line goes to the wait histogram.
#[derive(Debug)]
pub(crate) struct Ticket<O: Owner> {
    owner: Option<Arc<O>>,
    slot: Option<Slot>,
    /// When it joined the line (only kept to be measured).
    #[cfg(feature = "metrics")]
    since: Option<tokio::time::Instant>,
}

impl<O: Owner> Ticket<O> {
    /// A ticket for `owner`'s line, not in it yet.
    pub(crate) fn new(owner: Arc<O>) -> Ticket<O> {
        Ticket {
            owner: Some(owner),
            slot: None,
            #[cfg(feature = "metrics")]
            since: None,
        }
    }

    pub(crate) fn owner(&self) -> Option<&O> {
        self.owner.as_deref()
    }

    pub(crate) fn is_queued(&self) -> bool {
        self.slot.is_some()
    }

    /// Takes a free permit or joins the line, to be woken through `cx`.
    pub(crate) fn join(&mut self, max_waiting: usize, cx: &mut Context<'_>) -> Joined {
        let Some(owner) = &self.owner else {
            return Joined::Full;
        };
        match owner.sem().acquire_or_queue(max_waiting, cx.waker()) {
            Admit::Acquired(in_flight) => Joined::Acquired(in_flight),
            Admit::Queued(slot) => {
                self.slot = Some(slot);
                if let Some(m) = owner.counters().metrics() {
                    m.waiting.increment(1.0);
                }
                #[cfg(feature = "metrics")]
                {
                    self.since = Some(tokio::time::Instant::now());
                }
                Joined::Queued
            }
            Admit::Full => Joined::Full,
        }
    }

    /// `Ready(in_flight)` once granted; then [`into_permit`](Self::into_permit).
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<u32> {
        match (&self.owner, self.slot) {
            (Some(o), Some(slot)) => o.sem().poll_slot(slot, cx),
            _ => Poll::Pending,
        }
    }

    /// The permit of a ticket that was granted one (or acquired it).
    pub(crate) fn into_permit(mut self) -> Option<Permit<O>> {
        let owner = self.owner.take()?;
        if self.slot.take().is_some() {
            self.left_line(&owner);
        }
        Some(Permit::taken(owner))
    }

    /// Records that this ticket left the line.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
    fn left_line(&self, owner: &O) {
        let Some(metrics) = owner.counters().metrics() else {
            return;
        };
        metrics.waiting.decrement(1.0);
        #[cfg(feature = "metrics")]
        if let Some(since) = self.since {
            metrics.wait.record_duration(since.elapsed());
        }
    }
}

impl<O: Owner> Drop for Ticket<O> {
    fn drop(&mut self) {
        if let (Some(o), Some(slot)) = (self.owner.take(), self.slot) {
            self.left_line(&o);
            o.sem().cancel(slot);
        }
    }
}
