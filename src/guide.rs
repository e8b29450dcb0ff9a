//! The API conventions every rampart crate follows, and the way from tower's
//! and tower-http's layers to rampart's.
//!
//! # Conventions
//!
//! A stack reads as one [`ServiceBuilder`](tower::ServiceBuilder) chain with
//! no `?` and no `unwrap()` inside it, as it does with tower:
//!
//! ```
//! use rampart::prelude::*;
//! use std::num::NonZeroU32;
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! const RATE: NonZeroU32 = NonZeroU32::new(100).unwrap(); // checked at compile time
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rampart::ConfigError> {
//! // Values that can be wrong at run time (read from a config file) are
//! // checked once, before the chain, with the facade's one error type.
//! let budget = Budget::try_new(0.2, 10, Duration::from_secs(10))?;
//! let retry = RetryLayer::builder().max_attempts(3).budget(budget).build()?;
//! let svc = ServiceBuilder::new()
//!     .retry_with(retry)
//!     .limit_rate(Quota::per_second(RATE))
//!     .service(service_fn(|n: u32| async move { Ok::<_, rampart::Error>(n * 2) }));
//! assert_eq!(svc.oneshot(21).await.unwrap(), 42);
//! # Ok(())
//! # }
//! ```
//!
//! - **Simple constructors and `ServiceBuilderExt` methods are infallible.**
//!   They take types that cannot be invalid (`NonZeroUsize`, `NonZeroU32`,
//!   [`Quota`](crate::rate::Quota)), or accept every value with a defined
//!   meaning: a zero timeout is "already expired", as in tower.
//! - **Where a run-time value can be invalid**, a crate offers `try_new` and
//!   a builder whose `build()` returns `Result<_, ConfigError>`. Every
//!   crate's configuration error is (or converts into) the one
//!   [`ConfigError`](crate::ConfigError), whose message names the field, the
//!   value and what was expected, so `main() -> Result<(), rampart::ConfigError>`
//!   covers every layer.
//! - **A constructor that panics** says so under `# Panics`, naming the exact
//!   condition and message; each such panic is tested.
//! - **Counts are `usize`**, as in tower and tokio.
//! - **Errors** are one [`Error`](crate::Error) with an
//!   [`ErrorKind`](crate::ErrorKind) (`Timeout`, `DeadlineExceeded`,
//!   `Overloaded`, `RateLimited`, `Cancelled`, `Closed`, `RetriesExhausted`,
//!   `InvalidRequest`, `Inner`) and an optional `retry_after`; the mapping to
//!   HTTP and gRPC responses is in [`core::response`](crate::core).
//! - **What a user needs is re-exported**: [`CancellationToken`](crate::CancellationToken)
//!   for building a [`Context`](crate::Context), and `http` types that appear
//!   in signatures come from the `http` crate the user already has.
//! - **State is shared by clones**: every limit, budget, bucket, circuit and
//!   queue lives behind the layer, so axum's clone-per-request shares it.
//!
//! # Coming from tower and tower-http
//!
//! `ServiceBuilderExt` names differ from `ServiceBuilder`'s own methods on
//! purpose: an inherent method silently wins over a trait method, so a
//! same-named extension would never be called.
//!
//! | tower / tower-http | rampart | why the name or shape differs |
//! |---|---|---|
//! | `.timeout(d)` (`tower::timeout::TimeoutLayer`) | `.attempt_timeout(d)` (`timeout::TimeoutLayer`) | `timeout` is inherent; rampart's times from `call()` like tower's and also bounds the wait for readiness; under a retry it is per attempt |
//! | — | `.deadline(d)`, `.deadline_from_headers()`, `.propagate_deadline()` | a budget for the whole request, read from `grpc-timeout` and written on outgoing calls |
//! | tower-http `TimeoutLayer` (408) | `.deadline(d)` + `.handle_errors()` (504) | a server that ran out of time answers 504 / DEADLINE_EXCEEDED |
//! | `.retry(policy)` (`tower::retry::RetryLayer`) | `.retry_with(RetryLayer::http()…)` | `retry` is inherent; rampart's takes a layer with backoff, budget, classification and body replay instead of a policy you write |
//! | `.concurrency_limit(n)` | `.limit_concurrency(layer)`, `.limit_concurrency_per_key(layer)` | `concurrency_limit` is inherent; one limit shared by every clone, FIFO wait or shed, keyed, adaptive |
//! | `.load_shed()` | `ConcurrencyLimitLayer` in shed mode, `QueueLayer` in shed mode | shedding is a mode of the limit or queue that refuses, with `Retry-After` |
//! | `.rate_limit(n, per)` | `.limit_rate(quota)`, `.limit_rate_per_key(quota, key)` | `rate_limit` is inherent; GCRA shared by every clone, keyed, 429 + `Retry-After` |
//! | `.buffer(n)` | `.queue(capacity, workers)` | N workers that drive calls to completion; survives an inner error; `close()` drains |
//! | `ServiceExt::call_all` | `.fan_out(layer)`, `fanout::gather`, `fanout::wait` | per-item outcomes in order, modes, a collective deadline |
//! | tower-http `SetRequestIdLayer` + `PropagateRequestIdLayer` (`set_x_request_id`, `propagate_x_request_id`) | `.request_id()` (server), `.propagate_context()` (client) | one layer on each side; the id travels in a `Context` to every call the handler makes |
//! | tower-http `CatchPanicLayer`, `HandleErrorLayer` | `.handle_errors()` | every rampart error becomes the right HTTP or gRPC response |
//! | — (tower-resilience) | `.circuit_breaker(layer)`, `.keyed_circuit_breaker(layer)` | one circuit per layer, shared by every clone |
//! | — | `.keyed_lock(layer)`, `.coalesce(layer)` | per-key serialisation, single-flight |
//! | — | `.cancel_scope(layer)`, `Shutdown` | a cancellation token per request, cleanup hooks, graceful drain |
//! | tonic `Status::from_error` (UNKNOWN for foreign errors) | `.tonic_status()`, `From<Error> for tonic::Status` (feature `tonic`) | DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED + `grpc-retry-pushback-ms`, UNAVAILABLE, CANCELLED reach the tonic client |
