//! The lazily armed timer shared by the timeout and deadline futures.
//!
//! Nothing happens until the guarded future returns `Pending`: a call whose
//! response is ready on the first poll never touches the timer wheel (nor
//! reads the clock, for a [`Timer::after`]). On the first `Pending` the
//! deadline is fixed and the timer armed, or, when [`arming`] says the
//! extra turn is likely to pay off, armed on the next poll instead. The
//! `Sleep` lives inline in the pinned future (an enum variant replaced in
//! place with `Pin::set`), so arming it does not allocate.
//!
//! Measured against the alternatives (callgrind, instructions per request
//! over the bare service, current-thread runtime, inner service that yields
//! once / is woken by another task): arming at once costs about what
//! tower's `Timeout` costs (+1070 / +1380 vs tower's +1000 / +1290);
//! always deferring saves the timer for one-turn calls (+280) but costs a
//! spurious poll and a scheduler turn for the others (+1970); the adaptive
//! choice gets +270 / +1440. A boxed `Sleep` would add an allocation on
//! every pending call.

use crate::arming;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

pin_project! {
    /// A timer that registers with tokio only when first polled.
    #[project = TimerProj]
    pub(crate) enum Timer {
        // Expires `after` from the moment it is first polled.
        After { after: Duration },
        // Expires at `deadline`.
        At { deadline: Instant },
        // Expires at `deadline`; the guarded future was pending once and the
        // task was woken to poll it again before arming.
        Deferred { deadline: Instant },
        // Registered with tokio.
        Armed { #[pin] sleep: Sleep },
    }
}

impl Timer {
    /// A timer that expires `after` from its first poll.
    #[inline]
    pub(crate) fn after(after: Duration) -> Timer {
        Timer::After { after }
    }

    /// A timer that expires at `deadline`.
    #[inline]
    pub(crate) fn at(deadline: Instant) -> Timer {
        Timer::At { deadline }
    }

    /// `Ready` once the timer expired. The first call fixes the deadline
    /// and arms the timer, or, when [`arming::defer`] says so, asks for one
    /// more poll instead; that next call arms it.
    pub(crate) fn poll_expired(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = match self.as_mut().project() {
            TimerProj::Armed { sleep } => return sleep.poll(cx),
            TimerProj::After { after } => {
                let deadline = rampart_core::codec::deadline_after(Instant::now(), *after);
                if arming::defer() {
                    return self.defer(deadline, cx);
                }
                deadline
            }
            TimerProj::At { deadline } => {
                let deadline = *deadline;
                if arming::defer() {
                    return self.defer(deadline, cx);
                }
                deadline
            }
            TimerProj::Deferred { deadline } => {
                arming::wasted();
                *deadline
            }
        };
        self.set(Timer::Armed {
            sleep: tokio::time::sleep_until(deadline),
        });
        match self.project() {
            TimerProj::Armed { sleep } => sleep.poll(cx),
            _ => Poll::Pending,
        }
    }

    /// The guarded future completed; if that happened within the extra
    /// turn it was given, the deferral paid off.
    #[inline]
    pub(crate) fn on_complete(&self) {
        if let Timer::Deferred { .. } = self {
            arming::paid_off();
        }
    }

    fn defer(mut self: Pin<&mut Self>, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        self.set(Timer::Deferred { deadline });
        // Ask for one more poll after this scheduler turn, the way
        // `yield_now` does (tokio defers the wake-up until its driver has
        // run, so the inner future's own scheduling is unchanged); dropping
        // the yield future does not withdraw the wake-up.
        let _ = std::pin::pin!(tokio::task::yield_now()).poll(cx);
        Poll::Pending
    }
}

impl std::fmt::Debug for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Timer::After { after } => f.debug_struct("Timer").field("after", after).finish(),
            Timer::At { deadline } | Timer::Deferred { deadline } => {
                f.debug_struct("Timer").field("at", deadline).finish()
            }
            Timer::Armed { sleep } => f
                .debug_struct("Timer")
                .field("armed", &sleep.deadline())
                .finish(),
        }
    }
}
