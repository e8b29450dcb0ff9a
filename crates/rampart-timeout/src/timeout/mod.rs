//! The per-attempt timeout: [`TimeoutLayer`], [`Timeout`],
//! [`TimeoutFuture`].

mod future;
mod layer;
mod service;

pub use future::TimeoutFuture;
pub use layer::TimeoutLayer;
pub use service::Timeout;
