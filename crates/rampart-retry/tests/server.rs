//! Against the testkit's real hyper server on loopback: streaming bodies are
//! replayed byte for byte, bodies past the replay cap are sent once and
//! whole, and a request refused before it was sent is retried whatever its
//! method. Real time, bounded by an outer timeout.

use bytes::Bytes;
use futures_util::Stream;
use http::{HeaderName, Method, Request, StatusCode, Uri};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rampart_retry::{Backoff, ReplayBody, RetryLayer};
use rampart_testkit::{FlakyServer, Reply};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tower::{Layer, ServiceExt, service_fn};

type Chunks = Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>;
type Body = StreamBody<Chunks>;

const LIMIT: Duration = Duration::from_secs(20);

/// `len` bytes of a non-repeating pattern, streamed in `chunk`-byte pieces
/// from another task, with a yield between pieces.
fn streaming(len: usize, chunk: usize) -> (Body, Bytes) {
    let data: Bytes = (0..len)
        .map(|i| (i * 31 % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    let d = data.clone();
    tokio::spawn(async move {
        for start in (0..d.len()).step_by(chunk) {
            let piece = d.slice(start..(start + chunk).min(d.len()));
            if tx.send(piece).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok(Frame::data(b)), rx))
    });
    (StreamBody::new(Box::pin(stream) as Chunks), data)
}

fn assert_send<T: Send>(_: &T) {}

fn client() -> Client<HttpConnector, ReplayBody<Body>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn put(uri: Uri, body: Body) -> Request<Body> {
    Request::builder()
        .method(Method::PUT)
        .uri(uri)
        .body(body)
        .unwrap()
}

#[tokio::test]
async fn streaming_10_kib_body_is_replayed_byte_exact_on_the_second_attempt() {
    tokio::time::timeout(LIMIT, async {
        let server = FlakyServer::builder()
            .script([Reply::status(503), Reply::ok()])
            .start()
            .await
            .unwrap();
        let retry = RetryLayer::http()
            .backoff(Backoff::constant(Duration::from_millis(10)))
            .attempt_header(HeaderName::from_static("x-retry-attempt"))
            .build()
            .unwrap()
            .layer(client());
        let (body, data) = streaming(10 * 1024, 1024);
        assert_eq!(data.len(), 10_240);
        let fut = retry.oneshot(put(server.uri("/upload"), body));
        assert_send(&fut);
        let res = fut.await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let seen = server.requests();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].body, data, "first attempt streamed everything");
        assert_eq!(
            seen[1].body, data,
            "second attempt replayed it byte for byte"
        );
        assert_eq!(seen[0].header("x-retry-attempt"), None);
        assert_eq!(seen[1].header("x-retry-attempt"), Some("2"));
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn one_mib_body_is_sent_once_whole_and_not_retried() {
    tokio::time::timeout(LIMIT, async {
        let server = FlakyServer::builder()
            .script([Reply::status(503), Reply::ok()])
            .start()
            .await
            .unwrap();
        let layer = RetryLayer::http()
            .backoff(Backoff::none())
            .stats()
            .build()
            .unwrap();
        let (body, data) = streaming(1024 * 1024, 64 * 1024);
        let res = layer
            .layer(client())
            .oneshot(put(server.uri("/big"), body))
            .await
            .unwrap();
        // The failure comes back: the body could not be replayed.
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let seen = server.requests();
        assert_eq!(seen.len(), 1, "sent once");
        assert_eq!(seen[0].body.len(), 1024 * 1024);
        assert_eq!(seen[0].body, data, "never truncated or corrupted");
        let stats = layer.stats().unwrap();
        assert_eq!((stats.calls, stats.retries, stats.exhausted), (1, 0, 1));
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn post_refused_before_sending_is_retried_against_the_live_server() {
    tokio::time::timeout(LIMIT, async {
        let server = FlakyServer::builder().start().await.unwrap();
        // A port with nobody listening: the first attempt is refused.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        let live = server.addr();
        let attempts = Arc::new(AtomicUsize::new(0));
        let a = attempts.clone();
        let c = client();
        let routed = service_fn(move |mut req: Request<ReplayBody<Body>>| {
            let target = if a.fetch_add(1, Ordering::SeqCst) == 0 {
                dead_addr
            } else {
                live
            };
            *req.uri_mut() = format!("http://{target}/orders").parse().unwrap();
            c.request(req)
        });
        let retry = RetryLayer::http()
            .backoff(Backoff::none())
            .build()
            .unwrap()
            .layer(routed);
        let (body, data) = streaming(4096, 512);
        let req = Request::post("http://placeholder/orders")
            .body(body)
            .unwrap();
        let res = retry.oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        let seen = server.requests();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].method, Method::POST);
        assert_eq!(seen[0].body, data);
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn post_answered_503_by_the_server_is_not_retried() {
    tokio::time::timeout(LIMIT, async {
        let server = FlakyServer::builder()
            .script([Reply::status(503)])
            .start()
            .await
            .unwrap();
        let (body, _) = streaming(100, 10);
        let req = Request::post(server.uri("/orders")).body(body).unwrap();
        let res = RetryLayer::http()
            .backoff(Backoff::none())
            .build()
            .unwrap()
            .layer(client())
            .oneshot(req)
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(
            body.starts_with(b"flaky failure"),
            "the response body is intact"
        );
        assert_eq!(server.request_count(), 1);
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn connection_reset_on_a_get_is_retried() {
    tokio::time::timeout(LIMIT, async {
        let server = FlakyServer::builder()
            .script([Reply::reset(), Reply::reset()])
            .start()
            .await
            .unwrap();
        let client: Client<HttpConnector, ReplayBody<http_body_util::Empty<Bytes>>> =
            Client::builder(TokioExecutor::new()).build_http();
        let res = RetryLayer::http()
            .backoff(Backoff::constant(Duration::from_millis(5)))
            .build()
            .unwrap()
            .layer(client)
            .oneshot(
                Request::get(server.uri("/r"))
                    .body(http_body_util::Empty::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(server.request_count(), 3);
    })
    .await
    .expect("bounded");
}
