//! [`ReplayTonic`]: body replay for a tonic `Channel` (feature `tonic`).

use super::{HttpKept, Replay, ReplayBody, ReplayHttp};
use bytes::Bytes;
use http::HeaderName;
use http_body::Body;
use rampart_core::BoxError;

/// [`ReplayHttp`] for a tonic `Channel`: the inner service receives
/// `http::Request<tonic::body::Body>`, the only request type a `Channel`
/// takes, with the replayable body inside. Made by
/// [`RetryLayer::tonic`](crate::RetryLayer::tonic); the adapter that
/// `RetryLayer::http()` would otherwise need between the retry layer and the
/// channel.
///
/// Boxing the body into `tonic::body::Body` costs one allocation per
/// attempt, as tonic itself boxes every request body.
#[derive(Clone, Debug, Default)]
pub struct ReplayTonic {
    http: ReplayHttp,
}

impl ReplayTonic {
    /// Buffers up to 64 KiB per request, no attempt header.
    pub fn new() -> ReplayTonic {
        ReplayTonic::default()
    }

    /// The most body bytes kept for a replay; a longer body is sent once.
    pub fn max_bytes(self, max: usize) -> ReplayTonic {
        ReplayTonic {
            http: self.http.max_bytes(max),
        }
    }

    /// Sets `name: <attempt>` on every retry (2, 3, …).
    pub fn attempt_header(self, name: HeaderName) -> ReplayTonic {
        ReplayTonic {
            http: self.http.attempt_header(name),
        }
    }

    /// The buffer cap.
    pub fn max_bytes_limit(&self) -> usize {
        self.http.max_bytes_limit()
    }
}

impl<B> Replay<http::Request<B>> for ReplayTonic
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Prepared = http::Request<ReplayBody<B>>;
    type Request = http::Request<tonic::body::Body>;
    type Kept = HttpKept<B>;

    fn prepare(&self, req: http::Request<B>, keep: bool) -> http::Request<ReplayBody<B>> {
        self.http.prepare(req, keep)
    }

    fn keep(&self, req: &http::Request<ReplayBody<B>>) -> Option<HttpKept<B>> {
        self.http.keep(req)
    }

    fn send(&self, req: http::Request<ReplayBody<B>>) -> http::Request<tonic::body::Body> {
        req.map(tonic::body::Body::new)
    }

    fn next(&self, kept: &HttpKept<B>, attempt: u32) -> Option<http::Request<tonic::body::Body>> {
        let req = self.http.next(kept, attempt)?;
        Some(req.map(tonic::body::Body::new))
    }

    fn is_replayable(&self, kept: &HttpKept<B>) -> bool {
        Replay::<http::Request<B>>::is_replayable(&self.http, kept)
    }
}
