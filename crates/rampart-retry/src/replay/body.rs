//! [`ReplayBody`]: a request body that buffers what it streams, up to a cap,
//! so a later attempt can send it again.

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use rampart_core::BoxError;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

pin_project! {
    /// A request body that can be sent again.
    ///
    /// The first attempt streams the original body and keeps a copy of each
    /// chunk (a reference count, not a byte copy, for `Bytes` chunks) until
    /// `max_bytes` is passed; from then on it keeps nothing and the request
    /// is no longer replayable, but the first attempt still sends everything.
    /// A later attempt first plays back the kept chunks, then reads on from
    /// the original body where the previous attempt stopped (buffering
    /// lazily, so a retry after a failure mid-upload still sends every byte),
    /// and replays the trailers.
    ///
    /// Each new attempt supersedes the older ones: an older copy still held
    /// by a connection fails with [`ReplayError`] on its next poll instead of
    /// racing the new one for the original body.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full};
    /// use rampart_retry::ReplayBody;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let body = ReplayBody::new(Full::new(Bytes::from("hello")), 1024);
    /// let replayer = body.replayer().unwrap();
    /// assert_eq!(body.collect().await.unwrap().to_bytes(), "hello"); // first attempt
    /// let again = replayer.replay().unwrap(); // the retry
    /// assert_eq!(again.collect().await.unwrap().to_bytes(), "hello");
    ///
    /// // Longer than the cap (by its size hint): passed through, not replayable.
    /// let big = ReplayBody::new(Full::new(Bytes::from(vec![0u8; 2048])), 1024);
    /// assert!(big.replayer().is_none());
    /// # }
    /// ```
    pub struct ReplayBody<B> {
        #[pin]
        inner: Inner<B>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<B> {
        // Not replayable: the original body as it is.
        Passthrough { #[pin] body: B },
        // An original body that was empty from the start (replayed as `Empty`).
        EmptyOrigin { #[pin] body: B },
        // The replay of a body that was empty from the start.
        Empty,
        Shared {
            shared: Arc<Shared<B>>,
            id: u64,
            pos: usize,
            sent: u64,
            trailers_sent: bool,
        },
    }
}

/// Makes new [`ReplayBody`] copies of one request body, as long as it is
/// replayable.
pub struct Replayer<B> {
    // `None`: the body was empty from the start; replays are `Empty`.
    shared: Option<Arc<Shared<B>>>,
}

struct Shared<B> {
    state: Mutex<State<B>>,
    size_hint: SizeHint,
}

struct State<B> {
    // The original body; `None` once it ended or failed.
    body: Option<Pin<Box<B>>>,
    chunks: Vec<Bytes>,
    buffered: usize,
    max_bytes: usize,
    trailers: Option<HeaderMap>,
    // The original body ended (all data and trailers read).
    done: bool,
    // Outgrew the buffer, or the original body failed: no more replays.
    unreplayable: bool,
    // The newest copy; older ones are superseded.
    active: u64,
    next_id: u64,
}

/// The error of a [`ReplayBody`] copy that can no longer be read: a newer
/// attempt superseded it, or the original body failed or panicked earlier.
#[derive(Debug)]
pub struct ReplayError(&'static str);

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ReplayError {}

const SUPERSEDED: ReplayError = ReplayError("request body superseded by a newer attempt");
const BROKEN: ReplayError = ReplayError("request body failed in an earlier attempt");

impl<B> Shared<B> {
    fn lock(&self) -> (MutexGuard<'_, State<B>>, bool) {
        match self.state.lock() {
            Ok(g) => (g, false),
            // Only the original body's poll runs under the lock: it panicked.
            Err(poisoned) => {
                let mut g = poisoned.into_inner();
                g.unreplayable = true;
                g.chunks = Vec::new();
                (g, true)
            }
        }
    }
}

impl<B: Body> ReplayBody<B> {
    /// Wraps `body` so that it can be replayed (see
    /// [`replayer`](ReplayBody::replayer)) — unless it is empty or its size
    /// hint already says it is longer than `max_bytes`: it is then passed
    /// through untouched (an empty body still replays, as empty).
    pub fn new(body: B, max_bytes: usize) -> ReplayBody<B> {
        if body.is_end_stream() {
            return ReplayBody {
                inner: Inner::EmptyOrigin { body },
            };
        }
        let size_hint = body.size_hint();
        if size_hint.lower() > max_bytes as u64 {
            return ReplayBody::passthrough(body);
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                body: Some(Box::pin(body)),
                chunks: Vec::new(),
                buffered: 0,
                max_bytes,
                trailers: None,
                done: false,
                unreplayable: false,
                active: 1,
                next_id: 2,
            }),
            size_hint,
        });
        ReplayBody::shared(shared, 1)
    }

    /// `body` as it is, never replayed.
    pub fn passthrough(body: B) -> ReplayBody<B> {
        ReplayBody {
            inner: Inner::Passthrough { body },
        }
    }
}

impl<B> ReplayBody<B> {
    /// A [`Replayer`] making copies of this body for later attempts, or
    /// `None` when it is not replayable (passed through, or a copy).
    pub fn replayer(&self) -> Option<Replayer<B>> {
        match &self.inner {
            Inner::EmptyOrigin { .. } | Inner::Empty => Some(Replayer { shared: None }),
            Inner::Shared { shared, .. } => Some(Replayer {
                shared: Some(Arc::clone(shared)),
            }),
            Inner::Passthrough { .. } => None,
        }
    }

    fn shared(shared: Arc<Shared<B>>, id: u64) -> ReplayBody<B> {
        ReplayBody {
            inner: Inner::Shared {
                shared,
                id,
                pos: 0,
                sent: 0,
                trailers_sent: false,
            },
        }
    }
}

impl<B> Replayer<B> {
    /// A new copy of the body for the next attempt, superseding every older
    /// copy; `None` once the body is not replayable (it outgrew the buffer,
    /// or failed).
    pub fn replay(&self) -> Option<ReplayBody<B>> {
        let Some(shared) = &self.shared else {
            return Some(ReplayBody {
                inner: Inner::Empty,
            });
        };
        let id = {
            let (mut st, _) = shared.lock();
            if st.unreplayable {
                return None;
            }
            let id = st.next_id;
            st.next_id += 1;
            st.active = id;
            id
        };
        Some(ReplayBody::shared(Arc::clone(shared), id))
    }

    /// Whether [`replay`](Self::replay) can still succeed.
    pub fn is_replayable(&self) -> bool {
        self.shared
            .as_ref()
            .is_none_or(|s| !s.lock().0.unreplayable)
    }
}

impl<B> fmt::Debug for Replayer<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replayer")
            .field("replayable", &self.is_replayable())
            .finish()
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match &self.inner {
            Inner::Passthrough { .. } => "passthrough",
            Inner::EmptyOrigin { .. } | Inner::Empty => "empty",
            Inner::Shared { .. } => "replayable",
        };
        f.debug_struct("ReplayBody").field("mode", &mode).finish()
    }
}

fn to_bytes(mut data: impl Buf) -> Bytes {
    let n = data.remaining();
    data.copy_to_bytes(n)
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().inner.project() {
            InnerProj::Passthrough { body } | InnerProj::EmptyOrigin { body } => body
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map(|f| f.map_data(to_bytes)).map_err(Into::into))),
            InnerProj::Empty => Poll::Ready(None),
            InnerProj::Shared {
                shared,
                id,
                pos,
                sent,
                trailers_sent,
            } => {
                let (mut st, poisoned) = shared.lock();
                if poisoned {
                    st.body = None;
                    return Poll::Ready(Some(Err(BROKEN.into())));
                }
                if st.active != *id {
                    return Poll::Ready(Some(Err(SUPERSEDED.into())));
                }
                poll_shared(&mut st, cx, pos, sent, trailers_sent)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Passthrough { body } | Inner::EmptyOrigin { body } => body.is_end_stream(),
            Inner::Empty => true,
            Inner::Shared {
                shared,
                id,
                pos,
                trailers_sent,
                ..
            } => {
                let (st, _) = shared.lock();
                if st.active != *id || *pos < st.chunks.len() {
                    return false;
                }
                if st.done {
                    return *trailers_sent || st.trailers.is_none();
                }
                st.body.as_ref().is_some_and(Body::is_end_stream)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Passthrough { body } | Inner::EmptyOrigin { body } => body.size_hint(),
            Inner::Empty => SizeHint::with_exact(0),
            Inner::Shared { shared, sent, .. } => {
                let orig = &shared.size_hint;
                let mut hint = SizeHint::new();
                hint.set_lower(orig.lower().saturating_sub(*sent));
                if let Some(upper) = orig.upper() {
                    hint.set_upper(upper.saturating_sub(*sent));
                }
                hint
            }
        }
    }
}

fn poll_shared<B>(
    st: &mut State<B>,
    cx: &mut Context<'_>,
    pos: &mut usize,
    sent: &mut u64,
    trailers_sent: &mut bool,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    loop {
        // Play back what earlier attempts read.
        if let Some(chunk) = st.chunks.get(*pos) {
            *pos += 1;
            *sent += chunk.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        if st.done {
            if !*trailers_sent {
                *trailers_sent = true;
                if let Some(t) = &st.trailers {
                    return Poll::Ready(Some(Ok(Frame::trailers(t.clone()))));
                }
            }
            return Poll::Ready(None);
        }
        // Read on from the original body.
        let Some(body) = st.body.as_mut() else {
            return Poll::Ready(Some(Err(BROKEN.into())));
        };
        let frame = match body.as_mut().poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                st.done = true;
                st.body = None;
                continue;
            }
            Poll::Ready(Some(Err(e))) => {
                st.body = None;
                st.unreplayable = true;
                st.chunks = Vec::new();
                return Poll::Ready(Some(Err(e.into())));
            }
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                let bytes = to_bytes(data);
                *sent += bytes.len() as u64;
                keep_chunk(st, pos, &bytes);
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            if !st.unreplayable {
                st.trailers = Some(trailers.clone());
            }
            *trailers_sent = true;
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        // A frame kind this version of http-body does not know: skip it.
    }
}

/// Buffers `bytes` unless that would pass the cap; past it, drops the
/// buffer for good.
fn keep_chunk<B>(st: &mut State<B>, pos: &mut usize, bytes: &Bytes) {
    if st.unreplayable {
        return;
    }
    st.buffered = st.buffered.saturating_add(bytes.len());
    if st.buffered > st.max_bytes {
        tracing::debug!(
            max_replay_bytes = st.max_bytes,
            "request body outgrew the replay buffer; it will not be retried"
        );
        st.unreplayable = true;
        st.chunks = Vec::new();
        *pos = 0;
    } else {
        st.chunks.push(bytes.clone());
        *pos = st.chunks.len();
    }
}
