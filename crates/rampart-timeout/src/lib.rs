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
//! # Clock
//!
//! Everything after `call()` counts, as with tower's `Timeout`: the
//! deadline is fixed in `call()` — `call() + timeout`, or the current
//! [`Context`](rampart_core::Context)'s deadline if that is earlier (then
//! the error is [`ErrorKind::DeadlineExceeded`](rampart_core::ErrorKind::DeadlineExceeded))
//! — and never moves. Work the inner future does inside its first poll
//! counts; a future first polled late fires at its `call()`-time deadline.
//! No timer is registered when the inner response is ready on its first
//! poll; on the first `Pending` the timer is armed with that deadline, or
//! the call fails on that very poll if the deadline already passed. There
//! is no heuristic: the same on every thread, every run, under any executor
//! that polls the future (a `block_on` bridge included; tested with 1 000
//! calls in a row).
//!
//! A zero duration means "already expired", as in tower: a call whose
//! response is ready on its first poll is answered, every other call fails
//! at once. [`TimeoutLayer::new`] and [`DeadlineLayer::new`] never fail;
//! `try_new` refuses zero for values read at run time.
//!
//! # Readiness: which path a service takes
//!
//! tower's `Timeout` starts its timer in `call`, so a caller waiting in
//! `poll_ready` below it waits unbounded (tower#648). Here the wait for
//! readiness is bounded too, for any service, `Clone` or not (a
//! `tower::util::BoxService`, a hyper http1 `SendRequest`):
//!
//! - **Ready at once** (a `service_fn`, a `Buffer` with room, an idle
//!   connection, rampart's limits with a free permit): `poll_ready` passes
//!   straight through; no clock read, no timer. The clock starts in `call`.
//! - **Not ready** (tower's `ConcurrencyLimit` or `Buffer` when full,
//!   rampart's `ConcurrencyLimitLayer` when its permits are out, an http1
//!   `SendRequest` with a response outstanding): `poll_ready` fixes a
//!   deadline (`timeout` from then, or the context's if earlier), starts a
//!   timer and stays `Pending` — backpressure passes up, so a `LoadShed`
//!   further out sees it. If the service becomes ready in time, the call
//!   keeps that deadline: the wait and the call together never exceed the
//!   timeout. If the timer fires first, `poll_ready` answers `Ready(Ok(()))`
//!   and the `call` that follows fails at once with the layer's error,
//!   without calling the inner service (which is not ready); the service
//!   stays usable and the next `poll_ready` starts afresh. The timer is
//!   boxed and kept for the next wait: only a service that was once not
//!   ready pays for that one allocation.
//!
//! # Cost
//!
//! Measured with `benches/timeout.rs` (the inner service boxed and cloned
//! per call, callers in spawned tasks) under callgrind, instructions per
//! request over the bare service (`floor`), current-thread runtime, against
//! tower's `Timeout` in the same binary (2026-12-05; floor 705 / 2117 /
//! 3110):
//!
//! | inner | tower `Timeout` | rampart `TimeoutLayer` | ratio |
//! |---|---|---|---|
//! | ready on the first poll | +178 | +172 | 0.97 |
//! | yields once | +870 | +1029 | 1.18 |
//! | answered by another task (`remote`) | +716 | +875 | 1.22 |
//!
//! (It was 1.21 / 1.24 / 1.29 before the bench built the request before
//! cloning the service, as a server does, and before the readiness slot
//! dropped inline; see `benches/README.md`.) Short of issue 11's targets
//! (ready ≤ 0.6×, pending ≤ 1.0×). Wall time, medians of one
//! `cargo bench --bench timeout` run on the shared 2-core machine (noisy:
//! trust the instructions), floor / tower / rampart per request: ready
//! 69.5 / 105.0 / 85.3 ns (0.45), yield 295 / 433 / 453 ns (1.14), remote
//! 355 / 465 / 487 ns (1.20). `../shared/tools/bench-instructions timeout`
//! (all bench binaries built together, so other code generation) gave
//! 0.98 / 1.17 / 1.24 in the same state. An ablation
//! in the same binary (stripped timeouts, `benches/README.md`, "Ablation")
//! says what each piece costs and where the floor of these semantics lies:
//!
//! | piece (each added to the one before) | ready | yield | remote |
//! |---|---|---|---|
//! | a layer that wraps the service and its future, nothing else | +77 | +104 | +104 |
//! | one clock read in `call()` | +36 | +41 | +41 |
//! | the request `Context`'s deadline, read in `call()` | +16 | +16 | +16 |
//! | the timer: deadline, a second clock read, `sleep_until`, at the first `Pending` | +6 | +855 | +701 |
//! | = least a timeout with this clock can cost | +135 | +1016 | +862 |
//!
//! So 0.6× tower's ready cost (107) is below what wrapping a service and
//! reading the clock once already cost here (113), and on a pending inner
//! the semantics alone cost 1.17× (yield) and 1.20× (remote) tower's:
//! tower reads the clock once, this timer twice (at `call()`, and when it
//! is armed, so that a deadline that passed during the first poll fires on
//! that poll), plus the context lookup. What rampart adds above that floor
//! (+37 ready, +13 pending) is one `memcpy` call (29 instructions: the
//! response future is 136 bytes, tower's 128, because the error kind of an
//! armed timer has no room beside the `Sleep`, and a move above 128 bytes
//! is a call; with the request handed on first, the future's move is the
//! copy instead of the request's, measured the same), the deadline
//! arithmetic in `call()` and the readiness gate's test. Computing the
//! deadline only when the timer is armed (the clock reading, the timeout
//! and the context's deadline kept in the unarmed timer instead) took the
//! arithmetic off the ready path, but writing the larger unarmed state
//! cost as much there (ready −2 to 0) and the pending path paid 66 to 97
//! more (two layouts tried: the error kind beside the timer, or in two
//! armed variants): not kept. Keeping the timeout as a `Duration`
//! (one word more in `Timeout`) measured 9–10 fewer on every path; the
//! service stays at two words besides the inner one (`tests/size.rs`).
//!
//! No allocation is added on any of these paths (1 per request for the
//! ready and yielding inner, 3 for the remote one, as the bare service).
//! On the ready path rampart reads the clock and the context's deadline
//! and builds no timer (tower builds a `Sleep`, reading the runtime
//! handle). A pending call also pays one clock read when arming, so that a
//! deadline already passed fires on that poll instead of one driver turn
//! later.
//!
//! The layers need a tokio runtime with its time driver enabled, as
//! `tokio::time::sleep` does.
//!
//! # Metrics
//!
//! With the `metrics` feature the layers count what they cut short on the
//! [`metrics`](https://docs.rs/metrics) facade, through whatever recorder
//! the application installed (install it before building the stack),
//! every series labelled `layer = <name>` (`.name("…")` on each layer,
//! `"default"` without one). Each layer registers only the series it can
//! record:
//!
//! | name | kind | recorded by | meaning |
//! |---|---|---|---|
//! | `rampart.timeout.fired` | counter | [`TimeoutLayer`] | calls failed with `Timeout` (during the call or the wait for readiness) |
//! | `rampart.deadline.exceeded` | counter | [`DeadlineLayer`], [`TimeoutLayer`] | calls failed with `DeadlineExceeded` because the deadline passed while they ran or waited for readiness, including a call a layer inside failed with `DeadlineExceeded` first (a queue or limit that gave up at the same deadline) (for a `TimeoutLayer`: the request's deadline came before its timeout) |
//! | `rampart.deadline.expired_on_arrival` | counter | [`DeadlineLayer`], [`PropagateDeadlineLayer`] | requests whose deadline had already passed, failed without calling the inner service (nothing sent) |
//! | `rampart.deadline.header.malformed` | counter | [`DeadlineLayer::from_headers`] | requests with a deadline header it could not use, ignored or rejected per [`OnMalformed`] |
//!
//! The handles are registered when a layer wraps a service (`Layer::layer`,
//! under the name the layer has then: building and naming a layer register
//! nothing), and shared by that service's clones behind one pointer (for a
//! [`Timeout`], the pointer replaces the timeout it holds, which rides
//! along: the service keeps its size); a timed response future holds one
//! pointer more, a reference count per call. Measured under callgrind
//! (`benches/timeout.rs`, current thread, no recorder installed): +35
//! instructions per request on the ready, yielding and remote paths. Without
//! the feature the handles are zero-sized: the services and futures are the
//! size they were before metrics existed (tested in `tests/size.rs`), the
//! instruction counts are main's (954 / 3226 / 4029 per request against
//! 953 / 3226 / 4029), nothing is recorded and nothing is paid.
//!
//! With the feature, the debug events of the layers (timer fired, expired
//! on arrival, malformed header …) carry `layer = <name>`; without it the
//! services keep no name, so the events have no `layer` field.
//!
//! # Features
//!
//! - `metrics`: the metrics above.
//! - `serde`: `serde::Deserialize` for the [`config`] types.

mod bounded;
pub mod config;
mod deadline;
mod error;
mod metrics;
mod propagate;
mod ready;
mod timeout;
mod timer;

pub use deadline::{Deadline, DeadlineFuture, DeadlineLayer, FromHeaders, NoHeaders, OnMalformed};
pub use propagate::{PropagateDeadline, PropagateDeadlineLayer, PropagateFuture};
pub use rampart_core::ConfigError;
pub use rampart_core::codec::{DeadlineHeaders, GRPC_TIMEOUT, X_REQUEST_TIMEOUT_MS};
pub use timeout::{Timeout, TimeoutFuture, TimeoutLayer};
