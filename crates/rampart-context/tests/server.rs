//! `RequestIdLayer` over in-process services (no sockets): acceptance,
//! generation, hostile ids, never overwriting an outer id, context scope,
//! tracing.

use futures_util::FutureExt;
use http::{HeaderValue, Request, Response};
use proptest::prelude::*;
use rampart_context::{ConfigError, RequestIdConfig, RequestIdLayer};
use rampart_core::{Context, RequestId};
use std::convert::Infallible;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::{Layer, ServiceExt, service_fn};

/// What the handler saw: the current context's id, the extension's id and
/// the request header.
#[derive(Debug, Default)]
struct Seen {
    current: Option<String>,
    extension: Option<String>,
    header: Option<Vec<u8>>,
    deadline: Option<Instant>,
    cancelled: Option<bool>,
}

fn id_of(ctx: Option<&Context>) -> Option<String> {
    ctx.and_then(Context::request_id).map(ToString::to_string)
}

/// A handler that reports what it saw, through `RequestIdLayer::new()`.
async fn call(layer: RequestIdLayer, req: Request<()>) -> (Response<()>, Seen) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    let svc = layer.layer(service_fn(move |req: Request<()>| {
        let s = s.clone();
        async move {
            tokio::task::yield_now().await;
            let cur = Context::current();
            *s.lock().unwrap() = Seen {
                current: id_of(cur.as_ref()),
                extension: id_of(Context::from_request(&req)),
                header: req
                    .headers()
                    .get("x-request-id")
                    .map(|v| v.as_bytes().to_vec()),
                deadline: cur.as_ref().and_then(Context::deadline),
                cancelled: cur.as_ref().map(Context::is_cancelled),
            };
            Ok::<_, Infallible>(Response::new(()))
        }
    }));
    let res = svc.oneshot(req).await.unwrap();
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    (res, seen)
}

fn with_header(value: &[u8]) -> Request<()> {
    let mut req = Request::new(());
    req.headers_mut()
        .insert("x-request-id", HeaderValue::from_bytes(value).unwrap());
    req
}

fn echoed(res: &Response<()>) -> &str {
    res.headers()["x-request-id"].to_str().unwrap()
}

fn is_uuid_v7(s: &str) -> bool {
    s.len() == 36
        && s.as_bytes()[14] == b'7'
        && s.bytes()
            .enumerate()
            .all(|(i, b)| matches!(i, 8 | 13 | 18 | 23) == (b == b'-'))
        && s.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit())
}

#[tokio::test]
async fn valid_incoming_id_is_kept_and_echoed() {
    let (res, seen) = call(RequestIdLayer::new(), with_header(b"req-1")).await;
    assert_eq!(echoed(&res), "req-1");
    assert_eq!(seen.current.as_deref(), Some("req-1"));
    assert_eq!(seen.header.as_deref(), Some(&b"req-1"[..]));
    assert_eq!(seen.extension, None, "extensions untouched by default");
}

#[tokio::test]
async fn context_is_stored_in_extensions_when_configured() {
    let layer = RequestIdLayer::builder()
        .store_in_extensions(true)
        .build()
        .unwrap();
    let (res, seen) = call(layer.clone(), with_header(b"req-ext")).await;
    assert_eq!(echoed(&res), "req-ext");
    assert_eq!(seen.extension.as_deref(), Some("req-ext"));
    let (res, seen) = call(layer, Request::new(())).await;
    assert_eq!(seen.extension.as_deref(), Some(echoed(&res)));
}

#[tokio::test]
async fn accepted_id_shares_the_incoming_bytes_without_copying() {
    static INCOMING: &str = "01936f8e-7b7c-7cc3-9b1a-3f2d5e6a7b8c";
    let mut req = Request::new(());
    req.headers_mut()
        .insert("x-request-id", HeaderValue::from_static(INCOMING));
    let svc = RequestIdLayer::new().layer(service_fn(|_req: Request<()>| async {
        let ctx = Context::current().unwrap();
        let ptr = ctx.request_id().unwrap().as_str().as_ptr();
        Ok::<_, Infallible>(Response::new(ptr as usize))
    }));
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(
        *res.body(),
        INCOMING.as_ptr() as usize,
        "context id is the same bytes"
    );
    assert_eq!(
        res.headers()["x-request-id"].as_bytes().as_ptr(),
        INCOMING.as_ptr(),
        "echo is the same bytes"
    );
}

#[tokio::test]
async fn missing_id_is_generated_as_uuid_v7_and_echoed() {
    let (res, seen) = call(RequestIdLayer::new(), Request::new(())).await;
    let id = echoed(&res).to_owned();
    assert!(is_uuid_v7(&id), "{id}");
    assert_eq!(seen.current.as_deref(), Some(id.as_str()));
    assert_eq!(seen.header, None, "an absent header stays absent");
    let (res2, _) = call(RequestIdLayer::new(), Request::new(())).await;
    assert_ne!(echoed(&res2), id, "every request gets its own id");
}

#[tokio::test]
async fn hostile_ids_are_replaced_and_never_echoed_nor_seen_inside() {
    let long = vec![b'a'; 129];
    let hostile: [&[u8]; 7] = [
        &long,
        b"evil<script>",
        b"a b",
        b"caf\xc3\xa9",
        b"a\tb",
        b"\"quoted\"",
        b"x;y",
    ];
    for bad in hostile {
        let (res, seen) = call(RequestIdLayer::new(), with_header(bad)).await;
        let id = echoed(&res).to_owned();
        assert!(is_uuid_v7(&id), "{bad:?} replaced by a new id, got {id}");
        assert_eq!(seen.current.as_deref(), Some(id.as_str()));
        assert_eq!(
            seen.header.as_deref(),
            Some(id.as_bytes()),
            "the hostile header is overwritten in the request too"
        );
    }
}

#[tokio::test]
async fn repeated_id_header_is_replaced() {
    let mut req = with_header(b"one");
    req.headers_mut()
        .append("x-request-id", HeaderValue::from_static("two"));
    let (res, seen) = call(RequestIdLayer::new(), req).await;
    let id = echoed(&res).to_owned();
    assert!(is_uuid_v7(&id));
    assert_eq!(seen.header.as_deref(), Some(id.as_bytes()));
    assert_eq!(res.headers().get_all("x-request-id").iter().count(), 1);
}

#[tokio::test]
async fn accept_incoming_false_always_generates() {
    let layer = RequestIdLayer::builder()
        .accept_incoming(false)
        .build()
        .unwrap();
    let (res, seen) = call(layer, with_header(b"client-chosen")).await;
    let id = echoed(&res);
    assert!(is_uuid_v7(id));
    assert_eq!(seen.header.as_deref(), Some(id.as_bytes()));
}

#[tokio::test]
async fn custom_header_name_is_read_and_echoed() {
    let layer = RequestIdLayer::builder()
        .header("X-Correlation-Id")
        .build()
        .unwrap();
    let mut req = Request::new(());
    req.headers_mut()
        .insert("x-correlation-id", HeaderValue::from_static("corr-9"));
    let (res, seen) = call(layer, req).await;
    assert_eq!(res.headers()["x-correlation-id"], "corr-9");
    assert!(!res.headers().contains_key("x-request-id"));
    assert_eq!(seen.current.as_deref(), Some("corr-9"));
}

#[test]
fn invalid_configs_are_refused_with_a_typed_error() {
    let e: ConfigError = RequestIdLayer::builder()
        .header("not a header")
        .build()
        .unwrap_err();
    assert_eq!((e.field(), e.value()), ("header", "\"not a header\""));
    assert!(e.to_string().contains("a valid HTTP header name"), "{e}");
    let config = RequestIdConfig {
        header: "grpc-status".into(),
        ..RequestIdConfig::default()
    };
    let e = RequestIdLayer::from_config(&config).unwrap_err();
    assert_eq!((e.field(), e.value()), ("header", "\"grpc-status\""));
    assert!(e.to_string().contains("do not own"), "{e}");
}

#[tokio::test]
async fn infallible_setters_configure_the_header_and_the_policy() {
    let layer = RequestIdLayer::new()
        .with_header(http::HeaderName::from_static("x-correlation-id"))
        .with_accept_incoming(false)
        .with_store_in_extensions(true);
    let req = Request::builder()
        .header("x-correlation-id", "from-caller")
        .body(())
        .unwrap();
    let (res, seen) = call(layer, req).await;
    let id = res.headers()["x-correlation-id"].to_str().unwrap();
    assert_ne!(id, "from-caller", "incoming ids are not accepted");
    assert_eq!(seen.current.as_deref(), Some(id));
    assert_eq!(seen.extension.as_deref(), Some(id));
}

#[tokio::test]
async fn id_set_in_extensions_further_out_is_never_overwritten_and_the_stored_context_kept() {
    let mut req = with_header(b"from-header");
    req.extensions_mut()
        .insert(Context::new().with_request_id(RequestId::parse(b"outer").unwrap()));
    let (res, seen) = call(RequestIdLayer::new(), req).await;
    assert_eq!(echoed(&res), "outer");
    assert_eq!(seen.current.as_deref(), Some("outer"));
    assert_eq!(seen.extension.as_deref(), Some("outer"));
    assert_eq!(
        seen.header.as_deref(),
        Some(&b"outer"[..]),
        "the header agrees with the id"
    );
}

#[tokio::test]
async fn id_of_an_outer_request_id_layer_is_kept_by_an_inner_one() {
    // Two layers, the inner with another header: the outer's id wins.
    let inner = RequestIdLayer::builder()
        .header("x-other-id")
        .build()
        .unwrap();
    let svc = RequestIdLayer::new().layer(inner.layer(service_fn(|req: Request<()>| async move {
        let id = Context::current()
            .unwrap()
            .request_id()
            .unwrap()
            .to_string();
        let other = req.headers().get("x-other-id").cloned();
        Ok::<_, Infallible>(Response::new((id, other)))
    })));
    let mut req = with_header(b"outer-id");
    req.headers_mut()
        .insert("x-other-id", HeaderValue::from_static("inner-id"));
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.headers()["x-request-id"], "outer-id");
    assert_eq!(res.headers()["x-other-id"], "outer-id");
    let (id, other) = res.into_body();
    assert_eq!(id, "outer-id");
    assert_eq!(other.unwrap(), "outer-id");
}

#[tokio::test(start_paused = true)]
async fn outer_task_context_is_merged_and_its_id_kept() {
    let token = CancellationToken::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    let outer = Context::new()
        .with_request_id(RequestId::parse(b"task-id").unwrap())
        .with_deadline(deadline)
        .with_cancellation(token.clone());
    token.cancel();
    let (res, seen) = outer
        .scope(call(RequestIdLayer::new(), with_header(b"header-id")))
        .await;
    assert_eq!(echoed(&res), "task-id");
    assert_eq!(seen.current.as_deref(), Some("task-id"));
    assert_eq!(seen.deadline, Some(deadline));
    assert_eq!(seen.cancelled, Some(true));
}

#[tokio::test(start_paused = true)]
async fn context_without_id_further_out_gets_the_id_and_keeps_its_deadline() {
    let deadline = Instant::now() + Duration::from_millis(300);
    let mut req = with_header(b"req-5");
    req.extensions_mut()
        .insert(Context::new().with_deadline(deadline));
    let (res, seen) = call(RequestIdLayer::new(), req).await;
    assert_eq!(echoed(&res), "req-5");
    assert_eq!(seen.current.as_deref(), Some("req-5"));
    assert_eq!(seen.extension.as_deref(), Some("req-5"));
    assert_eq!(seen.deadline, Some(deadline));
}

/// A service whose synchronous `call` reads the context, as a deadline or
/// limit layer below might.
#[derive(Clone)]
struct ReadsContextInCall;

impl tower::Service<Request<()>> for ReadsContextInCall {
    type Response = Response<Option<String>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, _req: Request<()>) -> Self::Future {
        std::future::ready(Ok(Response::new(id_of(Context::current().as_ref()))))
    }
}

#[tokio::test]
async fn inner_call_itself_runs_inside_the_context() {
    let res = RequestIdLayer::new()
        .layer(ReadsContextInCall)
        .oneshot(with_header(b"in-call"))
        .await
        .unwrap();
    assert_eq!(res.body().as_deref(), Some("in-call"));
    assert!(
        Context::current().is_none(),
        "nothing leaks out of the call"
    );
}

#[tokio::test]
async fn inner_error_passes_through_unchanged_and_context_ends() {
    let svc = RequestIdLayer::new().layer(service_fn(|_req: Request<()>| async {
        Err::<Response<()>, _>(io::Error::other("boom"))
    }));
    let err = svc.oneshot(with_header(b"req-err")).await.unwrap_err();
    assert_eq!(err.to_string(), "boom");
    assert!(Context::current().is_none());
}

#[tokio::test]
async fn spawn_helper_keeps_the_id_and_bare_tokio_spawn_loses_it() {
    let svc = RequestIdLayer::new().layer(service_fn(|_req: Request<()>| async {
        let helper = rampart_core::spawn(async { id_of(Context::current().as_ref()) });
        let bare = tokio::spawn(async { id_of(Context::current().as_ref()) });
        Ok::<_, Infallible>(Response::new((helper.await.unwrap(), bare.await.unwrap())))
    }));
    let res = svc.oneshot(with_header(b"spawned")).await.unwrap();
    let (helper, bare) = res.into_body();
    assert_eq!(helper.as_deref(), Some("spawned"));
    assert_eq!(
        bare, None,
        "a bare tokio::spawn loses the context, as documented"
    );
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + 'static {
        let logs = self.clone();
        tracing_subscriber::fmt()
            .with_writer(move || logs.clone())
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .finish()
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn logging_handler() -> impl tower::Service<
    Request<()>,
    Response = Response<()>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<()>, Infallible>>,
> + Clone {
    service_fn(|_req: Request<()>| async {
        tracing::info!("handling");
        tokio::task::yield_now().await;
        tracing::info!("still handling");
        Ok::<_, Infallible>(Response::new(()))
    })
}

#[tokio::test]
async fn every_log_line_of_the_request_carries_the_id() {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());
    let svc = RequestIdLayer::new().layer(logging_handler());
    svc.oneshot(with_header(b"traced-1")).await.unwrap();
    let text = logs.text();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("handling")).collect();
    assert_eq!(lines.len(), 2, "{text}");
    for line in lines {
        assert!(
            line.contains("request{layer=default request_id=traced-1}"),
            "{line}"
        );
    }
}

#[tokio::test]
async fn id_is_recorded_in_an_outer_span_that_declares_the_field() {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());
    let svc = RequestIdLayer::new().layer(logging_handler());
    let span = tracing::info_span!("http", request_id = tracing::field::Empty);
    tracing::Instrument::instrument(svc.oneshot(with_header(b"traced-2")), span)
        .await
        .unwrap();
    let text = logs.text();
    for line in text.lines().filter(|l| l.contains("handling")) {
        assert!(line.contains("http{request_id=\"traced-2\"}"), "{line}");
        assert!(!line.contains("request{"), "no second span: {line}");
    }
}

#[tokio::test]
async fn refused_id_is_logged_at_debug_without_its_bytes() {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());
    let (res, _) = call(RequestIdLayer::new(), with_header(b"evil<script>")).await;
    let text = logs.text();
    assert!(text.contains("incoming request id refused"), "{text}");
    assert!(
        text.contains(echoed(&res)),
        "the replacement is logged: {text}"
    );
    assert!(!text.contains("evil"), "the hostile bytes are not: {text}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, rng_seed: proptest::test_runner::RngSeed::Fixed(6), ..ProptestConfig::default() })]

    /// Whatever bytes arrive, the echoed header is a valid id; a valid
    /// incoming id is echoed unchanged, anything else is replaced.
    #[test]
    fn echoed_header_is_always_a_valid_id(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        // Bytes that cannot be a header value cannot arrive over HTTP.
        let Ok(value) = HeaderValue::from_bytes(&bytes) else { return Ok(()) };
        let mut req = Request::new(());
        req.headers_mut().insert("x-request-id", value);
        let svc = RequestIdLayer::new().layer(service_fn(|req: Request<()>| async move {
            let inside = req.headers().get("x-request-id").map(|v| v.as_bytes().to_vec());
            Ok::<_, Infallible>(Response::new(inside))
        }));
        let res = svc.oneshot(req).now_or_never().expect("ready service").unwrap();
        let out = res.headers().get("x-request-id").expect("always echoed");
        let id = RequestId::from_header(out);
        prop_assert!(id.is_ok(), "echoed {:?}", out);
        if RequestId::parse(&bytes).is_ok() {
            prop_assert_eq!(out.as_bytes(), &bytes[..]);
        } else {
            prop_assert!(is_uuid_v7(out.to_str().unwrap()));
        }
        if let Some(inside) = res.body() {
            prop_assert_eq!(&inside[..], out.as_bytes(), "the handler never sees a refused id");
        }
    }
}
