//! `PropagateContextLayer` over an in-process client: what it writes, what it
//! keeps, deadlines, and which tasks still carry the context.

use http::{HeaderMap, HeaderValue, Request, Response};
use rampart_context::{PropagateConfig, PropagateContextLayer};
use rampart_core::{Context, Error, ErrorKind, InContextExt, RequestId};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt, service_fn};

type Client = BoxCloneSyncService<Request<()>, Response<HeaderMap>, Error>;

/// A client whose "server" answers with the headers it was sent.
fn client(layer: &PropagateContextLayer) -> Client {
    BoxCloneSyncService::new(layer.layer(service_fn(|req: Request<()>| async move {
        Ok::<_, Infallible>(Response::new(req.headers().clone()))
    })))
}

async fn sent(layer: &PropagateContextLayer, req: Request<()>) -> HeaderMap {
    client(layer).oneshot(req).await.unwrap().into_body()
}

fn ctx(id: &str) -> Context {
    Context::new().with_request_id(RequestId::parse(id.as_bytes()).unwrap())
}

fn grpc_request() -> Request<()> {
    let mut req = Request::new(());
    req.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    req
}

#[tokio::test]
async fn id_of_the_current_context_is_written_on_outgoing_requests() {
    let layer = PropagateContextLayer::new();
    let headers = ctx("req-1").scope(sent(&layer, Request::new(()))).await;
    assert_eq!(headers["x-request-id"], "req-1");
}

#[tokio::test]
async fn without_a_context_the_request_goes_out_untouched() {
    let layer = PropagateContextLayer::builder().deadline().build().unwrap();
    let headers = sent(&layer, Request::new(())).await;
    assert!(headers.is_empty(), "{headers:?}");
}

#[tokio::test]
async fn existing_id_header_is_kept_unless_overwrite_is_set() {
    let mut req = Request::new(());
    req.headers_mut()
        .insert("x-request-id", HeaderValue::from_static("explicit"));
    let keep = PropagateContextLayer::new();
    let headers = ctx("ctx-id").scope(sent(&keep, req.clone_parts())).await;
    assert_eq!(headers["x-request-id"], "explicit");

    let replace = PropagateContextLayer::builder()
        .overwrite(true)
        .build()
        .unwrap();
    let headers = ctx("ctx-id").scope(sent(&replace, req)).await;
    assert_eq!(headers["x-request-id"], "ctx-id");
    assert_eq!(headers.get_all("x-request-id").iter().count(), 1);
}

/// `Request<()>` is not `Clone`; tests copy what they set.
trait CloneParts {
    fn clone_parts(&self) -> Self;
}

impl CloneParts for Request<()> {
    fn clone_parts(&self) -> Self {
        let mut out = Request::new(());
        *out.headers_mut() = self.headers().clone();
        out
    }
}

#[tokio::test]
async fn custom_id_header_and_no_id_at_all() {
    let layer = PropagateContextLayer::builder()
        .request_id_header("X-Correlation-Id")
        .build()
        .unwrap();
    let headers = ctx("corr").scope(sent(&layer, Request::new(()))).await;
    assert_eq!(headers["x-correlation-id"], "corr");
    assert!(!headers.contains_key("x-request-id"));

    let deadline_only = PropagateContextLayer::builder()
        .without_request_id()
        .build()
        .unwrap();
    let headers = ctx("corr")
        .scope(sent(&deadline_only, Request::new(())))
        .await;
    assert!(headers.is_empty());
}

#[tokio::test(start_paused = true)]
async fn deadline_is_written_as_grpc_timeout_for_grpc_and_milliseconds_for_http() {
    let layer = PropagateContextLayer::builder().deadline().build().unwrap();
    let c = ctx("d-1").with_timeout(Duration::from_millis(1500));
    tokio::time::advance(Duration::from_millis(200)).await;

    let http = c.clone().scope(sent(&layer, Request::new(()))).await;
    assert_eq!(http["x-request-timeout-ms"], "1300");
    assert!(!http.contains_key("grpc-timeout"));

    let grpc = c.clone().scope(sent(&layer, grpc_request())).await;
    assert_eq!(grpc["grpc-timeout"], "1300000u");
    assert!(!grpc.contains_key("x-request-timeout-ms"));
    assert_eq!(grpc["x-request-id"], "d-1");

    let custom = PropagateContextLayer::builder()
        .deadline_header("x-timeout-ms")
        .build()
        .unwrap();
    let http = c.scope(sent(&custom, Request::new(()))).await;
    assert_eq!(http["x-timeout-ms"], "1300");
}

#[tokio::test(start_paused = true)]
async fn deadline_is_not_written_unless_configured_or_without_a_deadline() {
    let c = ctx("d-2").with_timeout(Duration::from_secs(1));
    let headers = c
        .scope(sent(&PropagateContextLayer::new(), grpc_request()))
        .await;
    assert!(!headers.contains_key("grpc-timeout"));
    let on = PropagateContextLayer::builder().deadline().build().unwrap();
    let headers = ctx("d-2").scope(sent(&on, grpc_request())).await;
    assert!(!headers.contains_key("grpc-timeout"));
}

#[tokio::test(start_paused = true)]
async fn earlier_existing_deadline_is_kept_and_a_later_or_garbled_one_replaced() {
    let layer = PropagateContextLayer::builder().deadline().build().unwrap();
    let c = ctx("d-3").with_timeout(Duration::from_secs(1));
    for (there, expected) in [
        ("500m", "500m"),        // earlier: kept
        ("5S", "1000000u"),      // later: the context's deadline wins
        ("garbage", "1000000u"), // unparsable: replaced
    ] {
        let mut req = grpc_request();
        req.headers_mut()
            .insert("grpc-timeout", HeaderValue::from_static(there));
        let headers = c.clone().scope(sent(&layer, req)).await;
        assert_eq!(headers["grpc-timeout"], expected, "{there}");
    }
    let overwrite = PropagateContextLayer::builder()
        .deadline()
        .overwrite(true)
        .build()
        .unwrap();
    let mut req = Request::new(());
    req.headers_mut()
        .insert("x-request-timeout-ms", HeaderValue::from_static("10"));
    let headers = c.scope(sent(&overwrite, req)).await;
    assert_eq!(headers["x-request-timeout-ms"], "1000");
}

/// A client that counts the requests that reach its "server".
fn counting_client(layer: &PropagateContextLayer) -> (Client, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let svc = layer.layer(service_fn(move |req: Request<()>| {
        seen.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, Infallible>(Response::new(req.headers().clone())) }
    }));
    (BoxCloneSyncService::new(svc), calls)
}

#[tokio::test(start_paused = true)]
async fn an_expired_deadline_is_refused_with_deadline_exceeded_not_sent_as_zero() {
    let layer = PropagateContextLayer::builder().deadline().build().unwrap();
    let (client, calls) = counting_client(&layer);
    let c = ctx("late").with_deadline(Instant::now() + Duration::from_millis(10));
    tokio::time::advance(Duration::from_secs(1)).await;
    for req in [Request::new(()), grpc_request()] {
        let e = c
            .clone()
            .scope(client.clone().oneshot(req))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DeadlineExceeded);
    }
    // The same from a context carried in the request's extensions.
    let mut req = Request::new(());
    req.extensions_mut().insert(c.clone());
    let e = client.clone().oneshot(req).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing was sent");
}

#[tokio::test(start_paused = true)]
async fn a_deadline_under_one_header_unit_is_expired_for_that_header() {
    // 500 µs left: less than the milliseconds header's unit (it would go
    // out as "0"), but a valid grpc-timeout.
    let layer = PropagateContextLayer::builder().deadline().build().unwrap();
    let (client, calls) = counting_client(&layer);
    let c = ctx("tight").with_deadline(Instant::now() + Duration::from_micros(500));
    let e = c
        .clone()
        .scope(client.clone().oneshot(Request::new(())))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded);
    let headers = c.scope(client.oneshot(grpc_request())).await.unwrap();
    assert_eq!(headers.into_body()["grpc-timeout"], "500000n");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn an_expired_deadline_is_not_refused_when_deadlines_are_not_propagated() {
    let (client, calls) = counting_client(&PropagateContextLayer::new());
    let c = ctx("late-id-only").with_deadline(Instant::now() + Duration::from_millis(10));
    tokio::time::advance(Duration::from_secs(1)).await;
    let headers = c.scope(client.oneshot(Request::new(()))).await.unwrap();
    assert_eq!(headers.into_body()["x-request-id"], "late-id-only");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn inner_errors_come_out_as_rampart_errors_unwrapped_or_as_inner() {
    let layer = PropagateContextLayer::new();
    let shed = layer.layer(service_fn(|_req: Request<()>| async {
        Err::<Response<()>, _>(Error::overloaded(None))
    }));
    let e = shed.oneshot(Request::new(())).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overloaded);
    let io = layer.layer(service_fn(|_req: Request<()>| async {
        Err::<Response<()>, _>(std::io::Error::other("reset"))
    }));
    let e = io.oneshot(Request::new(())).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Inner);
    assert!(e.find_source::<std::io::Error>().is_some());
}

#[tokio::test]
async fn infallible_setters_build_the_same_layer_as_the_builder() {
    let layer = PropagateContextLayer::new()
        .with_request_id_header(http::HeaderName::from_static("x-correlation-id"))
        .with_deadline_header(http::HeaderName::from_static("x-budget-ms"))
        .with_overwrite(true);
    assert_eq!(layer.request_id_header().unwrap(), "x-correlation-id");
    assert_eq!(layer.deadline_header().unwrap(), "x-budget-ms");
    let mut req = Request::new(());
    req.headers_mut()
        .insert("x-correlation-id", HeaderValue::from_static("old"));
    let c = ctx("new").with_timeout(Duration::from_secs(3));
    let headers = c.scope(sent(&layer, req)).await;
    assert_eq!(headers["x-correlation-id"], "new");
    assert!(headers.contains_key("x-budget-ms"));
    let id_off = PropagateContextLayer::new()
        .without_request_id()
        .with_deadline();
    assert!(id_off.request_id_header().is_none());
    assert_eq!(id_off.deadline_header().unwrap(), "x-request-timeout-ms");
}

#[tokio::test]
async fn context_in_request_extensions_is_used_when_no_task_context() {
    let layer = PropagateContextLayer::new();
    let mut req = Request::new(());
    req.extensions_mut().insert(ctx("from-ext"));
    let headers = sent(&layer, req).await;
    assert_eq!(headers["x-request-id"], "from-ext");
    // The task's context wins over the extension's.
    let mut req = Request::new(());
    req.extensions_mut().insert(ctx("from-ext"));
    let headers = ctx("from-task").scope(sent(&layer, req)).await;
    assert_eq!(headers["x-request-id"], "from-task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_from_spawn_helper_and_in_context_carry_the_id_bare_spawn_does_not() {
    let c = client(&PropagateContextLayer::new());
    let (helper, in_ctx, bare) = ctx("carried")
        .scope(async {
            let c1 = c.clone();
            let helper = rampart_core::spawn(async move {
                tokio::task::yield_now().await;
                c1.oneshot(Request::new(())).await.unwrap().into_body()
            });
            let c2 = c.clone();
            let in_ctx = tokio::spawn(
                async move { c2.oneshot(Request::new(())).await.unwrap().into_body() }.in_context(),
            );
            let c3 = c.clone();
            let bare =
                tokio::spawn(
                    async move { c3.oneshot(Request::new(())).await.unwrap().into_body() },
                );
            (
                helper.await.unwrap(),
                in_ctx.await.unwrap(),
                bare.await.unwrap(),
            )
        })
        .await;
    assert_eq!(helper["x-request-id"], "carried");
    assert_eq!(in_ctx["x-request-id"], "carried");
    assert!(
        !bare.contains_key("x-request-id"),
        "a bare tokio::spawn loses the context, as documented"
    );
}

#[test]
fn invalid_configs_are_refused_with_a_typed_error() {
    for config in [
        PropagateConfig {
            request_id_header: "bad name".into(),
            ..PropagateConfig::default()
        },
        PropagateConfig {
            deadline: true,
            deadline_header: "\n".into(),
            ..PropagateConfig::default()
        },
    ] {
        let e = PropagateContextLayer::from_config(&config).unwrap_err();
        assert_eq!(e.field(), "header");
        assert!(e.to_string().contains("valid HTTP header name"), "{e}");
    }
    let e = PropagateContextLayer::builder()
        .deadline_header("grpc-timeout")
        .build()
        .unwrap_err();
    assert_eq!((e.field(), e.value()), ("header", "\"grpc-timeout\""));
    // One error type across rampart: it converts into the facade's.
    let _: rampart_core::ConfigError = e;
    // A bad deadline header does not matter while deadlines are off.
    let off = PropagateConfig {
        deadline_header: "bad name".into(),
        ..PropagateConfig::default()
    };
    assert!(PropagateContextLayer::from_config(&off).is_ok());
}
