//! axum extractors (feature `axum`): [`ReqId`] and [`CurrentContext`].
//!
//! Both look in the request's extensions first (where
//! [`RequestIdLayer`](crate::RequestIdLayer) stores the [`Context`]) and then
//! at the task's current context, so they work whether the layer wraps the
//! whole `Router` or only some routes.
//!
//! ```
//! use axum::{Router, routing::get};
//! use rampart_context::{CurrentContext, ReqId, RequestIdLayer};
//!
//! async fn handler(ReqId(id): ReqId, CurrentContext(ctx): CurrentContext) -> String {
//!     assert_eq!(ctx.request_id(), Some(&id));
//!     format!("handling {id}")
//! }
//!
//! let app: Router = Router::new()
//!     .route("/", get(handler))
//!     .layer(RequestIdLayer::new());
//! ```

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;
use rampart_core::{Context, RequestId};
use std::convert::Infallible;
use std::fmt;

/// The request id of the request being handled.
///
/// Rejected with [`MissingRequestId`] (500) when there is none, i.e. no
/// [`RequestIdLayer`](crate::RequestIdLayer) runs outside the handler; use
/// `Option<ReqId>` to make it optional.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReqId(pub RequestId);

/// The [`Context`] of the request being handled (empty when there is none).
#[derive(Clone, Debug, Default)]
pub struct CurrentContext(pub Context);

/// The rejection of [`ReqId`]: the request has no id, a server
/// misconfiguration, answered with `500 Internal Server Error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MissingRequestId;

impl fmt::Display for MissingRequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "the request has no request id; is RequestIdLayer installed outside this handler?",
        )
    }
}

impl std::error::Error for MissingRequestId {}

impl IntoResponse for MissingRequestId {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

/// The request's context: its extensions', else the task's.
fn context_of(parts: &Parts) -> Option<Context> {
    parts
        .extensions
        .get::<Context>()
        .cloned()
        .or_else(Context::current)
}

fn request_id_of(parts: &Parts) -> Option<RequestId> {
    if let Some(id) = parts
        .extensions
        .get::<Context>()
        .and_then(Context::request_id)
    {
        return Some(id.clone());
    }
    Context::with_current(|c| c.and_then(Context::request_id).cloned())
}

impl<S: Send + Sync> FromRequestParts<S> for ReqId {
    type Rejection = MissingRequestId;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        request_id_of(parts).map(ReqId).ok_or(MissingRequestId)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for ReqId {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(request_id_of(parts).map(ReqId))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CurrentContext {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(CurrentContext(context_of(parts).unwrap_or_default()))
    }
}
