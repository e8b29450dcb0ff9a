//! A bounded queue with N workers in front of any tower service: the
//! article's `asyncio.Queue(maxsize=5)` with two consumers, as a layer.
//!
//! ```
//! use rampart_queue::QueueLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rampart_core::Error> {
//! // A backlog of 5 requests, 2 workers that call the service.
//! let svc = ServiceBuilder::new()
//!     .layer(QueueLayer::new(5, 2))
//!     .service(service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n * 2) }));
//! assert_eq!(svc.clone().oneshot(21).await?, 42);
//! // Stop accepting, let the workers finish what is queued, stop them all.
//! svc.close();
//! svc.stopped().await;
//! assert_eq!(svc.stats().live_workers, 0);
//! # Ok(())
//! # }
//! ```
//!
//! - [`QueueLayer`] / [`Queue`]: callers enqueue requests into a bounded
//!   queue; `workers` workers, each with its own clone of the inner service
//!   (or one shared service, [`QueueLayer::shared_service`], for a service
//!   that is not `Clone`), take them in order and drive each call to
//!   completion, returning the result to the caller. Unlike tower's
//!   `Buffer`, the workers run the calls (a slow call holds one worker, not
//!   the queue), and an inner `poll_ready` error fails the one request it
//!   was for, not the queue forever.
//! - Full queue: wait for space ([`WhenFull::Wait`], the default), bounded
//!   by `max_wait` (`Overloaded`), the request's deadline
//!   (`DeadlineExceeded`) and its cancellation token (`Cancelled`), or shed
//!   at once with `Overloaded` ([`WhenFull::Shed`]).
//! - Abandoned work: a request whose caller dropped its response future, or
//!   whose [`Context`](rampart_core::Context) was cancelled or passed its
//!   deadline, before a worker takes it is skipped, never run. A call whose
//!   caller leaves while it runs is dropped, unless the queue is detached
//!   ([`QueueBuilder::detach`]), then it runs to completion.
//! - A call whose inner service panics fails with an
//!   [`ErrorKind::Inner`](rampart_core::ErrorKind::Inner) error whose source
//!   is [`Panicked`]; the worker logs it and keeps serving.
//! - [`Queue::close`] stops accepting (`Closed`); the workers finish what is
//!   queued and *all* of them stop (the article's single `None` sentinel
//!   leaves its second consumer blocked forever). [`Queue::drain`] does the
//!   same with a deadline, after which the rest is dropped with `Closed`.
//! - [`Queue::submit`] / [`Queue::try_submit`]: fire-and-forget jobs, the
//!   producer side of the article.
//! - [`Queue::stats`]: queued, running, completed, shed, skipped, panicked.
//!   The caller's `Context` (request id, deadline) is in scope inside the
//!   worker while it runs that caller's request.
//!
//! **One queue per `layer()` call.** The queue and its workers are built
//! when [`Layer::layer`](tower_layer::Layer::layer) wraps the inner service
//! (as tower's `Buffer` is), and shared by every clone of the service it
//! returns. Build the stack once around the whole router
//! (`ServiceBuilder::new().queue(..).service(router)`, or
//! `Router::fallback_service` / `Router::route_service` with that
//! service), not with axum's `Router::layer` / `route_layer`: axum applies
//! those to each route, and may apply them again as the router is
//! prepared for each connection, so every application builds a queue and
//! spawns workers of its own.
//!
//! The queue is a `VecDeque` of `capacity` places under one lock
//! (`parking_lot`'s: a compare-exchange each way, no poison checks), held
//! only to move a job in or out (measured against `async-channel`'s
//! bounded queue with a `tokio::sync::Semaphore` for the places: about
//! 850 instructions per request fewer on `benches/queue.rs` at 64 callers,
//! and a waiting caller no longer costs more than a queued one;
//! loom-checked). A job is
//! a pointer to an answer slot (a `parking_lot` mutex per slot,
//! loom-checked) that holds the request until the worker calls the inner
//! service with it (so it is moved once, from the slot into the call) and
//! its context until the worker takes the job, then the answer; slots come from a pool and are reused, so
//! a call whose [`Context`](rampart_core::Context) has neither a deadline
//! nor a cancellation token (or that has no context) allocates nothing in
//! the steady state. An idle worker leaves its waker in the queue, and
//! the next job queued wakes it; while every worker is busy, queuing a job
//! wakes nobody.
//!
//! Callers that find the queue full wait behind it, first come first
//! served, each with its job already in its slot: when a worker takes a
//! job off the queue, it moves the first waiter's job into the place it
//! freed, under the same lock, without waking that caller (who is woken
//! once, by its answer, as a queued caller is). A waiter that gives up
//! (`max_wait`, its deadline or token, or its future dropped) takes its
//! job back unless a worker already gave it a place; the job never runs.
//! A call allocates a box when its context has a deadline or a
//! cancellation token (or when it waits for space with a `max_wait`),
//! which it then waits on beside its answer (the timer and the token's
//! wait: about 200 bytes on x86-64, kept out of the response future); a
//! token is also cloned (an `Arc` count and a short lock in
//! `tokio-util`). Under a server stack with cancellation, draining or
//! deadlines, that is every call.
//!
//! # Metrics
//!
//! With the `metrics` feature each queue records on the
//! [`metrics`](https://docs.rs/metrics) facade, labelled
//! `layer = <its .name(..)>` (`"default"` unnamed, and for [`Queue::new`]).
//! Install the recorder (a Prometheus exporter, …) before building the
//! queue: the handles are registered once, when
//! [`layer`](tower_layer::Layer::layer) builds it, and shared by its
//! workers. Tracing events carry the same `layer` field (`debug` for each
//! shed or skipped request, `warn` for a panic).
//!
//! Cost: without the feature the handles are zero-sized and a job keeps its
//! size; nothing is recorded or paid. With it and no recorder installed
//! (`benches/queue.rs` under callgrind, current thread, 8 workers,
//! 2026-12-06): +39 / +22 instructions per request at 1 / 64 callers
//! (ready inner, compared with the same inlining of the call in both
//! builds; as shipped the metrics build even comes out a few instructions
//! below, by a different inlining): the no-op gauge and counter updates.
//! The wait histogram needs two clock readings per request (one when a
//! request is queued, one when a worker takes it) and their difference;
//! the queue asks once, when it is built, whether that histogram reaches a
//! recorder
//! ([`Histogram::is_recording`](rampart_core::telemetry::Histogram::is_recording))
//! and reads the clock for it only then. With a recorder they cost about
//! 155 instructions per request in the bench build (which carries tokio's
//! paused-clock check from `test-util`; two `std::time::Instant` readings
//! and their difference are about 155 in a release build without it, and
//! 60-75 ns of wall time on the bench machine: a clock reading costs more
//! time than its instruction count suggests). While the histogram records,
//! a request with a deadline pays no clock reading of its own: the queue's
//! deadline checks (at the call and when a worker takes it) use the same
//! readings; otherwise they read the clock themselves, as without the
//! feature. The enqueue time is kept in the request's answer slot, so a
//! queued job stays a pointer. No allocation or lock. See
//! `benches/README.md` ("rampart-queue: the metrics feature's cost").
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `rampart.queue.depth` | gauge | requests waiting in the queue for a worker ([`Stats::queued`]) |
//! | `rampart.queue.running` | gauge | calls a worker is running now ([`Stats::running`]) |
//! | `rampart.queue.workers` | gauge | live workers ([`Stats::live_workers`]; 0 once closed and drained) |
//! | `rampart.queue.completed` | counter | calls a worker ran to an outcome, success or error ([`Stats::completed`]; a panic counts as `panicked`, not here) |
//! | `rampart.queue.shed` | counter | requests refused with `Overloaded` because the queue was full: shed mode, [`Queue::try_submit`], or `max_wait` passed while waiting for space ([`Stats::shed`]) |
//! | `rampart.queue.skipped` | counter | queued requests never run: the caller left, or the request was cancelled or past its deadline, before a worker took it ([`Stats::skipped`]) |
//! | `rampart.queue.panicked` | counter | calls whose inner service panicked: the call failed, the worker kept serving ([`Stats::panicked`]) |
//! | `rampart.queue.wait.duration` | histogram, seconds | time from enqueue until a worker took the request off the queue (a caller that waited for space is queued when it gets a place), one sample per request taken (run or skipped); requests failed by a drain deadline while queued record none |
//!
//! # Features
//!
//! - `serde`: `Deserialize` for [`QueueConfig`] and [`WhenFull`].
//! - `metrics`: the metrics above.

mod config;
mod core;
mod error;
mod future;
mod layer;
mod metrics;
mod queue;
mod slot;
mod stats;
mod sync;
mod worker;

pub use config::{DEFAULT_RETRY_AFTER, MAX_CAPACITY, QueueConfig, WhenFull};
pub use error::Panicked;
pub use future::ResponseFuture;
pub use layer::{PerWorker, QueueBuilder, QueueLayer, SharedService};
pub use queue::Queue;
pub use stats::{Drained, Stats};
