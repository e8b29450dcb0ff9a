//! Fan-out over a tower service: send many requests, get every outcome back
//! in input order, with bounded concurrency and a collective deadline that
//! cancels (never leaks) what has not finished.
//!
//! The article's `asyncio.gather(..., return_exceptions=True)` is
//! [`gather`]; its `asyncio.wait(tasks, timeout=2.0)` is [`wait`]; and
//! [`FanOutLayer`] turns any `Service<Req>` into a service of many requests
//! (`Vec<Req>` or any `IntoIterator`) for a `ServiceBuilder`:
//!
//! ```
//! use rampart_fanout::{FanOutLayer, Failure, Outcome, Reason};
//! use std::num::NonZeroUsize;
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let replica = service_fn(|ms: u64| async move {
//!     tokio::time::sleep(Duration::from_millis(ms)).await;
//!     Ok::<_, std::convert::Infallible>(ms)
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(
//!         FanOutLayer::new()
//!             .quorum(NonZeroUsize::new(2).unwrap())
//!             .concurrency(NonZeroUsize::new(8).unwrap())
//!             .timeout(Duration::from_secs(1)),
//!     )
//!     .service(replica);
//!
//! // Two of three answers are enough; the slow replica is cancelled.
//! let res = svc.clone().oneshot(vec![10, 5_000, 20]).await.unwrap();
//! assert_eq!(res.succeeded(), 2);
//! assert_eq!(res[1].not_done().unwrap().reason(), Reason::Decided);
//!
//! // Not two answers within the second: the group fails, outcomes inside.
//! let err = svc.oneshot(vec![10, 5_000, 7_000]).await.unwrap_err();
//! assert_eq!(err.failure(), Failure::Timeout);
//! assert_eq!(err.gathered()[0], Outcome::Ok(10));
//! assert_eq!(err.gathered().not_done(), 2);
//! # }
//! ```
//!
//! # Semantics
//!
//! - **Order.** [`Gathered`] holds one [`Outcome`] per request, in the
//!   order given, whatever order they finished in: `Ok(response)`,
//!   `Err(error)`, or `NotDone` (with its [`Reason`] and whether it had been
//!   sent).
//! - **Modes** ([`Mode`]): `All` waits for everything, errors are values;
//!   `FailFast` stops at the first error; `FirstOk` stops at the first
//!   success (and fails once all failed); `Quorum(k)` stops once `k`
//!   succeed (and fails once that is impossible). When a group stops early,
//!   its calls in flight are dropped and the rest are never sent.
//! - **Concurrency.** At most [`FanOutLayer::concurrency`] calls in flight;
//!   each is sent only once the inner service's `poll_ready` says so, so a
//!   limit below (rampart's or tower's) is respected too. A `poll_ready`
//!   error is the error of the request that waited for it; the requests
//!   after it are never sent ([`Reason::NotReady`]).
//! - **Deadlines.** The collective timeout ([`wait`],
//!   [`FanOutLayer::timeout`]) starts at the call; the caller's
//!   [`Context`](rampart_core::Context) deadline applies too, whichever is
//!   earlier. At that instant the unfinished calls are dropped (their
//!   permits and resources released) and reported as not done.
//! - **Context.** Each call runs in the caller's `Context` (same request
//!   id), with the group's deadline and a child of the caller's
//!   cancellation token, which is cancelled when the group ends or is
//!   dropped (so work a call spawned with `rampart::spawn` can notice). The
//!   group wakes at once when the caller's token fires
//!   ([`Failure::Cancelled`]). With no caller context and no timeout the
//!   calls run bare, as they would without the fan-out.
//! - **Drop.** Dropping the future drops every call in flight (in the
//!   group's context, as they ran).
//! - **Panics.** A call whose future panics fails alone, reported as not
//!   done with [`Reason::Panicked`]; a panic in the inner service's
//!   `poll_ready` or `call` fails that request and the rest are never sent
//!   ([`Reason::NotReady`]). The group itself never panics on account of
//!   the inner service.
//! - **Errors.** The service's error is [`FanOutError`] (why, plus every
//!   outcome); `rampart_core::Error::from` gives it a rampart
//!   [`ErrorKind`](rampart_core::ErrorKind). [`gather`], [`wait`] and
//!   [`FanOut::gather`] return the outcomes either way.
//!
//! # Metrics
//!
//! With the `metrics` feature a [`FanOutLayer`] (and [`FanOut::gather`])
//! records on the [`metrics`](https://docs.rs/metrics) facade, labelled
//! `layer = <name>` ([`FanOutLayer::name`]; `"default"` otherwise), never
//! by request data. Handles are registered when the layer wraps a service
//! (`Layer::layer`), under the name the layer has then: install the
//! recorder before building the stack. [`gather`] and [`wait`] have no name
//! and record nothing. Without the feature nothing is recorded or paid.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `rampart.fanout.calls` | counter | `layer` | calls sent to the inner service |
//! | `rampart.fanout.failed` | counter | `layer` | requests whose outcome is an error (the call's, or the `poll_ready` error the request waited for): the sum of [`Gathered::failed`] |
//! | `rampart.fanout.panicked` | counter | `layer` | requests whose call panicked ([`Reason::Panicked`]) |
//! | `rampart.fanout.cancelled` | counter | `layer`, `reason` = `decided` \| `timeout` \| `deadline` \| `cancelled` \| `caller_dropped` | calls in flight dropped unfinished: the group was decided without them, the collective timeout or the caller's deadline passed, the caller's token fired, or the caller dropped the group's future |
//! | `rampart.fanout.duration` | histogram, seconds | `layer` | each group that finished, from its call to its result |
//!
//! Requests never sent are in none of the counters (they are in the
//! [`Gathered`] as not done and not sent). The tracing events carry the
//! layer's name in their `layer` field.
//!
//! # Features
//!
//! - `serde`: `serde::Deserialize` for [`FanOutConfig`] and [`Mode`].
//! - `metrics`: the metrics above.
//!
//! # Cost
//!
//! One allocation per group for the outcomes (and none for the requests
//! when they come as a `Vec`), and one per call for the set of calls in
//! flight (`futures_util`'s `FuturesUnordered`, as tower's `call_all` and
//! `join_all` pay too). No lock, no timer unless a timeout or deadline
//! applies.

mod config;
mod error;
mod future;
mod gather;
mod layer;
mod metrics;
mod outcome;

pub use config::{FanOutConfig, Mode};
pub use error::{Failure, FanOutError};
pub use future::{FanOutFuture, FanOutResult};
pub use gather::{Gather, gather, wait};
pub use layer::{FanOut, FanOutLayer};
pub use outcome::{Gathered, NotDone, Outcome, Reason};
