//! The five-layer stack, outermost first: request id (set + propagate) →
//! timeout (1 s) → retry (never) → buffer (1024) → concurrency limit (64),
//! against the bare inner service.
//!
//! - group `stack`: ct and mt, one and 64 callers, ready, yielding and
//!   remote inners;
//! - group `stack_callers`: 1 000 and 10 000 callers (ct and mt, ready and
//!   remote inners), far more than the limit (64) and, at 10 000, than the
//!   queue bound (1024): with `stack`'s 1 and 64 callers they give the time
//!   per request against callers that `benches/chart.py` draws. Its timeout
//!   is 60 s, not 1 s (see [`CALLERS_TIMEOUT`]).
//!
//! - `tower`: tower and tower-http parts (`SetRequestId` + `PropagateRequestId`
//!   with a v4 UUID, `Timeout`, `Retry` with [`NeverRetry`], `Buffer`,
//!   `ConcurrencyLimit`).
//! - `rampart`: the same five patterns from rampart, same order and
//!   settings: `RequestIdLayer` (mint a v7 id, echo it on the response),
//!   `TimeoutLayer::new(1 s)`, `RetryLayer::builder().build()` (3 attempts,
//!   budget off; an `Ok` is a success, so nothing is retried; `Request<()>`
//!   is cloned per attempt like tower's), `QueueLayer::new(1024, 8)` (8
//!   workers, as in the `queue` bench), `ConcurrencyLimitLayer::new(64)`.
//!
//! In probe mode only, ids `abl_rampart_without_<layer>` and
//! `abl_tower_without_<layer>` (ct, 1 and 64 callers) are each stack with
//! one layer left out (see `register_ablation`), and `abl_floor` is a stack
//! of minimal parts that do the five jobs (see `register_floor_stack`).
//!
//! [`NeverRetry`]: common::NeverRetry

mod common;

use std::time::Duration;

use common::{
    Case, Group,
    InnerKind::{Ready, Remote, Yield},
    NeverRetry,
    Rt::{Ct, Mt},
    bench_floor, bench_layer, cases, group,
};
use criterion::Criterion;
use tower::ServiceBuilder;
use tower::buffer::BufferLayer;
use tower::limit::ConcurrencyLimitLayer;
use tower::retry::RetryLayer;
use tower::timeout::TimeoutLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

/// Timeout of the stack in group `stack` (1 and 64 callers): long enough
/// never to fire.
const TIMEOUT: Duration = Duration::from_secs(1);
/// Timeout of the stack in group `stack_callers`: long enough never to fire
/// there either. rampart's timeout times from `call()`, so it includes the
/// wait for a place in the queue (first come, first served: at 10 000
/// callers, the time of ~10 000 requests); tower's starts once `Buffer`'s
/// `poll_ready` admitted the request (at most bound + limit ahead of it).
/// Under callgrind (~50× slower) that wait reaches 1 s, rampart's 1 s
/// timeout fires, every caller fails, and the probe measures panics instead
/// of requests.
const CALLERS_TIMEOUT: Duration = Duration::from_secs(60);
/// Queue bound of the stack.
const BOUND: usize = 1024;
/// Concurrency limit of the stack.
const LIMIT: usize = 64;
/// Workers of rampart's queue (the `queue` bench's choice).
const WORKERS: usize = 8;

/// The five layers outermost first, each an expression (or `Identity` to
/// leave one out), as one stack.
macro_rules! five {
    ($a:expr, $b:expr, $c:expr, $d:expr, $e:expr $(,)?) => {
        ServiceBuilder::new()
            .layer($a)
            .layer($b)
            .layer($c)
            .layer($d)
            .layer($e)
            .into_inner()
    };
}

/// tower's five layers (buffer and limit as one tuple layer).
macro_rules! tower_stack {
    ($timeout:expr) => {
        five!(
            SetRequestIdLayer::x_request_id(MakeRequestUuid),
            PropagateRequestIdLayer::x_request_id(),
            TimeoutLayer::new($timeout),
            RetryLayer::new(NeverRetry),
            (BufferLayer::new(BOUND), ConcurrencyLimitLayer::new(LIMIT)),
        )
    };
}

fn rampart_retry() -> rampart::retry::RetryLayer {
    rampart::retry::RetryLayer::builder()
        .build()
        .expect("valid retry config")
}

fn rampart_queue() -> rampart::queue::QueueLayer<common::Req> {
    rampart::queue::QueueLayer::new(BOUND, WORKERS)
}

/// Registers `floor`, `tower` and `rampart` for `case`, both stacks with
/// `timeout`.
fn register(g: &mut Group<'_>, case: Case, timeout: Duration) {
    bench_floor(g, case);
    bench_layer(g, "tower", case, tower_stack!(timeout));
    let rampart_stack = five!(
        rampart::context::RequestIdLayer::new(),
        rampart::timeout::TimeoutLayer::new(timeout),
        rampart_retry(),
        rampart_queue(),
        rampart::limit::ConcurrencyLimitLayer::new(LIMIT),
    );
    bench_layer(g, "rampart", case, rampart_stack);
}

/// Probe mode only (callgrind, never timed by criterion): each stack with
/// one layer left out, so `rampart − abl_rampart_without_X` is what layer X
/// costs inside the whole stack (and the same for tower). Only the
/// current-thread cases with 1 and 64 callers.
fn register_ablation(g: &mut Group<'_>, case: Case) {
    use rampart::context::RequestIdLayer;
    use rampart::limit::ConcurrencyLimitLayer as Limit;
    use rampart::timeout::TimeoutLayer as Timeout;
    use tower::layer::util::Identity as Skip;
    let t = TIMEOUT;
    let rampart_without = [
        "abl_rampart_without_request_id",
        "abl_rampart_without_timeout",
        "abl_rampart_without_retry",
        "abl_rampart_without_queue",
        "abl_rampart_without_limit",
    ];
    let (l, q) = (|| Limit::new(LIMIT), rampart_queue);
    bench_layer(
        g,
        rampart_without[0],
        case,
        five!(Skip::new(), Timeout::new(t), rampart_retry(), q(), l()),
    );
    bench_layer(
        g,
        rampart_without[1],
        case,
        five!(
            RequestIdLayer::new(),
            Skip::new(),
            rampart_retry(),
            q(),
            l()
        ),
    );
    bench_layer(
        g,
        rampart_without[2],
        case,
        five!(
            RequestIdLayer::new(),
            Timeout::new(t),
            Skip::new(),
            q(),
            l()
        ),
    );
    bench_layer(
        g,
        rampart_without[3],
        case,
        five!(
            RequestIdLayer::new(),
            Timeout::new(t),
            rampart_retry(),
            Skip::new(),
            l()
        ),
    );
    bench_layer(
        g,
        rampart_without[4],
        case,
        five!(
            RequestIdLayer::new(),
            Timeout::new(t),
            rampart_retry(),
            q(),
            Skip::new()
        ),
    );
    let set_id = || SetRequestIdLayer::x_request_id(MakeRequestUuid);
    let propagate = PropagateRequestIdLayer::x_request_id;
    let (tl, tb) = (
        || ConcurrencyLimitLayer::new(LIMIT),
        || BufferLayer::new(BOUND),
    );
    bench_layer(
        g,
        "abl_tower_without_request_id",
        case,
        five!(
            Skip::new(),
            Skip::new(),
            TimeoutLayer::new(t),
            RetryLayer::new(NeverRetry),
            (tb(), tl())
        ),
    );
    bench_layer(
        g,
        "abl_tower_without_timeout",
        case,
        five!(
            set_id(),
            propagate(),
            Skip::new(),
            RetryLayer::new(NeverRetry),
            (tb(), tl())
        ),
    );
    bench_layer(
        g,
        "abl_tower_without_retry",
        case,
        five!(
            set_id(),
            propagate(),
            TimeoutLayer::new(t),
            Skip::new(),
            (tb(), tl())
        ),
    );
    bench_layer(
        g,
        "abl_tower_without_queue",
        case,
        five!(
            set_id(),
            propagate(),
            TimeoutLayer::new(t),
            RetryLayer::new(NeverRetry),
            tl()
        ),
    );
    bench_layer(
        g,
        "abl_tower_without_limit",
        case,
        five!(
            set_id(),
            propagate(),
            TimeoutLayer::new(t),
            RetryLayer::new(NeverRetry),
            tb()
        ),
    );
}

/// Probe mode only: `abl_floor`, a stack of minimal parts for the five jobs,
/// built on tokio's timer and channels, so `(abl_floor − floor) / (tower −
/// floor)` is about the lowest ratio to tower such a stack reaches. It
/// leaves out work rampart's stack must do:
/// - request id: a v7 id minted and echoed on the response
///   ([`echo_new_id`]); no incoming header checked, and no context, so
///   nothing reaches the calls made further in;
/// - timeout: tower's `Timeout` (a tokio `Sleep` made at `call()`);
/// - retry: rampart's (the request cloned per attempt; tower's costs more);
/// - queue: [`common::handoff`] (tokio mpsc and oneshot to [`WORKERS`]
///   workers: no bound, no skip, no deadline, no panic isolation, no
///   context carried);
/// - limit: tower's `ConcurrencyLimit` (rampart's costs ~40 more).
///
/// `abl_floor_with_rampart_queue` has rampart's queue in place of the
/// hand-off (with no context to carry, it costs about the same or less on
/// these inners). `abl_floor_with_rampart_request_id` has rampart's
/// `RequestIdLayer` in place of [`echo_new_id`]: what the context (made,
/// scoped over the call and every poll) adds; `…_and_queue` also has
/// rampart's queue in place of the hand-off (which then carries the context
/// to the worker and scopes the call in it).
fn register_floor_stack(g: &mut Group<'_>, case: Case) {
    use common::handoff::HandoffLayer;
    use tower::util::MapResponseLayer;
    // The five jobs with `$id` as the request id and `$queue` as the queue,
    // tower's timeout and limit, rampart's retry.
    macro_rules! floor_stack {
        ($name:expr, $id:expr, $queue:expr) => {
            bench_layer(
                g,
                $name,
                case,
                five!(
                    $id,
                    TimeoutLayer::new(TIMEOUT),
                    rampart_retry(),
                    $queue,
                    ConcurrencyLimitLayer::new(LIMIT),
                ),
            )
        };
    }
    let (echo, handoff) = (
        || MapResponseLayer::new(echo_new_id),
        || HandoffLayer { workers: WORKERS },
    );
    let request_id = rampart::context::RequestIdLayer::new;
    floor_stack!("abl_floor_with_rampart_queue", echo(), rampart_queue());
    floor_stack!("abl_floor_with_rampart_request_id", request_id(), handoff());
    floor_stack!(
        "abl_floor_with_rampart_request_id_and_queue",
        request_id(),
        rampart_queue()
    );
    floor_stack!("abl_floor", echo(), handoff());
}

/// The request-id floor of [`register_floor_stack`]: a new v7 id in the
/// response's `x-request-id`.
fn echo_new_id(mut res: common::Res) -> common::Res {
    const X_REQUEST_ID: http::header::HeaderName =
        http::header::HeaderName::from_static("x-request-id");
    res.headers_mut()
        .insert(X_REQUEST_ID, rampart::RequestId::new_v7().into());
    res
}

fn stack(c: &mut Criterion) {
    let mut g = group(c, "stack");
    for case in cases(&[Ct, Mt], &[Ready, Yield, Remote], &[1, 64]) {
        register(&mut g, case, TIMEOUT);
        if common::probing() && case.rt == Ct {
            register_ablation(&mut g, case);
            register_floor_stack(&mut g, case);
        }
    }
    g.finish();

    let mut g = group(c, "stack_callers");
    for case in cases(&[Ct, Mt], &[Ready, Remote], &[1_000, 10_000]) {
        register(&mut g, case, CALLERS_TIMEOUT);
    }
    g.finish();
}

fn main() {
    common::main(&[stack]);
}
