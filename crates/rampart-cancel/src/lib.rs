//! Cancellation: a cancellation scope per request, cleanup hooks, graceful
//! drain — the article's "cancellable task with cleanup", as a tower layer.
//!
//! [`CancelLayer`] runs every request under a
//! [`CancellationToken`](rampart_core::CancellationToken) of its own, a
//! child of the caller's (the token of the caller's
//! [`Context`](rampart_core::Context), if it has one) and of the
//! server-wide [`Shutdown`] ([`Shutdown::cancel_all`] fires every request's
//! token). The handler reaches it with `Context::current()`, and so do the
//! tasks it starts with [`rampart_core::spawn`] (a bare `tokio::spawn`
//! loses the context).
//!
//! - When the request's token fires, the inner future is dropped and the
//!   call resolves to [`ErrorKind::Cancelled`](rampart_core::ErrorKind::Cancelled)
//!   (499 / gRPC CANCELLED at the edge) at once.
//! - When the caller drops the response future (the client went away, a
//!   timeout further out fired), the request's token is cancelled too, so
//!   the work the handler spawned sees it.
//! - [`on_cancel`](CancelLayer::on_cancel) hooks run exactly once for every
//!   cancelled request, with its id, the time it ran and the
//!   [`CancelReason`]; never for a request that completed.
//! - [`Shutdown::drain`] stops admitting (new calls fail with
//!   [`ErrorKind::Closed`](rampart_core::ErrorKind::Closed), 503), waits for
//!   the requests in flight up to a deadline, cancels the rest and reports
//!   the counts.
//!
//! ```
//! use rampart_cancel::CancelLayer;
//! use rampart_core::{Context, ErrorKind};
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let cleanups = Arc::new(AtomicUsize::new(0));
//! let seen = cleanups.clone();
//! let layer = CancelLayer::new().on_cancel(move |info| {
//!     println!("cleaning up after {:?}: {}", info.elapsed(), info.reason());
//!     seen.fetch_add(1, Ordering::SeqCst);
//! });
//! let shutdown = layer.shutdown().clone();
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|secs: u64| async move {
//!         // The request's token, from inside the handler.
//!         let token = Context::current().unwrap().cancellation().unwrap().clone();
//!         tokio::select! {
//!             () = tokio::time::sleep(Duration::from_secs(secs)) => Ok::<_, std::io::Error>("done"),
//!             () = token.cancelled() => Ok("noticed the cancellation"),
//!         }
//!     }));
//!
//! // A fast request completes: no cleanup.
//! assert_eq!(svc.clone().oneshot(1).await.unwrap(), "done");
//! // A slow one is still running when the drain deadline passes.
//! let slow = tokio::spawn(svc.clone().oneshot(60));
//! tokio::task::yield_now().await;
//! let report = shutdown.drain(Duration::from_secs(5)).await;
//! assert_eq!(slow.await.unwrap().unwrap_err().kind(), ErrorKind::Cancelled);
//! assert_eq!((report.completed(), report.cancelled()), (0, 1));
//! assert_eq!(cleanups.load(Ordering::SeqCst), 1);
//! // Nothing is admitted any more.
//! assert_eq!(svc.oneshot(1).await.unwrap_err().kind(), ErrorKind::Closed);
//! # }
//! ```
//!
//! # Metrics
//!
//! With the `metrics` feature the layer records on the
//! [`metrics`](https://docs.rs/metrics) facade, labelled `layer = <name>`
//! ([`CancelLayer::name`]; `"default"` otherwise), never by request data.
//! Handles are registered when the layer wraps a service (`Layer::layer`),
//! under the name the layer has then (naming it registers nothing): install
//! the recorder before building the stack. Without the feature nothing is
//! recorded or paid.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `rampart.cancel.in_flight` | gauge | `layer` | requests admitted and not finished (back to 0 on every path: completion, error, cancellation, a dropped or panicking future) |
//! | `rampart.cancel.cancelled` | counter | `layer`, `reason` = `token` \| `caller_dropped` \| `shutdown` | requests cancelled (resolved to `Cancelled`, or dropped by their caller before they completed); `token` includes calls whose caller's token had fired before the call; a handler that panics unwinds through its dropped future and counts as `caller_dropped` (its hooks see the same) |
//! | `rampart.cancel.refused` | counter | `layer` | calls refused with `Closed` because the drain had begun |
//!
//! The [`DrainReport`] of a [`Shutdown::drain`] is returned, not recorded
//! (one drain per process: the counters above show it as it happens). The
//! layer's tracing events carry its name in their `layer` field; the
//! drain's carry the [`Shutdown`]'s ([`Shutdown::named`]).
//!
//! Feature `metrics` turns these on.
//!
//! # Async cleanup
//!
//! `Drop` cannot await, and a cancelled request's future is gone by the
//! time its hooks run. Cleanup that must await (release a remote lock,
//! delete a temporary object, tell a peer) is spawned, and bounded by a
//! timeout so it cannot outlive the shutdown: that is
//! [`on_cancel_async`](CancelLayer::on_cancel_async), which spawns the
//! cleanup on the current runtime, drops it after its timeout, runs it with
//! the request's id (and no cancelled token), and lets
//! [`Shutdown::drain`] wait for it within its grace period:
//!
//! ```
//! use rampart_cancel::CancelLayer;
//! use std::time::Duration;
//!
//! let layer = CancelLayer::new().on_cancel_async(Duration::from_secs(2), |info| async move {
//!     // e.g. `lock_service.release(info.request_id()).await`
//!     tracing::info!(id = ?info.request_id(), "released the request's resources");
//! });
//! # drop(layer);
//! ```
//!
//! Inside a handler the same pattern works without the layer's help: spawn
//! the cleanup with `rampart_core::spawn(tokio::time::timeout(limit, cleanup))`
//! from a guard's `Drop`, and it runs with the request's context.
//!
//! # Cost
//!
//! No allocation and no timer for a request nothing asks about. The
//! request's token is made on demand
//! ([`Context::with_cancellation_on_demand`](rampart_core::Context::with_cancellation_on_demand)):
//! the first time the handler or a layer asks for it, clones the context
//! (to spawn, to store it, to narrow its deadline), or when the request is
//! cancelled (so a drop guard that asks then sees it cancelled). Making it
//! costs one allocation. Nothing is registered anywhere while the inner
//! future answers on its first poll: the request's token is not put in a
//! server-wide token tree (that locks the shared parent and grows its
//! child list for every request); the request watches the [`Shutdown`],
//! and its token once it exists, only from its first `Pending`: a clone
//! of its waker goes into a slab under a mutex (replaced if a later poll
//! comes with another waker, removed when the request ends), which
//! [`Shutdown::cancel_all`] empties and wakes. The [`Shutdown`] keeps its
//! requests in 8 lanes (a `TaskTracker` and a waker slab each; a thread's
//! calls go to its lane), so a multi-thread runtime's workers do not all
//! write the same counters. Only a caller that brings a token of its own
//! gets a real child token of it, made at the call.

mod future;
mod hook;
mod layer;
mod metrics;
mod service;
mod shutdown;
mod sync;
mod waiters;

pub use future::ResponseFuture;
pub use hook::{CancelInfo, CancelReason};
pub use layer::CancelLayer;
pub use service::Cancel;
pub use shutdown::{DEFAULT_CANCEL_GRACE, DrainReport, Shutdown};

#[cfg(test)]
mod tests;
