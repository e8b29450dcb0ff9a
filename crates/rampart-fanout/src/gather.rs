//! [`gather`] and [`wait`]: the article's `asyncio.gather` and
//! `asyncio.wait` over a service.

use crate::config::Settings;
use crate::error::FanOutError;
use crate::future::FanOutFuture;
use crate::metrics::Telemetry;
use crate::outcome::Gathered;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tower_service::Service;

/// Sends every request to `svc` at once (each when `svc` is ready) and
/// gathers every outcome in input order, errors as values: asyncio's
/// `gather(..., return_exceptions=True)`.
///
/// The calls run in the current [`Context`](rampart_core::Context) (same
/// request id, same deadline, a child of its cancellation token). When the
/// caller's deadline passes or its token fires, the unfinished calls are
/// dropped and reported as [`NotDone`](crate::NotDone). For a bound on
/// concurrency or another [`Mode`](crate::Mode), use
/// [`FanOutLayer`](crate::FanOutLayer). It has no name and records no
/// metrics: a named [`FanOutLayer`](crate::FanOutLayer) (or
/// [`FanOut::gather`](crate::FanOut::gather)) does.
///
/// ```
/// use rampart_fanout::gather;
/// use tower::service_fn;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let svc = service_fn(|name: &'static str| async move {
///     if name == "bad" { Err("Something went wrong") } else { Ok(format!("{name}: success")) }
/// });
/// let results = gather(svc, ["a", "bad", "c"]).await;
/// for (i, outcome) in results.iter().enumerate() {
///     match outcome.as_ref() {
///         rampart_fanout::Outcome::Ok(v) => println!("Task {i} succeeded: {v}"),
///         rampart_fanout::Outcome::Err(e) => println!("Task {i} failed: {e}"),
///         rampart_fanout::Outcome::NotDone(n) => println!("Task {i} not done: {n}"),
///     }
/// }
/// assert_eq!((results.succeeded(), results.failed()), (2, 1));
/// # }
/// ```
pub fn gather<S, I>(svc: S, requests: I) -> Gather<S, I::Item>
where
    I: IntoIterator,
    S: Service<I::Item>,
{
    Gather::new(svc, requests, &Settings::default(), Telemetry::default())
}

/// [`gather`] with a collective timeout, from now: asyncio's
/// `wait(tasks, timeout=...)`. At the timeout the unfinished calls are
/// dropped (cancelled, their permits and resources released) and reported
/// as [`NotDone`](crate::NotDone) with [`Reason::Timeout`](crate::Reason::Timeout);
/// [`Gathered::completed`] and [`Gathered::not_done`] are asyncio's
/// `len(done)` and `len(pending)`. A zero timeout sends nothing. The
/// caller's [`Context`](rampart_core::Context) deadline still applies when
/// it is earlier.
///
/// ```
/// use rampart_fanout::wait;
/// use std::time::Duration;
/// use tower::service_fn;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let op = service_fn(|secs: u64| async move {
///     tokio::time::sleep(Duration::from_secs(secs)).await;
///     Ok::<_, std::convert::Infallible>(secs)
/// });
/// let res = wait(op, [1, 3, 5], Duration::from_secs(2)).await;
/// assert_eq!(res.completed(), 1);
/// assert_eq!(res.not_done(), 2);
/// # }
/// ```
pub fn wait<S, I>(svc: S, requests: I, timeout: Duration) -> Gather<S, I::Item>
where
    I: IntoIterator,
    S: Service<I::Item>,
{
    let config = Settings {
        timeout: Some(timeout),
        ..Settings::default()
    };
    Gather::new(svc, requests, &config, Telemetry::default())
}

pin_project! {
    /// The future of [`gather`], [`wait`] and [`FanOut::gather`](crate::FanOut::gather):
    /// every outcome, whether the group failed or not (a failed group's
    /// outcomes are in its [`FanOutError`]; here they are returned as they are).
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct Gather<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        inner: FanOutFuture<S, Req>,
    }
}

impl<S: Service<Req>, Req> Gather<S, Req> {
    pub(crate) fn new<I>(svc: S, requests: I, config: &Settings, telemetry: Telemetry) -> Self
    where
        I: IntoIterator<Item = Req>,
    {
        Gather {
            inner: FanOutFuture::new(svc, requests.into_iter().collect(), config, telemetry),
        }
    }
}

impl<S: Service<Req>, Req> Future for Gather<S, Req> {
    type Output = Gathered<S::Response, S::Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        self.project()
            .inner
            .poll(cx)
            .map(|r| r.unwrap_or_else(FanOutError::into_gathered))
    }
}
