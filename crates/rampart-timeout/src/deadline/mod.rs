//! The total deadline of a logical request: [`DeadlineLayer`],
//! [`Deadline`], [`DeadlineFuture`], and the server side's
//! [`FromHeaders`] / [`OnMalformed`].

mod future;
mod headers;
mod layer;
mod service;

pub use future::DeadlineFuture;
pub use headers::{FromHeaders, NoHeaders, OnMalformed};
pub use layer::DeadlineLayer;
pub use service::Deadline;
