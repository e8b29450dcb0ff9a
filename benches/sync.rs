//! Keyed lock and single-flight coalescing (`rampart-sync`) against what a
//! team writes by hand.
//!
//! - group `keyed_lock`: one caller on one key (never contended), and 64
//!   callers on 64 distinct keys (a fresh key per request). Ids: `floor`;
//!   `tower` = a `tokio::sync::Mutex` per key in a `std::sync::Mutex<HashMap>`
//!   (keys never removed, `try_lock` fast path without boxing, boxed
//!   `lock_owned` when contended); `mutex` = one global
//!   `tokio::sync::Mutex` locked and unlocked around each call (no map at
//!   all: the "single tokio Mutex lock/unlock" yardstick); `rampart` =
//!   `KeyedLockLayer`.
//! - group `keyed_lock_contended_64`: 64 callers on one key.
//! - group `coalesce`: one caller (nothing to share: the overhead) and 64
//!   callers on one key (shared calls). Ids: `floor`; `tower` = a naïve
//!   single-flight, a `Mutex<HashMap<key, futures::Shared<BoxFuture>>>`
//!   whose first finisher removes the entry; `rampart` = `CoalesceLayer`.
//!   The response goes through the layers as a `StatusCode` (which is
//!   `Clone`) and back, for every id, `floor` included.

mod common;

use common::{
    Case, Group, Inner,
    InnerKind::{Ready, Remote, Yield},
    Req, Res,
    Rt::{Ct, Mt},
    bench_floor, bench_layer, bench_service, cases, group, plain_request,
};
use criterion::Criterion;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use http::StatusCode;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::OwnedMutexGuard;
use tower::{BoxError, Layer, Service, ServiceBuilder};

/// Key of every request: one key.
fn one_key(_: &Req) -> u64 {
    0
}

static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

/// Key of every request: a fresh one.
fn fresh_key(_: &Req) -> u64 {
    NEXT_KEY.fetch_add(1, Ordering::Relaxed)
}

/// A call holding a tokio mutex guard: inline when the lock was free,
/// boxed when it had to wait.
enum Locked<F> {
    Fast(F, Option<OwnedMutexGuard<()>>),
    Slow(BoxFuture<'static, Result<Res, BoxError>>),
}

impl<F: Future<Output = Result<Res, BoxError>> + Unpin> Future for Locked<F> {
    type Output = Result<Res, BoxError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut *self {
            Locked::Fast(f, guard) => {
                let out = std::task::ready!(Pin::new(f).poll(cx));
                guard.take();
                Poll::Ready(out)
            }
            Locked::Slow(f) => f.as_mut().poll(cx),
        }
    }
}

/// `tokio::sync::Mutex` around each call: one per key in a map (`keyed`),
/// or one for everything.
#[derive(Clone)]
struct MutexLayer {
    keyed: Option<fn(&Req) -> u64>,
    map: Arc<Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>>,
    single: Arc<tokio::sync::Mutex<()>>,
}

impl MutexLayer {
    fn per_key(key: fn(&Req) -> u64) -> Self {
        MutexLayer {
            keyed: Some(key),
            map: Arc::default(),
            single: Arc::default(),
        }
    }

    fn single() -> Self {
        MutexLayer {
            keyed: None,
            map: Arc::default(),
            single: Arc::default(),
        }
    }
}

#[derive(Clone)]
struct MutexSvc {
    inner: Inner,
    layer: MutexLayer,
}

impl Layer<Inner> for MutexLayer {
    type Service = MutexSvc;
    fn layer(&self, inner: Inner) -> MutexSvc {
        MutexSvc {
            inner,
            layer: self.clone(),
        }
    }
}

impl Service<Req> for MutexSvc {
    type Response = Res;
    type Error = BoxError;
    type Future = Locked<<Inner as Service<Req>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let m = match self.layer.keyed {
            Some(key) => Arc::clone(self.layer.map.lock().unwrap().entry(key(&req)).or_default()),
            None => Arc::clone(&self.layer.single),
        };
        if let Ok(guard) = Arc::clone(&m).try_lock_owned() {
            Locked::Fast(self.inner.call(req), Some(guard))
        } else {
            let clone = self.inner.clone();
            let mut svc = std::mem::replace(&mut self.inner, clone);
            Locked::Slow(Box::pin(async move {
                let _guard = m.lock_owned().await;
                svc.call(req).await
            }))
        }
    }
}

/// `floor`, the Mutex-per-key map (`tower`) and rampart's keyed lock, every
/// request keyed by `key`.
fn keyed_lock_ids(g: &mut Group<'_>, case: Case, key: fn(&Req) -> u64) {
    bench_floor(g, case);
    bench_layer(g, "tower", case, MutexLayer::per_key(key));
    bench_layer(g, "rampart", case, rampart::sync::KeyedLockLayer::new(key));
}

fn keyed_lock(c: &mut Criterion) {
    let mut g = group(c, "keyed_lock");
    for case in cases(&[Ct, Mt], &[Ready, Remote], &[1]) {
        keyed_lock_ids(&mut g, case, one_key);
        bench_layer(&mut g, "mutex", case, MutexLayer::single());
    }
    for case in cases(&[Ct, Mt], &[Yield], &[64]) {
        keyed_lock_ids(&mut g, case, fresh_key);
    }
    g.finish();

    let mut g = group(c, "keyed_lock_contended_64");
    for case in cases(&[Ct, Mt], &[Yield, Remote], &[64]) {
        keyed_lock_ids(&mut g, case, one_key);
    }
    g.finish();
}

type SharedCall = Shared<BoxFuture<'static, Result<StatusCode, Arc<BoxError>>>>;

/// A naïve single-flight: a map of `futures::Shared` futures; the first
/// finisher removes the entry.
#[derive(Clone)]
struct NaiveCoalesce<S> {
    inner: S,
    map: Arc<Mutex<HashMap<u64, SharedCall>>>,
}

impl<S> Service<Req> for NaiveCoalesce<S>
where
    S: Service<Req, Response = StatusCode, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = StatusCode;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<StatusCode, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = one_key(&req);
        let shared = {
            let mut map = self.map.lock().unwrap();
            if let Some(s) = map.get(&key) {
                s.clone()
            } else {
                let s = self
                    .inner
                    .call(req)
                    .map(|r| r.map_err(Arc::new))
                    .boxed()
                    .shared();
                map.insert(key, s.clone());
                s
            }
        };
        let map = Arc::clone(&self.map);
        Box::pin(async move {
            let out = shared.await;
            map.lock().unwrap().remove(&key);
            out.map_err(|e| BoxError::from(e.to_string()))
        })
    }
}

fn status(r: Res) -> StatusCode {
    r.status()
}

fn response(s: StatusCode) -> Res {
    let mut r = Res::new(());
    *r.status_mut() = s;
    r
}

fn bench_coalesce_case(g: &mut Group<'_>, case: Case) {
    bench_service(g, "floor", case, plain_request, |inner: Inner| {
        ServiceBuilder::new()
            .map_response(response)
            .map_response(status)
            .service(inner)
    });
    bench_service(g, "tower", case, plain_request, |inner: Inner| {
        ServiceBuilder::new()
            .map_response(response)
            .service(NaiveCoalesce {
                inner: ServiceBuilder::new().map_response(status).service(inner),
                map: Arc::default(),
            })
    });
    bench_service(g, "rampart", case, plain_request, |inner: Inner| {
        ServiceBuilder::new()
            .map_response(response)
            .layer(rampart::sync::CoalesceLayer::new(one_key))
            .map_response(status)
            .service(inner)
    });
}

fn coalesce(c: &mut Criterion) {
    let mut g = group(c, "coalesce");
    let mut all = cases(&[Ct, Mt], &[Ready, Remote], &[1]);
    all.extend(cases(&[Ct, Mt], &[Yield, Remote], &[64]));
    for case in all {
        bench_coalesce_case(&mut g, case);
    }
    g.finish();
}

fn main() {
    common::main(&[keyed_lock, coalesce]);
}
