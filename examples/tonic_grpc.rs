//! gRPC with tonic: a tonic-health server behind the server stack and a
//! tonic-health client behind the gRPC-aware client stack.
//!
//! Run it with `cargo run --example tonic_grpc`.
//!
//! ```text
//! client: tonic status → propagate context → total deadline → retry → concurrency limit
//!           → per-attempt timeout → grpc-timeout on the wire → tonic Channel
//! server: request id → handle errors → deadline from grpc-timeout → concurrency limit → tonic-health
//! ```
//!
//! 1. UNAVAILABLE with `grpc-retry-pushback-ms: 200`, then UNAVAILABLE, then
//!    OK (a scripted h2c server, `rampart_testkit::FlakyServer`): the client
//!    retries, waits the pushback, and sees `Ok`; every attempt carries a
//!    `grpc-timeout` that shrinks.
//! 2. A real tonic-health server behind the server stack: the caller's id
//!    and `grpc-timeout` reach the handler's context; a call slower than the
//!    caller's deadline ends with DEADLINE_EXCEEDED (not UNKNOWN); a
//!    negative pushback is not retried.
//!
//! Exits non-zero if an outcome is not the expected one.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use rampart::BoxError;
use rampart::prelude::*;
use rampart::retry::Jitter;
use rampart_testkit::{FlakyServer, Reply};
use tokio::net::TcpListener;
use tonic::Code;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint, Server, server::TcpIncoming};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::{Service, ServiceBuilder};

/// The gRPC-aware client stack around a tonic `Channel`.
fn client_stack(
    channel: Channel,
    total: Duration,
) -> Result<HealthClient<impl GrpcStack>, BoxError> {
    // `tonic()`: classifies gRPC statuses and replays the request body into
    // the `tonic::body::Body` a `Channel` takes.
    let retry = RetryLayer::tonic()
        .max_attempts(4)
        .backoff(Backoff::exponential(Duration::from_millis(20)).jitter(Jitter::None))
        .build()?;
    let svc = ServiceBuilder::new()
        .tonic_status()
        .propagate_context()
        .deadline(total)
        .retry_with(retry)
        .limit_concurrency(ConcurrencyLimitLayer::new(8))
        .attempt_timeout(Duration::from_secs(1))
        .propagate_deadline()
        .map_err(channel_deadline)
        .service(channel);
    Ok(HealthClient::new(svc))
}

/// A tonic `Channel` enforces the `grpc-timeout` header of the requests it
/// sends (the one `propagate_deadline` wrote) and fails with
/// `tonic::TimeoutExpired` at the same instant as the rampart deadline;
/// tonic maps that to CANCELLED. It is the request's deadline, so it is
/// reported as one: the client then sees DEADLINE_EXCEEDED.
fn channel_deadline(e: tonic::transport::Error) -> BoxError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if s.is::<tonic::TimeoutExpired>() {
            return rampart::Error::deadline_exceeded().into();
        }
        source = s.source();
    }
    e.into()
}

/// What a tonic client needs of its transport.
trait GrpcStack:
    Service<Request<Body>, Response = Response<Body>, Error: Into<BoxError>, Future: Send>
    + Clone
    + Send
    + 'static
{
}

impl<T> GrpcStack for T where
    T: Service<Request<Body>, Response = Response<Body>, Error: Into<BoxError>, Future: Send>
        + Clone
        + Send
        + 'static
{
}

async fn channel(addr: SocketAddr) -> Result<Channel, BoxError> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?)
}

struct Checks {
    failed: usize,
}

impl Checks {
    fn check(&mut self, what: &str, ok: bool, seen: impl std::fmt::Display) {
        println!("  [{}] {what}: {seen}", if ok { "pass" } else { "FAIL" });
        if !ok {
            self.failed += 1;
        }
    }
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.into(),
    }
}

fn outcome<T>(r: &Result<T, tonic::Status>) -> String {
    match r {
        Ok(_) => "OK".into(),
        Err(s) => format!("{:?} ({})", s.code(), s.message()),
    }
}

async fn unavailable_with_pushback(c: &mut Checks) -> Result<(), BoxError> {
    println!("1. UNAVAILABLE (pushback 200 ms), UNAVAILABLE, then OK:");
    let server = FlakyServer::builder()
        .script([
            Reply::grpc(14).grpc_pushback_ms(200),
            Reply::grpc(14),
            Reply::grpc_ok(),
        ])
        .start()
        .await?;
    let mut client = client_stack(channel(server.addr()).await?, Duration::from_secs(3))?;
    let started = Instant::now();
    let r = client.check(check("")).await;
    let took = started.elapsed();
    let seen = server.requests();
    let timeouts: Vec<&str> = seen
        .iter()
        .filter_map(|r| r.header("grpc-timeout"))
        .collect();
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].at - w[0].at).collect();
    println!(
        "     {} attempts, grpc-timeout sent: {timeouts:?}, gaps {gaps:?}",
        seen.len()
    );
    c.check(
        "OK after 3 attempts",
        r.is_ok() && seen.len() == 3,
        format!("{} after {took:?}", outcome(&r)),
    );
    c.check(
        "the 200 ms pushback was waited before the 2nd attempt",
        gaps.first()
            .is_some_and(|g| *g >= Duration::from_millis(190)),
        format!("{gaps:?}"),
    );
    c.check(
        "every attempt carried a grpc-timeout within the 3 s total",
        timeouts.len() == 3
            && timeouts.iter().all(|t| {
                rampart::codec::parse_grpc_timeout(t.as_bytes())
                    .is_some_and(|d| d <= Duration::from_secs(3))
            }),
        format!("{timeouts:?}"),
    );
    Ok(())
}

async fn negative_pushback(c: &mut Checks) -> Result<(), BoxError> {
    println!("2. UNAVAILABLE with a negative pushback (\"do not retry\"):");
    let server = FlakyServer::builder()
        .script([Reply::grpc(14).grpc_pushback_ms(-1), Reply::grpc_ok()])
        .start()
        .await?;
    let mut client = client_stack(channel(server.addr()).await?, Duration::from_secs(3))?;
    let r = client.check(check("")).await;
    c.check(
        "UNAVAILABLE after one attempt",
        r.as_ref().is_err_and(|s| s.code() == Code::Unavailable) && server.request_count() == 1,
        format!("{}, {} attempt(s)", outcome(&r), server.request_count()),
    );
    Ok(())
}

/// What the server's handler side saw: (request id, grpc-timeout header,
/// time left in its context).
type Seen = Arc<Mutex<Vec<(String, String, Option<Duration>)>>>;

/// tonic-health behind the recommended server stack, plus a probe inside
/// the deadline layer that records what reached it and sleeps when the
/// caller sends `x-slow-ms`.
async fn start_server(seen: Seen) -> Result<SocketAddr, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("shop", tonic_health::ServingStatus::Serving)
        .await;
    let probe = tower::layer::layer_fn(move |inner| Probe {
        inner,
        seen: seen.clone(),
    });
    let stack = ServiceBuilder::new()
        .request_id()
        .handle_errors()
        .deadline_from_headers(Duration::from_secs(5))
        .limit_concurrency(ConcurrencyLimitLayer::new(16))
        .layer(probe);
    tokio::spawn(
        Server::builder()
            .layer(stack)
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    Ok(addr)
}

#[derive(Clone)]
struct Probe<S> {
    inner: S,
    seen: Seen,
}

impl<S, B> Service<Request<B>> for Probe<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let ctx = Context::current();
        let header = |n: &str| {
            req.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let id = ctx
            .as_ref()
            .and_then(|c| c.request_id().map(ToString::to_string))
            .unwrap_or_default();
        self.seen.lock().unwrap().push((
            id,
            header("grpc-timeout"),
            ctx.as_ref().and_then(Context::remaining),
        ));
        let slow = header("x-slow-ms").parse().ok().map(Duration::from_millis);
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            if let Some(d) = slow {
                tokio::time::sleep(d).await;
            }
            inner.call(req).await
        })
    }
}

async fn real_server(c: &mut Checks) -> Result<(), BoxError> {
    println!("3. a tonic-health server behind the server stack:");
    let seen = Seen::default();
    let addr = start_server(seen.clone()).await?;
    let ch = channel(addr).await?;

    let mut client = client_stack(ch.clone(), Duration::from_millis(800))?;
    let ctx = Context::new().with_request_id(RequestId::parse(b"grpc-21")?);
    let r = ctx.scope(client.check(check("shop"))).await;
    let serving = r
        .as_ref()
        .is_ok_and(|r| r.get_ref().status == ServingStatus::Serving as i32);
    let last = seen.lock().unwrap().last().cloned();
    println!("     the server side saw {last:?}");
    c.check("SERVING", serving, outcome(&r));
    c.check(
        "the caller's id and grpc-timeout reached the server's context",
        last.as_ref().is_some_and(|(id, t, left)| {
            id == "grpc-21"
                && !t.is_empty()
                && left.is_some_and(|l| l <= Duration::from_millis(800))
        }),
        format!("{last:?}"),
    );

    // A call that takes 1 s against a 300 ms deadline.
    let mut client = client_stack(ch, Duration::from_millis(300))?;
    let mut req = tonic::Request::new(check("shop"));
    req.metadata_mut().insert("x-slow-ms", "1000".parse()?);
    let started = Instant::now();
    let r = client.check(req).await;
    let took = started.elapsed();
    c.check(
        "a call slower than the 300 ms deadline is DEADLINE_EXCEEDED",
        r.as_ref()
            .is_err_and(|s| s.code() == Code::DeadlineExceeded)
            && took < Duration::from_millis(900),
        format!("{} after {took:?}", outcome(&r)),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut c = Checks { failed: 0 };
    let run = async {
        unavailable_with_pushback(&mut c).await?;
        negative_pushback(&mut c).await?;
        real_server(&mut c).await?;
        Ok::<_, BoxError>(())
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .map_err(|_| "tonic_grpc did not finish within 60 s")??;
    if c.failed > 0 {
        return Err(format!("{} check(s) failed", c.failed).into());
    }
    println!("all checks passed");
    Ok(())
}
