//! The services and their response futures keep their size: without the
//! `metrics` feature exactly what they were before metrics existed (the
//! handles are zero-sized). With it a `Timeout` keeps its size too (the
//! timeout rides behind the handles' pointer), the other services take one
//! pointer more, and a timed response future one pointer more.

use http::{Request, Response};
use rampart_timeout::{DeadlineHeaders, DeadlineLayer, PropagateDeadlineLayer, TimeoutLayer};
use std::mem::{size_of, size_of_val};
use std::time::Duration;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, Service};

type Inner = BoxCloneSyncService<Request<()>, Response<()>, BoxError>;

const WORD: usize = size_of::<usize>();
/// What the `metrics` feature adds to a service.
const SERVICE_EXTRA: usize = if cfg!(feature = "metrics") { WORD } else { 0 };
/// What the `metrics` feature adds to a timed response future.
const FUTURE_EXTRA: usize = SERVICE_EXTRA;

fn future_size<S: Service<Request<()>>>(_: &S) -> usize {
    size_of::<S::Future>()
}

fn inner() -> Inner {
    BoxCloneSyncService::new(tower::service_fn(|_: Request<()>| async {
        Ok::<_, BoxError>(Response::new(()))
    }))
}

#[test]
fn a_timeout_is_its_inner_service_plus_two_words_with_or_without_metrics() {
    let ours = TimeoutLayer::new(Duration::from_secs(1)).layer(inner());
    // The readiness wait's box and the timeout in nanoseconds (with the
    // `metrics` feature: a pointer to the handles and the timeout).
    assert_eq!(size_of_val(&ours), size_of::<Inner>() + 2 * WORD);
    let tower = tower::timeout::TimeoutLayer::new(Duration::from_secs(1)).layer(inner());
    assert_eq!(
        future_size(&ours),
        future_size(&tower) + WORD + FUTURE_EXTRA,
        "rampart {} B, tower {} B",
        future_size(&ours),
        future_size(&tower)
    );
}

#[test]
fn a_deadline_and_a_propagation_keep_their_size() {
    let deadline = DeadlineLayer::new(Duration::from_secs(1)).layer(inner());
    // The readiness wait's box and the budget.
    assert_eq!(
        size_of_val(&deadline),
        size_of::<Inner>() + WORD + size_of::<Duration>() + SERVICE_EXTRA
    );
    let server =
        DeadlineLayer::from_headers(Duration::from_secs(1), DeadlineHeaders::new()).layer(inner());
    assert_eq!(
        size_of_val(&server),
        size_of_val(&deadline) + size_of::<DeadlineHeaders>() + WORD
    );
    assert_eq!(future_size(&server), future_size(&deadline));
    let propagate = PropagateDeadlineLayer::new().layer(inner());
    assert_eq!(
        size_of_val(&propagate),
        size_of::<Inner>() + size_of::<DeadlineHeaders>() + SERVICE_EXTRA
    );
    // Not timed: nothing added.
    assert_eq!(future_size(&propagate), 2 * WORD);
}
