//! [`Panicked`]: the error of a call whose inner service panicked.

use std::any::Any;
use std::fmt;

/// The inner service panicked while handling this request (in `poll_ready`,
/// `call` or its future). Only that request fails, with an
/// [`Error`](rampart_core::Error) of kind
/// [`ErrorKind::Inner`](rampart_core::ErrorKind::Inner) whose source is this;
/// the worker logs it and keeps serving.
///
/// ```
/// # use rampart_queue::Panicked;
/// # fn check(e: &rampart_core::Error) -> Option<&str> {
/// e.find_source::<Panicked>().map(Panicked::message)
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Panicked {
    message: String,
}

impl Panicked {
    pub(crate) fn from_payload(payload: &(dyn Any + Send)) -> Panicked {
        let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "a panic with a non-string payload".to_owned()
        };
        Panicked { message }
    }

    /// The panic's message (`"a panic with a non-string payload"` when it
    /// was not a string).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the inner service panicked: {}", self.message)
    }
}

impl std::error::Error for Panicked {}
