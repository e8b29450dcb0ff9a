//! Test helpers for rampart's tests, examples and the `tour` demo.
//!
//! - [`FlakyServer`]: a real hyper 1 server on `127.0.0.1:0` (HTTP/1.1 and
//!   h2c) that fails, resets, delays and answers gRPC-style according to a
//!   script, a handler hook and a seeded random ratio; it records every
//!   request (headers and full body) and its in-flight peak.
//! - [`MockService`]: a scripted `tower_service::Service` with counters
//!   (calls, in flight, peak, dropped before completion) and controllable
//!   `poll_ready`, for unit tests of layers.
//! - [`cancel_at_every_poll`]: drops a future after 0, 1, 2, ... polls and
//!   checks an invariant after every drop.
//! - [`MetricsCapture`]: a `metrics` recorder local to one test, with typed
//!   lookups of counters, gauges and histograms by name and layer label.
//!
//! ```
//! use std::time::Duration;
//! use http_body_util::{BodyExt, Full};
//! use bytes::Bytes;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use rampart_testkit::{FlakyServer, Reply};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = FlakyServer::builder()
//!     .seed(7)
//!     .script([Reply::status(503).retry_after("1"), Reply::reset()])
//!     .start()
//!     .await?;
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//!
//! let first = client.get(server.uri("/a")).await?;
//! assert_eq!(first.status(), 503);
//! assert_eq!(first.headers()["retry-after"], "1");
//! assert!(client.get(server.uri("/b")).await.is_err()); // reset
//! let third = client.get(server.uri("/c")).await?; // script done: random, ratio 0
//! assert_eq!(third.status(), 200);
//! assert_eq!(third.into_body().collect().await?.to_bytes(), "ok 2");
//!
//! assert_eq!(server.request_count(), 3);
//! assert_eq!(server.requests()[1].uri.path(), "/b");
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod cancel;
mod events;
mod metrics;
mod mock;
mod server;

pub use cancel::{
    CancelCheckFailed, DEFAULT_MAX_POLLS, cancel_at_every_poll, cancel_at_every_poll_bounded,
};
pub use events::EventCapture;
pub use metrics::{MetricsCapture, MetricsSnapshot};
pub use mock::{Gate, MockError, MockFuture, MockReply, MockService, ReadyMode};
pub use server::{FlakyServer, FlakyServerBuilder, Recorded, Reply, ReplySource};
