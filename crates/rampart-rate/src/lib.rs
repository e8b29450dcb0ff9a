//! Rate limiting as tower layers: GCRA with a rate and a burst, one state
//! shared by every clone, keyed with bounded memory, and an exact
//! `Retry-After` on every refusal.
//!
//! ```
//! use rampart_core::ErrorKind;
//! use rampart_rate::{Quota, RateLimitLayer};
//! use std::num::NonZeroU32;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let limit = RateLimitLayer::new(Quota::per_second(NonZeroU32::new(2).unwrap()));
//! let svc = ServiceBuilder::new()
//!     .layer(limit.clone())
//!     .service(service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n) }));
//!
//! // Every clone draws on one bucket (axum clones a service per request).
//! assert_eq!(svc.clone().oneshot(1).await.unwrap(), 1);
//! assert_eq!(svc.clone().oneshot(2).await.unwrap(), 2);
//! let refused = svc.clone().oneshot(3).await.unwrap_err();
//! assert_eq!(refused.kind(), ErrorKind::RateLimited); // 429 over HTTP
//! assert_eq!(refused.retry_after(), Some(std::time::Duration::from_millis(500)));
//! assert_eq!(limit.stats().rejected, 1);
//! # }
//! ```
//!
//! - [`RateLimitLayer`]: one bucket for every request. Unlike tower's
//!   `RateLimit` (a fixed window, and one window per clone, so under axum's
//!   clone-per-request it limits nothing), the state lives behind the layer
//!   and the service needs no `Clone`.
//! - [`KeyedRateLimitLayer`]: a bucket per key read from the request by a
//!   [`KeyExtractor`] (a closure, or [`HeaderKey`] for a header such as a
//!   tenant id). Keys whose bucket has refilled are dropped automatically
//!   and the map is capped ([`KeyedStore`]), where governor's keyed map grows
//!   until someone calls `retain_recent`.
//! - A refusal is [`ErrorKind::RateLimited`](rampart_core::ErrorKind::RateLimited)
//!   with `retry_after` = the exact time until a request would be admitted:
//!   `429` + `Retry-After` over HTTP, `RESOURCE_EXHAUSTED` +
//!   `grpc-retry-pushback-ms` over gRPC, which rampart's retry honours.
//! - [`RateLimitBuilder::max_wait`]: wait for a slot instead of refusing,
//!   within the request's deadline and until its cancellation.
//! - [`RateStore`]: the state behind one atomic check-and-update per request
//!   (admit or refuse, with the wait), so a store shared by replicas needs
//!   one round trip per decision. [`LocalStore`] (one atomic word, a
//!   compare-and-swap) and [`KeyedStore`] (16 locked shards) are in-process.
//!
//! # The algorithm
//!
//! GCRA (the generic cell rate algorithm, as governor and Redis's
//! `redis-cell` use) keeps one number per bucket: the theoretical arrival
//! time of the next request. From a full bucket, exactly
//! `burst + floor(t / interval)` requests are admitted over any time `t`
//! while requests come faster than the rate. governor implements the same
//! algorithm, but its state store is synchronous and in-process, its keyed
//! map needs manual pruning, and its `check` returns no wait to a remote
//! store in one round trip; the GCRA step itself is ten lines
//! (`gcra.rs`), property-tested, so it is ours and sits behind [`RateStore`].
//!
//! # Where the decision is taken
//!
//! [`RateLimit`] needs no `Clone` inner service. With an in-process store
//! and no `max_wait` (the default) it decides in `call`. With a `max_wait`
//! or a remote store it decides in `poll_ready`, as tower's `RateLimit`
//! does: a waiting call holds the service's readiness, and the wait is
//! bounded by the deadline and cancellation of the [`Context`](rampart_core::Context)
//! current *while `poll_ready` runs* — true in a client stack called inside
//! a context scope, but not in a server stack whose request-id or deadline
//! layer scopes only `call`. There, use [`KeyedRateLimitLayer`] (one key:
//! `|_: &Req| ()`), which decides in `call` with the request's own context.
//! [`KeyedRateLimit`] needs the request for its key, so it always decides
//! in `call`; a request that has to wait takes a clone of the inner service
//! and drives it ready only after the wait (`S: Clone`).
//!
//! # Metrics
//!
//! With the `metrics` feature, each layer records on the
//! [`metrics`](https://docs.rs/metrics) facade, labelled `layer = <name>`
//! (given by `.name(..)` on the layer or its builder, `"default"`
//! otherwise). The handles are registered when the layer makes its first
//! service, under the name it has then (install the recorder before
//! building the stack); each decision is one call through a handle (no
//! allocation, lock or hash added to a request). Without the feature
//! nothing is recorded and nothing is paid.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `rampart.rate.admitted` | counter | `layer` | requests admitted, at once or after a wait |
//! | `rampart.rate.rejected` | counter | `layer` | requests refused: rate limited, slot past the deadline, key store full, store error (as [`Stats::rejected`]) |
//! | `rampart.rate.wait.duration` | histogram (s) | `layer` | time an admitted request waited for its slot, recorded when the wait ends, is cancelled or is dropped |
//! | `rampart.rate.keys` | gauge | `layer` | keys a [`KeyedStore`] holds (idle ones not yet swept included, as [`KeyedStore::len`]); stores whose layers share a name add up, each store's keys leaving with it when it is dropped |
//!
//! A store registers its own metrics through
//! [`RateStore::register_metrics`]. Every tracing event carries the same
//! name in its `layer` field (`debug` for each refusal).
//!
//! # Cost
//!
//! An admitted call with the in-process stores allocates nothing and adds
//! one clock read, one GCRA step and (keyed) one hash and one uncontended
//! shard lock. Under callgrind on the `rate` bench (`benches/rate.rs`,
//! current-thread, one caller, inner service ready at once; ~10
//! instructions ≈ 1 ns there), over the bare service (767 instructions):
//! [`RateLimitLayer`] +303 instructions, governor's direct limiter +230;
//! [`KeyedRateLimitLayer`] +403, governor's keyed (`dashmap`) limiter +398;
//! with an inner answered by another task, +308 / +233 and +403 / +395.
//! Of the +303, the clock read and its conversion to nanoseconds since the
//! store's epoch are ~106 instructions (measured by replacing it with a
//! constant), of which tokio's `Instant::now` adds 14 over std's with
//! tokio's `test-util` feature on (its check for a paused clock; without
//! the feature tokio's `Instant::now` is std's). tokio's clock is kept so
//! that a paused test clock drives the limiter. In wall-clock terms the
//! read is ~22 ns with std's or tokio's `Instant` and ~14 ns with quanta's
//! TSC clock on the 2-core development VM (governor's default clock; the
//! bench builds governor without it, so both read the same clock there).
//! Of the ~70 instructions over governor: 14 are tokio's clock (above),
//! 16 (40 keyed) the typed refusal's presence (a response future that is
//! either the inner call or the refusal with its exact `retry_after`:
//! measured by removing the refused variant), and the rest drop glue and
//! branches spread over the service's state (callgrind puts 13 on dropping
//! its gate, the `Arc` of the shared state and the `poll_ready` outcome).
//!
//! # Features
//!
//! - `metrics`: record the metrics above.
//! - `serde`: `serde::Deserialize` for [`Quota`].

mod gcra;
mod keyed;
mod layer;
mod metrics;
mod quota;
mod service;
mod store;
mod wait;

pub use keyed::{KeyedRateLimit, KeyedResponseFuture};
pub use layer::{DEFAULT_MAX_KEYS, Keyed, KeyedRateLimitLayer, RateLimitBuilder, RateLimitLayer};
pub use quota::Quota;
pub use rampart_limit::{HeaderKey, KeyExtractor};
pub use service::{RateLimit, ResponseFuture};
pub use store::{Decision, KeyedStore, LocalStore, RateStore};

/// Counts since a layer was built, over every service it made. Admitted
/// calls are not counted here (that would put a shared counter on every
/// call); the `metrics` feature's `rampart.rate.admitted` counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Requests refused: rate limited, past their deadline, a full key
    /// store, or a store error.
    pub rejected: u64,
    /// Requests admitted with a wait (counted when the wait starts, so a
    /// wait later cancelled is in it).
    pub waited: u64,
}
