//! Context variables: the article's `contextvars` request id, then the same
//! id carried from an axum edge to a hyper server and a tonic server.
//!
//! Run it with `cargo run --example context_vars`.
//!
//! Part 1 is the article's example: three concurrent `handle_request`s, each
//! printing its own id from a task-local context.
//!
//! Part 2 is a real chain on 127.0.0.1:
//!
//! ```text
//! caller ──► edge (axum, RequestIdLayer)
//!              ├─► inventory (hyper)      via PropagateContextLayer + hyper-util client
//!              └─► health (tonic-health)  via PropagateContextLayer + tonic channel
//! ```
//!
//! The downstream servers print the `x-request-id` they received; it is the
//! id the edge returned to the caller — the one the caller sent, or the
//! UUIDv7 the edge generated. The example checks that and exits non-zero
//! if it does not hold.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rampart::context::{PropagateContext, PropagateContextLayer, RequestIdLayer};
use rampart::{BoxError, Context, RequestId};
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint, Server, server::TcpIncoming};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::{Layer, ServiceExt};

// ---------------------------------------------------------------- part 1

async fn log_request() {
    // The three requests interleave here; each still sees its own value.
    tokio::task::yield_now().await;
    let ctx = Context::current().expect("inside handle_request's scope");
    println!("Processing request: {}", ctx.request_id().expect("set"));
}

async fn handle_request(req_id: &str) -> Result<(), BoxError> {
    // `request_id.set(req_id)` ... `request_id.reset(token)`: the scope ends
    // with the future, on success, error or cancellation alike.
    let id: RequestId = req_id.parse()?;
    Context::new()
        .with_request_id(id)
        .scope(log_request())
        .await;
    Ok(())
}

// ---------------------------------------------------------------- part 2

/// Ids the downstream servers received, in arrival order.
type Seen = Arc<Mutex<Vec<String>>>;

/// The id of the request being handled (the `ReqId` extractor of
/// `rampart-context`'s `axum` feature does the same from a handler's
/// arguments).
fn current_id() -> String {
    Context::current()
        .and_then(|c| c.request_id().map(ToString::to_string))
        .unwrap_or_else(|| "none".into())
}

/// inventory: a plain hyper server that prints the id it received.
async fn start_inventory(seen: Seen) -> Result<SocketAddr, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let id = header_text(req.headers().get("x-request-id"));
                println!("  [inventory] received x-request-id: {id}");
                seen.lock().unwrap().push(id);
                async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("3 in stock")))) }
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// health: tonic-health's server behind an interceptor that prints the id.
async fn start_health(seen: Seen) -> Result<SocketAddr, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (_reporter, health) = tonic_health::server::health_reporter();
    let print_id = tonic::service::InterceptorLayer::new(move |req: tonic::Request<()>| {
        let id = req
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(none)")
            .to_owned();
        println!("  [health]    received x-request-id: {id}");
        seen.lock().unwrap().push(id);
        Ok(req)
    });
    tokio::spawn(
        Server::builder()
            .layer(print_id)
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    Ok(addr)
}

fn header_text(v: Option<&http::HeaderValue>) -> String {
    v.and_then(|v| v.to_str().ok())
        .unwrap_or("(none)")
        .to_owned()
}

/// The edge's clients: both wrapped in `PropagateContextLayer`, so every
/// call made while handling a request carries its id.
#[derive(Clone)]
struct Downstreams {
    http: PropagateContext<Client<HttpConnector, Empty<Bytes>>>,
    inventory: String,
    health: HealthClient<PropagateContext<Channel>>,
}

async fn order(State(down): State<Downstreams>) -> Result<String, (StatusCode, String)> {
    let err = |e: BoxError| (StatusCode::BAD_GATEWAY, e.to_string());
    println!("  [edge]      handling request {}", current_id());
    let req = Request::get(&down.inventory)
        .body(Empty::new())
        .map_err(|e| err(e.into()))?;
    let res = down
        .http
        .clone()
        .oneshot(req)
        .await
        .map_err(|e| err(e.into()))?;
    let stock = res
        .into_body()
        .collect()
        .await
        .map_err(|e| err(e.into()))?
        .to_bytes();
    let status = down
        .health
        .clone()
        .check(HealthCheckRequest::default())
        .await
        .map_err(|e| err(e.into()))?
        .into_inner()
        .status;
    let status = ServingStatus::try_from(status).map_or("?", |s| s.as_str_name());
    Ok(format!(
        "order ok: {}, health {status}",
        String::from_utf8_lossy(&stock)
    ))
}

async fn start_edge(inventory: SocketAddr, health: SocketAddr) -> Result<SocketAddr, BoxError> {
    let propagate = PropagateContextLayer::new();
    let channel = Endpoint::from_shared(format!("http://{health}"))?
        .connect()
        .await?;
    let down = Downstreams {
        http: propagate.layer(Client::builder(TokioExecutor::new()).build_http()),
        inventory: format!("http://{inventory}/stock"),
        health: HealthClient::new(propagate.layer(channel)),
    };
    let app = Router::new()
        .route("/order", get(order))
        .with_state(down)
        .layer(RequestIdLayer::new());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

/// One call to the edge, optionally with an id; checks that both downstream
/// servers received the id the edge returned.
async fn call_edge(
    edge: SocketAddr,
    id: Option<&'static str>,
    seen: &Seen,
) -> Result<(), BoxError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut req = Request::get(format!("http://{edge}/order")).body(Empty::new())?;
    match id {
        Some(id) => {
            println!("caller sends x-request-id: {id}");
            req.headers_mut().insert("x-request-id", id.parse()?);
        }
        None => println!("caller sends no x-request-id"),
    }
    seen.lock().unwrap().clear();
    let res = client.request(req).await?;
    let returned = header_text(res.headers().get("x-request-id"));
    let body = res.into_body().collect().await?.to_bytes();
    println!(
        "caller got x-request-id: {returned} ({})",
        String::from_utf8_lossy(&body)
    );
    let seen = seen.lock().unwrap().clone();
    if seen.len() != 2 || seen.iter().any(|s| *s != returned) {
        return Err(format!("downstreams saw {seen:?}, the edge returned {returned}").into());
    }
    if id.is_some_and(|sent| sent != returned) {
        return Err(format!("the edge replaced a valid id: {id:?} -> {returned}").into());
    }
    println!("  ok: inventory and health received the id the edge returned\n");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    println!("== part 1: the article's contextvars ==");
    // asyncio.gather(...)
    futures_util::future::try_join_all([
        handle_request("req-1"),
        handle_request("req-2"),
        handle_request("req-3"),
    ])
    .await?;

    println!("\n== part 2: edge -> hyper + tonic, the id on every hop ==");
    let seen = Seen::default();
    let inventory = start_inventory(seen.clone()).await?;
    let health = start_health(seen.clone()).await?;
    let edge = start_edge(inventory, health).await?;
    call_edge(edge, Some("order-42"), &seen).await?;
    call_edge(edge, None, &seen).await?;
    Ok(())
}
