//! Timeouts and deadlines as tower layers: Python's `asyncio.wait_for`, and
//! what services need on top of it — a deadline that travels with the
//! request across hops and bounds every wait on the way.
//!
//! ```
//! use rampart_core::ErrorKind;
//! use rampart_timeout::{DeadlineLayer, TimeoutLayer};
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! async fn slow_operation(_: ()) -> Result<&'static str, std::convert::Infallible> {
//!     tokio::time::sleep(Duration::from_secs(10)).await;
//!     Ok("done")
//! }
//!
//! let svc = ServiceBuilder::new()
//!     .layer(DeadlineLayer::new(Duration::from_secs(5))) // the whole request
//!     .layer(TimeoutLayer::new(Duration::from_secs(2))) // one attempt
//!     .service(service_fn(slow_operation));
//!
//! let err = svc.oneshot(()).await.unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::Timeout);
//! # Ok(())
//! # }
//! ```
//!
//! # The layers
//!
//! - [`TimeoutLayer`]: each call fails with
//!   [`ErrorKind::Timeout`](rampart_core::ErrorKind::Timeout) after a fixed
//!   duration. Per attempt: put it under the retry layer.
//! - [`DeadlineLayer`]: the budget of the whole logical request. It sets the
//!   deadline of the request's [`Context`](rampart_core::Context) (the
//!   earliest deadline wins, so a caller's shorter one is never extended),
//!   the inner work reads it with `Context::current()`, and the call fails
//!   with [`ErrorKind::DeadlineExceeded`](rampart_core::ErrorKind::DeadlineExceeded)
//!   when it passes. A request whose deadline already passed is failed
//!   without calling the inner service.
//! - Propagation across hops, over the wire:
//!   - server side, [`DeadlineLayer::from_headers`] starts the deadline from
//!     the caller's `grpc-timeout` (gRPC requests) or HTTP deadline header
//!     (default `x-request-timeout-ms`), capped by the layer's budget; a
//!     malformed header is ignored or rejected (400, or gRPC
//!     INVALID_ARGUMENT) as [`OnMalformed`] says;
//!   - client side, [`PropagateDeadlineLayer`] writes the time that
//!     *remains* on outgoing `http::Request`s (hyper, axum-style clients,
//!     tonic channels), so each hop sees a smaller budget than the last;
//!   - [`DeadlineHeaders`] (from `rampart_core::codec`, shared with
//!     `rampart-context`'s `PropagateContextLayer`) names the headers, the
//!     same value for both ends, and holds the rules for reading and
//!     writing them.
//!
//! Both fire by dropping the inner call: its future is dropped the moment
//! the timer expires, not later when the caller drops the response future.
//!
//! Recommended order, outermost first. Client: propagate context →
//! [`DeadlineLayer`] → retry → concurrency limit → [`TimeoutLayer`] →
//! [`PropagateDeadlineLayer`] → client. Server: request id / context →
//! handle errors → [`DeadlineLayer::from_headers`] → limit or queue →
//! handler.
//!
//! # The wait for readiness counts
//!
//! tower's `Timeout` starts its timer in `call`, so a caller waiting in
//! `poll_ready` for a permit below it waits unbounded (tower#648). Here
//! `poll_ready` never waits: it polls the inner service once and answers
//! `Ready` unless the inner service failed. If the inner service was not
//! ready, `call` moves it into the response future (a clone stays behind —
//! hence `S: Clone`) and the future drives `poll_ready` and `call` under
//! the timer. So:
//!
//! - a limit that takes its permit in `poll_ready` (tower's
//!   `ConcurrencyLimit`, `Buffer`) is waited for under the timer;
//! - rampart's limits take their permit inside the call future, so the
//!   wait is part of the inner response future and is bounded the same way;
//!   when the timer fires, the waiting call is dropped and leaves the queue.
//!
//! The other side of this: the layers do not pass backpressure up through
//! `poll_ready`. A layer further out that reacts to `Pending` (tower's
//! `LoadShed`) never sees it; put it inside the timeout, or use a limit
//! that sheds in the call, as rampart's can.
//!
//! # Clock
//!
//! Everything after `call()` counts, as with tower's `Timeout`: the
//! deadline is fixed in `call()` (`call() + timeout`, or the request's
//! [`Context`](rampart_core::Context) deadline if earlier) and never moves.
//! No timer is registered when the inner response is ready on its first
//! poll; on the first `Pending` the timer is armed with that deadline (and
//! fires at once if it already passed). The same on every thread and under
//! any executor that polls the future.
//!
//! The layers need a tokio runtime with its time driver enabled, as
//! `tokio::time::sleep` does.

mod bounded;
pub mod config;
mod deadline;
mod error;
mod propagate;
mod ready;
mod timeout;
mod timer;

pub use deadline::{Deadline, DeadlineFuture, DeadlineLayer, FromHeaders, NoHeaders, OnMalformed};
pub use propagate::{PropagateDeadline, PropagateDeadlineLayer, PropagateFuture};
pub use rampart_core::ConfigError;
pub use rampart_core::codec::{DeadlineHeaders, GRPC_TIMEOUT, X_REQUEST_TIMEOUT_MS};
pub use timeout::{Timeout, TimeoutFuture, TimeoutLayer};
