//! Keyed locks and single-flight coalescing, as tower layers: the
//! article's `asyncio.Lock` around a counter, lifted to a service.
//!
//! ```
//! use rampart_sync::{CoalesceLayer, KeyedLockLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // Identical concurrent reads share one call; writes to one key never
//! // interleave.
//! let svc = ServiceBuilder::new()
//!     .layer(CoalesceLayer::new(|key: &String| key.clone()))
//!     .layer(KeyedLockLayer::new(|key: &String| key.clone()))
//!     .service(service_fn(|key: String| async move {
//!         Ok::<_, std::io::Error>(key.len())
//!     }));
//! assert_eq!(svc.oneshot("account-7".to_string()).await?, 9);
//! # Ok(())
//! # }
//! ```
//!
//! - [`KeyedLockLayer`]: calls with the same key run one at a time, first
//!   come first served; different keys run in parallel. The key map holds
//!   only keys that are held or waited for. A waiter that gives up leaves
//!   cleanly; a holder that completes, is dropped or panics releases the
//!   key; waiting ends with the request's cancellation or deadline.
//! - [`CoalesceLayer`]: concurrent requests with the same key share one
//!   inner call, driven by its first caller (no task for a lone request),
//!   moved to a task of its own if that caller leaves while others wait,
//!   and dropped only when every caller has gone; waiters are woken by the
//!   result, never polled in a loop; failures are shared; results can be
//!   kept for a time to live.
//! - [`LockStats`], [`CoalesceStats`]: holders, waiters, coalesced hits.
//!   tracing `debug` events when a caller gives up or a shared call is
//!   moved or dropped, each carrying `layer`: the name given with
//!   `.name(..)`.
//!
//! # Metrics
//!
//! With the `metrics` feature each layer records on the
//! [`metrics`](https://docs.rs/metrics) facade, labelled
//! `layer = <its .name(..)>` (`"default"` unnamed; keys are never labels).
//! Install the recorder before building the stack: the handles are
//! registered once, when the layer makes its first service, under the name
//! it has then (building and naming a layer register nothing). Nothing is
//! recorded or paid without the feature.
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `rampart.lock.held` | gauge | keys held now (one call holds each) |
//! | `rampart.lock.waiting` | gauge | calls waiting for a key another call holds |
//! | `rampart.lock.waited` | counter | calls that had to wait |
//! | `rampart.lock.gave_up` | counter, `reason` = `cancelled` \| `deadline` \| `dropped` | waiting calls that left before they got their key |
//! | `rampart.lock.wait.duration` | histogram, seconds | time each waiting call waited, however the wait ended; a call that found its key free records nothing |
//! | `rampart.coalesce.leaders` | counter | calls made to the inner service (each led a shared call) |
//! | `rampart.coalesce.coalesced` | counter | requests that joined a call in flight |
//! | `rampart.coalesce.cached` | counter | requests answered from a kept result (time to live) |
//! | `rampart.coalesce.abandoned` | counter | shared calls dropped because every caller left |
//! | `rampart.coalesce.gave_up` | counter, `reason` = `cancelled` \| `deadline` | callers that gave up waiting (a caller that drops its future is not counted) |
//! | `rampart.coalesce.in_flight` | gauge | shared calls running |
//! | `rampart.coalesce.waiting` | gauge | callers waiting for a shared call, leaders included |
//!
//! # Features
//!
//! - `serde`: `Deserialize` for [`CoalesceConfig`].
//! - `metrics`: the metrics above.
//!
//! Both are built on tokio's primitives (a semaphore per contended key, a
//! `Notify` per shared call) under short, sharded `std` mutexes.

mod coalesce;
mod lock;
mod metrics;
mod stats;

pub use coalesce::{
    Coalesce, CoalesceConfig, CoalesceLayer, ResponseFuture as CoalesceResponseFuture, SharedError,
};
pub use lock::{KeyedLock, KeyedLockLayer, ResponseFuture as KeyedLockResponseFuture};
pub use stats::{CoalesceStats, LockStats};
