//! The lazily armed timer shared by the timeout and deadline futures.
//!
//! The deadline is fixed before the timer exists (in `call`, or when the
//! wait for readiness began); the timer only decides *when tokio learns
//! about it*. A call whose response is ready on the first poll never
//! touches the timer wheel. On the first `Pending` the timer is armed with
//! the deadline fixed earlier, so the work done inside that first poll
//! counts, and a deadline that passed meanwhile fires on that same poll.
//! The `Sleep` lives inline in the pinned future (an enum variant replaced
//! in place with `Pin::set`), so arming it does not allocate.
//!
//! Nothing here depends on the executor or the thread: the timer is armed
//! on the first `Pending`, every time, under any executor that polls it.

use pin_project_lite::pin_project;
use rampart_core::codec::deadline_after;
use rampart_core::{Context, ErrorKind};
use std::future::Future;
use std::pin::Pin;
use std::task::{self, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

pin_project! {
    /// A timer that registers with tokio only when first polled.
    #[project = TimerProj]
    pub(crate) enum Timer {
        // Expires at `deadline`; not registered yet.
        At { deadline: Instant },
        // Registered with tokio.
        Armed { #[pin] sleep: Sleep },
    }
}

impl Timer {
    /// A timer that expires at `deadline`.
    #[inline]
    pub(crate) fn at(deadline: Instant) -> Timer {
        Timer::At { deadline }
    }

    /// `Ready` once the deadline passed. The first call arms the timer.
    pub(crate) fn poll_expired(mut self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<()> {
        let deadline = match self.as_mut().project() {
            TimerProj::Armed { sleep } => return sleep.poll(cx),
            TimerProj::At { deadline } => *deadline,
        };
        // Already passed (work done in the first poll, a call first polled
        // late, a zero timeout): fire now, without registering a timer that
        // tokio would fire one driver turn later.
        if deadline <= Instant::now() {
            return Poll::Ready(());
        }
        self.set(Timer::Armed {
            sleep: tokio::time::sleep_until(deadline),
        });
        match self.project() {
            TimerProj::Armed { sleep } => sleep.poll(cx),
            TimerProj::At { .. } => Poll::Pending,
        }
    }
}

impl std::fmt::Debug for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = match self {
            Timer::At { deadline } => *deadline,
            Timer::Armed { sleep } => sleep.deadline(),
        };
        f.debug_struct("Timer")
            .field("at", &at)
            .field("armed", &matches!(self, Timer::Armed { .. }))
            .finish()
    }
}

/// The deadline of a call (or of a wait for readiness) starting at `now`
/// with `timeout`, and the error it fails with: `own` after `timeout`, or
/// the current [`Context`]'s deadline if that is earlier
/// ([`ErrorKind::DeadlineExceeded`]: the request's whole budget is spent,
/// so retrying is pointless).
#[inline]
pub(crate) fn deadline_from(
    now: Instant,
    timeout: Duration,
    own: ErrorKind,
) -> (Instant, ErrorKind) {
    // One checked add; only a duration too large for the clock takes the
    // saturating path.
    let mine = now
        .checked_add(timeout)
        .unwrap_or_else(|| deadline_after(now, timeout));
    match Context::current_deadline() {
        Some(ctx) if ctx < mine => (ctx, ErrorKind::DeadlineExceeded),
        _ => (mine, own),
    }
}
