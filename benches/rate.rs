//! Rate limit: rampart's GCRA against tower's `RateLimit` and governor
//! called directly, with a quota never reached, so every id measures the
//! cost of admitting a call.
//!
//! - group `rate`: one bucket. `tower` is `tower::limit::RateLimitLayer`;
//!   its service is not `Clone`, so (as behind axum) it sits in a
//!   `Buffer(1024)` and that buffer's cost is part of what tower's rate
//!   limit costs a server. `governor` is a minimal layer calling
//!   `governor::RateLimiter::direct(..).check()` in `call` (governor's own
//!   algorithm and clock with nothing around them: the floor for a GCRA).
//!   `rampart` is `rampart_rate::RateLimitLayer`.
//! - group `rate_keyed`: a bucket per key (one key), rampart's
//!   `KeyedRateLimitLayer` against governor's keyed limiter (`dashmap`).
//!
//! Cases: ready, yielding and other-task inners; 1 and 64 callers; ct and mt.

mod common;

use common::{
    Inner,
    InnerKind::{Ready, Remote, Yield},
    Req,
    Rt::{Ct, Mt},
    bench_floor, bench_layer, bench_service, cases, group, plain_request,
};
use criterion::Criterion;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, RateLimiter};
use rampart::rate::{KeyedRateLimitLayer, Quota, RateLimitLayer};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service, ServiceBuilder};

/// About four billion per second with a burst of as many: never reached.
fn quota() -> Quota {
    Quota::per_second(NonZeroU32::MAX)
}

fn governor_quota() -> governor::Quota {
    governor::Quota::per_second(NonZeroU32::MAX)
}

/// governor's direct or keyed limiter, checked in `call`.
struct Governor<L> {
    limiter: Arc<L>,
}

struct Governed<S, L> {
    inner: S,
    limiter: Arc<L>,
}

impl<S: Clone, L> Clone for Governed<S, L> {
    fn clone(&self) -> Self {
        Governed {
            inner: self.inner.clone(),
            limiter: Arc::clone(&self.limiter),
        }
    }
}

impl<S, L> Layer<S> for Governor<L> {
    type Service = Governed<S, L>;
    fn layer(&self, inner: S) -> Self::Service {
        Governed {
            inner,
            limiter: Arc::clone(&self.limiter),
        }
    }
}

trait Check {
    fn admit(&self) -> bool;
}

impl Check for DefaultDirectRateLimiter {
    fn admit(&self) -> bool {
        self.check().is_ok()
    }
}

impl Check for DefaultKeyedRateLimiter<u8> {
    fn admit(&self) -> bool {
        self.check_key(&1).is_ok()
    }
}

impl<S: Service<Req>, L: Check> Service<Req> for Governed<S, L> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> S::Future {
        assert!(self.limiter.admit(), "the bench quota is never reached");
        self.inner.call(req)
    }
}

fn rate(c: &mut Criterion) {
    let all = cases(&[Ct, Mt], &[Ready, Yield, Remote], &[1, 64]);
    let mut g = group(c, "rate");
    for &case in &all {
        bench_floor(&mut g, case);
        bench_service(&mut g, "tower", case, plain_request, |inner: Inner| {
            ServiceBuilder::new()
                .buffer(1024)
                .rate_limit(u64::from(u32::MAX), Duration::from_secs(1))
                .service(inner)
        });
        bench_layer(
            &mut g,
            "governor",
            case,
            Governor {
                limiter: Arc::new(RateLimiter::direct(governor_quota())),
            },
        );
        bench_layer(&mut g, "rampart", case, RateLimitLayer::new(quota()));
    }
    g.finish();

    let mut g = group(c, "rate_keyed");
    for &case in &all {
        bench_floor(&mut g, case);
        bench_layer(
            &mut g,
            "governor",
            case,
            Governor {
                limiter: Arc::new(RateLimiter::<u8, _, _>::dashmap(governor_quota())),
            },
        );
        bench_layer(
            &mut g,
            "rampart",
            case,
            KeyedRateLimitLayer::new(quota(), |_: &Req| 1u8),
        );
    }
    g.finish();
}

fn main() {
    common::main(&[rate]);
}
