//! The success path stays small: a `Retry` is its inner service plus one
//! pointer (cloned per request under axum), and its response future is at
//! most two words larger than tower's `Retry` future around the same
//! service (the shared configuration, the give-up time and the pointer to
//! the retry state, less tower's larger state enum).

use http::{Request, Response};
use rampart_retry::RetryLayer;
use std::mem::size_of;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, Service};

type Inner = BoxCloneSyncService<Request<()>, Response<()>, BoxError>;

fn future_size<S: Service<Request<()>>>(_: &S) -> usize {
    size_of::<S::Future>()
}

#[derive(Clone)]
struct Never;
impl<E> tower::retry::Policy<Request<()>, Response<()>, E> for Never {
    type Future = std::future::Ready<()>;
    fn retry(
        &mut self,
        _: &mut Request<()>,
        _: &mut Result<Response<()>, E>,
    ) -> Option<Self::Future> {
        None
    }
    fn clone_request(&mut self, req: &Request<()>) -> Option<Request<()>> {
        Some(req.clone())
    }
}

#[test]
fn a_retry_service_is_its_inner_service_plus_one_pointer() {
    let inner: Inner = BoxCloneSyncService::new(tower::service_fn(|_: Request<()>| async {
        Ok::<_, BoxError>(Response::new(()))
    }));
    let plain = RetryLayer::builder().build().unwrap().layer(inner.clone());
    assert_eq!(size_of_val(&plain), size_of::<Inner>() + size_of::<usize>());
    let http = RetryLayer::http()
        .clone_requests()
        .build()
        .unwrap()
        .layer(inner.clone());
    assert_eq!(size_of_val(&http), size_of::<Inner>() + size_of::<usize>());

    let tower_retry = tower::retry::RetryLayer::new(Never).layer(inner);
    let (ours, theirs) = (future_size(&plain), future_size(&tower_retry));
    println!("response future: rampart {ours} B, tower {theirs} B");
    assert!(
        ours <= theirs + 2 * size_of::<usize>(),
        "rampart {ours} B, tower {theirs} B"
    );
}
