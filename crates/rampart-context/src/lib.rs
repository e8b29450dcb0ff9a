//! Request ids and context propagation, from the incoming request to every
//! outgoing HTTP and gRPC call: Python's `contextvars` request id, done for
//! tower.
//!
//! - Server side, [`RequestIdLayer`]: accepts a valid incoming
//!   `x-request-id` or generates a UUIDv7, replaces hostile ids (never echoed),
//!   runs the request inside a [`Context`] (on request also stored in the
//!   request's extensions), records the id in the request's tracing span, and
//!   echoes it in the response.
//! - Client side, [`PropagateContextLayer`]: writes the current context's id
//!   (and, when configured, its remaining deadline as `grpc-timeout` or a
//!   milliseconds header; a deadline that has passed fails the call with
//!   `DeadlineExceeded` instead of being sent) into every outgoing request
//!   of a hyper client, axum-style service or tonic channel.
//! - Feature `axum`: the extractors `ReqId` and `CurrentContext`.
//! - Feature `serde`: `serde::Deserialize` for the configs.
//! - Feature `metrics`: the counters below, on the `metrics` facade.
//!
//! The context follows the request through every `.await` of its handler and
//! into tasks started with [`rampart_core::spawn`] (`rampart::spawn`) or
//! futures wrapped with [`.in_context()`](rampart_core::InContextExt). A bare
//! `tokio::spawn` is the one thing that loses it: task-locals do not cross
//! into a new task.
//!
//! ```
//! use rampart_context::{PropagateContextLayer, RequestIdLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use http::{Request, Response};
//! use std::convert::Infallible;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // A downstream service that answers with the id it received.
//! let downstream = service_fn(|req: Request<()>| async move {
//!     let got = req.headers()["x-request-id"].to_str().unwrap().to_owned();
//!     Ok::<_, Infallible>(Response::new(got))
//! });
//! // The client a handler uses: it carries the request's id.
//! let client = ServiceBuilder::new()
//!     .layer(PropagateContextLayer::new())
//!     .service(downstream);
//! // The server: a request id for every request, then the handler.
//! let server = ServiceBuilder::new()
//!     .layer(RequestIdLayer::new())
//!     .service(service_fn(move |_req: Request<()>| {
//!         let client = client.clone();
//!         async move {
//!             let res = client.oneshot(Request::new(())).await?;
//!             Ok::<_, rampart_core::Error>(Response::new(res.into_body()))
//!         }
//!     }));
//!
//! let req = Request::builder().header("x-request-id", "req-1").body(()).unwrap();
//! let res = server.oneshot(req).await.unwrap();
//! assert_eq!(res.headers()["x-request-id"], "req-1"); // echoed
//! assert_eq!(res.body(), "req-1"); // and seen downstream
//! # }
//! ```

//!
//! # Metrics
//!
//! With the `metrics` feature, each layer records on the
//! [`metrics`](https://docs.rs/metrics) facade, labelled `layer = <name>`
//! (`.name("edge")` on the layer or its builder; `"default"` otherwise),
//! never by request data. Handles are registered when the layer wraps a
//! service (`Layer::layer`), under the name the layer has then: install the
//! recorder before building the stack. Without the feature nothing is
//! recorded and the layers are as small and fast as without metrics.
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `rampart.request_id.generated` | counter | no incoming id: a UUIDv7 was generated |
//! | `rampart.request_id.accepted` | counter | a valid incoming id was kept |
//! | `rampart.request_id.refused` | counter | an incoming id was refused (invalid, hostile, repeated, or incoming ids not accepted) and replaced by a generated one |
//! | `rampart.context.deadline.expired` | counter | [`PropagateContextLayer`]: a call not sent because the context's deadline had passed |
//! | `rampart.context.missing` | counter | [`PropagateContextLayer`]: a call made with no context (e.g. from a bare `tokio::spawn`), sent untouched |
//!
//! Every request a [`RequestIdLayer`] gives its own id is counted once, in
//! exactly one of `generated`, `accepted` and `refused`; a request whose id
//! a layer further out set is counted by that layer. The tracing span and
//! events of both layers carry the same name in their `layer` field.

pub mod client;
mod config;
#[cfg(feature = "axum")]
mod extract;
mod metrics;
pub mod server;

pub use client::{
    PropagateConfig, PropagateContext, PropagateContextBuilder, PropagateContextFuture,
    PropagateContextLayer,
};
#[cfg(feature = "axum")]
pub use extract::{CurrentContext, MissingRequestId, ReqId};
/// Why a configuration was refused: rampart's one configuration error.
pub use rampart_core::ConfigError;
pub use server::{RequestIdBuilder, RequestIdConfig, RequestIdLayer, RequestIdService};

pub use rampart_core::{Context, RequestId};
