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
//!
//! # Metrics
//!
//! With the `metrics` feature every layer records what it does on the
//! [`metrics`](https://docs.rs/metrics) facade, through whatever recorder
//! the application installs (Prometheus, OpenTelemetry, statsd …); rampart
//! depends on the facade only. Without the feature the handles
//! ([`telemetry`](crate::telemetry)) are zero-sized no-ops: nothing is
//! recorded and nothing is paid.
//!
//! - **Install the recorder before building the stack.** A layer registers
//!   its handles once, when it wraps its service ([`Layer::layer`](tower::Layer::layer),
//!   which `ServiceBuilder::service` calls), with the recorder installed
//!   then; a stack built before any recorder records nothing. No handle is
//!   registered, no label built and nothing allocated per request.
//! - **Name each layer** with `.name("payments")` on the layer or its
//!   builder: every series carries the label `layer = <name>`
//!   (`"default"` for a layer without one, [`telemetry::UNNAMED`](crate::telemetry::UNNAMED)).
//!   Two layers given the same name add up in the same series. Labels never
//!   carry request data (no key, tenant, route or id). Building and naming
//!   a layer register nothing, so a layer named after it was made
//!   (`TimeoutLayer::new(d).name("x")`) registers under `"x"` only, as a
//!   builder's `.name(..)` does: no `"default"` series is left in the
//!   exporter.
//! - **Units**: durations are histograms in seconds named `*.duration`.
//!   Prometheus exporters write the names with `_` for `.`
//!   (`rampart_retry_attempts`) and add `_sum`, `_count` and `_bucket` or
//!   `quantile` series to histograms.
//!
//! ```
//! use metrics_exporter_prometheus::PrometheusBuilder;
//! use rampart::prelude::*;
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rampart::BoxError> {
//! // 1. The recorder first (an exporter of your choice).
//! let prometheus = PrometheusBuilder::new().install_recorder()?;
//!
//! // 2. Then the stack, each layer named.
//! let retry = RetryLayer::builder().name("payments").max_attempts(3).build()?;
//! let svc = ServiceBuilder::new()
//!     .retry_with(retry)
//!     .layer(TimeoutLayer::new(Duration::from_secs(1)).name("payments"))
//!     .service(service_fn(|n: u32| async move { Ok::<_, rampart::Error>(n) }));
//! svc.oneshot(7).await?;
//!
//! // 3. Serve `render()` on `/metrics` (see `examples/metrics.rs`).
//! if rampart::telemetry::ENABLED {
//!     let scrape = prometheus.render();
//!     assert!(scrape.contains(r#"rampart_retry_attempts{layer="payments"} 1"#));
//!     // `TimeoutLayer::new(..).name(..)` registered under its name only.
//!     assert!(scrape.contains(r#"rampart_timeout_fired{layer="payments"} 0"#));
//!     assert!(!scrape.contains(r#"layer="default""#));
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Every metric rampart records, by crate. The labels column lists every
//! label key and, for the extra ones, every value a layer records; each
//! value is a series of its own, registered when the layer wraps its
//! service.
//! (`tests/metrics.rs` checks this table against what the layers register,
//! and `examples/metrics.rs` against a real Prometheus scrape.)
//!
//! | name | kind | labels | recorded by | meaning |
//! |---|---|---|---|---|
//! | `rampart.retry.attempts` | counter | `layer` | [`RetryLayer`](crate::retry::RetryLayer) | calls made to the inner service, first attempts and retries |
//! | `rampart.retry.retries` | counter | `layer` | [`RetryLayer`](crate::retry::RetryLayer) | retries decided (a backoff delay chosen) |
//! | `rampart.retry.exhausted` | counter | `layer`, `reason` = `max_attempts` \| `not_replayable` \| `cancelled` \| `deadline` \| `max_elapsed` | [`RetryLayer`](crate::retry::RetryLayer) | retryable failures returned without another attempt, for any reason but the budget |
//! | `rampart.retry.budget.rejected` | counter | `layer` | [`RetryLayer`](crate::retry::RetryLayer) | retryable failures returned because the retry budget had no token |
//! | `rampart.retry.backoff.duration` | histogram, seconds | `layer` | [`RetryLayer`](crate::retry::RetryLayer) | the delay before each retry (zero included; a peer's `Retry-After` when it replaced the backoff) |
//! | `rampart.timeout.fired` | counter | `layer` | [`TimeoutLayer`](crate::timeout::TimeoutLayer) | calls failed with `Timeout` (during the call or the wait for readiness) |
//! | `rampart.deadline.exceeded` | counter | `layer` | [`DeadlineLayer`](crate::timeout::DeadlineLayer), [`TimeoutLayer`](crate::timeout::TimeoutLayer) | calls failed with `DeadlineExceeded` because the deadline passed while they ran or waited for readiness, including calls a layer inside failed with `DeadlineExceeded` first (a queue or limit giving up at the same deadline) |
//! | `rampart.deadline.expired_on_arrival` | counter | `layer` | [`DeadlineLayer`](crate::timeout::DeadlineLayer), [`PropagateDeadlineLayer`](crate::timeout::PropagateDeadlineLayer) | requests whose deadline had already passed, failed without calling the inner service |
//! | `rampart.deadline.header.malformed` | counter | `layer` | [`DeadlineLayer::from_headers`](crate::timeout::DeadlineLayer::from_headers) | requests with a deadline header it could not use (ignored or rejected) |
//! | `rampart.limit.in_flight` | gauge | `layer` | [`ConcurrencyLimitLayer`](crate::limit::ConcurrencyLimitLayer), [`KeyedConcurrencyLimitLayer`](crate::limit::KeyedConcurrencyLimitLayer) | calls holding a permit |
//! | `rampart.limit.waiting` | gauge | `layer` | [`ConcurrencyLimitLayer`](crate::limit::ConcurrencyLimitLayer), [`KeyedConcurrencyLimitLayer`](crate::limit::KeyedConcurrencyLimitLayer) | calls waiting in line for a permit |
//! | `rampart.limit.current` | gauge | `layer` | [`ConcurrencyLimitLayer`](crate::limit::ConcurrencyLimitLayer), [`KeyedConcurrencyLimitLayer`](crate::limit::KeyedConcurrencyLimitLayer) | the current limit: an adaptive limit as it moves, the fixed limit, or a keyed layer's limit per key; with a shared name, the sum of the layers' limits |
//! | `rampart.limit.shed` | counter | `layer` | [`ConcurrencyLimitLayer`](crate::limit::ConcurrencyLimitLayer), [`KeyedConcurrencyLimitLayer`](crate::limit::KeyedConcurrencyLimitLayer) | calls refused at once (shed mode, or the line was full) |
//! | `rampart.limit.expired` | counter | `layer`, `reason` = `max_wait` \| `deadline` \| `cancelled` | [`ConcurrencyLimitLayer`](crate::limit::ConcurrencyLimitLayer), [`KeyedConcurrencyLimitLayer`](crate::limit::KeyedConcurrencyLimitLayer) | waits that ended without a permit (a wait its caller dropped is not counted) |
//! | `rampart.limit.wait.duration` | histogram, seconds | `layer` | [`ConcurrencyLimitLayer`](crate::limit::ConcurrencyLimitLayer), [`KeyedConcurrencyLimitLayer`](crate::limit::KeyedConcurrencyLimitLayer) | time in line of every call that waited, however the wait ended; a call that found a free permit records nothing |
//! | `rampart.limit.keys` | gauge | `layer` | [`KeyedConcurrencyLimitLayer`](crate::limit::KeyedConcurrencyLimitLayer) | keys tracked (idle keys stay until the map needs room); with a shared name, the sum over the layers |
//! | `rampart.limit.keys.rejected` | counter | `layer` | [`KeyedConcurrencyLimitLayer`](crate::limit::KeyedConcurrencyLimitLayer) | calls refused because the key map was full of busy keys |
//! | `rampart.request_id.generated` | counter | `layer` | [`RequestIdLayer`](crate::context::RequestIdLayer) | no incoming id: a UUIDv7 was generated |
//! | `rampart.request_id.accepted` | counter | `layer` | [`RequestIdLayer`](crate::context::RequestIdLayer) | a valid incoming id was kept |
//! | `rampart.request_id.refused` | counter | `layer` | [`RequestIdLayer`](crate::context::RequestIdLayer) | an incoming id was refused (invalid, hostile, repeated, or incoming ids not accepted) and replaced by a generated one |
//! | `rampart.context.deadline.expired` | counter | `layer` | [`PropagateContextLayer`](crate::context::PropagateContextLayer) | calls not sent because the context's deadline had passed |
//! | `rampart.context.missing` | counter | `layer` | [`PropagateContextLayer`](crate::context::PropagateContextLayer) | calls made with no context (e.g. from a bare `tokio::spawn`), sent untouched |
//! | `rampart.cancel.in_flight` | gauge | `layer` | [`CancelLayer`](crate::cancel::CancelLayer) | requests admitted and not finished (back to 0 on every path) |
//! | `rampart.cancel.cancelled` | counter | `layer`, `reason` = `token` \| `caller_dropped` \| `shutdown` | [`CancelLayer`](crate::cancel::CancelLayer) | requests cancelled: the caller's token fired, the caller dropped the call (a panicking handler counts here), or the drain cancelled it |
//! | `rampart.cancel.refused` | counter | `layer` | [`CancelLayer`](crate::cancel::CancelLayer) | calls refused with `Closed` because the drain had begun |
//! | `rampart.queue.depth` | gauge | `layer` | [`QueueLayer`](crate::queue::QueueLayer) | requests waiting in the queue for a worker |
//! | `rampart.queue.running` | gauge | `layer` | [`QueueLayer`](crate::queue::QueueLayer) | calls a worker is running now |
//! | `rampart.queue.workers` | gauge | `layer` | [`QueueLayer`](crate::queue::QueueLayer) | live workers |
//! | `rampart.queue.completed` | counter | `layer` | [`QueueLayer`](crate::queue::QueueLayer) | calls a worker ran to an outcome (success or error) |
//! | `rampart.queue.shed` | counter | `layer` | [`QueueLayer`](crate::queue::QueueLayer) | requests refused because the queue was full (shed mode, or the wait for space ended) |
//! | `rampart.queue.skipped` | counter | `layer` | [`QueueLayer`](crate::queue::QueueLayer) | queued requests never run: the caller left, or its deadline passed or it was cancelled before a worker took it |
//! | `rampart.queue.panicked` | counter | `layer` | [`QueueLayer`](crate::queue::QueueLayer) | calls whose inner service panicked (the call failed, the worker kept serving) |
//! | `rampart.queue.wait.duration` | histogram, seconds | `layer` | [`QueueLayer`](crate::queue::QueueLayer) | time from enqueue until a worker took the request |
//! | `rampart.lock.held` | gauge | `layer` | [`KeyedLockLayer`](crate::sync::KeyedLockLayer) | keys held now (one call holds each) |
//! | `rampart.lock.waiting` | gauge | `layer` | [`KeyedLockLayer`](crate::sync::KeyedLockLayer) | calls waiting for a key another call holds |
//! | `rampart.lock.waited` | counter | `layer` | [`KeyedLockLayer`](crate::sync::KeyedLockLayer) | calls that had to wait |
//! | `rampart.lock.gave_up` | counter | `layer`, `reason` = `cancelled` \| `deadline` \| `dropped` | [`KeyedLockLayer`](crate::sync::KeyedLockLayer) | waiting calls that left before they got their key |
//! | `rampart.lock.wait.duration` | histogram, seconds | `layer` | [`KeyedLockLayer`](crate::sync::KeyedLockLayer) | time each waiting call waited, however the wait ended; a call that found its key free records nothing |
//! | `rampart.coalesce.leaders` | counter | `layer` | [`CoalesceLayer`](crate::sync::CoalesceLayer) | calls made to the inner service (each led a shared call) |
//! | `rampart.coalesce.coalesced` | counter | `layer` | [`CoalesceLayer`](crate::sync::CoalesceLayer) | requests that joined a call in flight |
//! | `rampart.coalesce.cached` | counter | `layer` | [`CoalesceLayer`](crate::sync::CoalesceLayer) | requests answered from a kept result (time to live) |
//! | `rampart.coalesce.abandoned` | counter | `layer` | [`CoalesceLayer`](crate::sync::CoalesceLayer) | shared calls dropped because every caller left |
//! | `rampart.coalesce.gave_up` | counter | `layer`, `reason` = `cancelled` \| `deadline` | [`CoalesceLayer`](crate::sync::CoalesceLayer) | callers that gave up waiting (a caller that drops its future is not counted) |
//! | `rampart.coalesce.in_flight` | gauge | `layer` | [`CoalesceLayer`](crate::sync::CoalesceLayer) | shared calls running |
//! | `rampart.coalesce.waiting` | gauge | `layer` | [`CoalesceLayer`](crate::sync::CoalesceLayer) | callers waiting for a shared call, leaders included |
//! | `rampart.fanout.calls` | counter | `layer` | [`FanOutLayer`](crate::fanout::FanOutLayer) | calls sent to the inner service |
//! | `rampart.fanout.failed` | counter | `layer` | [`FanOutLayer`](crate::fanout::FanOutLayer) | requests whose outcome is an error (the call's, or the `poll_ready` error it waited for) |
//! | `rampart.fanout.panicked` | counter | `layer` | [`FanOutLayer`](crate::fanout::FanOutLayer) | requests whose call panicked |
//! | `rampart.fanout.cancelled` | counter | `layer`, `reason` = `decided` \| `timeout` \| `deadline` \| `cancelled` \| `caller_dropped` | [`FanOutLayer`](crate::fanout::FanOutLayer) | calls in flight dropped unfinished: the group was decided without them, the collective timeout or the caller's deadline passed, the caller's token fired, or the caller dropped the group |
//! | `rampart.fanout.duration` | histogram, seconds | `layer` | [`FanOutLayer`](crate::fanout::FanOutLayer) | each group that finished, from its call to its result |
//! | `rampart.breaker.state` | gauge | `layer` | [`CircuitBreakerLayer`](crate::breaker::CircuitBreakerLayer) (not keyed) | 0 closed (or forced closed), 1 half-open, 2 open (or forced open); an open circuit whose break is over reads 2 until its next call probes; with a shared name, the sum of the circuits' codes (give each circuit its own name to read its state) |
//! | `rampart.breaker.transitions` | counter | `layer`, `to` = `open` \| `half_open` \| `closed` | [`CircuitBreakerLayer`](crate::breaker::CircuitBreakerLayer), [`KeyedCircuitBreakerLayer`](crate::breaker::KeyedCircuitBreakerLayer) | state changes (forced ones count as `open` / `closed`) |
//! | `rampart.breaker.rejected` | counter | `layer` | [`CircuitBreakerLayer`](crate::breaker::CircuitBreakerLayer), [`KeyedCircuitBreakerLayer`](crate::breaker::KeyedCircuitBreakerLayer) | calls refused without reaching the service |
//! | `rampart.breaker.calls` | counter | `layer`, `outcome` = `success` \| `failure` | [`CircuitBreakerLayer`](crate::breaker::CircuitBreakerLayer), [`KeyedCircuitBreakerLayer`](crate::breaker::KeyedCircuitBreakerLayer) | results judged by the classifier (calls and probes) |
//! | `rampart.breaker.keys` | gauge | `layer` | [`KeyedCircuitBreakerLayer`](crate::breaker::KeyedCircuitBreakerLayer) | circuits the keyed layer tracks; with a shared name, the sum over the layers |
//! | `rampart.rate.admitted` | counter | `layer` | [`RateLimitLayer`](crate::rate::RateLimitLayer), [`KeyedRateLimitLayer`](crate::rate::KeyedRateLimitLayer) | requests admitted, at once or after a wait |
//! | `rampart.rate.rejected` | counter | `layer` | [`RateLimitLayer`](crate::rate::RateLimitLayer), [`KeyedRateLimitLayer`](crate::rate::KeyedRateLimitLayer) | requests refused: rate limited, slot past the deadline, key store full, store error |
//! | `rampart.rate.wait.duration` | histogram, seconds | `layer` | [`RateLimitLayer`](crate::rate::RateLimitLayer), [`KeyedRateLimitLayer`](crate::rate::KeyedRateLimitLayer) | time an admitted request waited for its slot, recorded when the wait ends, is cancelled or is dropped |
//! | `rampart.rate.keys` | gauge | `layer` | [`KeyedRateLimitLayer`](crate::rate::KeyedRateLimitLayer) (its [`KeyedStore`](crate::rate::KeyedStore)) | keys the store holds (idle ones not yet swept included); with a shared name, the sum over the stores |
//!
//! A keyed layer records all its keys together under its one name (keys
//! are never labels). The facade's `metrics` feature turns on the
//! `metrics` feature of every pattern crate. Each crate's own
//! documentation ("Metrics" section) gives the finer points, and the
//! tracing events of every layer carry the same name in their `layer`
//! field.
