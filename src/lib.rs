//! # rampart
//!
//! Production resilience patterns for async services, each one a
//! [`tower::Layer`] + [`tower::Service`], so they compose in one
//! [`ServiceBuilder`] around any hyper or axum service, tonic client, or
//! plain `Service`.
//!
//! ```
//! use rampart::prelude::*;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use http::{Request, Response};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // A server stack that answers rampart errors with 503/504/… responses.
//! let svc = ServiceBuilder::new()
//!     .handle_errors()
//!     .service(service_fn(|_req: Request<()>| async {
//!         Err::<Response<String>, _>(Error::overloaded(None))
//!     }));
//! let res = svc.oneshot(Request::new(())).await.unwrap();
//! assert_eq!(res.status(), 503);
//! # }
//! ```
//!
//! ## Recommended stacks
//!
//! Client, outermost first: context propagation → total deadline → retry
//! (with a budget) → concurrency limit → per-attempt timeout → client.
//!
//! Server, outermost first: request id / context → handle errors →
//! cancel/drain → deadline → limit or queue → handler.
//!
//! ## Crates and features
//!
//! Each pattern lives in its own crate and is enabled by a feature of the
//! same name (all on by default through `full`):
//!
//! | feature | crate | what |
//! |---|---|---|
//! | (always) | [`core`] | [`Error`], classification, [`Context`], header codecs |
//! | `retry` | `rampart-retry` | retry with capped backoff, budgets, body replay |
//! | `timeout` | `rampart-timeout` | per-attempt timeout, total deadline, propagation |
//! | `limit` | `rampart-limit` | concurrency limits: shared, shedding, keyed, adaptive |
//! | `context` | `rampart-context` | request id and context propagation |
//! | `cancel` | `rampart-cancel` | a cancellation token per request, cleanup hooks, graceful drain |
//! | `queue` | `rampart-queue` | bounded queue with N workers (producer/consumer) |
//! | `sync` | `rampart-sync` | keyed lock, single-flight coalescing |
//! | `fanout` | `rampart-fanout` | gather / wait with a collective deadline |
//! | `breaker` | `rampart-breaker` | circuit breaker shared by every clone, keyed |
//! | `rate` | `rampart-rate` | GCRA rate limits, keyed, 429 + `Retry-After` |
//! | `http` | | error → HTTP/gRPC response mapping, [`HandleErrorsLayer`] |
//! | `axum` | | `IntoResponse` for [`Error`], axum extractors for the request id |
//! | `hyper-util` | | hyper-util's client connect errors count as "never sent" |
//! | `tonic` | | rampart failures reach a tonic client as the right `tonic::Status` ([`GrpcStatusLayer`]) |
//! | `serde` | | `serde::Deserialize` for the configs |
//! | `metrics` | | every layer records metrics on the [`metrics`](https://docs.rs/metrics) facade, labelled by the layer's `.name(..)` (off by default, free when off; names and labels in the [guide](guide#metrics)) |
//!
//! ## Metrics
//!
//! With the `metrics` feature, install a recorder (such as
//! `metrics-exporter-prometheus`) *before* building the stack, and name the
//! layers you want to tell apart with `.name("payments")`. The
//! [guide](guide#metrics) lists every metric rampart records, with its
//! kind, unit, labels and the layer that records it; `examples/metrics.rs`
//! serves them to Prometheus.

pub use rampart_core as core;
pub use rampart_core::classify::{
    self, GrpcClassify, HttpClassify, HttpOrGrpcClassify, Idempotent,
};
/// The metric handles every layer records through, the `layer` label and
/// [`LayerName`](telemetry::LayerName) (zero-sized no-ops without the
/// `metrics` feature; the table of metrics is in the [guide](guide#metrics)).
pub use rampart_core::telemetry;
pub use rampart_core::{
    BoxError, CancellationToken, Classify, ClassifyResult, ConfigError, Context, Error, ErrorKind,
    InContextExt, Outcome, RequestId, codec, grpc, spawn, spawn_blocking,
};
#[cfg(feature = "http")]
pub use rampart_core::{ErrorFormat, HandleErrors, HandleErrorsLayer};
#[cfg(feature = "tonic")]
pub use rampart_core::{GrpcStatus, GrpcStatusLayer, status_from_error};

/// Retry: capped jittered backoff, budgets, HTTP/gRPC classification, body
/// replay (`rampart-retry`).
#[cfg(feature = "retry")]
pub use rampart_retry as retry;

/// Per-attempt timeouts, total deadlines and deadline propagation
/// (`rampart-timeout`).
#[cfg(feature = "timeout")]
pub use rampart_timeout as timeout;

/// Concurrency limits: shared, shedding, keyed, adaptive (`rampart-limit`).
#[cfg(feature = "limit")]
pub use rampart_limit as limit;

/// Request id and context propagation (`rampart-context`).
#[cfg(feature = "context")]
pub use rampart_context as context;

/// Cancellation scopes, cleanup hooks and graceful drain (`rampart-cancel`).
#[cfg(feature = "cancel")]
pub use rampart_cancel as cancel;

/// Bounded queue with N workers (`rampart-queue`).
#[cfg(feature = "queue")]
pub use rampart_queue as queue;

/// Keyed lock and single-flight coalescing (`rampart-sync`).
#[cfg(feature = "sync")]
pub use rampart_sync as sync;

/// Fan-out: gather and wait with a collective deadline (`rampart-fanout`).
#[cfg(feature = "fanout")]
pub use rampart_fanout as fanout;

/// Circuit breaker shared by every clone (`rampart-breaker`).
#[cfg(feature = "breaker")]
pub use rampart_breaker as breaker;

/// Rate limiting: GCRA, keyed, shared by every clone (`rampart-rate`).
#[cfg(feature = "rate")]
pub use rampart_rate as rate;

#[cfg(feature = "timeout")]
use std::time::Duration;
use tower::ServiceBuilder;
#[allow(unused_imports)] // used by the methods of the enabled features
use tower_layer::Stack;

mod sealed {
    pub trait Sealed {}
    impl<L> Sealed for tower::ServiceBuilder<L> {}
}

/// rampart's layers as [`ServiceBuilder`] methods.
///
/// The names differ from `ServiceBuilder`'s own methods (`retry`, `timeout`,
/// `concurrency_limit`, …) on purpose: an inherent method silently wins over
/// a trait method, so a same-named extension would never be called.
///
/// This trait is sealed: it is implemented for `ServiceBuilder` only.
pub trait ServiceBuilderExt<L>: sealed::Sealed + Sized {
    /// Turns rampart errors into HTTP or gRPC responses
    /// ([`HandleErrorsLayer`]); the service becomes `Infallible`, as axum
    /// wants.
    #[cfg(feature = "http")]
    fn handle_errors(self) -> ServiceBuilder<Stack<HandleErrorsLayer, L>>;

    /// Hands a tonic client its errors as the right `tonic::Status`
    /// (DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED with `grpc-retry-pushback-ms`,
    /// UNAVAILABLE, CANCELLED) instead of UNKNOWN ([`GrpcStatusLayer`]).
    /// Outermost in the stack around a tonic `Channel`.
    #[cfg(feature = "tonic")]
    fn tonic_status(self) -> ServiceBuilder<Stack<GrpcStatusLayer, L>>;

    /// Gives every request an id (the incoming one if valid, else a UUIDv7),
    /// runs it in a [`Context`], records it in the tracing span and echoes it
    /// ([`context::RequestIdLayer`]). Outermost on a server.
    #[cfg(feature = "context")]
    fn request_id(self) -> ServiceBuilder<Stack<rampart_context::RequestIdLayer, L>>;

    /// Retries retryable failures with capped, jittered backoff, an optional
    /// shared budget, HTTP/gRPC classification and request-body replay
    /// ([`retry::RetryLayer`]; build it with `RetryLayer::http()`,
    /// `RetryLayer::tonic()` around a tonic `Channel` (feature `tonic`), or
    /// `RetryLayer::builder()`, before the chain: `build()` validates and
    /// returns a [`ConfigError`] naming the field, so the chain itself has
    /// no `?`). Place it inside the total deadline and outside the
    /// per-attempt timeout. (Not `retry`: `ServiceBuilder::retry` is
    /// tower's, and an inherent method always wins.)
    #[cfg(feature = "retry")]
    fn retry_with<C, R>(
        self,
        layer: rampart_retry::RetryLayer<C, R>,
    ) -> ServiceBuilder<Stack<rampart_retry::RetryLayer<C, R>, L>>;

    /// Per-attempt timeout ([`timeout::TimeoutLayer`], tower's `timeout`):
    /// fails a call with [`ErrorKind::Timeout`] `timeout` after `call()`
    /// (or at the [`Context`]'s earlier deadline, with
    /// [`ErrorKind::DeadlineExceeded`]); the wait for readiness is bounded
    /// too. Never fails: zero means "already expired", as in tower.
    #[cfg(feature = "timeout")]
    fn attempt_timeout(
        self,
        timeout: Duration,
    ) -> ServiceBuilder<Stack<rampart_timeout::TimeoutLayer, L>>;

    /// Total deadline of the request ([`timeout::DeadlineLayer`]), set in
    /// its [`Context`]; the earliest deadline wins. Never fails: a zero
    /// budget fails every request at once with `DeadlineExceeded`.
    #[cfg(feature = "timeout")]
    fn deadline(self, budget: Duration)
    -> ServiceBuilder<Stack<rampart_timeout::DeadlineLayer, L>>;

    /// Server side: starts the request's deadline from the caller's
    /// `grpc-timeout` / `x-request-timeout-ms`, capped by `budget`
    /// ([`timeout::DeadlineLayer::from_headers`]). Never fails.
    #[cfg(feature = "timeout")]
    fn deadline_from_headers(
        self,
        budget: Duration,
    ) -> ServiceBuilder<Stack<rampart_timeout::DeadlineLayer<rampart_timeout::FromHeaders>, L>>;

    /// Client side: writes the time that remains before the [`Context`]'s
    /// deadline on outgoing requests ([`timeout::PropagateDeadlineLayer`]).
    #[cfg(feature = "timeout")]
    fn propagate_deadline(
        self,
    ) -> ServiceBuilder<Stack<rampart_timeout::PropagateDeadlineLayer, L>>;

    /// Limits concurrent calls ([`limit::ConcurrencyLimitLayer`], tower's
    /// `concurrency_limit`): one limit shared by every clone, FIFO wait in
    /// `poll_ready` (bounded by a timeout above, the [`Context`]'s deadline
    /// and cancellation) or shed (503 + `Retry-After`), fixed or adaptive.
    /// `ConcurrencyLimitLayer::new(64)` cannot fail (it panics on 0 only).
    #[cfg(feature = "limit")]
    fn limit_concurrency<C>(
        self,
        layer: rampart_limit::ConcurrencyLimitLayer<C>,
    ) -> ServiceBuilder<Stack<rampart_limit::ConcurrencyLimitLayer<C>, L>>;

    /// A concurrency limit per key (tenant header, host, route) with a
    /// capped key map ([`limit::KeyedConcurrencyLimitLayer`]).
    #[cfg(feature = "limit")]
    fn limit_concurrency_per_key<E>(
        self,
        layer: rampart_limit::KeyedConcurrencyLimitLayer<E>,
    ) -> ServiceBuilder<Stack<rampart_limit::KeyedConcurrencyLimitLayer<E>, L>>;

    /// Writes the current [`Context`]'s request id into every outgoing
    /// request ([`context::PropagateContextLayer`]). Outermost on a client.
    #[cfg(feature = "context")]
    fn propagate_context(self) -> ServiceBuilder<Stack<rampart_context::PropagateContextLayer, L>>;

    /// Runs every request in a cancellation scope of its own
    /// ([`cancel::CancelLayer`]): a token the handler reaches through
    /// [`Context::current`], cancelled when the caller's token fires, the
    /// caller drops the call or the layer's [`cancel::Shutdown`] cancels
    /// everything; the call then resolves to [`ErrorKind::Cancelled`] and
    /// the layer's `on_cancel` cleanup hooks run once. On a server: inside
    /// the request id and error handling, outside the deadline and limits.
    #[cfg(feature = "cancel")]
    fn cancel_scope(
        self,
        layer: rampart_cancel::CancelLayer,
    ) -> ServiceBuilder<Stack<rampart_cancel::CancelLayer, L>>;

    /// [`cancel_scope`](ServiceBuilderExt::cancel_scope) with no hooks,
    /// drained by `shutdown` ([`cancel::Shutdown::drain`]: stop admitting
    /// with [`ErrorKind::Closed`], wait for the requests in flight up to a
    /// deadline, cancel the rest, report the counts).
    #[cfg(feature = "cancel")]
    fn drain_with(
        self,
        shutdown: &rampart_cancel::Shutdown,
    ) -> ServiceBuilder<Stack<rampart_cancel::CancelLayer, L>>;

    /// Limits the rate of calls with GCRA: one bucket shared by every clone,
    /// refusing with `429` + the exact `Retry-After`
    /// ([`rate::RateLimitLayer`]; its builder adds a bounded wait).
    #[cfg(feature = "rate")]
    fn limit_rate(
        self,
        quota: rampart_rate::Quota,
    ) -> ServiceBuilder<Stack<rampart_rate::RateLimitLayer, L>>;

    /// A rate limit per key (tenant header, client, route), idle keys
    /// dropped and the key count capped ([`rate::KeyedRateLimitLayer`]).
    #[cfg(feature = "rate")]
    fn limit_rate_per_key<E>(
        self,
        quota: rampart_rate::Quota,
        extractor: E,
    ) -> ServiceBuilder<Stack<rampart_rate::KeyedRateLimitLayer<E>, L>>;

    /// Serialises calls per key: same-key calls run one at a time, first
    /// come first served, other keys in parallel; the key map holds only
    /// keys in use ([`sync::KeyedLockLayer`]). Keep a clone of the layer
    /// for its `stats()`.
    #[cfg(feature = "sync")]
    fn keyed_lock<F>(
        self,
        layer: rampart_sync::KeyedLockLayer<F>,
    ) -> ServiceBuilder<Stack<rampart_sync::KeyedLockLayer<F>, L>>;

    /// Single-flight: concurrent requests with the same key share one inner
    /// call, which survives its first caller and is dropped only when every
    /// caller has gone ([`sync::CoalesceLayer`]).
    #[cfg(feature = "sync")]
    fn coalesce<F>(
        self,
        layer: rampart_sync::CoalesceLayer<F>,
    ) -> ServiceBuilder<Stack<rampart_sync::CoalesceLayer<F>, L>>;

    /// Stops calling a failing backend: a circuit breaker whose one circuit
    /// every clone shares; an open circuit refuses at once with
    /// [`ErrorKind::Overloaded`] and the time to the next probe (503 +
    /// `Retry-After`) ([`breaker::CircuitBreakerLayer`]; build it with
    /// `CircuitBreakerLayer::http()` or `CircuitBreakerLayer::builder()`).
    /// On a client, place it inside retry, so retries see the refusal.
    #[cfg(feature = "breaker")]
    fn circuit_breaker<C>(
        self,
        layer: rampart_breaker::CircuitBreakerLayer<C>,
    ) -> ServiceBuilder<Stack<rampart_breaker::CircuitBreakerLayer<C>, L>>;

    /// A circuit breaker per key (host, route, tenant) with a capped key map
    /// ([`breaker::KeyedCircuitBreakerLayer`]).
    #[cfg(feature = "breaker")]
    fn keyed_circuit_breaker<E, C>(
        self,
        layer: rampart_breaker::KeyedCircuitBreakerLayer<E, C>,
    ) -> ServiceBuilder<Stack<rampart_breaker::KeyedCircuitBreakerLayer<E, C>, L>>;

    /// Turns the service into one of many requests (a `Vec` or any
    /// `IntoIterator`) answered with every outcome in input order
    /// ([`fanout::FanOutLayer`]: modes all / fail-fast / first-ok /
    /// quorum, bounded concurrency, a collective timeout). Outermost: the
    /// layers below it apply to each request.
    #[cfg(feature = "fanout")]
    fn fan_out(
        self,
        layer: rampart_fanout::FanOutLayer,
    ) -> ServiceBuilder<Stack<rampart_fanout::FanOutLayer, L>>;

    /// A bounded queue of `capacity` requests in front of `workers` workers
    /// that drive the calls ([`queue::QueueLayer`]): waits for space when
    /// full (bounded by the request's deadline and cancellation), skips work
    /// whose caller left, a panicking call fails alone. A zero `capacity` or
    /// `workers` counts as 1. The workers are spawned when the service is
    /// built, on the current Tokio runtime (building it outside one panics).
    /// (Not `buffer`: `ServiceBuilder::buffer` is tower's.)
    #[cfg(feature = "queue")]
    fn queue<Req>(
        self,
        capacity: usize,
        workers: usize,
    ) -> ServiceBuilder<Stack<rampart_queue::QueueLayer<Req>, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    #[cfg(feature = "http")]
    fn handle_errors(self) -> ServiceBuilder<Stack<HandleErrorsLayer, L>> {
        self.layer(HandleErrorsLayer::new())
    }

    #[cfg(feature = "tonic")]
    fn tonic_status(self) -> ServiceBuilder<Stack<GrpcStatusLayer, L>> {
        self.layer(GrpcStatusLayer::new())
    }

    #[cfg(feature = "context")]
    fn request_id(self) -> ServiceBuilder<Stack<rampart_context::RequestIdLayer, L>> {
        self.layer(rampart_context::RequestIdLayer::new())
    }

    #[cfg(feature = "context")]
    fn propagate_context(self) -> ServiceBuilder<Stack<rampart_context::PropagateContextLayer, L>> {
        self.layer(rampart_context::PropagateContextLayer::new())
    }

    #[cfg(feature = "cancel")]
    fn cancel_scope(
        self,
        layer: rampart_cancel::CancelLayer,
    ) -> ServiceBuilder<Stack<rampart_cancel::CancelLayer, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "cancel")]
    fn drain_with(
        self,
        shutdown: &rampart_cancel::Shutdown,
    ) -> ServiceBuilder<Stack<rampart_cancel::CancelLayer, L>> {
        self.layer(rampart_cancel::CancelLayer::with_shutdown(shutdown))
    }

    #[cfg(feature = "retry")]
    fn retry_with<C, R>(
        self,
        layer: rampart_retry::RetryLayer<C, R>,
    ) -> ServiceBuilder<Stack<rampart_retry::RetryLayer<C, R>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "timeout")]
    fn attempt_timeout(
        self,
        timeout: Duration,
    ) -> ServiceBuilder<Stack<rampart_timeout::TimeoutLayer, L>> {
        self.layer(rampart_timeout::TimeoutLayer::new(timeout))
    }

    #[cfg(feature = "timeout")]
    fn deadline(
        self,
        budget: Duration,
    ) -> ServiceBuilder<Stack<rampart_timeout::DeadlineLayer, L>> {
        self.layer(rampart_timeout::DeadlineLayer::new(budget))
    }

    #[cfg(feature = "timeout")]
    fn deadline_from_headers(
        self,
        budget: Duration,
    ) -> ServiceBuilder<Stack<rampart_timeout::DeadlineLayer<rampart_timeout::FromHeaders>, L>>
    {
        self.layer(rampart_timeout::DeadlineLayer::from_headers(
            budget,
            rampart_timeout::DeadlineHeaders::new(),
        ))
    }

    #[cfg(feature = "timeout")]
    fn propagate_deadline(
        self,
    ) -> ServiceBuilder<Stack<rampart_timeout::PropagateDeadlineLayer, L>> {
        self.layer(rampart_timeout::PropagateDeadlineLayer::new())
    }

    #[cfg(feature = "limit")]
    fn limit_concurrency<C>(
        self,
        layer: rampart_limit::ConcurrencyLimitLayer<C>,
    ) -> ServiceBuilder<Stack<rampart_limit::ConcurrencyLimitLayer<C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "limit")]
    fn limit_concurrency_per_key<E>(
        self,
        layer: rampart_limit::KeyedConcurrencyLimitLayer<E>,
    ) -> ServiceBuilder<Stack<rampart_limit::KeyedConcurrencyLimitLayer<E>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "rate")]
    fn limit_rate(
        self,
        quota: rampart_rate::Quota,
    ) -> ServiceBuilder<Stack<rampart_rate::RateLimitLayer, L>> {
        self.layer(rampart_rate::RateLimitLayer::new(quota))
    }

    #[cfg(feature = "rate")]
    fn limit_rate_per_key<E>(
        self,
        quota: rampart_rate::Quota,
        extractor: E,
    ) -> ServiceBuilder<Stack<rampart_rate::KeyedRateLimitLayer<E>, L>> {
        self.layer(rampart_rate::KeyedRateLimitLayer::new(quota, extractor))
    }

    #[cfg(feature = "sync")]
    fn keyed_lock<F>(
        self,
        layer: rampart_sync::KeyedLockLayer<F>,
    ) -> ServiceBuilder<Stack<rampart_sync::KeyedLockLayer<F>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "sync")]
    fn coalesce<F>(
        self,
        layer: rampart_sync::CoalesceLayer<F>,
    ) -> ServiceBuilder<Stack<rampart_sync::CoalesceLayer<F>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "breaker")]
    fn circuit_breaker<C>(
        self,
        layer: rampart_breaker::CircuitBreakerLayer<C>,
    ) -> ServiceBuilder<Stack<rampart_breaker::CircuitBreakerLayer<C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "breaker")]
    fn keyed_circuit_breaker<E, C>(
        self,
        layer: rampart_breaker::KeyedCircuitBreakerLayer<E, C>,
    ) -> ServiceBuilder<Stack<rampart_breaker::KeyedCircuitBreakerLayer<E, C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "fanout")]
    fn fan_out(
        self,
        layer: rampart_fanout::FanOutLayer,
    ) -> ServiceBuilder<Stack<rampart_fanout::FanOutLayer, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "queue")]
    fn queue<Req>(
        self,
        capacity: usize,
        workers: usize,
    ) -> ServiceBuilder<Stack<rampart_queue::QueueLayer<Req>, L>> {
        self.layer(rampart_queue::QueueLayer::new(capacity, workers))
    }
}

pub mod guide;

/// The names most code needs: `use rampart::prelude::*;`.
pub mod prelude {
    #[cfg(feature = "http")]
    pub use crate::HandleErrorsLayer;
    pub use crate::ServiceBuilderExt;
    #[cfg(feature = "breaker")]
    pub use rampart_breaker::{
        CircuitBreakerHandle, CircuitBreakerLayer, KeyedCircuitBreakerLayer, breaker_classify,
    };
    #[cfg(feature = "cancel")]
    pub use rampart_cancel::{CancelLayer, Shutdown};
    #[cfg(feature = "context")]
    pub use rampart_context::{PropagateContextLayer, RequestIdLayer};
    #[cfg(feature = "tonic")]
    pub use rampart_core::GrpcStatusLayer;
    pub use rampart_core::classify::{GrpcClassify, HttpClassify, HttpOrGrpcClassify, Idempotent};
    pub use rampart_core::{Context, Error, ErrorKind, InContextExt, Outcome, RequestId};
    #[cfg(feature = "fanout")]
    pub use rampart_fanout::{FanOutError, FanOutLayer, Gathered};
    #[cfg(feature = "limit")]
    pub use rampart_limit::{ConcurrencyLimitLayer, KeyedConcurrencyLimitLayer};
    #[cfg(feature = "rate")]
    pub use rampart_rate::{KeyedRateLimitLayer, Quota, RateLimitLayer};

    #[cfg(feature = "queue")]
    pub use rampart_queue::{Queue, QueueLayer};
    #[cfg(feature = "retry")]
    pub use rampart_retry::{Backoff, Budget, RetryLayer};
    #[cfg(feature = "sync")]
    pub use rampart_sync::{CoalesceLayer, KeyedLockLayer};
    #[cfg(feature = "timeout")]
    pub use rampart_timeout::{
        DeadlineHeaders, DeadlineLayer, PropagateDeadlineLayer, TimeoutLayer,
    };
}

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
