//! Core types shared by every rampart layer.
//!
//! - [`Error`] / [`ErrorKind`]: one error type for all layers, mapped to HTTP
//!   and gRPC responses (feature `http`) by [`HandleErrorsLayer`].
//! - [`classify`]: what a result means — success, retryable (after a delay),
//!   or fatal — for HTTP, gRPC and plain services.
//! - [`Context`]: the request id, deadline and cancellation token of the
//!   request being handled, task-local and in request extensions.
//! - [`codec`]: total parsers and encoders for `grpc-timeout`, an HTTP
//!   deadline header, `Retry-After`, `grpc-retry-pushback-ms`; [`RequestId`]
//!   validation and UUIDv7 generation.
//! - [`spawn`] / [`spawn_blocking`]: start a task or blocking work carrying
//!   the current [`Context`].
//! - [`telemetry`]: the metric handles every layer records through (feature
//!   `metrics`, on the `metrics` facade; free when the feature is off).
//! - Feature `tonic`: `GrpcStatusLayer` and `From<Error> for tonic::Status`,
//!   so a tonic client sees rampart failures with the right gRPC code.
//!
//! A server stack that turns rampart errors into responses:
//!
//! ```
//! use rampart_core::{Context, HandleErrorsLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use http::{Request, Response};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(HandleErrorsLayer::new())
//!     .service(service_fn(|_req: Request<()>| async {
//!         // A deadline that passed becomes a 504.
//!         Err::<Response<String>, _>(rampart_core::Error::deadline_exceeded())
//!     }));
//! let res = svc.oneshot(Request::new(())).await.unwrap();
//! assert_eq!(res.status(), 504);
//! # }
//! ```

pub mod classify;
pub mod codec;
mod config;
mod context;
mod error;
pub mod grpc;
pub mod hashed;
mod request_id;
#[cfg(feature = "http")]
mod response;
pub mod telemetry;
#[cfg(feature = "tonic")]
pub mod tonic_status;

pub use classify::{Classify, ClassifyResult, Outcome};
pub use config::ConfigError;
pub use context::{Context, InContext, InContextExt, Scoped, spawn, spawn_blocking};
pub use error::{BoxError, Error, ErrorKind};
pub use request_id::{
    InvalidRequestId, MAX_REQUEST_ID_LEN, RequestId, X_REQUEST_ID, is_request_id_byte,
};
#[cfg(feature = "http")]
pub use response::{ErrorFormat, HandleErrors, HandleErrorsFuture, HandleErrorsLayer};
/// The cancellation token every rampart [`Context`] carries (tokio-util's),
/// re-exported so building a `Context` needs no direct dependency.
pub use tokio_util::sync::CancellationToken;
#[cfg(feature = "tonic")]
pub use tonic_status::{GrpcStatus, GrpcStatusFuture, GrpcStatusLayer, status_from_error};
