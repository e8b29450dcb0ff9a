//! Shared benchmark harness: one way to drive a service, used by `floor`,
//! `tower` and `rampart` alike, so the difference between two ids is the
//! layer alone.
//!
//! Every bench binary does `mod common;`, opens groups with [`group`] and
//! registers cases with [`bench_floor`] and [`bench_layer`] (or the `_with`
//! variants when the requests need headers, or [`bench_service`] when the
//! service is not built by one `Layer`); its `main` is [`main`]. What every
//! case gets, whatever the layer:
//!
//! - the inner service is an [`Inner`]
//!   (`BoxCloneSyncService<Request<()>, Response<()>, BoxError>`): its
//!   clone does not allocate (the wrapped service is zero-sized), its future
//!   is boxed (one allocation per call). It is either ready
//!   ([`InnerKind::Ready`]: `std::future::ready(Ok(..))`), yields to the
//!   scheduler once ([`InnerKind::Yield`]: `tokio::task::yield_now()`), or is
//!   answered by another task ([`InnerKind::Remote`]: the request goes over
//!   a channel to a spawned server task, which replies through a oneshot, as
//!   a network client's connection task does);
//! - the layer under test is applied once, directly on the inner service
//!   (no second boxing), inside the runtime (so layers that spawn, such as
//!   tower's `Buffer`, spawn there);
//! - the resulting service is cloned for every request, as axum does, and
//!   driven with `ServiceExt::oneshot` (`poll_ready` then `call`);
//! - callers run in spawned tasks, never in `block_on`: one caller doing
//!   sequential requests, or 64 callers sharing the iteration count; the time
//!   is measured inside a spawned driver task and is the total wall time, so
//!   criterion's per-iteration figure is the wall time per request;
//! - runtimes: tokio current-thread ([`Rt::Ct`]) or multi-thread with two
//!   workers ([`Rt::Mt`]).
//!
//! Naming: group names begin with the pattern name (`timeout`, `limit…`,
//! `queue`, `retry`, `request_id…`, `stack`); function ids are exactly
//! `floor`, `tower` and `rampart`; the parameter is [`Case::param`], e.g.
//! `ct/ready/1` or `mt/yield/64`.
//!
//! Allocations. The bench binaries count them with a counting global
//! allocator ([`stats_alloc`], so no `unsafe` of ours: the workspace forbids
//! it). After criterion measures a case, [`bench_service`] runs it again for
//! [`ALLOC_REQUESTS`] requests and prints
//! `ALLOCS <group>/<id>/<param>: <x> per request` (every thread's
//! allocations, so the spawned caller tasks are in it: 65 spawns over 10 000
//! requests add < 0.01). The same lines are appended to
//! `target/criterion/allocs.txt`.
#![allow(dead_code)] // each bench binary uses a different subset of the helpers

pub(crate) mod handoff;

use std::fmt;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion};
use http::{Request, Response};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, Service, ServiceExt};

#[global_allocator]
static ALLOC: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

/// Requests run to count allocations per request for each case.
pub(crate) const ALLOC_REQUESTS: u64 = 10_000;

/// Request type every bench uses.
pub(crate) type Req = Request<()>;
/// Response type every bench uses.
pub(crate) type Res = Response<()>;
/// The inner service every layer is applied to (see the module docs).
pub(crate) type Inner = BoxCloneSyncService<Req, Res, BoxError>;

/// Environment variable that switches a bench binary from criterion to the
/// allocation probe: its value is the exact `<group>/<id>/<param>` to run,
/// or `list` to print every case name (one per line) without running any.
pub(crate) const PROBE_ENV: &str = "RAMPART_BENCH_PROBE";
/// Set (to anything) with the `metrics` feature on: the bench installs a
/// Prometheus recorder before it builds any layer.
#[cfg(feature = "metrics")]
pub(crate) const RECORDER_ENV: &str = "RAMPART_BENCH_RECORDER";
/// Number of requests the probe runs (default 1000).
pub(crate) const PROBE_N_ENV: &str = "RAMPART_BENCH_PROBE_N";

/// Which tokio runtime drives the case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rt {
    /// `new_current_thread`, everything on one thread.
    Ct,
    /// `new_multi_thread` with two worker threads.
    Mt,
}

/// What the inner service does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InnerKind {
    /// Answers at once: a boxed `std::future::ready(Ok(Response::new(())))`.
    Ready,
    /// Yields to the scheduler once (`tokio::task::yield_now`), then answers.
    Yield,
    /// Answered by another task, as a network client is: the request is sent
    /// over an unbounded mpsc channel to a server task spawned with the
    /// service, which answers through a `tokio::sync::oneshot` (one more
    /// allocation per call, the oneshot's shared state).
    Remote,
}

/// One benchmark parameter: runtime, inner service, number of callers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Case {
    /// The runtime.
    pub(crate) rt: Rt,
    /// The inner service.
    pub(crate) inner: InnerKind,
    /// Number of concurrent caller tasks (1 = one task doing sequential
    /// requests).
    pub(crate) callers: usize,
}

impl Case {
    /// Shorthand constructor.
    pub(crate) const fn new(rt: Rt, inner: InnerKind, callers: usize) -> Self {
        Self { rt, inner, callers }
    }

    /// The criterion parameter string, e.g. `ct/ready/1`, `mt/yield/64`.
    pub(crate) fn param(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rt = match self.rt {
            Rt::Ct => "ct",
            Rt::Mt => "mt",
        };
        let inner = match self.inner {
            InnerKind::Ready => "ready",
            InnerKind::Yield => "yield",
            InnerKind::Remote => "remote",
        };
        write!(f, "{rt}/{inner}/{}", self.callers)
    }
}

/// Every combination of the given runtimes, inner kinds and caller counts,
/// in that nesting order.
pub(crate) fn cases(rts: &[Rt], inners: &[InnerKind], callers: &[usize]) -> Vec<Case> {
    let mut out = Vec::new();
    for &rt in rts {
        for &inner in inners {
            for &n in callers {
                out.push(Case::new(rt, inner, n));
            }
        }
    }
    out
}

/// Builds the tokio runtime for `rt` (timers and I/O enabled).
pub(crate) fn runtime(rt: Rt) -> tokio::runtime::Runtime {
    let mut b = match rt {
        Rt::Ct => tokio::runtime::Builder::new_current_thread(),
        Rt::Mt => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2);
            b
        }
    };
    b.enable_all().build().expect("tokio runtime")
}

/// The inner service for `kind` (see [`Inner`]). Must be called inside the
/// case's runtime: [`InnerKind::Remote`] spawns its server task there.
pub(crate) fn inner(kind: InnerKind) -> Inner {
    match kind {
        InnerKind::Ready => BoxCloneSyncService::new(tower::service_fn(|_req: Req| {
            std::future::ready(Ok::<_, BoxError>(Response::new(())))
        })),
        InnerKind::Yield => BoxCloneSyncService::new(tower::service_fn(|_req: Req| async {
            tokio::task::yield_now().await;
            Ok::<_, BoxError>(Response::new(()))
        })),
        InnerKind::Remote => {
            type Reply = tokio::sync::oneshot::Sender<Res>;
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Req, Reply)>();
            // The "connection task": ends when the last clone of the service
            // (and so the last sender) is dropped.
            tokio::spawn(async move {
                while let Some((req, reply)) = rx.recv().await {
                    drop(req);
                    let _ = reply.send(Response::new(()));
                }
            });
            BoxCloneSyncService::new(tower::service_fn(move |req: Req| {
                let (reply, answer) = tokio::sync::oneshot::channel();
                let sent = tx.send((req, reply));
                async move {
                    sent.map_err(|_| BoxError::from("remote server task gone"))?;
                    answer
                        .await
                        .map_err(|_| BoxError::from("remote server task dropped the call"))
                }
            }))
        }
    }
}

/// The default request: `GET /`, no headers, empty body. Building it does
/// not allocate.
pub(crate) fn plain_request() -> Req {
    Request::new(())
}

/// A criterion benchmark group with the suite's settings (warm-up 1 s,
/// measurement 2 s, 20 samples), or, in probe mode, only its name.
pub(crate) struct Group<'a> {
    name: String,
    group: Option<BenchmarkGroup<'a, WallTime>>,
}

/// Opens the group `name` (which must begin with the pattern name).
pub(crate) fn group<'a>(c: &'a mut Criterion, name: &str) -> Group<'a> {
    let group = if probe_target().is_some() {
        None
    } else {
        let mut g = c.benchmark_group(name);
        g.warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(2))
            .sample_size(20);
        Some(g)
    };
    Group {
        name: name.to_owned(),
        group,
    }
}

impl Group<'_> {
    /// Ends the group (criterion prints its summary).
    pub(crate) fn finish(self) {
        if let Some(g) = self.group {
            g.finish();
        }
    }
}

/// The `floor` id: the bare inner service through the same harness.
pub(crate) fn bench_floor(group: &mut Group<'_>, case: Case) {
    bench_layer(group, "floor", case, tower::layer::util::Identity::new());
}

/// [`bench_floor`] with a custom request maker (see [`bench_layer_with`]).
pub(crate) fn bench_floor_with(group: &mut Group<'_>, case: Case, make_req: fn() -> Req) {
    bench_layer_with(
        group,
        "floor",
        case,
        make_req,
        tower::layer::util::Identity::new(),
    );
}

/// Registers `group/id/case` : `layer` applied once to [`inner`]`(case.inner)`,
/// the result cloned for every request, requests from [`plain_request`].
///
/// `id` must be `floor`, `tower` or `rampart`. The layer is applied inside
/// the case's runtime, once per benchmark (not per iteration), so state it
/// creates (semaphores, buffer workers) is shared by all clones, as in a
/// server.
pub(crate) fn bench_layer<L>(group: &mut Group<'_>, id: &str, case: Case, layer: L)
where
    L: Layer<Inner>,
    L::Service: Service<Req, Response = Res> + Clone + Send + 'static,
    <L::Service as Service<Req>>::Future: Send + 'static,
    <L::Service as Service<Req>>::Error: fmt::Debug + Send + 'static,
{
    bench_layer_with(group, id, case, plain_request, layer);
}

/// [`bench_layer`] with a custom request maker, called once per request
/// (inside the measured loop, for every id alike), e.g. to add headers.
pub(crate) fn bench_layer_with<L>(
    group: &mut Group<'_>,
    id: &str,
    case: Case,
    make_req: fn() -> Req,
    layer: L,
) where
    L: Layer<Inner>,
    L::Service: Service<Req, Response = Res> + Clone + Send + 'static,
    <L::Service as Service<Req>>::Future: Send + 'static,
    <L::Service as Service<Req>>::Error: fmt::Debug + Send + 'static,
{
    bench_service(group, id, case, make_req, |inner| layer.layer(inner));
}

/// The most general registration: `make` builds the service under test
/// from [`inner`]`(case.inner)`, once, inside the case's runtime (so it may
/// spawn tasks); the result is cloned for every request. Use it when the
/// service is not built by a single [`Layer`] (a builder, a layer that needs
/// a handle to the runtime, ...). [`bench_layer`] and [`bench_layer_with`]
/// are this with `|inner| layer.layer(inner)`.
pub(crate) fn bench_service<S, F>(
    group: &mut Group<'_>,
    id: &str,
    case: Case,
    make_req: fn() -> Req,
    make: F,
) where
    F: FnOnce(Inner) -> S,
    S: Service<Req, Response = Res> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: fmt::Debug + Send + 'static,
{
    let name = format!("{}/{id}/{case}", group.name);
    if let Some(target) = probe_target() {
        if target == "list" {
            println!("{name}");
        } else if target == name {
            let n = probe_n();
            let rt = runtime(case.rt);
            let svc = {
                let _enter = rt.enter();
                make(inner(case.inner))
            };
            let elapsed = rt.block_on(run(svc, case.callers, n, make_req));
            eprintln!("PROBE {name}: {n} requests in {elapsed:?}");
        }
        return;
    }
    let g = group
        .group
        .as_mut()
        .expect("criterion group exists outside probe mode");
    let rt = runtime(case.rt);
    let svc = {
        let _enter = rt.enter();
        make(inner(case.inner))
    };
    g.bench_function(BenchmarkId::new(id, case.param()), |b| {
        b.iter_custom(|iters| rt.block_on(run(svc.clone(), case.callers, iters, make_req)));
    });
    report_allocs(&name, &rt, &svc, case.callers, make_req);
    // The service first: it may hold tasks of the runtime (a buffer worker).
    drop(svc);
    drop(rt);
}

/// Counts the allocations of [`ALLOC_REQUESTS`] requests (after a warm-up,
/// so lazily-built state is not counted) and reports them per request.
fn report_allocs<S>(
    name: &str,
    rt: &tokio::runtime::Runtime,
    svc: &S,
    callers: usize,
    make_req: fn() -> Req,
) where
    S: Service<Req, Response = Res> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: fmt::Debug + Send + 'static,
{
    rt.block_on(run(svc.clone(), callers, 1_000, make_req));
    let before = ALLOC.stats().allocations;
    rt.block_on(run(svc.clone(), callers, ALLOC_REQUESTS, make_req));
    let count = ALLOC.stats().allocations - before;
    record_allocs(name, count, ALLOC_REQUESTS);
}

/// Runs `iters` requests against clones of `svc` from `callers` spawned
/// tasks (the iteration count split between them) and returns the wall time
/// measured inside a spawned driver task. Must be called from inside the
/// runtime (e.g. `rt.block_on(run(..))`).
pub(crate) async fn run<S>(svc: S, callers: usize, iters: u64, make_req: fn() -> Req) -> Duration
where
    S: Service<Req, Response = Res> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: fmt::Debug + Send + 'static,
{
    let driver = tokio::spawn(async move {
        if callers <= 1 {
            let start = Instant::now();
            caller(svc, iters, make_req).await;
            return start.elapsed();
        }
        let callers_u64 = callers as u64;
        let per = iters / callers_u64;
        let extra = iters % callers_u64;
        let start = Instant::now();
        let handles: Vec<_> = (0..callers_u64)
            .map(|i| {
                let n = per + u64::from(i < extra);
                tokio::spawn(caller(svc.clone(), n, make_req))
            })
            .collect();
        for h in handles {
            h.await.expect("caller task panicked");
        }
        start.elapsed()
    });
    driver.await.expect("driver task panicked")
}

/// One caller: `n` sequential requests, each on a fresh clone of `svc`.
async fn caller<S>(svc: S, n: u64, make_req: fn() -> Req)
where
    S: Service<Req, Response = Res> + Clone,
    S::Error: fmt::Debug,
{
    for _ in 0..n {
        let req = make_req();
        let res = svc.clone().oneshot(req).await;
        std::hint::black_box(res.expect("service returned an error"));
    }
}

/// The bench binary's `main`: runs each of `benches` with a criterion
/// configured from the command line, then prints criterion's summary (what
/// `criterion_group!` + `criterion_main!` do, without their undocumented
/// generated function).
pub(crate) fn main(benches: &[fn(&mut Criterion)]) {
    // With the `metrics` feature, `RAMPART_BENCH_RECORDER=1` installs a
    // Prometheus recorder before any layer is built, so the layers record
    // into a real exporter (the cost with a recorder); without it the
    // handles find no recorder (the cost of the feature alone).
    #[cfg(feature = "metrics")]
    if std::env::var_os(RECORDER_ENV).is_some() {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("no recorder installed before the bench starts");
    }
    let mut c = Criterion::default().configure_from_args();
    for bench in benches {
        bench(&mut c);
    }
    c.final_summary();
}

/// Whether the binary runs in probe mode ([`PROBE_ENV`] set): cases that
/// exist only for callgrind (ablations) are registered only then, so
/// criterion runs never time them.
pub(crate) fn probing() -> bool {
    probe_target().is_some()
}

/// The probe target from [`PROBE_ENV`], if set and not empty.
fn probe_target() -> Option<String> {
    std::env::var(PROBE_ENV).ok().filter(|s| !s.is_empty())
}

/// The probe's request count from [`PROBE_N_ENV`] (default 1000).
fn probe_n() -> u64 {
    std::env::var(PROBE_N_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
}

/// A tower retry policy that never retries; `clone_request` still clones
/// every request (as tower's `Retry` asks for a copy before each call).
///
/// The copy is built by hand from method, URI, version and headers
/// (extensions are not copied): the cheapest clone a user of tower would
/// write.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct NeverRetry;

impl<E> tower::retry::Policy<Req, Res, E> for NeverRetry {
    type Future = std::future::Ready<()>;

    fn retry(&mut self, _req: &mut Req, _result: &mut Result<Res, E>) -> Option<Self::Future> {
        None
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(clone_request(req))
    }
}

/// Copies method, URI, version and headers of `req` (not its extensions).
pub(crate) fn clone_request(req: &Req) -> Req {
    let mut out = Request::new(());
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = req.uri().clone();
    *out.version_mut() = req.version();
    *out.headers_mut() = req.headers().clone();
    out
}

// Helpers for benches that drive something other than one request per call
// (the fan-out bench: one group of many requests per call).

/// Allocations counted so far by the bench binary's allocator (every
/// thread).
pub(crate) fn allocations() -> usize {
    ALLOC.stats().allocations
}

/// The probe target (see [`PROBE_ENV`]), if the binary runs in probe mode.
pub(crate) fn probe() -> Option<String> {
    probe_target()
}

/// The probe's request count (see [`PROBE_N_ENV`]).
pub(crate) fn probe_requests() -> u64 {
    probe_n()
}

/// Prints `ALLOCS <name>: <x> per request` for `count` allocations over
/// `requests` requests and appends it to `target/criterion/allocs.txt`, as
/// [`bench_service`] does.
pub(crate) fn record_allocs(name: &str, count: usize, requests: u64) {
    let line = format!(
        "ALLOCS {name}: {:.2} per request",
        count as f64 / requests as f64
    );
    println!("{line}");
    let path = std::path::Path::new("target/criterion/allocs.txt");
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        use std::io::Write;
        let _ = writeln!(f, "{line}");
    }
}

impl<'a> Group<'a> {
    /// The group's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The criterion group (`None` in probe mode).
    pub(crate) fn criterion(&mut self) -> Option<&mut BenchmarkGroup<'a, WallTime>> {
        self.group.as_mut()
    }
}

/// The service of the boxed-whole-stack mode: what axum's `Route` holds.
pub(crate) type Boxed = BoxCloneSyncService<Req, Res, BoxError>;

/// The boxed-whole-stack mode: `layer` applied once to
/// [`inner`]`(case.inner)`, its error turned into a `BoxError`, and the
/// whole result boxed in a `BoxCloneSyncService` — as axum's `Route` boxes
/// a router's layered service. The box is cloned for every request (a clone
/// copies the layered service into a new box: its size and its `clone`
/// count), and the response future is boxed (its size counts). `floor`,
/// `tower` and `rampart` get the same wrapping, so the difference is still
/// the layer alone. Use a group name ending in `_boxed`.
pub(crate) fn bench_layer_boxed<L>(group: &mut Group<'_>, id: &str, case: Case, layer: L)
where
    L: Layer<Inner>,
    L::Service: Service<Req, Response = Res> + Clone + Send + Sync + 'static,
    <L::Service as Service<Req>>::Future: Send + 'static,
    <L::Service as Service<Req>>::Error: Into<BoxError> + 'static,
{
    bench_service(group, id, case, plain_request, |inner| -> Boxed {
        BoxCloneSyncService::new(layer.layer(inner).map_err(Into::into))
    });
}

/// The `floor` id of the boxed-whole-stack mode ([`bench_layer_boxed`] with
/// no layer).
pub(crate) fn bench_floor_boxed(group: &mut Group<'_>, case: Case) {
    bench_layer_boxed(group, "floor", case, tower::layer::util::Identity::new());
}
