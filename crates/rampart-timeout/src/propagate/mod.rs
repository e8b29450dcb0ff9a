//! The client side of deadline propagation: [`PropagateDeadlineLayer`],
//! [`PropagateDeadline`], [`PropagateFuture`].

mod future;
mod layer;
mod service;

pub use future::PropagateFuture;
pub use layer::PropagateDeadlineLayer;
pub use service::PropagateDeadline;
