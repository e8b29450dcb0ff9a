//! Real servers on 127.0.0.1: an axum edge under `RequestIdLayer` whose
//! handler calls a hyper server (rampart-testkit's `FlakyServer`) through a
//! `PropagateContextLayer` client, and a tonic-health server through a
//! `PropagateContextLayer`-wrapped tonic channel.
//!
//! Every test is bounded by an outer `tokio::time::timeout`.

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rampart_context::{PropagateContext, PropagateContextLayer, ReqId, RequestIdLayer};
use rampart_core::Context;
use rampart_testkit::{FlakyServer, Reply};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint, Server, server::TcpIncoming};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tower::{Layer, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type HttpClient = PropagateContext<Client<HttpConnector, Empty<Bytes>>>;
type GrpcClient = HealthClient<PropagateContext<Channel>>;

/// Bounds a test that uses real sockets.
async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("test took longer than 60 s")
}

/// What the gRPC server saw: (`service` field of the request, its
/// `x-request-id`, its `grpc-timeout`).
type GrpcSeen = Arc<Mutex<Vec<(String, Option<String>, Option<String>)>>>;

/// A health service that records the metadata of every check.
struct RecordingHealth {
    seen: GrpcSeen,
}

#[tonic::async_trait]
impl Health for RecordingHealth {
    async fn check(
        &self,
        req: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
        let meta = |k: &str| {
            req.metadata()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let entry = (
            req.get_ref().service.clone(),
            meta("x-request-id"),
            meta("grpc-timeout"),
        );
        self.seen.lock().unwrap().push(entry);
        Ok(tonic::Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }

    type WatchStream = futures_util::stream::Empty<Result<HealthCheckResponse, tonic::Status>>;

    async fn watch(
        &self,
        _req: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not used"))
    }
}

/// The two downstream servers and the edge.
struct Chain {
    edge: SocketAddr,
    grpc: SocketAddr,
    http: FlakyServer,
    grpc_seen: GrpcSeen,
    peak_handlers: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Clone)]
struct App {
    http: HttpClient,
    http_base: String,
    grpc: GrpcClient,
    in_handler: Arc<AtomicUsize>,
    peak_handlers: Arc<AtomicUsize>,
}

fn current_id() -> String {
    Context::current()
        .and_then(|c| c.request_id().map(ToString::to_string))
        .unwrap_or_else(|| "none".into())
}

fn internal(e: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

impl App {
    /// GET `{http_base}/{path}`; the downstream answers with the id it got.
    async fn call_http(&self, path: &str) -> Result<String, (StatusCode, String)> {
        let req = Request::get(format!("{}/{path}", self.http_base))
            .body(Empty::new())
            .map_err(internal)?;
        let res = self.http.clone().oneshot(req).await.map_err(internal)?;
        let body = res.into_body().collect().await.map_err(internal)?;
        String::from_utf8(body.to_bytes().to_vec()).map_err(internal)
    }

    async fn call_grpc(&self, key: String) -> Result<(), (StatusCode, String)> {
        let mut grpc = self.grpc.clone();
        grpc.check(HealthCheckRequest { service: key })
            .await
            .map_err(internal)?;
        Ok(())
    }
}

/// `/chain/{n}`: reports the ids it sees before and after calling both
/// downstreams (keyed by `n`, which does not go through any context
/// machinery), and in a task started with the spawn helper.
async fn chain(
    State(app): State<App>,
    Path(n): Path<u32>,
    ReqId(id): ReqId,
) -> Result<String, (StatusCode, String)> {
    let now = app.in_handler.fetch_add(1, Ordering::SeqCst) + 1;
    app.peak_handlers.fetch_max(now, Ordering::SeqCst);
    let before = current_id();
    tokio::task::yield_now().await;
    let http_saw = app.call_http(&format!("chain/{n}")).await;
    let grpc = app.call_grpc(format!("chain/{n}")).await;
    let after = current_id();
    let spawned = rampart_core::spawn(async { current_id() })
        .await
        .map_err(internal)?;
    app.in_handler.fetch_sub(1, Ordering::SeqCst);
    grpc?;
    Ok(format!("{id} {before} {after} {spawned} {}", http_saw?))
}

/// `/spawned`: downstream calls from a task started with the spawn helper
/// and from a bare `tokio::spawn`.
async fn spawned(State(app): State<App>) -> Result<String, (StatusCode, String)> {
    let a = app.clone();
    let helper = rampart_core::spawn(async move { a.call_http("helper").await });
    let bare = tokio::spawn(async move { app.call_http("bare").await });
    let helper = helper.await.map_err(internal)??;
    let bare = bare.await.map_err(internal)??;
    Ok(format!("{helper} {bare}"))
}

impl Chain {
    async fn start() -> Result<Chain, BoxError> {
        let http = FlakyServer::builder()
            .seed(6)
            .handler(|r| {
                let saw = r.header("x-request-id").unwrap_or("none").to_owned();
                Some(Reply::ok().body(saw))
            })
            .start()
            .await?;

        let grpc_seen = GrpcSeen::default();
        let grpc_listener = TcpListener::bind("127.0.0.1:0").await?;
        let grpc_addr = grpc_listener.local_addr()?;
        let health = HealthServer::new(RecordingHealth {
            seen: grpc_seen.clone(),
        });
        let grpc_task = tokio::spawn(async move {
            let _ = Server::builder()
                .add_service(health)
                .serve_with_incoming(TcpIncoming::from(grpc_listener))
                .await;
        });
        let channel = Endpoint::from_shared(format!("http://{grpc_addr}"))?
            .connect()
            .await?;

        let propagate = PropagateContextLayer::new();
        let peak_handlers = Arc::new(AtomicUsize::new(0));
        let app = App {
            http: propagate.layer(Client::builder(TokioExecutor::new()).build_http()),
            http_base: format!("http://{}", http.addr()),
            grpc: HealthClient::new(propagate.layer(channel)),
            in_handler: Arc::default(),
            peak_handlers: peak_handlers.clone(),
        };
        let router = Router::new()
            .route("/chain/{n}", get(chain))
            .route("/spawned", get(spawned))
            .with_state(app)
            .layer(RequestIdLayer::new());
        let edge_listener = TcpListener::bind("127.0.0.1:0").await?;
        let edge = edge_listener.local_addr()?;
        let edge_task = tokio::spawn(async move {
            let _ = axum::serve(edge_listener, router).await;
        });
        Ok(Chain {
            edge,
            grpc: grpc_addr,
            http,
            grpc_seen,
            peak_handlers,
            tasks: vec![grpc_task, edge_task],
        })
    }

    /// The `x-request-id` the HTTP downstream recorded for `path`.
    fn http_saw(&self, path: &str) -> Vec<Option<String>> {
        self.http
            .requests()
            .iter()
            .filter(|r| r.uri.path() == path)
            .map(|r| r.header("x-request-id").map(str::to_owned))
            .collect()
    }

    /// The `x-request-id` the gRPC downstream recorded for `key`.
    fn grpc_saw(&self, key: &str) -> Vec<Option<String>> {
        self.grpc_seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _, _)| k == key)
            .map(|(_, id, _)| id.clone())
            .collect()
    }

    async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.http.shutdown().await;
    }
}

/// A plain hyper client for the test's own calls to the edge.
fn caller() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GET `path` on the edge, optionally with an `x-request-id`; returns the
/// echoed id and the body.
async fn get_edge(
    client: &Client<HttpConnector, Empty<Bytes>>,
    edge: SocketAddr,
    path: &str,
    id: Option<&[u8]>,
) -> Result<(String, String), BoxError> {
    let mut req = Request::get(format!("http://{edge}{path}")).body(Empty::new())?;
    if let Some(id) = id {
        req.headers_mut()
            .insert("x-request-id", HeaderValue::from_bytes(id)?);
    }
    let res = client.request(req).await?;
    assert_eq!(res.status(), 200);
    let echoed = res.headers()["x-request-id"].to_str()?.to_owned();
    let body = res.into_body().collect().await?.to_bytes();
    Ok((echoed, String::from_utf8(body.to_vec())?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_id_reaches_http_and_grpc_downstreams_and_comes_back() {
    bounded(async {
        let chain = Chain::start().await.unwrap();
        let (echoed, body) = get_edge(&caller(), chain.edge, "/chain/1", Some(b"caller-abc-1"))
            .await
            .unwrap();
        assert_eq!(echoed, "caller-abc-1");
        assert_eq!(
            body,
            "caller-abc-1 caller-abc-1 caller-abc-1 caller-abc-1 caller-abc-1"
        );
        assert_eq!(
            chain.http_saw("/chain/1"),
            [Some("caller-abc-1".to_owned())]
        );
        assert_eq!(chain.grpc_saw("chain/1"), [Some("caller-abc-1".to_owned())]);
        chain.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_id_reaches_http_and_grpc_downstreams_and_comes_back() {
    bounded(async {
        let chain = Chain::start().await.unwrap();
        let (echoed, body) = get_edge(&caller(), chain.edge, "/chain/2", None)
            .await
            .unwrap();
        assert_eq!(echoed.len(), 36, "a UUID: {echoed}");
        assert_eq!(&echoed[14..15], "7", "version 7: {echoed}");
        assert_eq!(body, [echoed.as_str(); 5].join(" "));
        assert_eq!(chain.http_saw("/chain/2"), [Some(echoed.clone())]);
        assert_eq!(chain.grpc_saw("chain/2"), [Some(echoed)]);
        chain.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_id_is_replaced_end_to_end_and_never_reaches_downstreams() {
    bounded(async {
        let chain = Chain::start().await.unwrap();
        let long = vec![b'x'; 4096];
        for (n, bad) in [&b"evil<script>"[..], b"a b c", &long]
            .into_iter()
            .enumerate()
        {
            let path = format!("/chain/{}", 100 + n);
            let (echoed, body) = get_edge(&caller(), chain.edge, &path, Some(bad))
                .await
                .unwrap();
            assert_ne!(echoed.as_bytes(), bad);
            assert!(rampart_core::RequestId::parse(echoed.as_bytes()).is_ok());
            assert_eq!(body, [echoed.as_str(); 5].join(" "));
            assert_eq!(chain.http_saw(&path), [Some(echoed.clone())]);
            assert_eq!(chain.grpc_saw(&path[1..]), [Some(echoed)]);
        }
        chain.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_requests_never_see_each_others_id() {
    const N: u32 = 1000;
    bounded(async {
        let chain = Chain::start().await.unwrap();
        let client = caller();
        let calls = (0..N).map(|n| {
            let client = client.clone();
            let edge = chain.edge;
            tokio::spawn(async move {
                let id = format!("load-{n}");
                let path = format!("/chain/{n}");
                let got = get_edge(&client, edge, &path, Some(id.as_bytes())).await;
                (n, id, got)
            })
        });
        let results = futures_util::future::join_all(calls).await;
        for r in results {
            let (n, id, got) = r.unwrap();
            let (echoed, body) = got.unwrap();
            assert_eq!(echoed, id, "response header of request {n}");
            assert_eq!(
                body,
                [id.as_str(); 5].join(" "),
                "handler, before/after awaits, spawned task, HTTP downstream of request {n}"
            );
            assert_eq!(chain.http_saw(&format!("/chain/{n}")), [Some(id.clone())]);
            assert_eq!(chain.grpc_saw(&format!("chain/{n}")), [Some(id)]);
        }
        let peak = chain.peak_handlers.load(Ordering::SeqCst);
        assert!(
            peak >= 10,
            "requests really ran concurrently (peak {peak} handlers in flight)"
        );
        chain.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_helper_keeps_the_id_on_the_wire_and_bare_tokio_spawn_loses_it() {
    bounded(async {
        let chain = Chain::start().await.unwrap();
        let (echoed, body) = get_edge(&caller(), chain.edge, "/spawned", Some(b"spawn-1"))
            .await
            .unwrap();
        assert_eq!(echoed, "spawn-1");
        assert_eq!(body, "spawn-1 none");
        assert_eq!(chain.http_saw("/helper"), [Some("spawn-1".to_owned())]);
        assert_eq!(
            chain.http_saw("/bare"),
            [None],
            "a bare tokio::spawn loses the context, as documented"
        );
        chain.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remaining_deadline_reaches_the_tonic_server_as_grpc_timeout() {
    bounded(async {
        let chain = Chain::start().await.unwrap();
        // A second client of the gRPC server, with deadline propagation on.
        let channel = Endpoint::from_shared(format!("http://{}", chain.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let layer = PropagateContextLayer::builder().deadline().build().unwrap();
        let mut client = HealthClient::new(layer.layer(channel));
        let ctx = Context::new()
            .with_request_id("deadline-1".parse().unwrap())
            .with_timeout(Duration::from_secs(5));
        ctx.scope(client.check(HealthCheckRequest {
            service: "deadline".into(),
        }))
        .await
        .unwrap();
        let seen = chain.grpc_seen.lock().unwrap().clone();
        let (_, id, timeout) = seen.iter().find(|(k, _, _)| k == "deadline").unwrap();
        assert_eq!(id.as_deref(), Some("deadline-1"));
        let timeout =
            rampart_core::codec::parse_grpc_timeout(timeout.as_ref().unwrap().as_bytes()).unwrap();
        assert!(timeout <= Duration::from_secs(5), "{timeout:?}");
        assert!(timeout > Duration::from_secs(4), "{timeout:?}");
        chain.stop().await;
    })
    .await;
}
