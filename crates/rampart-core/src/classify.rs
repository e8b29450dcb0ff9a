//! Deciding what a result means: success, retryable (perhaps after a delay),
//! or a failure not worth repeating.
//!
//! Classification is split in two, like tower-http's `MakeClassifier`: a
//! [`Classify`] looks at the request once (is the method idempotent? is it
//! gRPC?) and returns a small [`ClassifyResult`] that judges each result, so a
//! layer need not keep the request around.
//!
//! ```
//! use rampart_core::classify::{Classify, ClassifyResult, HttpClassify, Outcome};
//! use http::{Request, Response, StatusCode};
//!
//! let get = Request::get("/").body(()).unwrap();
//! let judge = HttpClassify::default().classify_request(&get);
//! let busy = Response::builder().status(503).header("retry-after", "2").body(()).unwrap();
//! assert_eq!(
//!     judge.classify(Ok(&busy)),
//!     Outcome::Retryable { after: Some(std::time::Duration::from_secs(2)) }
//! );
//!
//! let post = Request::post("/").body(()).unwrap();
//! let judge = HttpClassify::default().classify_request(&post);
//! assert_eq!(judge.classify(Ok(&busy)), Outcome::Fatal); // POST is not idempotent
//! ```

use crate::codec::{GRPC_RETRY_PUSHBACK_MS, Pushback, parse_grpc_pushback, parse_retry_after};
use crate::grpc::{Code, is_grpc_request};
use crate::{Error, ErrorKind};
use http::{Method, StatusCode};
use std::time::{Duration, SystemTime};

/// An error as a classifier sees it.
pub type ErrorRef<'a> = &'a (dyn std::error::Error + 'static);

/// What a result means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It worked.
    Success,
    /// It failed in a way worth repeating, after `after` if the peer said so.
    Retryable {
        /// The delay the peer asked for (`Retry-After`, gRPC pushback).
        after: Option<Duration>,
    },
    /// It failed, and repeating it will not help (or is not safe).
    Fatal,
}

impl Outcome {
    /// True for [`Outcome::Success`].
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Success)
    }
    /// True for [`Outcome::Retryable`].
    pub fn is_retryable(self) -> bool {
        matches!(self, Outcome::Retryable { .. })
    }
}

/// Looks at a request once and returns the judge of its results.
pub trait Classify<Req, Res> {
    /// The per-request judge.
    type Classifier: ClassifyResult<Res>;
    /// Looks at the request.
    fn classify_request(&self, req: &Req) -> Self::Classifier;
}

/// Judges the results of one request (each attempt, when retrying).
pub trait ClassifyResult<Res> {
    /// What `result` means.
    fn classify(&self, result: Result<&Res, ErrorRef<'_>>) -> Outcome;
}

/// The facts about an error that decide whether it may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request never reached the peer (refused connection, local shed):
    /// safe to retry for any method.
    NeverSent {
        /// A delay asked for by a local limit.
        after: Option<Duration>,
    },
    /// A transport failure after the request may have been sent: safe to
    /// retry only when the request is idempotent.
    MaybeSent,
    /// A per-attempt timeout fired; the request may have reached the peer.
    /// HTTP treats it as [`MaybeSent`](ErrorClass::MaybeSent); gRPC as
    /// DEADLINE_EXCEEDED rather than UNAVAILABLE.
    TimedOut,
    /// Deadline passed, cancelled, closed, retries already exhausted, the
    /// request itself invalid: never retry.
    Final,
}

/// Sorts an error by walking its source chain: rampart [`Error`] kinds,
/// `io::Error` kinds, and (feature `hyper-util`) hyper-util's connect errors.
pub fn classify_error(e: ErrorRef<'_>) -> ErrorClass {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<Error>() {
            match r.kind() {
                ErrorKind::Overloaded | ErrorKind::RateLimited => {
                    return ErrorClass::NeverSent {
                        after: r.retry_after(),
                    };
                }
                ErrorKind::Timeout => return ErrorClass::TimedOut,
                ErrorKind::Inner => {}
                ErrorKind::DeadlineExceeded
                | ErrorKind::Cancelled
                | ErrorKind::Closed
                | ErrorKind::RetriesExhausted
                | ErrorKind::InvalidRequest => return ErrorClass::Final,
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return ErrorClass::NeverSent { after: None };
        }
        #[cfg(feature = "hyper-util")]
        if let Some(h) = e.downcast_ref::<hyper_util::client::legacy::Error>()
            && h.is_connect()
        {
            return ErrorClass::NeverSent { after: None };
        }
        next = e.source();
    }
    ErrorClass::MaybeSent
}

/// The outcome of an error: a delay longer than `max_after` (a local limit's
/// hint) makes it fatal, as a long `Retry-After` does.
///
/// `retry_maybe_sent` and `retry_timed_out` say whether a request that may
/// have reached the peer is retried after a transport failure or after a
/// per-attempt timeout.
fn error_outcome(
    e: ErrorRef<'_>,
    retry_maybe_sent: bool,
    retry_timed_out: bool,
    max_after: Duration,
) -> Outcome {
    match classify_error(e) {
        ErrorClass::NeverSent { after: Some(d) } if d > max_after => Outcome::Fatal,
        ErrorClass::NeverSent { after } => Outcome::Retryable { after },
        ErrorClass::MaybeSent if retry_maybe_sent => Outcome::Retryable { after: None },
        ErrorClass::TimedOut if retry_timed_out => Outcome::Retryable { after: None },
        ErrorClass::MaybeSent | ErrorClass::TimedOut | ErrorClass::Final => Outcome::Fatal,
    }
}

const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// HTTP classification.
///
/// - Only idempotent methods are retried by default (GET HEAD OPTIONS PUT
///   DELETE TRACE); [`retry_methods`](HttpClassify::retry_methods) changes the
///   set, and a request carrying the [`Idempotent`] extension (a POST with an
///   idempotency key) counts as idempotent whatever its method.
/// - 408, 429, 502, 503, 504 are retryable; other 4xx/5xx are fatal; the rest
///   is success.
/// - `Retry-After` (delta-seconds or HTTP-date) becomes the delay; one longer
///   than [`max_retry_after`](HttpClassify::max_retry_after) (default 60 s)
///   makes the failure fatal instead of being waited on.
/// - An error showing the request never left (refused connection,
///   hyper-util's connect error, a local shed) is retryable for any method;
///   one after which the request may have been sent (a reset connection, a
///   per-attempt timeout) only for idempotent requests.
///
/// [`GrpcClassify`] follows the same rule for gRPC methods.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
pub struct HttpClassify {
    #[cfg_attr(feature = "serde", serde(skip, default = "default_methods"))]
    methods: MethodSet,
    #[cfg_attr(feature = "serde", serde(skip, default = "default_statuses"))]
    statuses: StatusSet,
    max_retry_after: Duration,
}

#[cfg(feature = "serde")]
fn default_methods() -> MethodSet {
    HttpClassify::default().methods
}
#[cfg(feature = "serde")]
fn default_statuses() -> StatusSet {
    HttpClassify::default().statuses
}

/// Bitset of the nine standard methods; extension methods are never
/// idempotent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MethodSet(u16);

impl MethodSet {
    fn bit(m: &Method) -> u16 {
        let i = match *m {
            Method::GET => 0,
            Method::HEAD => 1,
            Method::OPTIONS => 2,
            Method::PUT => 3,
            Method::DELETE => 4,
            Method::TRACE => 5,
            Method::POST => 6,
            Method::PATCH => 7,
            Method::CONNECT => 8,
            _ => return 0,
        };
        1 << i
    }
    fn of(methods: &[Method]) -> MethodSet {
        MethodSet(methods.iter().map(MethodSet::bit).fold(0, |a, b| a | b))
    }
    /// Every method, extension methods included.
    const ANY: MethodSet = MethodSet(u16::MAX);
    fn contains(self, m: &Method) -> bool {
        self == MethodSet::ANY || self.0 & MethodSet::bit(m) != 0
    }
}

/// Bitset of statuses 400..=599.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StatusSet([u64; 4]);

impl StatusSet {
    fn of(statuses: &[StatusCode]) -> StatusSet {
        let mut s = StatusSet([0; 4]);
        for st in statuses {
            if let Some(i) = st.as_u16().checked_sub(400).filter(|i| *i < 200) {
                s.0[usize::from(i / 64)] |= 1 << (i % 64);
            }
        }
        s
    }
    fn contains(self, st: StatusCode) -> bool {
        st.as_u16()
            .checked_sub(400)
            .filter(|i| *i < 200)
            .is_some_and(|i| self.0[usize::from(i / 64)] & (1 << (i % 64)) != 0)
    }
}

impl Default for HttpClassify {
    fn default() -> Self {
        HttpClassify {
            methods: MethodSet::of(&[
                Method::GET,
                Method::HEAD,
                Method::OPTIONS,
                Method::PUT,
                Method::DELETE,
                Method::TRACE,
            ]),
            statuses: StatusSet::of(&[
                StatusCode::REQUEST_TIMEOUT,
                StatusCode::TOO_MANY_REQUESTS,
                StatusCode::BAD_GATEWAY,
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::GATEWAY_TIMEOUT,
            ]),
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
        }
    }
}

impl HttpClassify {
    /// The default: idempotent methods; 408 429 502 503 504; 60 s cap.
    pub fn new() -> Self {
        Self::default()
    }
    /// The methods whose requests may be retried after they may have been
    /// sent. (Requests that were never sent are retryable for any method.)
    pub fn retry_methods(mut self, methods: &[Method]) -> Self {
        self.methods = MethodSet::of(methods);
        self
    }
    /// Treats every method as safe to repeat, extension methods included.
    ///
    /// For judging load rather than retrying (an adaptive concurrency limit
    /// wants a POST's 503 counted as an overload signal too), or for APIs
    /// whose writes are idempotent (idempotency keys).
    pub fn retry_any_method(mut self) -> Self {
        self.methods = MethodSet::ANY;
        self
    }
    /// The response statuses (in 400..=599) that are retryable.
    pub fn retry_statuses(mut self, statuses: &[StatusCode]) -> Self {
        self.statuses = StatusSet::of(statuses);
        self
    }
    /// The longest `Retry-After` that is honoured; longer makes the failure
    /// fatal (returned, not waited on).
    pub fn max_retry_after(mut self, cap: Duration) -> Self {
        self.max_retry_after = cap;
        self
    }
}

/// The per-request judge of [`HttpClassify`].
#[derive(Clone, Copy, Debug)]
pub struct HttpClassifier {
    idempotent: bool,
    statuses: StatusSet,
    max_retry_after: Duration,
}

impl<B, B2> Classify<http::Request<B>, http::Response<B2>> for HttpClassify {
    type Classifier = HttpClassifier;
    fn classify_request(&self, req: &http::Request<B>) -> HttpClassifier {
        HttpClassify::classify_request(self, req)
    }
}

impl HttpClassify {
    /// Looks at a request: keeps whether its method may be retried.
    /// (The same as the [`Classify`] method, without naming the response type.)
    pub fn classify_request<B>(&self, req: &http::Request<B>) -> HttpClassifier {
        HttpClassifier {
            idempotent: self.methods.contains(req.method())
                || req.extensions().get::<Idempotent>().is_some(),
            statuses: self.statuses,
            max_retry_after: self.max_retry_after,
        }
    }
}

impl<B> ClassifyResult<http::Response<B>> for HttpClassifier {
    fn classify(&self, result: Result<&http::Response<B>, ErrorRef<'_>>) -> Outcome {
        match result {
            Err(e) => error_outcome(e, self.idempotent, self.idempotent, self.max_retry_after),
            Ok(res) => {
                let status = res.status();
                if self.statuses.contains(status) {
                    if !self.idempotent {
                        return Outcome::Fatal;
                    }
                    let after = res
                        .headers()
                        .get(http::header::RETRY_AFTER)
                        .and_then(|v| parse_retry_after(v.as_bytes(), SystemTime::now()));
                    match after {
                        Some(d) if d > self.max_retry_after => Outcome::Fatal,
                        after => Outcome::Retryable { after },
                    }
                } else if status.is_client_error() || status.is_server_error() {
                    Outcome::Fatal
                } else {
                    Outcome::Success
                }
            }
        }
    }
}

/// Marks a request as safe to send twice: a request extension that makes
/// [`HttpClassify`] and [`GrpcClassify`] retry it after a failure that may
/// have happened once it was sent (a reset connection, a per-attempt
/// timeout), whatever its method.
///
/// Set it on requests whose effect does not change when repeated: reads,
/// writes carrying an idempotency key, gRPC methods declared
/// `idempotency_level = IDEMPOTENT`. With tonic, extensions of a
/// `tonic::Request` become the `http::Request`'s:
///
/// ```
/// use rampart_core::classify::{Classify, ClassifyResult, ErrorRef, GrpcClassify, Idempotent, Outcome};
/// use rampart_core::Error;
///
/// let reset = Error::from_inner(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
/// let reset: Result<&http::Response<()>, ErrorRef<'_>> = Err(&reset);
/// let mut req = http::Request::post("/shop.Orders/Create")
///     .header("content-type", "application/grpc")
///     .body(())
///     .unwrap();
/// let judge = Classify::<_, http::Response<()>>::classify_request(&GrpcClassify::new(), &req);
/// assert_eq!(judge.classify(reset), Outcome::Fatal); // may have been sent: not repeated
///
/// req.extensions_mut().insert(Idempotent);
/// let judge = Classify::<_, http::Response<()>>::classify_request(&GrpcClassify::new(), &req);
/// assert!(judge.classify(reset).is_retryable());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Idempotent;

/// gRPC classification, from the `grpc-status` in response headers
/// (trailers-only responses, which is how servers answer failures that happen
/// before any message; a status only in trailers counts as success here).
///
/// **The rule for repeating a call**, the same as [`HttpClassify`]'s with
/// "method" read as "gRPC method":
///
/// - *The server answered* with a retryable code: retryable for every
///   method, as gRPC's retry design (A6) does; the server chose the code.
///   Retryable codes: `UNAVAILABLE` by default
///   ([`retry_codes`](GrpcClassify::retry_codes) changes the set).
///   `RESOURCE_EXHAUSTED` is retried only when the server sent a valid
///   `grpc-retry-pushback-ms`.
/// - *The request never left* (refused connection, hyper-util's connect
///   error, a local shed): retryable for every method.
/// - *It may have been sent* (a reset or closed connection, any other
///   transport failure; a per-attempt timeout): retryable **only for methods
///   marked safe**, because repeating a `CreateOrder` that reached the server
///   creates two orders. A method is safe when it is in
///   [`idempotent_methods`](GrpcClassify::idempotent_methods), when the
///   request carries the [`Idempotent`] extension, or after
///   [`retry_any_method`](GrpcClassify::retry_any_method). Such a transport
///   failure is retried when `UNAVAILABLE` is in the set (gRPC reports it as
///   UNAVAILABLE), a timeout when `DEADLINE_EXCEEDED` is.
///
/// Further:
///
/// - `grpc-retry-pushback-ms`: a valid value is the delay (fatal when longer
///   than [`max_retry_after`](GrpcClassify::max_retry_after)); a negative or
///   garbled value means do not retry, as gRPC's retry design says. A
///   repeated header is malformed and not retried either (as grpc-go does,
///   and as rampart treats repeated deadline and request-id headers).
/// - A response without `grpc-status` and with a non-200 HTTP status is
///   mapped with gRPC's HTTP-to-gRPC table (502/503/504/429 → UNAVAILABLE).
///
/// ```
/// use rampart_core::classify::{Classify, ClassifyResult, ErrorRef, GrpcClassify, Outcome};
/// use rampart_core::Error;
///
/// let classify = GrpcClassify::new().idempotent_methods(["/shop.Orders/Get"]);
/// let reset = Error::from_inner(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
/// let reset: Result<&http::Response<()>, ErrorRef<'_>> = Err(&reset);
/// let call = |path: &str| {
///     let req = http::Request::post(path)
///         .header("content-type", "application/grpc")
///         .body(())
///         .unwrap();
///     Classify::<_, http::Response<()>>::classify_request(&classify, &req)
/// };
/// assert!(call("/shop.Orders/Get").classify(reset).is_retryable());
/// assert_eq!(call("/shop.Orders/Create").classify(reset), Outcome::Fatal);
///
/// // UNAVAILABLE answered by the server: retried for any method.
/// let unavailable = http::Response::builder().header("grpc-status", "14").body(()).unwrap();
/// assert!(call("/shop.Orders/Create").classify(Ok(&unavailable)).is_retryable());
/// ```
#[derive(Clone, Debug)]
pub struct GrpcClassify {
    codes: u32,
    /// Every method is safe to repeat.
    any_method: bool,
    max_retry_after: Duration,
    /// Methods listed as safe to repeat.
    listed: Option<SafeList>,
}

/// The gRPC methods listed as safe to repeat after a failure that may have
/// happened once the request was sent (`/pkg.Service/Method`, or
/// `/pkg.Service/*` for every method of a service), behind one thin
/// pointer so the classifier stays small and cheap to clone.
#[derive(Clone, Debug)]
struct SafeList(std::sync::Arc<Box<[Box<str>]>>);

impl SafeList {
    fn contains(&self, path: &str) -> bool {
        self.0.iter().any(|p| match p.strip_suffix('*') {
            Some(service) => path.starts_with(service),
            None => path == &**p,
        })
    }
}

impl Default for GrpcClassify {
    fn default() -> Self {
        GrpcClassify {
            codes: Code::Unavailable.bit(),
            any_method: false,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            listed: None,
        }
    }
}

impl GrpcClassify {
    /// The default: UNAVAILABLE retryable, 60 s pushback cap, no method safe
    /// to repeat after it may have been sent unless marked [`Idempotent`].
    pub fn new() -> Self {
        Self::default()
    }
    /// The codes that are retryable.
    pub fn retry_codes(mut self, codes: &[Code]) -> Self {
        self.codes = codes.iter().fold(0, |a, c| a | c.bit());
        self
    }
    /// The longest pushback honoured; longer makes the failure fatal.
    pub fn max_retry_after(mut self, cap: Duration) -> Self {
        self.max_retry_after = cap;
        self
    }
    /// The gRPC methods safe to repeat after a failure that may have
    /// happened once the request was sent, by path: `/pkg.Service/Method`,
    /// or `/pkg.Service/*` for every method of a service (the leading `/`
    /// may be left out). Requests carrying [`Idempotent`] stay safe too.
    /// Replaces an earlier list; an empty list leaves only the marked
    /// requests. A text that is no method path matches no request.
    pub fn idempotent_methods<I, P>(mut self, paths: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<str>,
    {
        let paths: Vec<Box<str>> = paths
            .into_iter()
            .map(|p| {
                let p = p.as_ref();
                if p.starts_with('/') {
                    p.into()
                } else {
                    format!("/{p}").into_boxed_str()
                }
            })
            .collect();
        self.listed =
            (!paths.is_empty()).then(|| SafeList(std::sync::Arc::new(paths.into_boxed_slice())));
        self
    }
    /// Treats every method as safe to repeat.
    ///
    /// For services whose every method is idempotent, or for judging load
    /// rather than retrying (an adaptive limit wants every UNAVAILABLE
    /// counted).
    pub fn retry_any_method(mut self) -> Self {
        self.any_method = true;
        self
    }
    /// Looks at a request: keeps whether its method may be repeated after a
    /// failure that may have happened once it was sent. (The same as the
    /// [`Classify`] method, without naming the response type.)
    pub fn classify_request<B>(&self, req: &http::Request<B>) -> GrpcClassifier {
        GrpcClassifier {
            codes: self.codes,
            max_retry_after: self.max_retry_after,
            safe: self.any_method
                || self
                    .listed
                    .as_ref()
                    .is_some_and(|l| l.contains(req.uri().path()))
                || req.extensions().get::<Idempotent>().is_some(),
        }
    }
}

impl<B, B2> Classify<http::Request<B>, http::Response<B2>> for GrpcClassify {
    type Classifier = GrpcClassifier;
    fn classify_request(&self, req: &http::Request<B>) -> GrpcClassifier {
        GrpcClassify::classify_request(self, req)
    }
}

/// The per-request judge of [`GrpcClassify`].
#[derive(Clone, Copy, Debug)]
pub struct GrpcClassifier {
    codes: u32,
    max_retry_after: Duration,
    /// The method may be repeated after it may have been sent.
    safe: bool,
}

impl GrpcClassifier {
    /// Whether the request's method was judged safe to repeat after a
    /// failure that may have happened once it was sent.
    pub fn is_idempotent(&self) -> bool {
        self.safe
    }
}

impl<B> ClassifyResult<http::Response<B>> for GrpcClassifier {
    fn classify(&self, result: Result<&http::Response<B>, ErrorRef<'_>>) -> Outcome {
        let res = match result {
            // gRPC reports a transport failure as UNAVAILABLE and a
            // per-attempt timeout as DEADLINE_EXCEEDED: retry each only when
            // its code is in the set, and, since the request may have been
            // sent, only for a safe method.
            Err(e) => {
                return error_outcome(
                    e,
                    self.safe && self.codes & Code::Unavailable.bit() != 0,
                    self.safe && self.codes & Code::DeadlineExceeded.bit() != 0,
                    self.max_retry_after,
                );
            }
            Ok(res) => res,
        };
        let code = match Code::from_headers(res.headers()) {
            Some(code) => code,
            None if res.status() == StatusCode::OK => return Outcome::Success,
            None => Code::from_http_status(res.status()),
        };
        if code == Code::Ok {
            return Outcome::Success;
        }
        let listed = self.codes & code.bit() != 0;
        let mut pushback = res.headers().get_all(&GRPC_RETRY_PUSHBACK_MS).iter();
        match (pushback.next(), pushback.next()) {
            // A repeated pushback is malformed: not retried (as grpc-go, and
            // as rampart treats repeated deadline and id headers).
            (Some(_), Some(_)) => Outcome::Fatal,
            (Some(v), None) => match parse_grpc_pushback(v.as_bytes()) {
                Pushback::After(d)
                    if d <= self.max_retry_after && (listed || code == Code::ResourceExhausted) =>
                {
                    Outcome::Retryable { after: Some(d) }
                }
                // Negative or garbled pushback, one past the cap, or a code
                // not retried: stop.
                Pushback::After(_) | Pushback::Stop => Outcome::Fatal,
            },
            (None, _) if listed && code != Code::ResourceExhausted => {
                Outcome::Retryable { after: None }
            }
            (None, _) => Outcome::Fatal,
        }
    }
}

/// HTTP or gRPC classification, chosen per request by its `content-type`
/// (`application/grpc…` → [`GrpcClassify`], else [`HttpClassify`]).
#[derive(Clone, Debug, Default)]
pub struct HttpOrGrpcClassify {
    /// Used for plain HTTP requests.
    pub http: HttpClassify,
    /// Used for gRPC requests.
    pub grpc: GrpcClassify,
}

/// The per-request judge of [`HttpOrGrpcClassify`].
#[derive(Clone, Copy, Debug)]
pub enum HttpOrGrpcClassifier {
    /// A plain HTTP request.
    Http(HttpClassifier),
    /// A gRPC request.
    Grpc(GrpcClassifier),
}

impl<B, B2> Classify<http::Request<B>, http::Response<B2>> for HttpOrGrpcClassify {
    type Classifier = HttpOrGrpcClassifier;
    fn classify_request(&self, req: &http::Request<B>) -> HttpOrGrpcClassifier {
        if is_grpc_request(req) {
            HttpOrGrpcClassifier::Grpc(self.grpc.classify_request(req))
        } else {
            HttpOrGrpcClassifier::Http(<HttpClassify as Classify<
                http::Request<B>,
                http::Response<B2>,
            >>::classify_request(&self.http, req))
        }
    }
}

impl<B> ClassifyResult<http::Response<B>> for HttpOrGrpcClassifier {
    fn classify(&self, result: Result<&http::Response<B>, ErrorRef<'_>>) -> Outcome {
        match self {
            HttpOrGrpcClassifier::Http(c) => c.classify(result),
            HttpOrGrpcClassifier::Grpc(c) => c.classify(result),
        }
    }
}

/// For services that are not HTTP: every `Ok` is a success; an error is
/// retryable unless it is final (deadline passed, cancelled, closed) or asks
/// for a delay longer than 60 s (a local limit's `retry_after`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorClassify;

impl<Req, Res> Classify<Req, Res> for ErrorClassify {
    type Classifier = ErrorClassify;
    fn classify_request(&self, _req: &Req) -> ErrorClassify {
        ErrorClassify
    }
}

impl<Res> ClassifyResult<Res> for ErrorClassify {
    fn classify(&self, result: Result<&Res, ErrorRef<'_>>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) => error_outcome(e, true, true, DEFAULT_MAX_RETRY_AFTER),
        }
    }
}

/// A closure as a classifier: `classify_fn(|result| ...)`.
///
/// ```
/// use rampart_core::classify::{classify_fn, Classify, ClassifyResult, Outcome};
/// use rampart_core::classify::ErrorRef;
/// let c = classify_fn(|r: Result<&u32, ErrorRef<'_>>| match r {
///     Ok(n) if *n >= 500 => Outcome::Retryable { after: None },
///     Ok(_) => Outcome::Success,
///     Err(_) => Outcome::Fatal,
/// });
/// let judge = Classify::<(), u32>::classify_request(&c, &());
/// assert!(judge.classify(Ok(&503)).is_retryable());
/// ```
pub fn classify_fn<F>(f: F) -> ClassifyFn<F> {
    ClassifyFn(f)
}

/// A classifier made of a closure; see [`classify_fn`].
#[derive(Clone, Copy, Debug)]
pub struct ClassifyFn<F>(F);

impl<Req, Res, F> Classify<Req, Res> for ClassifyFn<F>
where
    F: Fn(Result<&Res, ErrorRef<'_>>) -> Outcome + Clone,
{
    type Classifier = ClassifyFn<F>;
    fn classify_request(&self, _req: &Req) -> ClassifyFn<F> {
        self.clone()
    }
}

impl<Res, F> ClassifyResult<Res> for ClassifyFn<F>
where
    F: Fn(Result<&Res, ErrorRef<'_>>) -> Outcome,
{
    fn classify(&self, result: Result<&Res, ErrorRef<'_>>) -> Outcome {
        (self.0)(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Res = http::Response<()>;

    fn req(method: Method) -> http::Request<()> {
        http::Request::builder()
            .method(method)
            .uri("/")
            .body(())
            .unwrap()
    }
    fn grpc_req() -> http::Request<()> {
        http::Request::post("/svc/M")
            .header("content-type", "application/grpc")
            .body(())
            .unwrap()
    }
    fn res(status: u16, headers: &[(&str, &[u8])]) -> Res {
        let mut b = http::Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, http::HeaderValue::from_bytes(v).unwrap());
        }
        b.body(()).unwrap()
    }
    fn http_judge(m: Method) -> HttpClassifier {
        Classify::<_, Res>::classify_request(&HttpClassify::default(), &req(m))
    }
    fn grpc_judge(c: GrpcClassify) -> GrpcClassifier {
        Classify::<_, Res>::classify_request(&c, &grpc_req())
    }
    fn grpc_call(c: &GrpcClassify, path: &str, idempotent: bool) -> GrpcClassifier {
        let mut r = http::Request::post(path)
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        if idempotent {
            r.extensions_mut().insert(Idempotent);
        }
        Classify::<_, Res>::classify_request(c, &r)
    }
    fn reset() -> Error {
        Error::from_inner(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
    }
    fn err(e: ErrorRef<'_>) -> Result<&Res, ErrorRef<'_>> {
        Err(e)
    }
    fn refused() -> Error {
        Error::from_inner(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
    }

    #[test]
    fn http_retryable_statuses_for_idempotent_methods_only() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
            Method::TRACE,
        ] {
            for s in [408, 429, 502, 503, 504] {
                assert_eq!(
                    http_judge(m.clone()).classify(Ok(&res(s, &[]))),
                    Outcome::Retryable { after: None },
                    "{m} {s}"
                );
            }
        }
        for m in [
            Method::POST,
            Method::PATCH,
            Method::CONNECT,
            Method::from_bytes(b"PURGE").unwrap(),
        ] {
            assert_eq!(
                http_judge(m.clone()).classify(Ok(&res(503, &[]))),
                Outcome::Fatal,
                "{m}"
            );
        }
    }

    #[test]
    fn http_other_statuses() {
        let j = http_judge(Method::GET);
        assert_eq!(j.classify(Ok(&res(200, &[]))), Outcome::Success);
        assert_eq!(j.classify(Ok(&res(304, &[]))), Outcome::Success);
        assert_eq!(j.classify(Ok(&res(404, &[]))), Outcome::Fatal);
        assert_eq!(j.classify(Ok(&res(500, &[]))), Outcome::Fatal);
        let custom = HttpClassify::new().retry_statuses(&[StatusCode::INTERNAL_SERVER_ERROR]);
        let j = Classify::<_, Res>::classify_request(&custom, &req(Method::GET));
        assert!(j.classify(Ok(&res(500, &[]))).is_retryable());
        assert_eq!(j.classify(Ok(&res(503, &[]))), Outcome::Fatal);
        let any = HttpClassify::new().retry_any_method();
        for m in [
            Method::POST,
            Method::PATCH,
            Method::from_bytes(b"PURGE").unwrap(),
        ] {
            let j = Classify::<_, Res>::classify_request(&any, &req(m));
            assert!(j.classify(Ok(&res(503, &[]))).is_retryable());
        }
        let posts = HttpClassify::new().retry_methods(&[Method::POST]);
        let j = Classify::<_, Res>::classify_request(&posts, &req(Method::POST));
        assert!(j.classify(Ok(&res(503, &[]))).is_retryable());
    }

    #[test]
    fn http_retry_after_is_honoured_and_capped() {
        let j = http_judge(Method::GET);
        assert_eq!(
            j.classify(Ok(&res(503, &[("retry-after", b"2")]))),
            Outcome::Retryable {
                after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(
            j.classify(Ok(&res(503, &[("retry-after", b"99999")]))),
            Outcome::Fatal
        );
        // Garbage or negative Retry-After is ignored, not fatal.
        for bad in [&b"-1"[..], b"soon", b"\xff\xfe", b"1.5"] {
            assert_eq!(
                j.classify(Ok(&res(429, &[("retry-after", bad)]))),
                Outcome::Retryable { after: None }
            );
        }
        let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
        assert_eq!(
            j.classify(Ok(&res(503, &[("retry-after", date.as_bytes())]))),
            Outcome::Fatal
        );
        let short = HttpClassify::new().max_retry_after(Duration::from_secs(1));
        let j = Classify::<_, Res>::classify_request(&short, &req(Method::GET));
        assert_eq!(
            j.classify(Ok(&res(503, &[("retry-after", b"2")]))),
            Outcome::Fatal
        );
    }

    #[test]
    fn errors_that_never_left_are_retryable_for_any_method() {
        let post = http_judge(Method::POST);
        assert_eq!(
            post.classify(err(&refused())),
            Outcome::Retryable { after: None }
        );
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(post.classify(err(&io)).is_retryable());
        let shed = Error::overloaded(Some(Duration::from_millis(5)));
        assert_eq!(
            post.classify(err(&shed)),
            Outcome::Retryable {
                after: Some(Duration::from_millis(5))
            }
        );
        // A reset after sending: only idempotent requests.
        let reset = Error::from_inner(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(post.classify(err(&reset)), Outcome::Fatal);
        assert!(http_judge(Method::GET).classify(err(&reset)).is_retryable());
        assert!(
            http_judge(Method::GET)
                .classify(err(&Error::timeout()))
                .is_retryable()
        );
    }

    #[test]
    fn a_local_limits_long_retry_after_is_fatal_not_waited_on() {
        let long = Error::overloaded(Some(Duration::from_secs(3600)));
        let short = Error::overloaded(Some(Duration::from_secs(1)));
        assert_eq!(http_judge(Method::GET).classify(err(&long)), Outcome::Fatal);
        assert_eq!(
            grpc_judge(GrpcClassify::default()).classify(err(&long)),
            Outcome::Fatal
        );
        assert_eq!(
            ClassifyResult::<Res>::classify(&ErrorClassify, err(&long)),
            Outcome::Fatal
        );
        let after = Outcome::Retryable {
            after: Some(Duration::from_secs(1)),
        };
        assert_eq!(http_judge(Method::POST).classify(err(&short)), after);
        assert_eq!(
            grpc_judge(GrpcClassify::default()).classify(err(&short)),
            after
        );
        assert_eq!(
            ClassifyResult::<Res>::classify(&ErrorClassify, err(&short)),
            after
        );
        let capped = HttpClassify::new().max_retry_after(Duration::from_millis(500));
        let j = Classify::<_, Res>::classify_request(&capped, &req(Method::GET));
        assert_eq!(j.classify(err(&short)), Outcome::Fatal);
    }

    #[test]
    fn classifiers_stay_small() {
        assert!(std::mem::size_of::<GrpcClassify>() <= 32);
        assert!(std::mem::size_of::<GrpcClassifier>() <= 24);
    }

    #[test]
    fn grpc_never_repeats_a_maybe_sent_call_of_an_unmarked_method_by_default() {
        let c = GrpcClassify::default();
        let create = grpc_call(&c, "/shop.Orders/Create", false);
        assert!(!create.is_idempotent());
        // Reset after sending, or a per-attempt timeout: may have reached
        // the server, so a CreateOrder is not sent twice.
        assert_eq!(create.classify(err(&reset())), Outcome::Fatal);
        assert_eq!(create.classify(err(&Error::timeout())), Outcome::Fatal);
        let bare_io = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert_eq!(create.classify(err(&bare_io)), Outcome::Fatal);
        // Never sent: retried for any method.
        assert!(create.classify(err(&refused())).is_retryable());
        assert_eq!(
            create.classify(err(&Error::overloaded(Some(Duration::from_millis(3))))),
            Outcome::Retryable {
                after: Some(Duration::from_millis(3))
            }
        );
        // The server answered UNAVAILABLE: retried for any method.
        assert!(
            create
                .classify(Ok(&res(200, &[("grpc-status", b"14")])))
                .is_retryable()
        );
    }

    #[test]
    fn grpc_repeats_a_maybe_sent_call_of_a_listed_or_marked_method() {
        let c = GrpcClassify::new().idempotent_methods(["/shop.Orders/Get", "shop.Catalog/*"]);
        for path in [
            "/shop.Orders/Get",
            "/shop.Catalog/List",
            "/shop.Catalog/Get",
        ] {
            let j = grpc_call(&c, path, false);
            assert!(j.is_idempotent(), "{path}");
            assert!(j.classify(err(&reset())).is_retryable(), "{path}");
        }
        for path in [
            "/shop.Orders/Create",
            "/shop.Orders/GetMore",
            "/shop.Catalogs/X",
        ] {
            let j = grpc_call(&c, path, false);
            assert_eq!(j.classify(err(&reset())), Outcome::Fatal, "{path}");
        }
        // The extension works with or without a list.
        for c in [c.clone(), GrpcClassify::new()] {
            let j = grpc_call(&c, "/shop.Orders/Create", true);
            assert!(j.classify(err(&reset())).is_retryable());
        }
        // An empty list goes back to marked requests only.
        let c = c.idempotent_methods(Vec::<String>::new());
        assert_eq!(
            grpc_call(&c, "/shop.Orders/Get", false).classify(err(&reset())),
            Outcome::Fatal
        );
        let any = GrpcClassify::new().retry_any_method();
        assert!(
            grpc_call(&any, "/shop.Orders/Create", false)
                .classify(err(&reset()))
                .is_retryable()
        );
    }

    #[test]
    fn grpc_retries_an_attempt_timeout_of_a_safe_method_only_when_deadline_exceeded_is_listed() {
        let timeout = Error::timeout();
        let safe = GrpcClassify::default().retry_any_method();
        let j = grpc_call(&safe, "/a.B/C", false);
        assert_eq!(j.classify(err(&timeout)), Outcome::Fatal);
        assert!(j.classify(err(&reset())).is_retryable());
        let both = safe.retry_codes(&[Code::Unavailable, Code::DeadlineExceeded]);
        assert!(
            grpc_call(&both, "/a.B/C", false)
                .classify(err(&timeout))
                .is_retryable()
        );
        let unsafe_both =
            GrpcClassify::new().retry_codes(&[Code::Unavailable, Code::DeadlineExceeded]);
        assert_eq!(
            grpc_call(&unsafe_both, "/a.B/C", false).classify(err(&timeout)),
            Outcome::Fatal
        );
    }

    #[test]
    fn http_idempotent_extension_makes_a_post_retryable_after_a_reset() {
        let mut post = req(Method::POST);
        post.extensions_mut().insert(Idempotent);
        let j = Classify::<_, Res>::classify_request(&HttpClassify::default(), &post);
        assert!(j.classify(err(&reset())).is_retryable());
        assert!(j.classify(Ok(&res(503, &[]))).is_retryable());
        assert_eq!(
            http_judge(Method::POST).classify(err(&reset())),
            Outcome::Fatal
        );
    }

    #[test]
    fn final_errors_are_never_retried() {
        for e in [
            Error::deadline_exceeded(),
            Error::cancelled(),
            Error::closed(),
            Error::retries_exhausted(3, Error::timeout()),
        ] {
            assert_eq!(
                http_judge(Method::GET).classify(err(&e)),
                Outcome::Fatal,
                "{e}"
            );
            assert_eq!(
                ClassifyResult::<Res>::classify(&ErrorClassify, err(&e)),
                Outcome::Fatal
            );
        }
    }

    #[test]
    fn an_invalid_request_is_final_for_any_method() {
        let e = Error::invalid_request();
        assert_eq!(classify_error(&e), ErrorClass::Final);
        // Found in the source chain of an inner error too.
        let wrapped = Error::new(ErrorKind::Inner).with_source(Error::invalid_request());
        assert_eq!(classify_error(&wrapped), ErrorClass::Final);
        for m in [Method::GET, Method::PUT, Method::POST] {
            assert_eq!(http_judge(m).classify(err(&e)), Outcome::Fatal);
        }
        assert_eq!(
            ClassifyResult::<Res>::classify(&grpc_judge(GrpcClassify::default()), err(&e)),
            Outcome::Fatal
        );
        assert_eq!(
            ClassifyResult::<Res>::classify(&ErrorClassify, err(&e)),
            Outcome::Fatal
        );
    }

    #[tokio::test]
    async fn hyper_util_connect_error_counts_as_never_sent() {
        // Bind and drop a listener so the port refuses.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<String>();
        let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
        let failure = client
            .request(http::Request::post(uri).body(String::new()).unwrap())
            .await
            .unwrap_err();
        let e = Error::from_inner(failure);
        assert!(matches!(classify_error(&e), ErrorClass::NeverSent { .. }));
        assert!(http_judge(Method::POST).classify(err(&e)).is_retryable());
    }

    #[test]
    fn grpc_codes_and_pushback() {
        let j = grpc_judge(GrpcClassify::default());
        assert_eq!(j.classify(Ok(&res(200, &[]))), Outcome::Success);
        assert_eq!(
            j.classify(Ok(&res(200, &[("grpc-status", b"0")]))),
            Outcome::Success
        );
        assert_eq!(
            j.classify(Ok(&res(200, &[("grpc-status", b"14")]))),
            Outcome::Retryable { after: None }
        );
        assert_eq!(
            j.classify(Ok(&res(200, &[("grpc-status", b"13")]))),
            Outcome::Fatal
        );
        assert_eq!(
            j.classify(Ok(&res(
                200,
                &[("grpc-status", b"14"), ("grpc-retry-pushback-ms", b"250")]
            ))),
            Outcome::Retryable {
                after: Some(Duration::from_millis(250))
            }
        );
        for stop in [&b"-1"[..], b"abc", b"", b"1.5"] {
            assert_eq!(
                j.classify(Ok(&res(
                    200,
                    &[("grpc-status", b"14"), ("grpc-retry-pushback-ms", stop)]
                ))),
                Outcome::Fatal,
                "{stop:?}"
            );
        }
        // A repeated pushback (100 then 10) is malformed: not retried.
        assert_eq!(
            j.classify(Ok(&res(
                200,
                &[
                    ("grpc-status", b"14"),
                    ("grpc-retry-pushback-ms", b"100"),
                    ("grpc-retry-pushback-ms", b"10")
                ]
            ))),
            Outcome::Fatal
        );
        // RESOURCE_EXHAUSTED only with a valid pushback.
        assert_eq!(
            j.classify(Ok(&res(200, &[("grpc-status", b"8")]))),
            Outcome::Fatal
        );
        assert_eq!(
            j.classify(Ok(&res(
                200,
                &[("grpc-status", b"8"), ("grpc-retry-pushback-ms", b"10")]
            ))),
            Outcome::Retryable {
                after: Some(Duration::from_millis(10))
            }
        );
        assert_eq!(
            j.classify(Ok(&res(
                200,
                &[
                    ("grpc-status", b"14"),
                    ("grpc-retry-pushback-ms", b"999999999")
                ]
            ))),
            Outcome::Fatal
        );
        // No grpc-status: HTTP status mapped.
        assert!(j.classify(Ok(&res(503, &[]))).is_retryable());
        assert_eq!(j.classify(Ok(&res(404, &[]))), Outcome::Fatal);
        // Garbled grpc-status with 200: treated as no status.
        assert_eq!(
            j.classify(Ok(&res(200, &[("grpc-status", b"xx")]))),
            Outcome::Success
        );
        let custom = grpc_judge(GrpcClassify::new().retry_codes(&[Code::Aborted]));
        assert!(
            custom
                .classify(Ok(&res(200, &[("grpc-status", b"10")])))
                .is_retryable()
        );
        assert_eq!(
            custom.classify(Ok(&res(200, &[("grpc-status", b"14")]))),
            Outcome::Fatal
        );
        assert_eq!(custom.classify(err(&Error::timeout())), Outcome::Fatal);
        assert!(custom.classify(err(&refused())).is_retryable());
    }

    #[test]
    fn http_or_grpc_picks_by_content_type() {
        let c = HttpOrGrpcClassify::default();
        let r = res(200, &[("grpc-status", b"14")]);
        let j = Classify::<_, Res>::classify_request(&c, &grpc_req());
        assert!(j.classify(Ok(&r)).is_retryable());
        let j = Classify::<_, Res>::classify_request(&c, &req(Method::GET));
        assert_eq!(j.classify(Ok(&r)), Outcome::Success);
    }

    proptest! {
        #![proptest_config(ProptestConfig { rng_seed: proptest::test_runner::RngSeed::Fixed(14), ..ProptestConfig::default() })]
        #[test]
        fn classification_is_total_on_hostile_headers(
            status in 100u16..1000,
            ra in proptest::collection::vec(any::<u8>(), 0..40),
            gs in proptest::collection::vec(any::<u8>(), 0..8),
            pb in proptest::collection::vec(any::<u8>(), 0..24),
        ) {
            let mut r = http::Response::new(());
            *r.status_mut() = StatusCode::from_u16(status).unwrap();
            for (name, v) in [("retry-after", &ra), ("grpc-status", &gs), ("grpc-retry-pushback-ms", &pb)] {
                if let Ok(v) = http::HeaderValue::from_bytes(v) {
                    r.headers_mut().insert(name, v);
                }
            }
            let h = http_judge(Method::GET).classify(Ok(&r));
            let g = grpc_judge(GrpcClassify::default()).classify(Ok(&r));
            for o in [h, g] {
                if let Outcome::Retryable { after: Some(d) } = o {
                    prop_assert!(d <= DEFAULT_MAX_RETRY_AFTER);
                }
            }
        }
    }
}
