//! Retry: tower `Retry` with a policy that never retries ([`NeverRetry`],
//! which still clones every request) against the bare inner service: the
//! cost of the retry machinery on the hot path, where the first attempt
//! succeeds. Ready and yielding inner, ct and mt, one caller.
//!
//! `rampart`: `rampart-retry`'s layer with the defaults of
//! `RetryLayer::builder()` (3 attempts, budget off, `ErrorClassify`: an `Ok`
//! is a success, like tower's policy that looks at nothing); `Request<()>`
//! is `Clone`, so it is cloned like tower's
//! ([`CloneRequest`](rampart::retry::CloneRequest)). The first attempt
//! succeeds, so nothing is retried.
//!
//! Group `retry_http`: the same, with `RetryLayer::http().clone_requests()`:
//! HTTP/gRPC classification of the request (method, `content-type`) and of
//! the response (status, `grpc-status`) — work tower's never-retrying policy
//! does not do at all.
//!
//! Group `retry_once_zero_delay`: every request fails once and succeeds on
//! the retry (a [`FailEveryOther`] wrapper between the retry layer and the
//! inner service, the same for `tower` and `rampart`), with a zero backoff.
//! `tower` is `Retry` with tower's own `ExponentialBackoff` at a zero
//! minimum: its `sleep(0)` still waits for the next timer tick. `rampart`
//! retries at once without touching the timer. `floor` is one call of the
//! bare inner service.
//!
//! Groups `retry_boxed` and `retry_http_boxed`: `retry` and `retry_http`
//! in the boxed-whole-stack mode ([`bench_layer_boxed`]): the layered
//! service boxed in a `BoxCloneSyncService` and that box cloned per
//! request, as axum's `Route` does, so the size of the service (copied into
//! a new box by every clone) and of its response future (boxed) count.
//!
//! [`NeverRetry`]: common::NeverRetry
//! [`bench_layer_boxed`]: common::bench_layer_boxed

mod common;

use std::future::{Ready, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use common::{
    Inner, InnerKind,
    InnerKind::{Ready as ReadyInner, Remote, Yield},
    NeverRetry, Req, Res,
    Rt::{Ct, Mt},
    bench_floor, bench_floor_boxed, bench_layer, bench_layer_boxed, cases, group,
};
use criterion::Criterion;
use futures_util::future::Either;
use rampart::retry::Backoff;
use tower::retry::backoff::{
    Backoff as _, ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff,
};
use tower::util::rng::HasherRng;
use tower::{BoxError, Layer, Service};

/// `floor`, tower's `Retry` with [`NeverRetry`] and the `rampart` layer side
/// by side, for every case of `inners`.
fn success_group<L>(c: &mut Criterion, name: &str, inners: &[InnerKind], rampart: &L)
where
    L: Layer<Inner> + Clone,
    L::Service: Service<Req, Response = Res> + Clone + Send + 'static,
    <L::Service as Service<Req>>::Future: Send + 'static,
    <L::Service as Service<Req>>::Error: std::fmt::Debug + Send + 'static,
{
    let mut g = group(c, name);
    for case in cases(&[Ct, Mt], inners, &[1, 64]) {
        bench_floor(&mut g, case);
        let tower = tower::retry::RetryLayer::new(NeverRetry);
        bench_layer(&mut g, "tower", case, tower);
        bench_layer(&mut g, "rampart", case, rampart.clone());
    }
    g.finish();
}

/// [`success_group`] in the boxed-whole-stack mode.
fn success_group_boxed<L>(c: &mut Criterion, name: &str, inners: &[InnerKind], rampart: &L)
where
    L: Layer<Inner> + Clone,
    L::Service: Service<Req, Response = Res> + Clone + Send + Sync + 'static,
    <L::Service as Service<Req>>::Future: Send + 'static,
    <L::Service as Service<Req>>::Error: Into<BoxError> + 'static,
{
    let mut g = group(c, name);
    for case in cases(&[Ct, Mt], inners, &[1, 64]) {
        bench_floor_boxed(&mut g, case);
        let tower = tower::retry::RetryLayer::new(NeverRetry);
        bench_layer_boxed(&mut g, "tower", case, tower);
        bench_layer_boxed(&mut g, "rampart", case, rampart.clone());
    }
    g.finish();
}

fn plain_layer() -> rampart::retry::RetryLayer {
    rampart::retry::RetryLayer::builder()
        .build()
        .expect("valid retry config")
}

fn http_layer()
-> rampart::retry::RetryLayer<rampart::HttpOrGrpcClassify, rampart::retry::CloneRequest> {
    rampart::retry::RetryLayer::http()
        .clone_requests()
        .build()
        .expect("valid retry config")
}

fn retry(c: &mut Criterion) {
    success_group(c, "retry", &[ReadyInner, Yield, Remote], &plain_layer());
}

fn retry_http(c: &mut Criterion) {
    success_group(c, "retry_http", &[ReadyInner], &http_layer());
}

fn retry_boxed(c: &mut Criterion) {
    success_group_boxed(c, "retry_boxed", &[ReadyInner, Remote], &plain_layer());
}

fn retry_http_boxed(c: &mut Criterion) {
    success_group_boxed(c, "retry_http_boxed", &[ReadyInner, Remote], &http_layer());
}

fn retry_once_zero_delay(c: &mut Criterion) {
    let mut g = group(c, "retry_once_zero_delay");
    for case in cases(&[Ct, Mt], &[ReadyInner], &[1]) {
        bench_floor(&mut g, case);
        let tower = tower::layer::util::Stack::new(
            FailEveryOtherLayer,
            tower::retry::RetryLayer::new(RetryOnce::new()),
        );
        bench_layer(&mut g, "tower", case, tower);
        let rampart = rampart::retry::RetryLayer::http()
            .clone_requests()
            .max_attempts(2)
            .backoff(Backoff::none())
            .build()
            .expect("valid retry config");
        let rampart = tower::layer::util::Stack::new(FailEveryOtherLayer, rampart);
        bench_layer(&mut g, "rampart", case, rampart);
    }
    g.finish();
}

/// Fails every other call at once (the first of each request's two), shared
/// by all clones.
#[derive(Clone, Copy, Debug)]
struct FailEveryOtherLayer;

impl<S> Layer<S> for FailEveryOtherLayer {
    type Service = FailEveryOther<S>;
    fn layer(&self, inner: S) -> FailEveryOther<S> {
        FailEveryOther {
            inner,
            fail_next: Arc::new(AtomicBool::new(true)),
        }
    }
}

#[derive(Clone, Debug)]
struct FailEveryOther<S> {
    inner: S,
    fail_next: Arc<AtomicBool>,
}

/// The failure of [`FailEveryOther`].
#[derive(Debug)]
struct Flaky;

impl std::fmt::Display for Flaky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("first attempt fails")
    }
}

impl std::error::Error for Flaky {}

impl<S> Service<Req> for FailEveryOther<S>
where
    S: Service<Req, Response = Res, Error = BoxError>,
{
    type Response = Res;
    type Error = BoxError;
    type Future = Either<Ready<Result<Res, BoxError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if self.fail_next.fetch_xor(true, Ordering::Relaxed) {
            Either::Left(ready(Err(Box::new(Flaky))))
        } else {
            Either::Right(self.inner.call(req))
        }
    }
}

/// tower policy: retry an error once, after tower's `ExponentialBackoff`
/// with a zero minimum (a `sleep(Duration::ZERO)`).
#[derive(Clone, Debug)]
struct RetryOnce {
    retried: bool,
    backoff: ExponentialBackoff,
}

impl RetryOnce {
    fn new() -> Self {
        let mut maker = ExponentialBackoffMaker::new(
            Duration::ZERO,
            Duration::from_millis(1),
            0.0,
            HasherRng::default(),
        )
        .expect("valid tower backoff");
        RetryOnce {
            retried: false,
            backoff: maker.make_backoff(),
        }
    }
}

impl<E> tower::retry::Policy<Req, Res, E> for RetryOnce {
    type Future = tokio::time::Sleep;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        if result.is_ok() || self.retried {
            return None;
        }
        self.retried = true;
        Some(self.backoff.next_backoff())
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(common::clone_request(req))
    }
}

fn main() {
    common::main(&[
        retry,
        retry_http,
        retry_boxed,
        retry_http_boxed,
        retry_once_zero_delay,
    ]);
}
