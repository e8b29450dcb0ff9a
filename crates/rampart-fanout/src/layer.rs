//! [`FanOutLayer`] and the service it builds, [`FanOut`].

use crate::config::{FanOutConfig, Mode, Settings};
use crate::error::FanOutError;
use crate::future::FanOutFuture;
use crate::gather::Gather;
use crate::metrics::Telemetry;
use crate::outcome::Gathered;
use rampart_core::telemetry::LayerName;
use std::num::NonZeroUsize;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tower_layer::Layer;
use tower_service::Service;

/// Turns a `Service<Req>` into a [`FanOut`]: a service of many requests
/// (any `IntoIterator<Item = Req>`) that answers with every outcome in input
/// order ([`Gathered`]), or a [`FanOutError`] when its [`Mode`]'s goal
/// cannot be met or the group was stopped (collective timeout, the
/// caller's deadline or cancellation).
///
/// The default: [`Mode::All`], no bound on concurrency (the inner service's
/// readiness still applies), no collective timeout. Every value of every
/// setting is valid.
///
/// ```
/// use rampart_fanout::FanOutLayer;
/// use std::num::NonZeroUsize;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let svc = ServiceBuilder::new()
///     .layer(FanOutLayer::new().first_ok().concurrency(NonZeroUsize::new(2).unwrap()))
///     .service(service_fn(|n: u32| async move {
///         if n > 1 { Ok(n) } else { Err("too small") }
///     }));
/// let res = svc.oneshot(vec![0, 1, 2, 3]).await.unwrap();
/// // 0 and 1 failed, 2 won; 3 was never needed.
/// assert_eq!(res.succeeded(), 1);
/// assert_eq!(res[2].clone().ok(), Some(2));
/// assert!(!res[3].is_done());
/// # }
/// ```
///
/// Cheap to clone: clones share the layer's name and metric handles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FanOutLayer {
    settings: Settings,
    telemetry: Telemetry,
}

impl Default for FanOutLayer {
    fn default() -> Self {
        FanOutLayer::new()
    }
}

impl FanOutLayer {
    /// Mode all, unbounded, no collective timeout.
    pub fn new() -> FanOutLayer {
        FanOutLayer {
            settings: Settings::default(),
            telemetry: Telemetry::new(LayerName::default()),
        }
    }

    /// The layer a [`FanOutConfig`] describes (every config is valid).
    pub fn from_config(config: &FanOutConfig) -> FanOutLayer {
        FanOutLayer {
            settings: Settings::from(config),
            telemetry: Telemetry::new(LayerName::default()),
        }
    }

    /// Names the layer: the `layer` label of its metrics (feature
    /// `metrics`) and the `layer` field of its tracing events (default
    /// `"default"`). Its metric handles are registered when the layer
    /// wraps a service, under the name it has then: naming the layer
    /// registers nothing.
    ///
    /// ```
    /// use rampart_fanout::FanOutLayer;
    /// let layer = FanOutLayer::new().first_ok().name("replicas");
    /// # drop(layer);
    /// ```
    pub fn name(mut self, name: impl Into<LayerName>) -> FanOutLayer {
        self.telemetry = Telemetry::new(name.into());
        self
    }

    /// Sets the mode.
    pub fn mode(mut self, mode: Mode) -> FanOutLayer {
        self.settings.mode = mode;
        self
    }

    /// [`Mode::FailFast`]: the first error cancels the rest and fails the
    /// group.
    pub fn fail_fast(self) -> FanOutLayer {
        self.mode(Mode::FailFast)
    }

    /// [`Mode::FirstOk`]: the first success wins and cancels the rest.
    pub fn first_ok(self) -> FanOutLayer {
        self.mode(Mode::FirstOk)
    }

    /// [`Mode::Quorum`]: done once `k` succeed; fails once `k` successes
    /// are no longer possible (at once when there are fewer than `k`
    /// requests).
    pub fn quorum(self, k: NonZeroUsize) -> FanOutLayer {
        self.mode(Mode::Quorum(k))
    }

    /// At most `n` calls in flight at once; the next is sent when one
    /// finishes and the inner service is ready.
    pub fn concurrency(mut self, n: NonZeroUsize) -> FanOutLayer {
        self.settings.concurrency = Some(n);
        self
    }

    /// A collective timeout for each group, from its call: the calls not
    /// finished by then are dropped (cancelled) and reported as not done,
    /// and the group fails with [`Failure::Timeout`](crate::Failure::Timeout)
    /// (its outcomes in the error). Zero means already expired: nothing is
    /// sent. The caller's `Context` deadline applies too when earlier.
    pub fn timeout(mut self, timeout: Duration) -> FanOutLayer {
        self.settings.timeout = Some(timeout);
        self
    }

    /// The mode.
    pub fn get_mode(&self) -> Mode {
        self.settings.mode
    }

    /// The concurrency bound, if any.
    pub fn get_concurrency(&self) -> Option<NonZeroUsize> {
        self.settings.concurrency
    }

    /// The collective timeout, if any.
    pub fn get_timeout(&self) -> Option<Duration> {
        self.settings.timeout
    }
}

impl<S> Layer<S> for FanOutLayer {
    type Service = FanOut<S>;

    fn layer(&self, inner: S) -> FanOut<S> {
        FanOut {
            inner,
            settings: self.settings,
            telemetry: self.telemetry.registered(),
        }
    }
}

/// A service of many requests over a `Service<Req>`; built by
/// [`FanOutLayer`].
///
/// Its `poll_ready` is always ready: the inner service's readiness is
/// awaited inside the call, before each request is sent. Each call works on
/// a clone of the inner service (tower's convention: the clone that was
/// polled ready is the one used).
#[derive(Clone, Debug)]
pub struct FanOut<S> {
    inner: S,
    settings: Settings,
    telemetry: Telemetry,
}

impl<S> FanOut<S> {
    /// `inner` with the default settings (mode all, unbounded, no timeout).
    pub fn new(inner: S) -> FanOut<S> {
        FanOutLayer::new().layer(inner)
    }

    /// The settings as a layer (to build another `FanOut` alike).
    pub fn layer(&self) -> FanOutLayer {
        FanOutLayer {
            settings: self.settings,
            telemetry: self.telemetry.clone(),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Runs a group with these settings and returns every outcome, whether
    /// the group failed or not (the [`gather`](crate::gather) of this
    /// configuration).
    pub fn gather<I>(&mut self, requests: I) -> Gather<S, I::Item>
    where
        I: IntoIterator,
        S: Service<I::Item> + Clone,
    {
        let clone = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, clone);
        Gather::new(svc, requests, &self.settings, self.telemetry.clone())
    }
}

impl<S, I> Service<I> for FanOut<S>
where
    I: IntoIterator,
    S: Service<I::Item> + Clone,
{
    type Response = Gathered<S::Response, S::Error>;
    type Error = FanOutError<S::Response, S::Error>;
    type Future = FanOutFuture<S, I::Item>;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, requests: I) -> Self::Future {
        let clone = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, clone);
        FanOutFuture::new(
            svc,
            requests.into_iter().collect(),
            &self.settings,
            self.telemetry.clone(),
        )
    }
}
