//! Tour section: request id and context propagation (`rampart::context`).
//!
//! The article's three concurrent requests, each seeing its own id; then an
//! axum edge under `RequestIdLayer` calling a hyper server (rampart-testkit's
//! `FlakyServer`, which answers with the id it received) and a tonic-health
//! server through `PropagateContextLayer` clients.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rampart::context::{PropagateContext, PropagateContextLayer, RequestIdLayer};
use rampart::{BoxError, Context, RequestId};
use rampart_testkit::{FlakyServer, Reply};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint, Server, server::TcpIncoming};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::{Layer, ServiceExt};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn current_id() -> String {
    Context::current()
        .and_then(|c| c.request_id().map(ToString::to_string))
        .unwrap_or_else(|| "none".into())
}

#[derive(Clone)]
struct Edge {
    http: PropagateContext<HttpClient>,
    inventory: String,
    health: HealthClient<PropagateContext<Channel>>,
}

impl Edge {
    async fn inventory_saw(&self) -> Result<String, BoxError> {
        let req = Request::get(&self.inventory).body(Empty::new())?;
        let body = self.http.clone().oneshot(req).await?.into_body();
        Ok(String::from_utf8(
            body.collect().await?.to_bytes().to_vec(),
        )?)
    }
}

/// Answers "<handler's id> <inventory saw> <rampart::spawn saw> <bare tokio::spawn saw>".
async fn handler(State(edge): State<Edge>) -> Result<String, (StatusCode, String)> {
    let fail = |e: BoxError| (StatusCode::BAD_GATEWAY, e.to_string());
    let inventory = edge.inventory_saw().await.map_err(fail)?;
    edge.health
        .clone()
        .check(HealthCheckRequest::default())
        .await
        .map_err(|e| fail(e.into()))?;
    let helper = rampart::spawn(async { current_id() })
        .await
        .map_err(|e| fail(e.into()))?;
    let bare = tokio::spawn(async { current_id() })
        .await
        .map_err(|e| fail(e.into()))?;
    Ok(format!("{} {inventory} {helper} {bare}", current_id()))
}

async fn start(
    servers: &Servers,
    seen_by_grpc: Arc<Mutex<Vec<String>>>,
) -> Result<(SocketAddr, FlakyServer), BoxError> {
    let inventory = FlakyServer::builder()
        .handler(|r| Some(Reply::ok().body(r.header("x-request-id").unwrap_or("none").to_owned())))
        .start()
        .await?;
    let grpc_listener = TcpListener::bind("127.0.0.1:0").await?;
    let grpc_addr = grpc_listener.local_addr()?;
    let (_reporter, health) = tonic_health::server::health_reporter();
    let record = tonic::service::InterceptorLayer::new(move |req: tonic::Request<()>| {
        let id = req
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok());
        seen_by_grpc
            .lock()
            .unwrap()
            .push(id.unwrap_or("none").to_owned());
        Ok(req)
    });
    let grpc = Server::builder()
        .layer(record)
        .add_service(health)
        .serve_with_incoming(TcpIncoming::from(grpc_listener));
    servers.spawn(async move {
        let _ = grpc.await;
    });
    let channel = Endpoint::from_shared(format!("http://{grpc_addr}"))?
        .connect()
        .await?;
    let propagate = PropagateContextLayer::new();
    let edge = Edge {
        http: propagate.layer(Client::builder(TokioExecutor::new()).build_http()),
        inventory: inventory.url("/stock"),
        health: HealthClient::new(propagate.layer(channel)),
    };
    let app = Router::new()
        .route("/", get(handler))
        .with_state(edge)
        .layer(RequestIdLayer::new());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    servers.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, inventory))
}

/// Calls the edge; returns (echoed id, body).
async fn call(edge: SocketAddr, id: Option<&str>) -> Result<(String, String), BoxError> {
    let mut req = Request::get(format!("http://{edge}/")).body(Empty::<Bytes>::new())?;
    if let Some(id) = id {
        req.headers_mut().insert("x-request-id", id.parse()?);
    }
    let res = Client::builder(TokioExecutor::new())
        .build_http()
        .request(req)
        .await?;
    let echoed = res.headers()["x-request-id"].to_str()?.to_owned();
    let body = res.into_body().collect().await?.to_bytes();
    Ok((echoed, String::from_utf8(body.to_vec())?))
}

pub(crate) async fn run() -> Result<(), BoxError> {
    crate::heading("request id and context (contextvars)");
    let servers = Servers::default();
    let res = tokio::time::timeout(Duration::from_secs(10), tour(&servers)).await;
    servers.stop();
    res?
}

/// Server tasks to stop when the section ends.
#[derive(Default)]
struct Servers(Mutex<Vec<JoinHandle<()>>>);

impl Servers {
    fn spawn(&self, f: impl Future<Output = ()> + Send + 'static) {
        self.0.lock().unwrap().push(tokio::spawn(f));
    }
    fn stop(&self) {
        for task in self.0.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn tour(servers: &Servers) -> Result<(), BoxError> {
    // The article: three concurrent handlers, each with its own id.
    let handle_request = |id: &'static str| async move {
        let ctx = Context::new().with_request_id(RequestId::parse(id.as_bytes())?);
        Ok::<_, BoxError>(
            ctx.scope(async {
                tokio::task::yield_now().await;
                current_id()
            })
            .await,
        )
    };
    let (a, b, c) = tokio::try_join!(
        handle_request("req-1"),
        handle_request("req-2"),
        handle_request("req-3")
    )?;
    crate::line(format_args!("three concurrent requests saw: {a}, {b}, {c}"));
    if [a.as_str(), b.as_str(), c.as_str()] != ["req-1", "req-2", "req-3"] {
        return Err("a request saw another's id".into());
    }

    let grpc_saw = Arc::new(Mutex::new(Vec::new()));
    let (edge, inventory) = start(servers, grpc_saw.clone()).await?;
    for sent in [Some("order-42"), None, Some("evil<script>")] {
        grpc_saw.lock().unwrap().clear();
        let (echoed, body) = call(edge, sent).await?;
        let parts: Vec<&str> = body.split(' ').collect();
        if parts.len() != 4 {
            return Err(format!("unexpected answer from the edge: {body}").into());
        }
        let grpc = grpc_saw.lock().unwrap().clone();
        let carried = parts[..3].iter().all(|p| *p == echoed) && grpc == [echoed.clone()];
        let kept = match sent {
            Some("evil<script>") => echoed != "evil<script>",
            Some(s) => echoed == s,
            None => echoed.len() == 36,
        };
        if !carried || !kept || parts[3] != "none" {
            return Err(format!("id not carried as expected: {body}").into());
        }
        crate::line(format_args!(
            "sent {:<14} -> edge returned {echoed}",
            sent.map_or("no id".to_owned(), |s| format!("{s:?}"))
        ));
        crate::line(format_args!(
            "   the same id in: handler, hyper server, tonic server, rampart::spawn; bare tokio::spawn: {}",
            parts[3]
        ));
    }
    crate::line(
        "a refused id is replaced, never echoed; only a bare tokio::spawn loses the context",
    );
    inventory.shutdown().await;

    // Blocking work keeps the context too.
    let ctx = Context::new().with_request_id(RequestId::parse(b"blocking-1")?);
    let (kept, bare) = ctx
        .scope(async {
            let kept = rampart::spawn_blocking(current_id).await?;
            let bare = tokio::task::spawn_blocking(current_id).await?;
            Ok::<_, BoxError>((kept, bare))
        })
        .await?;
    crate::line(format_args!(
        "rampart::spawn_blocking saw {kept}; a bare tokio::task::spawn_blocking saw {bare}"
    ));
    if kept != "blocking-1" || bare != "none" {
        return Err("spawn_blocking did not carry the context".into());
    }

    // A call whose deadline already passed is refused, never sent as "0",
    // and a tonic client sees DEADLINE_EXCEEDED.
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    let client = tower::ServiceBuilder::new()
        .layer(rampart::GrpcStatusLayer::new())
        .layer(PropagateContextLayer::new().with_deadline())
        .service(tower::service_fn(move |_req: Request<()>| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok::<_, BoxError>(http::Response::new(())) }
        }));
    let late = Context::new().with_deadline(tokio::time::Instant::now());
    let status = late
        .scope(client.oneshot(Request::new(())))
        .await
        .expect_err("an expired deadline is refused");
    let calls = sent.load(std::sync::atomic::Ordering::SeqCst);
    crate::line(format_args!(
        "an expired deadline: {:?} before sending, downstream calls: {calls}",
        status.code()
    ));
    if status.code() != tonic::Code::DeadlineExceeded || calls != 0 {
        return Err("an expired deadline was not refused".into());
    }
    Ok(())
}
