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
//! | `http` | | error → HTTP/gRPC response mapping, [`HandleErrorsLayer`] |
//! | `axum` | | `IntoResponse` for [`Error`], axum extractors for the request id |
//! | `hyper-util` | | hyper-util's client connect errors count as "never sent" |
//! | `serde` | | `serde::Deserialize` for the configs |

pub use rampart_core as core;
pub use rampart_core::classify::{self, GrpcClassify, HttpClassify, HttpOrGrpcClassify};
pub use rampart_core::{
    BoxError, CancellationToken, Classify, ClassifyResult, ConfigError, Context, Error, ErrorKind,
    InContextExt, Outcome, RequestId, codec, grpc, spawn,
};
#[cfg(feature = "http")]
pub use rampart_core::{HandleErrors, HandleErrorsLayer};

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
#[cfg(any(
    feature = "http",
    feature = "context",
    feature = "limit",
    feature = "retry",
    feature = "timeout"
))]
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

    /// Per-attempt timeout ([`timeout::TimeoutLayer`]): fails a call with
    /// [`ErrorKind::Timeout`] after `timeout`, the wait for readiness or a
    /// permit included. A zero duration is refused.
    #[cfg(feature = "timeout")]
    fn attempt_timeout(
        self,
        timeout: Duration,
    ) -> Result<ServiceBuilder<Stack<rampart_timeout::TimeoutLayer, L>>, rampart_timeout::ConfigError>;

    /// Total deadline of the request ([`timeout::DeadlineLayer`]), set in
    /// its [`Context`]; the earliest deadline wins. A zero budget is refused.
    #[cfg(feature = "timeout")]
    fn deadline(
        self,
        budget: Duration,
    ) -> Result<
        ServiceBuilder<Stack<rampart_timeout::DeadlineLayer, L>>,
        rampart_timeout::ConfigError,
    >;

    /// Server side: starts the request's deadline from the caller's
    /// `grpc-timeout` / `x-request-timeout-ms`, capped by `budget`
    /// ([`timeout::DeadlineLayer::from_headers`]).
    #[cfg(feature = "timeout")]
    fn deadline_from_headers(
        self,
        budget: Duration,
    ) -> Result<
        ServiceBuilder<Stack<rampart_timeout::DeadlineLayer<rampart_timeout::FromHeaders>, L>>,
        rampart_timeout::ConfigError,
    >;

    /// Client side: writes the time that remains before the [`Context`]'s
    /// deadline on outgoing requests ([`timeout::PropagateDeadlineLayer`]).
    #[cfg(feature = "timeout")]
    fn propagate_deadline(
        self,
    ) -> ServiceBuilder<Stack<rampart_timeout::PropagateDeadlineLayer, L>>;

    /// Limits concurrent calls: one limit shared by every clone, the permit
    /// taken inside the call (so a timeout above bounds the wait), FIFO wait
    /// or shed (503 + `Retry-After`), fixed or adaptive
    /// ([`limit::ConcurrencyLimitLayer`]).
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
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    #[cfg(feature = "http")]
    fn handle_errors(self) -> ServiceBuilder<Stack<HandleErrorsLayer, L>> {
        self.layer(HandleErrorsLayer::new())
    }

    #[cfg(feature = "context")]
    fn request_id(self) -> ServiceBuilder<Stack<rampart_context::RequestIdLayer, L>> {
        self.layer(rampart_context::RequestIdLayer::new())
    }

    #[cfg(feature = "context")]
    fn propagate_context(self) -> ServiceBuilder<Stack<rampart_context::PropagateContextLayer, L>> {
        self.layer(rampart_context::PropagateContextLayer::new())
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
    ) -> Result<ServiceBuilder<Stack<rampart_timeout::TimeoutLayer, L>>, rampart_timeout::ConfigError>
    {
        Ok(self.layer(rampart_timeout::TimeoutLayer::new(timeout)?))
    }

    #[cfg(feature = "timeout")]
    fn deadline(
        self,
        budget: Duration,
    ) -> Result<
        ServiceBuilder<Stack<rampart_timeout::DeadlineLayer, L>>,
        rampart_timeout::ConfigError,
    > {
        Ok(self.layer(rampart_timeout::DeadlineLayer::new(budget)?))
    }

    #[cfg(feature = "timeout")]
    fn deadline_from_headers(
        self,
        budget: Duration,
    ) -> Result<
        ServiceBuilder<Stack<rampart_timeout::DeadlineLayer<rampart_timeout::FromHeaders>, L>>,
        rampart_timeout::ConfigError,
    > {
        Ok(self.layer(rampart_timeout::DeadlineLayer::from_headers(
            budget,
            rampart_timeout::DeadlineHeaders::new(),
        )?))
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
}

/// The names most code needs: `use rampart::prelude::*;`.
pub mod prelude {
    #[cfg(feature = "http")]
    pub use crate::HandleErrorsLayer;
    pub use crate::ServiceBuilderExt;
    #[cfg(feature = "context")]
    pub use rampart_context::{PropagateContextLayer, RequestIdLayer};
    pub use rampart_core::classify::{GrpcClassify, HttpClassify, HttpOrGrpcClassify};
    pub use rampart_core::{Context, Error, ErrorKind, InContextExt, Outcome, RequestId};
    #[cfg(feature = "limit")]
    pub use rampart_limit::{ConcurrencyLimitLayer, KeyedConcurrencyLimitLayer};
    #[cfg(feature = "retry")]
    pub use rampart_retry::{Backoff, Budget, RetryLayer};
    #[cfg(feature = "timeout")]
    pub use rampart_timeout::{
        DeadlineHeaders, DeadlineLayer, PropagateDeadlineLayer, TimeoutLayer,
    };
}

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
