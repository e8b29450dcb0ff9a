//! Concurrency limits as tower layers: the article's `asyncio.Semaphore(3)`,
//! built for servers and clients under real load.
//!
//! ```
//! use rampart_limit::ConcurrencyLimitLayer;
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let limit = ConcurrencyLimitLayer::builder(3)
//!     .max_wait(Duration::from_secs(1))
//!     .build()?;
//! let svc = ServiceBuilder::new()
//!     .layer(limit.clone())
//!     .service(service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n * 2) }));
//! // Every clone shares the one limit (axum clones a service per request).
//! assert_eq!(svc.clone().oneshot(21).await?, 42);
//! assert_eq!(limit.stats().in_flight, 0);
//! # Ok(())
//! # }
//! ```
//!
//! - [`ConcurrencyLimitLayer`]: one limit shared by every clone of the
//!   service, wrapping any service (`Clone` or not: a `BoxService`, a
//!   hyper `SendRequest`). The permit is taken in `poll_ready`, as tower's
//!   `ConcurrencyLimit` does, and given back when the inner response
//!   future completes or is dropped. When the limit is reached the caller
//!   waits in line in `poll_ready` — first come first served, optionally
//!   bounded by a maximum wait and a maximum line length, and always by
//!   the request's [`Context`](rampart_core::Context): its deadline
//!   (`DeadlineExceeded`) and its cancellation token (`Cancelled`, at
//!   once) — or is shed at once with
//!   [`ErrorKind::Overloaded`](rampart_core::ErrorKind::Overloaded), which
//!   rampart's error mapping answers with `503` and `Retry-After`. A
//!   refused call fails in `call`, without reaching the inner service, and
//!   the service stays usable. A timeout layer above bounds the wait
//!   (rampart's `TimeoutLayer` does). A caller that gives up while
//!   waiting leaves nothing behind.
//! - Adaptive limits ([`Aimd`], [`Vegas`], [`Gradient2`], as in Netflix's
//!   concurrency-limits): the limit follows measured latency and the
//!   overload signals that a [`Classify`](rampart_core::Classify) finds in
//!   the results. See the [`adaptive`] module.
//! - [`KeyedConcurrencyLimitLayer`]: a limit per key (tenant header, host,
//!   route) with a capped key map.
//! - [`Stats`]: in flight, waiting, the current limit, shed and expired
//!   counts. tracing `debug` events on sheds, expiries and limit changes,
//!   a `warn` event when an adaptive limit is pressed to its floor (once
//!   each time it gets there); every event carries `layer`, the name given
//!   with `.name(..)` on the layer or its builder.
//!
//! # Metrics
//!
//! With the `metrics` feature each layer records on the
//! [`metrics`](https://docs.rs/metrics) facade, labelled
//! `layer = <its .name(..)>` (`"default"` unnamed). Install the recorder
//! (a Prometheus exporter, …) before building the stack: the handles are
//! registered once, when the layer makes its first service, under the name
//! it has then (building and naming a layer register nothing). Nothing is
//! recorded or paid without the feature.
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `rampart.limit.in_flight` | gauge | calls holding a permit |
//! | `rampart.limit.waiting` | gauge | calls waiting in line |
//! | `rampart.limit.current` | gauge | the current limit: the adaptive limit as it moves, the fixed limit, or a keyed limit's limit per key. Layers sharing a name (every unnamed one is `"default"`) add up: the series is the sum of their limits, each layer's share leaving with it when it is dropped or renamed |
//! | `rampart.limit.shed` | counter | calls refused at once (shed mode, or the line was full) |
//! | `rampart.limit.expired` | counter, `reason` = `max_wait` \| `deadline` \| `cancelled` | waits that ended without a permit (a wait whose caller dropped it is not counted) |
//! | `rampart.limit.wait.duration` | histogram, seconds | time in line of every call that waited, however the wait ended (granted, expired, cancelled, dropped); a call that found a free permit records nothing |
//! | `rampart.limit.keys` | gauge | keyed: keys tracked (idle keys stay until the map needs room, as in [`KeyedStats::keys`]); keyed layers sharing a name add up, each map's keys leaving with it when it is dropped or renamed |
//! | `rampart.limit.keys.rejected` | counter | keyed: calls refused because the key map was full of busy keys |
//!
//! # Features
//!
//! - `serde`: `Deserialize` for [`LimitConfig`], [`KeyedConfig`] and the
//!   adaptive configs.
//! - `metrics`: the metrics above.
//!
//! A call that finds a free permit (and nobody waiting) takes it with one
//! compare-and-swap: no lock, no allocation, no timer. A caller that must
//! wait allocates only if its wait has a timer (a maximum wait, a request
//! deadline) or a cancellation token to watch: one box for both.
//!
//! # Cost
//!
//! Measured with `benches/limit.rs` (inner boxed and cloned per call,
//! callers in spawned tasks) under callgrind, instructions per request over
//! the bare service, current-thread runtime, against tower's
//! `ConcurrencyLimit` in the same run (`../shared/tools/bench-instructions
//! limit`):
//!
//! | case | tower | rampart | ratio |
//! |---|---|---|---|
//! | limit 64 never reached, ready inner, 1 caller | +400 | +442 | 1.11 |
//! | same, remote inner (answered by another task) | +402 | +474 | 1.18 |
//! | same, yielding inner, 64 callers | +390 | +474 | 1.22 |
//! | limit 8, 64 callers, yielding inner (56 waiting) | +1805 | +1644 | 0.91 |
//!
//! Allocations: none added when a permit is free; a waiting caller
//! allocates nothing either unless its wait has a timer or a token to
//! watch (tower's `ConcurrencyLimit` allocates once per waiting call: 2.01
//! per request in the contended case, rampart 1.01, the bare service 1.01).

pub mod adaptive;
mod config;
mod error;
mod future;
mod keyed;
mod layer;
mod metrics;
mod permit;
mod sem;
mod service;
mod shared;
mod stats;
mod wait;

pub use adaptive::{
    Aimd, AimdConfig, Gradient2, Gradient2Config, LimitAlgorithm, Sample, SampleWindow, Vegas,
    VegasConfig,
};
pub use config::{DEFAULT_RETRY_AFTER, Limit, LimitConfig, MAX_RETRY_AFTER, Mode, WaitPolicy};
pub use error::LimitConfigError;
pub use future::ResponseFuture;
pub use keyed::{
    DEFAULT_MAX_KEYS, HeaderKey, KeyExtractor, KeyedBuilder, KeyedConcurrencyLimit,
    KeyedConcurrencyLimitLayer, KeyedConfig, KeyedResponseFuture,
};
pub use layer::{ConcurrencyLimitLayer, LimitBuilder};
pub use rampart_core::ConfigError;
pub use sem::MAX_LIMIT;
pub use service::ConcurrencyLimit;
pub use stats::{KeyedStats, Stats};
