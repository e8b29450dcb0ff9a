//! Retry as a tower layer, the way production HTTP and gRPC clients need it.
//!
//! ```
//! use rampart_retry::{Backoff, Budget, Jitter, RetryLayer};
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let calls = Arc::new(AtomicU32::new(0));
//! let seen = calls.clone();
//! let flaky = service_fn(move |name: &'static str| {
//!     let n = seen.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         // Refused twice, then fine.
//!         if n < 2 {
//!             Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
//!         } else {
//!             Ok(format!("data from {name}"))
//!         }
//!     }
//! });
//! // Built (and validated) before the chain, so the chain has no `?`.
//! let retry = RetryLayer::builder()
//!     .max_attempts(3) // the first call counts
//!     .backoff(Backoff::exponential(Duration::from_secs(1)).jitter(Jitter::None))
//!     .budget(Budget::new(0.2, 10, Duration::from_secs(10)))
//!     .build()
//!     .expect("valid retry settings");
//! let svc = ServiceBuilder::new().layer(retry).service(flaky);
//! let started = tokio::time::Instant::now();
//! assert_eq!(svc.clone().oneshot("api.example.com").await.unwrap(), "data from api.example.com");
//! assert_eq!(started.elapsed(), Duration::from_secs(3)); // slept 1 s, then 2 s
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//!
//! // Bad settings are a `rampart_core::ConfigError` naming the field.
//! let err = RetryLayer::builder().max_attempts(0).build().unwrap_err();
//! assert_eq!(err.field(), "max_attempts");
//! # }
//! ```
//!
//! What it does:
//!
//! - **Attempts**: [`max_attempts`](RetryBuilder::max_attempts) counts the
//!   first call; an optional [`max_elapsed`](RetryBuilder::max_elapsed).
//!   A retry never sleeps past the request's deadline (the task-local
//!   [`Context`](rampart_core::Context), read when deciding) nor past
//!   `max_elapsed`: when the next attempt would start too late, the last
//!   failure comes back at once. A failed *response* (a 503) is returned as
//!   it is; an *error* as [`ErrorKind::RetriesExhausted`] with the attempt
//!   count and the last error as source, or the error itself
//!   ([`OnExhausted`]).
//! - **Cancellation**: between attempts (the backoff sleep, the wait for
//!   readiness) the future watches the cancellation token of the request's
//!   [`Context`](rampart_core::Context) and resolves to
//!   [`ErrorKind::Cancelled`] the moment it fires; a cancelled request is
//!   never sent again.
//! - **Backoff** ([`Backoff`]): exponential with base, multiplier and cap,
//!   the cap applied before jitter ([`Jitter`]: none, full, equal,
//!   decorrelated, and [`Jitter::Grpc`], ×U(0.8, 1.2) clamped, the jitter
//!   of gRPC's retry design A6), seedable. A zero delay retries at once
//!   without touching the timer.
//! - **Budget** ([`Budget`]): a token bucket shared by many services; each
//!   first call deposits `ratio`, each retry withdraws one, plus a
//!   `min_per_sec` floor over a `ttl` window: in every window of length
//!   `ttl`, at most `min_per_sec × ttl + ratio × calls` retries. An empty
//!   budget returns the failure at once.
//! - **Classification** by rampart-core's [`Classify`](rampart_core::Classify):
//!   [`RetryLayer::http`] uses [`HttpOrGrpcClassify`](rampart_core::classify::HttpOrGrpcClassify)
//!   (idempotent methods; `Retry-After` honoured up to a cap, a longer one
//!   returning the failure at once; gRPC codes and pushback; a request that
//!   never left is retried whatever its method); [`RetryLayer::builder`] uses
//!   [`ErrorClassify`](rampart_core::classify::ErrorClassify);
//!   `RetryLayer::tonic` (feature `tonic`) wraps a tonic `Channel` with
//!   gRPC classification and body replay; closures via
//!   [`classify_fn`](rampart_core::classify::classify_fn). A delay asked by
//!   the peer (`Retry-After`, `grpc-retry-pushback-ms`) replaces the backoff
//!   delay and restarts the backoff, as gRPC's A6 does: with 100 ms
//!   doubling, a pushback of 50 ms after the first retry gives sleeps of
//!   100, 50, 100, 200 ms. It is bounded by the classifier's
//!   `max_retry_after`, the deadline and `max_elapsed`, not by the backoff
//!   cap.
//! - **Requests that cannot be cloned** ([`Replay`]): `http::Request<B>` for
//!   any body is replayed from a buffer of at most `max_replay_bytes`
//!   ([`ReplayBody`]); a longer body is sent once, in full, and not retried.
//!   `Req: Clone` requests are cloned ([`CloneRequest`]).
//! - An optional attempt header on retries (`x-retry-attempt: 2`), a
//!   tracing debug event per retry and per give-up (attempt, delay, reason,
//!   request id), and opt-in counters ([`RetryBuilder::stats`],
//!   [`RetryLayer::stats`]).
//!
//! The configuration (classifier, replay strategy, policy) sits behind one
//! `Arc`, so a [`Retry`] service is its inner service plus one pointer and
//! clones cheaply (axum clones the whole stack per request). The success
//! path of a `Req: Clone` request costs the clone, one reference count for
//! the response future, and nothing else: no allocation, no lock (unless a
//! budget is enabled), no clock read (unless `max_elapsed` or a budget is
//! set), no timer. Everything a retry needs is allocated at the first
//! retry.
//!
//! In a client stack it goes inside the total deadline and outside the
//! per-attempt timeout (context propagation → deadline → retry →
//! concurrency limit → attempt timeout → client), so each attempt gets its
//! own timeout and no retry outlives the request.
//!
//! # Metrics
//!
//! With the `metrics` feature the layer records on the
//! [`metrics`](https://docs.rs/metrics) facade, through whatever recorder
//! the application installed (install it before the layer wraps a service),
//! every series labelled `layer = <name>` ([`RetryBuilder::name`],
//! `"default"` without one):
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `rampart.retry.attempts` | counter | calls made to the inner service, first attempts and retries |
//! | `rampart.retry.retries` | counter | retries decided (a backoff delay chosen) |
//! | `rampart.retry.exhausted` | counter, `reason` = `max_attempts` \| `not_replayable` \| `cancelled` \| `deadline` \| `max_elapsed` | retryable failures returned without another attempt, for any reason but the budget |
//! | `rampart.retry.budget.rejected` | counter | retryable failures returned because the budget had no token |
//! | `rampart.retry.backoff.duration` | histogram, seconds | the delay before each retry (zero included; a peer's `Retry-After` when it replaced the backoff) |
//!
//! The handles are registered once, when the layer makes its first service
//! (under the name it has then: `RetryLayer::default().name("x")` never
//! registers a `"default"` series), and kept in its shared configuration: a
//! [`Retry`] service stays one pointer besides its inner service, with or
//! without the feature. Without it nothing is
//! recorded and nothing is paid.
//!
//! Every tracing event carries `layer = <name>`: a debug event per retry
//! and per give-up, and a warning when the retry budget runs dry (the first
//! refusal after a granted retry; the following refusals are debug events
//! until the budget grants one again).
//!
//! # Features
//!
//! - `metrics`: the metrics above.
//! - `serde`: `serde::Deserialize` for [`RetryConfig`] and [`BudgetConfig`].
//! - `tonic`: `RetryLayer::tonic()`, retry around a tonic `Channel`.
//!
//! [`ErrorKind::RetriesExhausted`]: rampart_core::ErrorKind::RetriesExhausted
//! [`ErrorKind::Cancelled`]: rampart_core::ErrorKind::Cancelled

mod backoff;
mod budget;
mod future;
mod layer;
mod metrics;
mod policy;
pub mod replay;
mod service;
mod stats;

pub use backoff::{Backoff, Delays, Jitter};
pub use budget::{Budget, BudgetConfig};
pub use future::ResponseFuture;
pub use layer::{RetryBuilder, RetryLayer};
pub use policy::{OnExhausted, RetryConfig};
pub use rampart_core::ConfigError;
#[cfg(feature = "tonic")]
pub use replay::ReplayTonic;
pub use replay::{CloneRequest, Replay, ReplayBody, ReplayHttp};
pub use service::Retry;
pub use stats::RetryStats;
