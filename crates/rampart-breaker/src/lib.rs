//! A circuit breaker whose state every clone shares: stop calling a backend
//! that is failing, probe it carefully, recover.
//!
//! ```
//! use rampart_breaker::{CircuitBreakerLayer, State};
//! use rampart_core::ErrorKind;
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let breaker = CircuitBreakerLayer::builder()
//!     .consecutive_failures(3)
//!     .break_duration(Duration::from_secs(5))
//!     .build()?;
//! let handle = breaker.handle();
//! let svc = ServiceBuilder::new()
//!     .layer(breaker)
//!     .service(service_fn(|fail: bool| async move {
//!         if fail { Err(std::io::Error::other("backend down")) } else { Ok("ok") }
//!     }));
//! // Every clone feeds the one circuit (axum clones a service per request).
//! for _ in 0..3 {
//!     assert!(svc.clone().oneshot(true).await.is_err());
//! }
//! assert_eq!(handle.state(), State::Open);
//! // Refused at once, without calling the service: 503 + Retry-After.
//! let e = svc.clone().oneshot(false).await.unwrap_err();
//! assert_eq!(e.kind(), ErrorKind::Overloaded);
//! assert!(e.retry_after().unwrap() <= Duration::from_secs(5));
//! # Ok(())
//! # }
//! ```
//!
//! - [`CircuitBreakerLayer`]: closed → open → half-open → closed. Trip
//!   models ([`TripModel`]): failure ratio over a count- or time-based
//!   sliding [`Window`] with a minimum number of calls, or consecutive
//!   failures; optionally the share of slow calls ([`SlowCalls`]). Results
//!   are judged by rampart's [`Classify`](rampart_core::Classify):
//!   [`breaker_classify`] for HTTP and gRPC (a 503 or UNAVAILABLE is a
//!   failure, a 404 is not). The break may grow on repeated trips
//!   ([`BreakDuration`]); half-open admits at most N probes, each bounded
//!   by a probe timeout.
//! - An open circuit refuses at once with
//!   [`ErrorKind::Overloaded`](rampart_core::ErrorKind::Overloaded), whose
//!   `retry_after` is the time until the next probe (rampart's error
//!   mapping answers `503` + `Retry-After`, gRPC `UNAVAILABLE`), with a
//!   [`CircuitOpen`] as its source.
//! - [`CircuitBreakerHandle`]: state, force open or closed, reset,
//!   [`Stats`]. tracing events on every transition (`warn` when it opens,
//!   `info` when it closes, `debug` otherwise).
//! - [`KeyedCircuitBreakerLayer`]: a circuit per host, route or tenant,
//!   with a capped key map.
//!
//! Unlike tower-resilience's layer, whose plain `build()` makes a new
//! circuit for every `Layer::layer` call (so behind axum, which clones the
//! service per request, it sees one call per circuit and never trips), the
//! circuit here is made with the layer and shared by every service and
//! clone.
//!
//! A closed circuit costs a call one atomic load, an `Arc` clone and the
//! recording of its result in the window (lock-free: a few atomic
//! operations, none when the outcome matches the one it replaces); no
//! lock, no allocation, no timer, and the clock is read only for
//! time windows and slow-call detection.
//!
//! # Metrics
//!
//! With the `metrics` feature, each layer records on the
//! [`metrics`](https://docs.rs/metrics) facade, labelled `layer = <name>`
//! (given by `.name(..)` on the layer or its builder, `"default"`
//! otherwise). The handles are registered when the layer makes its first
//! service, under the name it has then (install the recorder before
//! building the stack) and each event is one call through a handle: no
//! allocation, lock or hash is added to a call. Without the feature
//! nothing is recorded and nothing is paid.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `rampart.breaker.state` | gauge | `layer` | 0 closed (or forced closed), 1 half-open, 2 open (or forced open); an open circuit whose break is over reads 2 until its next call probes. Circuits sharing a name (every unnamed one is `"default"`) add up: the series is the sum of their codes (two open circuits read 4), each circuit's share leaving with it when it is dropped, so give each circuit its own name to read its state. Not recorded by a keyed layer |
//! | `rampart.breaker.transitions` | counter | `layer`, `to` = `open` \| `half_open` \| `closed` | state changes (forced ones count as `open` / `closed`) |
//! | `rampart.breaker.rejected` | counter | `layer` | calls refused without reaching the service |
//! | `rampart.breaker.calls` | counter | `layer`, `outcome` = `success` \| `failure` | results judged by the classifier (calls and probes; results not counted, such as the caller's cancellation, are left out) |
//! | `rampart.breaker.keys` | gauge | `layer` | circuits a keyed layer tracks; keyed layers sharing a name add up, each map's count leaving with it when it is dropped |
//!
//! A keyed layer's circuits record together under the keyed layer's name.
//! Every tracing event carries the same name in its `layer` field: `warn`
//! when a circuit opens, `info` when it closes, `debug` for other
//! transitions, refusals and evictions.
//!
//! # Features
//!
//! - `metrics`: record the metrics above.
//! - `serde`: `serde::Deserialize` for [`CircuitBreakerConfig`].

mod breaker;
mod circuit;
mod classify;
mod config;
mod error;
mod keyed;
mod layer;
mod metrics;
mod service;
mod stats;
mod sync;
mod window;

pub use classify::{BreakerClassifier, BreakerClassify, breaker_classify};
pub use config::{
    BreakDuration, CircuitBreakerConfig, DEFAULT_BREAK, DEFAULT_FAILURE_RATIO, DEFAULT_MIN_CALLS,
    DEFAULT_PROBE_TIMEOUT, DEFAULT_PROBES, DEFAULT_WINDOW_CALLS, MAX_PROBES, MAX_WINDOW_CALLS,
    SlowCalls, TripModel, Window,
};
pub use error::CircuitOpen;
pub use keyed::{KeyedCircuitBreaker, KeyedCircuitBreakerLayer};
pub use layer::{CircuitBreakerBuilder, CircuitBreakerHandle, CircuitBreakerLayer};
pub use rampart_limit::{HeaderKey, KeyExtractor};
pub use service::{CircuitBreaker, ResponseFuture};
pub use stats::{State, Stats};
