//! The guide's table of metrics (`src/guide.rs`, "# Metrics") and what the
//! layers register agree: every layer is built under a `metrics-util`
//! debugging recorder, driven a little (a retry that retries, a limit that
//! sheds, a timeout that fires …), and then
//!
//! - every series a layer registered has a name, kind and labels the table
//!   lists, and carries the `layer` label;
//! - every name in the table, and every value of its extra labels, is
//!   registered by some layer.
//!
//! The table is parsed out of `src/guide.rs` when the test runs, so the test
//! fails as soon as the table and the code drift apart.
#![cfg(all(feature = "metrics", feature = "full"))]
// Gauges move by whole units: comparing them to 0.0 is exact.
#![allow(clippy::float_cmp)]

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::num::NonZeroU32;
use std::time::Duration;

use http::{Request, Response};
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use rampart::breaker::{CircuitBreakerLayer, KeyedCircuitBreakerLayer};
use rampart::cancel::CancelLayer;
use rampart::context::{PropagateContextLayer, RequestIdLayer};
use rampart::fanout::FanOutLayer;
use rampart::limit::{ConcurrencyLimitLayer, KeyedConcurrencyLimitLayer};
use rampart::queue::QueueLayer;
use rampart::rate::{KeyedRateLimitLayer, Quota, RateLimitLayer};
use rampart::retry::{Backoff, Budget, RetryLayer};
use rampart::sync::{CoalesceLayer, KeyedLockLayer};
use rampart::timeout::{DeadlineHeaders, DeadlineLayer, PropagateDeadlineLayer, TimeoutLayer};
use rampart::{CancellationToken, Context, ErrorKind};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

const GUIDE: &str = include_str!("../src/guide.rs");

/// One row of the guide's table.
#[derive(Debug)]
struct Row {
    /// `counter`, `gauge` or `histogram`.
    kind: String,
    /// Label key → the values listed for it (none for `layer`).
    labels: BTreeMap<String, BTreeSet<String>>,
}

/// The cells of a markdown table row: split on `|`, but not on `\|`.
fn cells(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                out.last_mut().unwrap().push('|');
            }
            '|' => out.push(String::new()),
            _ => out.last_mut().unwrap().push(c),
        }
    }
    out.into_iter().map(|c| c.trim().to_owned()).collect()
}

/// The text between backticks, in order.
fn code_spans(s: &str) -> Vec<String> {
    s.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// The guide's "# Metrics" table: name → row.
fn guide_table() -> BTreeMap<String, Row> {
    let section = GUIDE
        .split("\n//! # Metrics\n")
        .nth(1)
        .expect("src/guide.rs has a \"# Metrics\" section");
    let mut table = BTreeMap::new();
    // Up to the next heading, outside code blocks (where `# ` hides a line).
    let mut in_code = false;
    let section = section.lines().take_while(|l| {
        if l.starts_with("//! ```") {
            in_code = !in_code;
        }
        in_code || !l.starts_with("//! # ")
    });
    for line in section {
        let Some(row) = line.strip_prefix("//! | `rampart.") else {
            continue;
        };
        let cells = cells(&format!("| `rampart.{row}"));
        // ["", name, kind, labels, recorded by, meaning, ""]
        assert_eq!(cells.len(), 7, "a row of five cells: {line}");
        let name = code_spans(&cells[1]).remove(0);
        let kind = cells[2]
            .split([',', ' '])
            .next()
            .unwrap_or_default()
            .to_owned();
        assert!(
            ["counter", "gauge", "histogram"].contains(&kind.as_str()),
            "{name}: kind {kind:?}"
        );
        if kind == "histogram" {
            assert!(
                cells[2].contains("seconds") && name.ends_with(".duration"),
                "{name}: histograms are durations in seconds named *.duration"
            );
        }
        let mut labels = BTreeMap::new();
        for label in cells[3].split(", ") {
            let (key, values) = label.split_once('=').unwrap_or((label, ""));
            let key = code_spans(key).remove(0);
            labels.insert(key, code_spans(values).into_iter().collect());
        }
        assert!(
            labels.contains_key("layer"),
            "{name}: every metric has `layer`"
        );
        assert!(
            table.insert(name.clone(), Row { kind, labels }).is_none(),
            "{name} is listed twice"
        );
    }
    assert!(table.len() > 40, "the table was not parsed: {table:?}");
    table
}

fn kind_name(kind: MetricKind) -> &'static str {
    match kind {
        MetricKind::Counter => "counter",
        MetricKind::Gauge => "gauge",
        MetricKind::Histogram => "histogram",
    }
}

/// One registered series: name, kind, labels, value.
#[derive(Debug)]
struct Series {
    name: String,
    kind: &'static str,
    labels: BTreeMap<String, String>,
    value: DebugValue,
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// Lets every spawned task run until it waits on something.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// A handler answering request `ms` after `ms` milliseconds; 0 fails.
fn sleeper() -> impl Service<u64, Response = u64, Error = &'static str, Future: Send> + Clone + Send
{
    service_fn(|ms: u64| async move {
        if ms == 0 {
            return Err("failed");
        }
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    })
}

/// A keyed handler: `(key, ms)` answered after `ms` milliseconds.
fn keyed_sleeper()
-> impl Service<(u32, u64), Response = u64, Error = &'static str, Future: Send> + Clone + Send {
    service_fn(|(_, ms): (u32, u64)| async move {
        if ms == 0 {
            return Err("failed");
        }
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    })
}

fn echo() -> impl Service<Request<()>, Response = Response<()>, Error = Infallible> + Clone {
    service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(())) })
}

const MS: Duration = Duration::from_millis(1);

/// Builds one of every layer under `recorder`, drives each, and returns
/// every series registered.
#[allow(clippy::too_many_lines)]
async fn drive_every_layer(recorder: &DebuggingRecorder) -> Vec<Series> {
    let snapshotter = recorder.snapshotter();
    // Everything is built (and every service made) with the recorder
    // installed: that is when rampart registers its handles.
    let built = metrics::with_local_recorder(recorder, || {
        let retry = RetryLayer::builder()
            .name("client")
            .max_attempts(3)
            .backoff(Backoff::constant(10 * MS))
            .build()
            .unwrap()
            .layer(sleeper());
        let budgeted = RetryLayer::builder()
            .name("budgeted")
            .max_attempts(3)
            .budget(Budget::new(0.0, 0, Duration::from_secs(1)))
            .build()
            .unwrap()
            .layer(sleeper());
        let timeout = TimeoutLayer::new(50 * MS).name("attempt").layer(sleeper());
        let deadline = DeadlineLayer::from_headers(100 * MS, DeadlineHeaders::new())
            .name("server")
            .layer(echo());
        let propagate = PropagateDeadlineLayer::new().name("outgoing").layer(echo());
        let shed = ConcurrencyLimitLayer::builder(1)
            .shed()
            .name("shed")
            .build()
            .unwrap()
            .layer(sleeper());
        let waits = ConcurrencyLimitLayer::builder(1)
            .max_wait(20 * MS)
            .name("waits")
            .build()
            .unwrap()
            .layer(sleeper());
        let keyed_limit = KeyedConcurrencyLimitLayer::builder(|r: &(u32, u64)| r.0, 1)
            .max_keys(1)
            .name("tenants")
            .build()
            .unwrap()
            .layer(keyed_sleeper());
        let request_id = RequestIdLayer::new().name("edge").layer(echo());
        let propagate_ctx = PropagateContextLayer::new()
            .with_deadline()
            .name("out")
            .layer(echo());
        let cancel_layer = CancelLayer::new().name("api");
        let shutdown = cancel_layer.shutdown().clone();
        let cancel = cancel_layer.layer(sleeper());
        // Unnamed on purpose: it records as "default" (and builds with or
        // without the queue's naming API).
        let queue = QueueLayer::new(1, 1).shed().layer(sleeper());
        let lock = KeyedLockLayer::new(|r: &(u32, u64)| r.0)
            .name("accounts")
            .layer(keyed_sleeper());
        let coalesce = CoalesceLayer::new(|r: &(u32, u64)| r.0)
            .name("profiles")
            .layer(keyed_sleeper());
        let fanout = FanOutLayer::new()
            .timeout(100 * MS)
            .name("replicas")
            .layer(sleeper());
        let breaker = CircuitBreakerLayer::builder()
            .name("backend")
            .consecutive_failures(1)
            .break_duration(Duration::from_secs(1))
            .build()
            .unwrap()
            .layer(sleeper());
        let keyed_breaker =
            KeyedCircuitBreakerLayer::new(|r: &(u32, u64)| r.0, CircuitBreakerLayer::new(), 8)
                .name("per-host")
                .layer(keyed_sleeper());
        let rate = RateLimitLayer::new(Quota::per_second(nz(1)))
            .name("rate")
            .layer(sleeper());
        let keyed_rate = KeyedRateLimitLayer::new(Quota::per_second(nz(1)), |r: &(u32, u64)| r.0)
            .name("rate-tenants")
            .layer(keyed_sleeper());
        (
            (retry, budgeted, timeout, deadline, propagate),
            (shed, waits, keyed_limit, request_id, propagate_ctx),
            (cancel, shutdown, queue, lock, coalesce),
            (fanout, breaker, keyed_breaker, rate, keyed_rate),
        )
    });
    let (
        (retry, budgeted, timeout, deadline, propagate),
        (shed, waits, keyed_limit, request_id, propagate_ctx),
        (cancel, shutdown, queue, lock, coalesce),
        (fanout, breaker, keyed_breaker, rate, keyed_rate),
    ) = built;

    // Retry: a failing call retried twice, then given up (max attempts);
    // with a budget of nothing, the first retry is refused.
    let e = retry.oneshot(0).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RetriesExhausted);
    assert!(budgeted.oneshot(0).await.is_err());

    // Timeout: one call too slow.
    let e = timeout.clone().oneshot(500).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert_eq!(timeout.oneshot(5).await.unwrap(), 5);

    // Deadline from headers: a malformed header (ignored), an expired one.
    let req = Request::get("/")
        .header("x-request-timeout-ms", "soon")
        .body(())
        .unwrap();
    deadline.clone().oneshot(req).await.unwrap();
    let req = Request::get("/")
        .header("x-request-timeout-ms", "0")
        .body(())
        .unwrap();
    let e = deadline.oneshot(req).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded);
    let ctx = Context::new().with_deadline(Instant::now());
    let e = ctx
        .scope(propagate.oneshot(Request::new(())))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded);

    // Limits: one shed, one wait that expires, a keyed refusal.
    let held = tokio::spawn(shed.clone().oneshot(30));
    settle().await;
    let e = shed.oneshot(1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overloaded);
    held.await.unwrap().unwrap();
    let held = tokio::spawn(waits.clone().oneshot(50));
    settle().await;
    assert!(waits.oneshot(1).await.is_err()); // waited 20 ms: max_wait
    held.await.unwrap().unwrap();
    let held = tokio::spawn(keyed_limit.clone().oneshot((1, 30)));
    settle().await;
    assert!(keyed_limit.clone().oneshot((2, 1)).await.is_err()); // map full
    held.await.unwrap().unwrap();

    // Request id: generated, accepted, refused. Context: missing, expired.
    request_id.clone().oneshot(Request::new(())).await.unwrap();
    for id in ["req-1", "bad\tid"] {
        let req = Request::get("/")
            .header("x-request-id", id)
            .body(())
            .unwrap();
        request_id.clone().oneshot(req).await.unwrap();
    }
    propagate_ctx
        .clone()
        .oneshot(Request::new(()))
        .await
        .unwrap();
    let ctx = Context::new().with_deadline(Instant::now());
    assert!(
        ctx.scope(propagate_ctx.oneshot(Request::new(())))
            .await
            .is_err()
    );

    // Cancel: the caller's token fires, then a drain refuses a call.
    let token = CancellationToken::new();
    let ctx = Context::new().with_cancellation(token.clone());
    let call = tokio::spawn(ctx.scope(cancel.clone().oneshot(60_000)));
    settle().await;
    token.cancel();
    assert_eq!(
        call.await.unwrap().unwrap_err().kind(),
        ErrorKind::Cancelled
    );
    let drain = tokio::spawn(async move { shutdown.drain(Duration::from_secs(1)).await });
    settle().await;
    assert_eq!(
        cancel.oneshot(5).await.unwrap_err().kind(),
        ErrorKind::Closed
    );
    drain.await.unwrap();

    // Queue (capacity 1, one worker, shed mode): one runs, one waits, the
    // third is shed.
    let a = tokio::spawn(queue.clone().oneshot(30));
    settle().await;
    let b = tokio::spawn(queue.clone().oneshot(10));
    settle().await;
    let e = queue.clone().oneshot(1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overloaded);
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();

    // Keyed lock: two calls on one key, the second waits.
    let a = tokio::spawn(lock.clone().oneshot((1, 20)));
    settle().await;
    lock.oneshot((1, 5)).await.unwrap();
    a.await.unwrap().unwrap();
    // Coalesce: two callers of one key share one call.
    let a = tokio::spawn(coalesce.clone().oneshot((1, 20)));
    settle().await;
    coalesce.oneshot((1, 20)).await.unwrap();
    a.await.unwrap().unwrap();

    // Fan-out: one fails, one is cut at the collective timeout.
    let e = fanout.oneshot(vec![5, 0, 5_000]).await.unwrap_err();
    assert_eq!(e.gathered().failed(), 1);

    // Breaker: one failure opens it, the next call is refused.
    assert!(breaker.clone().oneshot(0).await.is_err());
    let e = breaker.oneshot(5).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overloaded);
    keyed_breaker.oneshot((1, 5)).await.unwrap();

    // Rate: the second call within the second is refused.
    rate.clone().oneshot(1).await.unwrap();
    assert_eq!(
        rate.oneshot(1).await.unwrap_err().kind(),
        ErrorKind::RateLimited
    );
    keyed_rate.oneshot((1, 1)).await.unwrap();

    settle().await;
    // One snapshot, at the end (the debugging recorder resets what it reads).
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(ck, _, _, value)| {
            let (kind, key) = ck.into_parts();
            Series {
                name: key.name().to_owned(),
                kind: kind_name(kind),
                labels: key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect(),
                value,
            }
        })
        .collect()
}

fn counter(series: &[Series], name: &str, layer: &str) -> u64 {
    series
        .iter()
        .filter(|s| s.name == name && s.labels.get("layer").map(String::as_str) == Some(layer))
        .map(|s| match s.value {
            DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum()
}

#[tokio::test(start_paused = true)]
async fn the_guide_table_lists_exactly_the_metrics_the_layers_register() {
    let table = guide_table();
    let recorder = DebuggingRecorder::new();
    let series = drive_every_layer(&recorder).await;

    // The run did what it says (so the values below are real, not zeros).
    assert!(counter(&series, "rampart.retry.retries", "client") >= 2);
    assert!(counter(&series, "rampart.retry.budget.rejected", "budgeted") >= 1);
    assert!(counter(&series, "rampart.timeout.fired", "attempt") >= 1);
    assert!(counter(&series, "rampart.limit.shed", "shed") >= 1);
    assert!(counter(&series, "rampart.breaker.rejected", "backend") >= 1);
    assert!(counter(&series, "rampart.rate.rejected", "rate") >= 1);

    // (a) Every series registered is in the table, with its kind and labels.
    let mut unlisted = BTreeSet::new();
    for s in &series {
        assert!(s.name.starts_with("rampart."), "{s:?}");
        assert!(s.labels.contains_key("layer"), "no `layer` label: {s:?}");
        let Some(row) = table.get(&s.name) else {
            unlisted.insert(s.name.clone());
            continue;
        };
        assert_eq!(row.kind, s.kind, "{}: kind in the guide", s.name);
        for (k, v) in &s.labels {
            let listed = row.labels.get(k);
            assert!(
                listed.is_some_and(|vs| k == "layer" || vs.contains(v)),
                "{}: label {k}={v:?} not in the guide ({:?})",
                s.name,
                row.labels
            );
        }
    }
    assert!(
        unlisted.is_empty(),
        "registered but missing from the guide's table: {unlisted:?}"
    );

    // Every "now" gauge is back to zero once the run is over.
    for s in &series {
        let now = [".in_flight", ".waiting", ".held", ".depth", ".running"];
        if now.iter().any(|suffix| s.name.ends_with(suffix)) {
            match s.value {
                DebugValue::Gauge(v) => assert_eq!(v.into_inner(), 0.0, "{s:?}"),
                _ => panic!("{s:?} is not a gauge"),
            }
        }
    }

    // (b) Every name in the table, and every value of its extra labels, is
    // registered by some layer.
    let mut missing = BTreeSet::new();
    for (name, row) in &table {
        let registered: Vec<&Series> = series.iter().filter(|s| &s.name == name).collect();
        if registered.is_empty() {
            missing.insert(name.clone());
            continue;
        }
        for (k, values) in row.labels.iter().filter(|(k, _)| *k != "layer") {
            for v in values {
                assert!(
                    registered
                        .iter()
                        .any(|s| s.labels.get(k).map(String::as_str) == Some(v.as_str())),
                    "{name}: the guide lists {k}={v:?}, no layer registers it"
                );
            }
        }
    }
    assert!(
        missing.is_empty(),
        "in the guide's table but registered by no layer: {missing:?}"
    );
}

#[test]
fn the_guide_table_parses_labels_and_their_values() {
    let table = guide_table();
    let exhausted = &table["rampart.retry.exhausted"];
    assert_eq!(exhausted.kind, "counter");
    assert_eq!(
        exhausted.labels["reason"],
        [
            "cancelled",
            "deadline",
            "max_attempts",
            "max_elapsed",
            "not_replayable"
        ]
        .map(str::to_owned)
        .into()
    );
    assert!(exhausted.labels["layer"].is_empty());
    assert_eq!(table["rampart.limit.wait.duration"].kind, "histogram");
    assert_eq!(table["rampart.limit.in_flight"].kind, "gauge");
}

/// Every series registered under `recorder`: (name, `layer` label).
fn registered_layers(recorder: &DebuggingRecorder) -> Vec<(String, String)> {
    recorder
        .snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(ck, _, _, _)| {
            let (_, key) = ck.into_parts();
            let layer = key
                .labels()
                .find(|l| l.key() == "layer")
                .map(|l| l.value().to_owned())
                .unwrap_or_default();
            (key.name().to_owned(), layer)
        })
        .collect()
}

/// `X::new().name("x")` and then building the service registers series
/// under `"x"` only, for every layer: naming a layer after it was made
/// leaves no zero `layer="default"` series in the exporter (handles are
/// registered when the layer wraps its service, not when it is built or
/// named).
#[tokio::test(start_paused = true)]
async fn a_layer_named_after_new_registers_no_default_series_for_every_layer() {
    type Build = Box<dyn Fn()>;
    let keyed = |r: &(u32, u64)| r.0;
    let cases: Vec<(&str, Build)> = vec![
        (
            "retry",
            Box::new(|| drop(RetryLayer::default().name("x").layer(sleeper()))),
        ),
        (
            "timeout",
            Box::new(|| drop(TimeoutLayer::new(MS).name("x").layer(sleeper()))),
        ),
        (
            "deadline",
            Box::new(|| drop(DeadlineLayer::new(MS).name("x").layer(sleeper()))),
        ),
        (
            "deadline from headers",
            Box::new(|| {
                let layer = DeadlineLayer::from_headers(MS, DeadlineHeaders::new()).name("x");
                drop(layer.layer(echo()));
            }),
        ),
        (
            "propagate deadline",
            Box::new(|| drop(PropagateDeadlineLayer::new().name("x").layer(echo()))),
        ),
        (
            "concurrency limit",
            Box::new(|| drop(ConcurrencyLimitLayer::new(4).name("x").layer(sleeper()))),
        ),
        (
            "keyed concurrency limit",
            Box::new(move || {
                let layer = KeyedConcurrencyLimitLayer::new(keyed, 2).name("x");
                drop(layer.layer(keyed_sleeper()));
            }),
        ),
        (
            "request id",
            Box::new(|| drop(RequestIdLayer::new().name("x").layer(echo()))),
        ),
        (
            "propagate context",
            Box::new(|| drop(PropagateContextLayer::new().name("x").layer(echo()))),
        ),
        (
            "cancel",
            Box::new(|| drop(CancelLayer::new().name("x").layer(sleeper()))),
        ),
        (
            "queue",
            Box::new(|| drop(QueueLayer::new(4, 1).name("x").layer(sleeper()))),
        ),
        (
            "keyed lock",
            Box::new(move || drop(KeyedLockLayer::new(keyed).name("x").layer(keyed_sleeper()))),
        ),
        (
            "coalesce",
            Box::new(move || drop(CoalesceLayer::new(keyed).name("x").layer(keyed_sleeper()))),
        ),
        (
            "fanout",
            Box::new(|| drop(FanOutLayer::new().name("x").layer(sleeper()))),
        ),
        (
            "circuit breaker",
            Box::new(|| drop(CircuitBreakerLayer::new().name("x").layer(sleeper()))),
        ),
        (
            "keyed circuit breaker",
            Box::new(move || {
                let layer = KeyedCircuitBreakerLayer::new(keyed, CircuitBreakerLayer::new(), 8);
                drop(layer.name("x").layer(keyed_sleeper()));
            }),
        ),
        (
            "rate limit",
            Box::new(|| {
                let layer = RateLimitLayer::new(Quota::per_second(nz(1))).name("x");
                drop(layer.layer(sleeper()));
            }),
        ),
        (
            "keyed rate limit",
            Box::new(move || {
                let layer = KeyedRateLimitLayer::new(Quota::per_second(nz(1)), keyed).name("x");
                drop(layer.layer(keyed_sleeper()));
            }),
        ),
    ];
    for (what, build) in &cases {
        let recorder = DebuggingRecorder::new();
        metrics::with_local_recorder(&recorder, build);
        let series = registered_layers(&recorder);
        assert!(
            series.iter().any(|(_, layer)| layer == "x"),
            "{what}: nothing registered under its name: {series:?}"
        );
        let default: Vec<_> = series.iter().filter(|(_, l)| l != "x").collect();
        assert!(
            default.is_empty(),
            "{what}: series under another name than the one it ended up with: {default:?}"
        );
    }
    // Without the service, a named layer registers nothing at all.
    let recorder = DebuggingRecorder::new();
    metrics::with_local_recorder(&recorder, || {
        drop((
            RetryLayer::default().name("x"),
            TimeoutLayer::new(MS).name("x"),
            ConcurrencyLimitLayer::new(4).name("x"),
            CircuitBreakerLayer::new().name("x"),
            RateLimitLayer::new(Quota::per_second(nz(1))).name("x"),
        ));
    });
    assert_eq!(registered_layers(&recorder), []);
}
