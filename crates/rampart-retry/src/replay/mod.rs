//! Keeping a request so that it can be sent again.
//!
//! The inner service consumes each request, so a retry needs a copy made
//! before the first call. [`Replay`] is that strategy:
//!
//! - [`CloneRequest`]: for any `Req: Clone` (including
//!   `http::Request<()>` or `http::Request<Full<Bytes>>`): one clone per call.
//! - [`ReplayHttp`]: for `http::Request<B>` with *any* body `B:
//!   http_body::Body`, streaming ones included. The body is wrapped in a
//!   [`ReplayBody`] that buffers what the first attempt streams, up to
//!   `max_replay_bytes` (64 KiB by default), and plays it back to the next
//!   attempt before reading on. A body that outgrows the buffer is still
//!   sent in full, once; the request just stops being retryable — never
//!   truncated or corrupted. It can also stamp an attempt header
//!   (`x-retry-attempt: 2`) on every retry.
//! - `ReplayTonic` (feature `tonic`): [`ReplayHttp`] for a tonic
//!   `Channel`, whose requests must carry `tonic::body::Body`: the replayed
//!   body is handed to the channel as a `tonic::body::Body`.

mod body;
#[cfg(feature = "tonic")]
mod tonic;

#[cfg(feature = "tonic")]
pub use self::tonic::ReplayTonic;
pub use body::{ReplayBody, ReplayError, Replayer};

use http::{HeaderName, HeaderValue};
use http_body::Body;
use rampart_core::BoxError;

/// The default cap of [`ReplayHttp`]'s buffer: 64 KiB.
pub const DEFAULT_MAX_REPLAY_BYTES: usize = 64 * 1024;

/// How a request is kept for another attempt.
///
/// Implement it for request types that are neither `Clone` nor
/// `http::Request`.
pub trait Replay<Req> {
    /// The first attempt's request, prepared (e.g. its body wrapped) but not
    /// yet turned into what the inner service receives.
    type Prepared;
    /// What the inner service receives.
    type Request;
    /// What is kept between attempts.
    type Kept;

    /// Turns the caller's request into the first attempt's (e.g. wraps its
    /// body). `keep` is false when no retry can happen (one attempt
    /// allowed): nothing will be kept, so nothing needs buffering.
    fn prepare(&self, req: Req, keep: bool) -> Self::Prepared;

    /// What to keep of the first attempt's request for later ones, or `None`
    /// when it cannot be replayed. Called (only when `keep` was true) before
    /// the request is handed to the inner service.
    fn keep(&self, req: &Self::Prepared) -> Option<Self::Kept>;

    /// The prepared request as the inner service takes it (often as it is).
    fn send(&self, req: Self::Prepared) -> Self::Request;

    /// The request for attempt number `attempt` (2, 3, …), or `None` when it
    /// can no longer be sent again. Called when a retry is decided, before
    /// the backoff sleep.
    fn next(&self, kept: &Self::Kept, attempt: u32) -> Option<Self::Request>;

    /// Whether [`next`](Self::next) can still succeed; checked before a retry
    /// takes a budget token. The default says yes.
    fn is_replayable(&self, kept: &Self::Kept) -> bool {
        let _ = kept;
        true
    }
}

/// Keeps a clone of a `Clone` request.
#[derive(Clone, Copy, Debug, Default)]
pub struct CloneRequest;

impl<Req: Clone> Replay<Req> for CloneRequest {
    type Prepared = Req;
    type Request = Req;
    type Kept = Req;

    #[inline]
    fn prepare(&self, req: Req, _keep: bool) -> Req {
        req
    }

    #[inline]
    fn keep(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }

    #[inline]
    fn send(&self, req: Req) -> Req {
        req
    }

    fn next(&self, kept: &Req, _attempt: u32) -> Option<Req> {
        Some(kept.clone())
    }
}

/// Replays `http::Request<B>` bodies from a bounded buffer; see the
/// [module docs](self). The inner service receives
/// `http::Request<ReplayBody<B>>`.
#[derive(Clone, Debug)]
pub struct ReplayHttp {
    max_bytes: usize,
    attempt_header: Option<HeaderName>,
}

impl Default for ReplayHttp {
    fn default() -> Self {
        ReplayHttp {
            max_bytes: DEFAULT_MAX_REPLAY_BYTES,
            attempt_header: None,
        }
    }
}

impl ReplayHttp {
    /// Buffers up to 64 KiB per request, no attempt header.
    pub fn new() -> ReplayHttp {
        ReplayHttp::default()
    }

    /// The most body bytes kept for a replay; a longer body is sent once.
    pub fn max_bytes(mut self, max: usize) -> ReplayHttp {
        self.max_bytes = max;
        self
    }

    /// Sets `name: <attempt>` on every retry (2, 3, …); the first attempt
    /// goes out unchanged.
    pub fn attempt_header(mut self, name: HeaderName) -> ReplayHttp {
        self.attempt_header = Some(name);
        self
    }

    /// The buffer cap.
    pub fn max_bytes_limit(&self) -> usize {
        self.max_bytes
    }
}

/// What [`ReplayHttp`] keeps: the request head and a [`Replayer`] of its
/// body.
#[derive(Debug)]
pub struct HttpKept<B> {
    parts: http::request::Parts,
    body: Replayer<B>,
}

impl<B> Replay<http::Request<B>> for ReplayHttp
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Prepared = http::Request<ReplayBody<B>>;
    type Request = http::Request<ReplayBody<B>>;
    type Kept = HttpKept<B>;

    fn prepare(&self, req: http::Request<B>, keep: bool) -> http::Request<ReplayBody<B>> {
        let (parts, body) = req.into_parts();
        let body = if keep {
            ReplayBody::new(body, self.max_bytes)
        } else {
            ReplayBody::passthrough(body)
        };
        http::Request::from_parts(parts, body)
    }

    fn keep(&self, req: &http::Request<ReplayBody<B>>) -> Option<HttpKept<B>> {
        let body = req.body().replayer()?;
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = req.method().clone();
        parts.uri = req.uri().clone();
        parts.version = req.version();
        parts.headers = req.headers().clone();
        parts.extensions = req.extensions().clone();
        Some(HttpKept { parts, body })
    }

    #[inline]
    fn send(&self, req: http::Request<ReplayBody<B>>) -> http::Request<ReplayBody<B>> {
        req
    }

    fn next(&self, kept: &HttpKept<B>, attempt: u32) -> Option<http::Request<ReplayBody<B>>> {
        let body = kept.body.replay()?;
        let mut parts = kept.parts.clone();
        if let Some(name) = &self.attempt_header {
            parts
                .headers
                .insert(name.clone(), HeaderValue::from(attempt));
        }
        Some(http::Request::from_parts(parts, body))
    }

    fn is_replayable(&self, kept: &HttpKept<B>) -> bool {
        kept.body.is_replayable()
    }
}

#[cfg(test)]
mod tests;
