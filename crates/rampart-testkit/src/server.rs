//! [`FlakyServer`]: a real hyper 1 server on loopback whose misbehaviour is
//! scripted and seeded.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version,
};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};

/// `content-type` of gRPC replies.
const GRPC_CONTENT_TYPE: &str = "application/grpc";

/// What the server does with one request.
///
/// Built with the constructors ([`Reply::ok`], [`Reply::status`],
/// [`Reply::grpc`], [`Reply::reset`], [`Reply::hang`], [`Reply::delay`]) and
/// refined with the chaining methods ([`Reply::retry_after`],
/// [`Reply::header`], [`Reply::body`], [`Reply::after`], ...).
///
/// Header-setting methods take `&str` and **panic** on an invalid header
/// name or value: this is test code, and a typo should fail loudly.
#[derive(Clone, Debug)]
pub struct Reply {
    action: Action,
    delay: Duration,
    headers: HeaderMap,
    body: Option<Bytes>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Action {
    Status(StatusCode),
    Grpc(i32),
    GrpcOk,
    Reset,
    Hang,
}

impl Reply {
    /// `200 OK` with the server's default body (`ok <seq>`, see
    /// [`FlakyServerBuilder::body`]).
    pub fn ok() -> Self {
        Self::with_action(Action::Status(StatusCode::OK))
    }

    /// A reply with the given HTTP status and the default body for its class
    /// (`ok <seq>` for 2xx, `flaky failure <seq>` otherwise).
    ///
    /// # Panics
    ///
    /// If `code` is not a valid status code (100..=999).
    pub fn status(code: u16) -> Self {
        let status = StatusCode::from_u16(code)
            .unwrap_or_else(|_| panic!("Reply::status: invalid HTTP status code {code}"));
        Self::with_action(Action::Status(status))
    }

    /// A gRPC "trailers-only" reply: HTTP 200, `content-type:
    /// application/grpc`, `grpc-status: <code>` in the headers and an empty
    /// body. Use `Reply::grpc(0)` for gRPC success without a message.
    pub fn grpc(code: i32) -> Self {
        let mut reply = Self::with_action(Action::Grpc(code));
        reply
            .headers
            .insert(CONTENT_TYPE, HeaderValue::from_static(GRPC_CONTENT_TYPE));
        reply.headers.insert(
            HeaderName::from_static("grpc-status"),
            HeaderValue::from(code),
        );
        reply
    }

    /// A complete gRPC success: HTTP 200, `content-type: application/grpc`,
    /// one length-prefixed message (empty by default, which decodes as the
    /// default value of any protobuf message; see [`Reply::grpc_payload`])
    /// and `grpc-status: 0` in the trailers. This is what a tonic unary
    /// client needs to see `Ok`.
    pub fn grpc_ok() -> Self {
        let mut reply = Self::with_action(Action::GrpcOk);
        reply
            .headers
            .insert(CONTENT_TYPE, HeaderValue::from_static(GRPC_CONTENT_TYPE));
        reply
    }

    /// Sets the body to one gRPC message frame (uncompressed flag, 4-byte
    /// big-endian length, then `message`: an encoded protobuf message).
    /// Meant for [`Reply::grpc_ok`].
    ///
    /// # Panics
    ///
    /// If `message` is 4 GiB or more.
    pub fn grpc_payload(self, message: &[u8]) -> Self {
        let len = u32::try_from(message.len()).expect("gRPC message over 4 GiB");
        let mut frame = Vec::with_capacity(5 + message.len());
        frame.push(0);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(message);
        self.body(frame)
    }

    /// Close the connection without sending a response: the TCP connection
    /// is dropped, so the client sees a connection error, not a status. On
    /// HTTP/2 every other request in flight on that connection fails too
    /// (as when a real server process dies).
    pub fn reset() -> Self {
        Self::with_action(Action::Reset)
    }

    /// Never answer (until the server is dropped). For timeout tests.
    ///
    /// A hanging reply keeps [`FlakyServer::shutdown`] waiting; drop the
    /// server instead, or bound the shutdown with a timeout.
    pub fn hang() -> Self {
        Self::with_action(Action::Hang)
    }

    /// `reply`, sent after an extra `delay` (on top of the server's
    /// configured latency). Same as `reply.after(delay)`.
    pub fn delay(delay: Duration, reply: Reply) -> Self {
        reply.after(delay)
    }

    /// Adds `delay` before this reply is sent (delays add up).
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = self.delay.saturating_add(delay);
        self
    }

    /// Adds a `Retry-After` header (any string: seconds, an HTTP-date, or
    /// garbage to test parsers).
    pub fn retry_after(self, value: &str) -> Self {
        self.header(RETRY_AFTER.as_str(), value)
    }

    /// Adds a `grpc-message` header.
    pub fn grpc_message(self, message: &str) -> Self {
        self.header("grpc-message", message)
    }

    /// Adds a `grpc-retry-pushback-ms` header. Takes anything displayable so
    /// that negative or garbled values can be sent too (`-1`, `"soon"`).
    pub fn grpc_pushback_ms(self, value: impl fmt::Display) -> Self {
        self.header("grpc-retry-pushback-ms", &value.to_string())
    }

    /// Appends a response header.
    ///
    /// # Panics
    ///
    /// If `name` or `value` is not a valid header name / value.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|_| panic!("Reply::header: invalid header name {name:?}"));
        let value = HeaderValue::from_str(value)
            .unwrap_or_else(|_| panic!("Reply::header: invalid header value {value:?}"));
        self.headers.append(name, value);
        self
    }

    /// Sets the response body (replacing the default one).
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// The HTTP status this reply sends: `None` for [`Reply::reset`] and
    /// [`Reply::hang`], `200` for gRPC replies.
    pub fn status_code(&self) -> Option<StatusCode> {
        match self.action {
            Action::Status(s) => Some(s),
            Action::Grpc(_) | Action::GrpcOk => Some(StatusCode::OK),
            Action::Reset | Action::Hang => None,
        }
    }

    /// The gRPC status code, for [`Reply::grpc`] and [`Reply::grpc_ok`]
    /// replies.
    pub fn grpc_status(&self) -> Option<i32> {
        match self.action {
            Action::Grpc(code) => Some(code),
            Action::GrpcOk => Some(0),
            Action::Status(_) | Action::Reset | Action::Hang => None,
        }
    }

    /// Whether this reply resets the connection instead of answering.
    pub fn is_reset(&self) -> bool {
        self.action == Action::Reset
    }

    /// Whether this reply never answers.
    pub fn is_hang(&self) -> bool {
        self.action == Action::Hang
    }

    /// Whether this reply is a success: a 2xx status, or gRPC status 0.
    pub fn is_success(&self) -> bool {
        match self.action {
            Action::Status(s) => s.is_success(),
            Action::Grpc(code) => code == 0,
            Action::GrpcOk => true,
            Action::Reset | Action::Hang => false,
        }
    }

    /// The extra delay of this reply (not counting the server's latency).
    pub fn extra_delay(&self) -> Duration {
        self.delay
    }

    /// The headers this reply adds.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    fn with_action(action: Action) -> Self {
        Self {
            action,
            delay: Duration::ZERO,
            headers: HeaderMap::new(),
            body: None,
        }
    }
}

/// Who decided the reply to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplySource {
    /// The next entry of the explicit script ([`FlakyServerBuilder::script`],
    /// [`FlakyServer::push_script`]).
    Script,
    /// The [`FlakyServerBuilder::handler`] hook.
    Handler,
    /// The seeded random behaviour (failure / reset ratios).
    Random,
}

/// One request as the server saw it (the whole body is read before the
/// reply is decided).
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Arrival order, starting at 0 (assigned once the body has been read).
    pub seq: usize,
    /// When the request head arrived.
    pub at: Instant,
    /// Request method.
    pub method: Method,
    /// Request URI as received (origin form for HTTP/1, e.g. `/path?q`).
    pub uri: Uri,
    /// HTTP version (`HTTP/1.1` or `HTTP/2.0`).
    pub version: Version,
    /// Request headers.
    pub headers: HeaderMap,
    /// The full request body.
    pub body: Bytes,
    /// Requests in flight when this one arrived, itself included.
    pub inflight: usize,
    /// The reply given. `None` only inside the [`FlakyServerBuilder::handler`]
    /// hook (the reply is not decided yet); always `Some` in
    /// [`FlakyServer::requests`].
    pub reply: Option<Reply>,
    /// Who decided the reply; `None` only inside the handler hook.
    pub source: Option<ReplySource>,
}

impl Recorded {
    /// A request header as a string, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type Handler = Arc<dyn Fn(&Recorded) -> Option<Reply> + Send + Sync>;

/// Configuration of a [`FlakyServer`]; see [`FlakyServer::builder`].
#[must_use = "call .start().await to run the server"]
pub struct FlakyServerBuilder {
    seed: u64,
    failure_ratio: f64,
    reset_ratio: f64,
    failure_status: StatusCode,
    retry_after: Option<String>,
    grpc_status: Option<i32>,
    grpc_message: Option<String>,
    grpc_pushback_ms: Option<String>,
    latency: Duration,
    latency_per_inflight: Duration,
    body: Option<Bytes>,
    script: VecDeque<Reply>,
    handler: Option<Handler>,
}

impl fmt::Debug for FlakyServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlakyServerBuilder")
            .field("seed", &self.seed)
            .field("failure_ratio", &self.failure_ratio)
            .field("reset_ratio", &self.reset_ratio)
            .field("failure_status", &self.failure_status)
            .field("retry_after", &self.retry_after)
            .field("grpc_status", &self.grpc_status)
            .field("latency", &self.latency)
            .field("latency_per_inflight", &self.latency_per_inflight)
            .field("script_len", &self.script.len())
            .field("handler", &self.handler.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for FlakyServerBuilder {
    fn default() -> Self {
        Self {
            seed: 0,
            failure_ratio: 0.0,
            reset_ratio: 0.0,
            failure_status: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: None,
            grpc_status: None,
            grpc_message: None,
            grpc_pushback_ms: None,
            latency: Duration::ZERO,
            latency_per_inflight: Duration::ZERO,
            body: None,
            script: VecDeque::new(),
            handler: None,
        }
    }
}

fn clamp_ratio(r: f64) -> f64 {
    if r.is_nan() { 0.0 } else { r.clamp(0.0, 1.0) }
}

impl FlakyServerBuilder {
    /// Seed of the random behaviour (default 0). The same seed gives the same
    /// sequence of random outcomes: the n-th request (by arrival) always
    /// gets the n-th draw, whether or not a script or handler overrides it.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Fraction of requests (0.0..=1.0) that fail with
    /// [`failure_status`](Self::failure_status) (or the gRPC failure if
    /// [`grpc_status`](Self::grpc_status) is set). Default 0.
    pub fn failure_ratio(mut self, ratio: f64) -> Self {
        self.failure_ratio = clamp_ratio(ratio);
        self
    }

    /// Fraction of requests (0.0..=1.0) answered with [`Reply::reset`].
    /// Default 0. Resets are drawn first: with `reset_ratio(0.2)` and
    /// `failure_ratio(0.3)`, 20% reset, 30% fail, 50% succeed.
    pub fn reset_ratio(mut self, ratio: f64) -> Self {
        self.reset_ratio = clamp_ratio(ratio);
        self
    }

    /// Status of random HTTP failures (default `503 Service Unavailable`).
    pub fn failure_status(mut self, status: StatusCode) -> Self {
        self.failure_status = status;
        self
    }

    /// `Retry-After` value attached to random HTTP failures.
    ///
    /// # Panics
    ///
    /// At [`start`](Self::start), if the value is not a valid header value.
    pub fn retry_after(mut self, value: impl Into<String>) -> Self {
        self.retry_after = Some(value.into());
        self
    }

    /// Make the random behaviour gRPC-style: failures become trailers-only
    /// replies (HTTP 200, `content-type: application/grpc`, `grpc-status:
    /// <code>` in the headers; e.g. 14 UNAVAILABLE or 8 RESOURCE_EXHAUSTED)
    /// and successes become [`Reply::grpc_ok`] (an empty message and
    /// `grpc-status: 0` trailers), so a tonic client sees `Ok`.
    pub fn grpc_status(mut self, code: i32) -> Self {
        self.grpc_status = Some(code);
        self
    }

    /// `grpc-message` attached to random gRPC failures.
    pub fn grpc_message(mut self, message: impl Into<String>) -> Self {
        self.grpc_message = Some(message.into());
        self
    }

    /// `grpc-retry-pushback-ms` attached to random gRPC failures (anything
    /// displayable, so `-1` or garbage can be tested too).
    pub fn grpc_pushback_ms(mut self, value: impl fmt::Display) -> Self {
        self.grpc_pushback_ms = Some(value.to_string());
        self
    }

    /// Fixed latency added to every reply (default zero).
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Latency that grows with load: each reply waits
    /// `latency + per_inflight × in-flight` (in-flight counted when the
    /// reply is decided, itself included), so an adaptive concurrency limiter
    /// can find the knee.
    pub fn latency_per_inflight(mut self, per_inflight: Duration) -> Self {
        self.latency_per_inflight = per_inflight;
        self
    }

    /// Body of successful replies that set none (default `ok <seq>`).
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Explicit replies, consumed one per request in arrival order; they take
    /// precedence over the handler and the random behaviour. Appends to any
    /// script given before.
    pub fn script(mut self, replies: impl IntoIterator<Item = Reply>) -> Self {
        self.script.extend(replies);
        self
    }

    /// A hook consulted for every request the script does not cover:
    /// `Some(reply)` decides, `None` falls back to the random behaviour.
    pub fn handler<F>(mut self, handler: F) -> Self
    where
        F: Fn(&Recorded) -> Option<Reply> + Send + Sync + 'static,
    {
        self.handler = Some(Arc::new(handler));
        self
    }

    /// Binds `127.0.0.1:0` and starts serving (HTTP/1.1 and HTTP/2 with
    /// prior knowledge, i.e. h2c, auto-detected per connection).
    ///
    /// # Panics
    ///
    /// If a configured header value is invalid.
    pub async fn start(self) -> io::Result<FlakyServer> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let hv = |what: &str, v: String| {
            HeaderValue::try_from(v)
                .unwrap_or_else(|e| panic!("FlakyServerBuilder: invalid {what} value: {e}"))
        };
        let random_failure = if let Some(code) = self.grpc_status {
            let mut r = Reply::grpc(code);
            if let Some(m) = self.grpc_message {
                r.headers.insert("grpc-message", hv("grpc-message", m));
            }
            if let Some(p) = self.grpc_pushback_ms {
                r.headers
                    .insert("grpc-retry-pushback-ms", hv("grpc-retry-pushback-ms", p));
            }
            r
        } else {
            let mut r = Reply::with_action(Action::Status(self.failure_status));
            if let Some(ra) = self.retry_after {
                r.headers.insert(RETRY_AFTER, hv("retry-after", ra));
            }
            r
        };
        let (phase, _) = watch::channel(Phase::Running);
        let shared = Arc::new(Shared {
            config: Config {
                failure_ratio: self.failure_ratio,
                reset_ratio: self.reset_ratio,
                random_failure,
                grpc: self.grpc_status.is_some(),
                latency: self.latency,
                latency_per_inflight: self.latency_per_inflight,
                body: self.body,
            },
            handler: self.handler,
            state: Mutex::new(State {
                rng: SmallRng::seed_from_u64(self.seed),
                next_seq: 0,
                script: self.script,
                requests: Vec::new(),
            }),
            inflight: AtomicUsize::new(0),
            peak_inflight: AtomicUsize::new(0),
            phase,
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(FlakyServer {
            addr,
            shared,
            task: Some(task),
        })
    }
}

struct Config {
    failure_ratio: f64,
    reset_ratio: f64,
    random_failure: Reply,
    grpc: bool,
    latency: Duration,
    latency_per_inflight: Duration,
    body: Option<Bytes>,
}

struct State {
    rng: SmallRng,
    next_seq: usize,
    script: VecDeque<Reply>,
    requests: Vec<Recorded>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    Draining,
    Stopped,
}

struct Shared {
    config: Config,
    handler: Option<Handler>,
    state: Mutex<State>,
    inflight: AtomicUsize,
    peak_inflight: AtomicUsize,
    phase: watch::Sender<Phase>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking handler must not poison the recorder for the test.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running scripted HTTP/1.1 + HTTP/2 (h2c) server on `127.0.0.1`.
///
/// Dropping it stops it at once (the accept loop and all connections are
/// aborted, hanging replies are reset); [`FlakyServer::shutdown`] stops it
/// gracefully.
///
/// Random outcomes are decided in arrival order from one seeded
/// [`SmallRng`]: with requests sent one after another, a seed always gives
/// the same sequence. With concurrent requests the arrival order (and so
/// which request gets which draw) is up to the scheduler.
pub struct FlakyServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for FlakyServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlakyServer")
            .field("addr", &self.addr)
            .field("request_count", &self.request_count())
            .field("inflight", &self.inflight())
            .finish_non_exhaustive()
    }
}

impl FlakyServer {
    /// A builder with the defaults: always `200 OK`, no latency, seed 0.
    pub fn builder() -> FlakyServerBuilder {
        FlakyServerBuilder::default()
    }

    /// The bound address (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port><path>`; a missing leading `/` is added.
    pub fn url(&self, path: &str) -> String {
        let slash = if path.starts_with('/') { "" } else { "/" };
        format!("http://{}{slash}{path}", self.addr)
    }

    /// [`url`](Self::url) parsed as a [`Uri`].
    ///
    /// # Panics
    ///
    /// If `path` does not make a valid URI.
    pub fn uri(&self, path: &str) -> Uri {
        let url = self.url(path);
        url.parse()
            .unwrap_or_else(|e| panic!("FlakyServer::uri: invalid uri {url:?}: {e}"))
    }

    /// Every request received so far (body fully read), in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        let mut all = self.shared.state().requests.clone();
        all.sort_by_key(|r| r.seq);
        all
    }

    /// Number of requests received so far (body fully read).
    pub fn request_count(&self) -> usize {
        self.shared.state().requests.len()
    }

    /// Requests being handled right now.
    pub fn inflight(&self) -> usize {
        self.shared.inflight.load(Ordering::SeqCst)
    }

    /// The most requests ever in flight at once.
    pub fn peak_inflight(&self) -> usize {
        self.shared.peak_inflight.load(Ordering::SeqCst)
    }

    /// Appends replies to the script at run time.
    pub fn push_script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.state().script.extend(replies);
    }

    /// Script entries not consumed yet.
    pub fn script_remaining(&self) -> usize {
        self.shared.state().script.len()
    }

    /// Graceful shutdown: stop accepting, let requests in flight finish
    /// (HTTP/1 keep-alive connections close after their current response,
    /// HTTP/2 connections get GOAWAY), then return.
    ///
    /// Waits as long as the slowest request in flight; a [`Reply::hang`]
    /// makes it wait forever, so bound it with `tokio::time::timeout` or
    /// drop the server instead.
    pub async fn shutdown(mut self) {
        self.shared.phase.send_replace(Phase::Draining);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.shared.phase.send_replace(Phase::Stopped);
    }
}

impl Drop for FlakyServer {
    fn drop(&mut self) {
        self.shared.phase.send_replace(Phase::Stopped);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Waits until the phase satisfies `pred` (or the sender is gone).
async fn reached(phase: &mut watch::Receiver<Phase>, pred: impl Fn(Phase) -> bool) {
    // The returned `Ref` is not `Send`: drop it here, not in a `select!`.
    let _ = phase.wait_for(|p| pred(*p)).await;
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut phase = shared.phase.subscribe();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    conns.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                // E.g. out of file descriptors: do not spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            () = reached(&mut phase, |p| p != Phase::Running) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut phase = shared.phase.subscribe();
    let builder = auto::Builder::new(TokioExecutor::new());
    // A reset reply fires this: the connection is dropped (TCP closed), so
    // the client sees a connection error on HTTP/1 and HTTP/2 alike.
    let kill = Arc::new(Notify::new());
    let svc_shared = Arc::clone(&shared);
    let svc_kill = Arc::clone(&kill);
    let service =
        service_fn(move |req| handle(Arc::clone(&svc_shared), Arc::clone(&svc_kill), req));
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = kill.notified() => return,
        () = reached(&mut phase, |p| p != Phase::Running) => {}
    }
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn.as_mut() => {}
        () = kill.notified() => {}
    }
}

/// The error a reset reply makes the service return (the connection task is
/// also told to drop the connection).
#[derive(Debug)]
struct ResetConnection;

impl fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("flaky server: connection reset on purpose")
    }
}

impl std::error::Error for ResetConnection {}

struct InflightGuard(Arc<Shared>);

impl InflightGuard {
    fn enter(shared: &Arc<Shared>) -> (Self, usize) {
        let now = shared.inflight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak_inflight.fetch_max(now, Ordering::SeqCst);
        (Self(Arc::clone(shared)), now)
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

type HandleFuture =
    Pin<Box<dyn Future<Output = Result<Response<ReplyBody>, ResetConnection>> + Send>>;

fn handle(shared: Arc<Shared>, kill: Arc<Notify>, req: Request<Incoming>) -> HandleFuture {
    Box::pin(async move {
        let mut phase = shared.phase.subscribe();
        let res = tokio::select! {
            res = serve_one(&shared, req) => res,
            () = reached(&mut phase, |p| p == Phase::Stopped) => Err(ResetConnection),
        };
        if res.is_err() {
            kill.notify_one();
            // Let the connection task drop the connection before hyper turns
            // this error into an HTTP/2 RST_STREAM (INTERNAL_ERROR): the
            // client must see a dead connection, not a stream error. Dropping
            // the connection drops this future; the sleep only bounds it.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        res
    })
}

async fn serve_one(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<ReplyBody>, ResetConnection> {
    let at = Instant::now();
    let (_guard, arrival_inflight) = InflightGuard::enter(shared);
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|_| ResetConnection)?
        .to_bytes();

    let (seq, draw, scripted) = {
        let mut st = shared.state();
        let seq = st.next_seq;
        st.next_seq += 1;
        let draw: f64 = st.rng.random();
        (seq, draw, st.script.pop_front())
    };
    let mut recorded = Recorded {
        seq,
        at,
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts.headers,
        body,
        inflight: arrival_inflight,
        reply: None,
        source: None,
    };
    let cfg = &shared.config;
    let (reply, source) = if let Some(r) = scripted {
        (r, ReplySource::Script)
    } else if let Some(r) = shared.handler.as_ref().and_then(|h| h(&recorded)) {
        (r, ReplySource::Handler)
    } else if draw < cfg.reset_ratio {
        (Reply::reset(), ReplySource::Random)
    } else if draw < cfg.reset_ratio + cfg.failure_ratio {
        (cfg.random_failure.clone(), ReplySource::Random)
    } else if cfg.grpc {
        (Reply::grpc_ok(), ReplySource::Random)
    } else {
        (Reply::ok(), ReplySource::Random)
    };
    recorded.reply = Some(reply.clone());
    recorded.source = Some(source);
    shared.state().requests.push(recorded);

    let load = u32::try_from(shared.inflight.load(Ordering::SeqCst)).unwrap_or(u32::MAX);
    let wait = cfg
        .latency
        .saturating_add(cfg.latency_per_inflight.saturating_mul(load))
        .saturating_add(reply.delay);
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    build_response(cfg, seq, reply).await
}

async fn build_response(
    cfg: &Config,
    seq: usize,
    reply: Reply,
) -> Result<Response<ReplyBody>, ResetConnection> {
    let mut trailers = None;
    let (status, body) = match reply.action {
        Action::Reset => return Err(ResetConnection),
        Action::Hang => match std::future::pending::<Infallible>().await {},
        Action::Grpc(_) => (StatusCode::OK, reply.body.unwrap_or_default()),
        Action::GrpcOk => {
            let mut t = HeaderMap::new();
            t.insert("grpc-status", HeaderValue::from_static("0"));
            trailers = Some(t);
            let empty_message = Bytes::from_static(&[0, 0, 0, 0, 0]);
            (StatusCode::OK, reply.body.unwrap_or(empty_message))
        }
        Action::Status(status) => {
            let body = reply.body.unwrap_or_else(|| {
                if status.is_success() {
                    cfg.body
                        .clone()
                        .unwrap_or_else(|| Bytes::from(format!("ok {seq}")))
                } else {
                    Bytes::from(format!("flaky failure {seq}"))
                }
            });
            (status, body)
        }
    };
    let body = ReplyBody {
        data: Some(body).filter(|b| !b.is_empty()),
        trailers,
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if matches!(reply.action, Action::Status(_)) && !reply.headers.contains_key(CONTENT_TYPE) {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    headers.extend(reply.headers);
    Ok(response)
}

/// Response body: at most one data frame, then optional trailers.
struct ReplyBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = if let Some(data) = self.data.take() {
            Some(Frame::data(data))
        } else {
            self.trailers.take().map(Frame::trailers)
        };
        std::task::Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = SizeHint::new();
        let len = self.data.as_ref().map_or(0, |d| d.len() as u64);
        hint.set_lower(len);
        if self.trailers.is_none() {
            hint.set_upper(len);
        }
        hint
    }
}
