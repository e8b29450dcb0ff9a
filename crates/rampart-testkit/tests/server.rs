//! FlakyServer over real loopback sockets. Every test is bounded by an outer
//! timeout so a bug cannot hang the suite.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rampart_testkit::{FlakyServer, Reply, ReplySource};

type TestClient = Client<HttpConnector, Full<Bytes>>;

fn h1() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn h2() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("test took too long")
}

/// GET `path`, returning the status (or `None` on a client error).
async fn get_status(client: &TestClient, server: &FlakyServer, path: &str) -> Option<u16> {
    client
        .get(server.uri(path))
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

#[tokio::test]
async fn script_is_played_in_order_then_falls_back() {
    bounded(async {
        let server = FlakyServer::builder()
            .script([
                Reply::status(503).retry_after("2"),
                Reply::ok().body("scripted"),
                Reply::reset(),
                Reply::delay(Duration::from_millis(50), Reply::status(429)),
            ])
            .start()
            .await
            .unwrap();
        let client = h1();

        let r = client.get(server.uri("/one")).await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()["retry-after"], "2");

        let r = client.get(server.uri("two")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.into_body().collect().await.unwrap().to_bytes(),
            "scripted"
        );

        let err = client.get(server.uri("/three")).await;
        assert!(err.is_err(), "a reset must be a client error: {err:?}");

        let started = std::time::Instant::now();
        assert_eq!(get_status(&client, &server, "/four").await, Some(429));
        assert!(started.elapsed() >= Duration::from_millis(50));

        // Script exhausted, failure ratio 0: success with the default body.
        let r = client.get(server.uri("/five")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), "ok 4");

        let reqs = server.requests();
        assert_eq!(reqs.len(), 5);
        assert_eq!(server.request_count(), 5);
        assert_eq!(server.script_remaining(), 0);
        let paths: Vec<_> = reqs.iter().map(|r| r.uri.path().to_owned()).collect();
        assert_eq!(paths, ["/one", "/two", "/three", "/four", "/five"]);
        assert!(reqs.iter().enumerate().all(|(i, r)| r.seq == i));
        assert!(reqs[2].reply.as_ref().unwrap().is_reset());
        assert_eq!(reqs[3].source, Some(ReplySource::Script));
        assert_eq!(reqs[4].source, Some(ReplySource::Random));
        assert!(reqs.windows(2).all(|w| w[0].at <= w[1].at));
        assert_eq!(server.inflight(), 0);

        // More script at run time.
        server.push_script([Reply::status(502)]);
        assert_eq!(get_status(&client, &server, "/six").await, Some(502));
    })
    .await;
}

#[tokio::test]
async fn records_method_headers_and_full_body() {
    bounded(async {
        let server = FlakyServer::builder().start().await.unwrap();
        let client = h1();
        let req = Request::builder()
            .method(Method::POST)
            .uri(server.uri("/upload?x=1"))
            .header("x-request-id", "abc-123")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{\"hello\":\"world\"}")))
            .unwrap();
        let r = client.request(req).await.unwrap();
        assert_eq!(r.status(), 200);

        let reqs = server.requests();
        assert_eq!(reqs.len(), 1);
        let rec = &reqs[0];
        assert_eq!(rec.method, Method::POST);
        assert_eq!(rec.uri.path(), "/upload");
        assert_eq!(rec.uri.query(), Some("x=1"));
        assert_eq!(rec.version, Version::HTTP_11);
        assert_eq!(rec.header("x-request-id"), Some("abc-123"));
        assert_eq!(rec.headers["content-type"], "application/json");
        assert_eq!(&rec.body[..], b"{\"hello\":\"world\"}");
        assert_eq!(rec.inflight, 1);
        assert_eq!(
            rec.reply.as_ref().unwrap().status_code(),
            Some(StatusCode::OK)
        );
    })
    .await;
}

async fn status_sequence(seed: u64, n: usize) -> Vec<Option<u16>> {
    let server = FlakyServer::builder()
        .seed(seed)
        .failure_ratio(0.4)
        .reset_ratio(0.1)
        .start()
        .await
        .unwrap();
    let client = h1();
    let mut out = Vec::new();
    for i in 0..n {
        out.push(get_status(&client, &server, &format!("/{i}")).await);
    }
    // What the server decided matches what the client saw.
    let decided: Vec<_> = server
        .requests()
        .iter()
        .map(|r| r.reply.as_ref().unwrap().status_code().map(|s| s.as_u16()))
        .collect();
    assert_eq!(decided, out);
    out
}

#[tokio::test]
async fn same_seed_same_sequence() {
    bounded(async {
        let a = status_sequence(42, 40).await;
        let b = status_sequence(42, 40).await;
        assert_eq!(a, b);
        let failures = a.iter().filter(|s| **s == Some(503)).count();
        let resets = a.iter().filter(|s| s.is_none()).count();
        let oks = a.iter().filter(|s| **s == Some(200)).count();
        assert_eq!(failures + resets + oks, 40);
        assert!(failures > 0 && oks > 0, "{a:?}");
        let c = status_sequence(43, 40).await;
        assert_ne!(a, c, "different seeds should differ");
    })
    .await;
}

#[tokio::test]
async fn resets_are_client_errors_on_h1_and_h2() {
    bounded(async {
        let server = FlakyServer::builder()
            .reset_ratio(1.0)
            .start()
            .await
            .unwrap();
        for client in [h1(), h2()] {
            for _ in 0..3 {
                let res = client.get(server.uri("/")).await;
                assert!(res.is_err(), "expected an error, got {res:?}");
            }
        }
        assert_eq!(server.request_count(), 6);
        assert!(
            server
                .requests()
                .iter()
                .all(|r| r.reply.as_ref().unwrap().is_reset())
        );
    })
    .await;
}

#[tokio::test]
async fn grpc_failures_are_trailers_only_with_grpc_status() {
    bounded(async {
        let server = FlakyServer::builder()
            .failure_ratio(1.0)
            .grpc_status(14)
            .grpc_message("try later")
            .grpc_pushback_ms(250)
            .script([Reply::grpc(8).grpc_pushback_ms("garbage")])
            .start()
            .await
            .unwrap();
        let client = h2();
        let req = || {
            Request::builder()
                .method(Method::POST)
                .uri(server.uri("/pkg.Svc/Call"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
                .unwrap()
        };

        let r = client.request(req()).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), Version::HTTP_2);
        assert_eq!(r.headers()["content-type"], "application/grpc");
        assert_eq!(r.headers()["grpc-status"], "8");
        assert_eq!(r.headers()["grpc-retry-pushback-ms"], "garbage");

        let r = client.request(req()).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()["grpc-message"], "try later");
        assert_eq!(r.headers()["grpc-retry-pushback-ms"], "250");
        assert!(r.into_body().collect().await.unwrap().to_bytes().is_empty());

        let reqs = server.requests();
        assert_eq!(reqs[1].version, Version::HTTP_2);
        assert_eq!(reqs[1].reply.as_ref().unwrap().grpc_status(), Some(14));
        assert_eq!(&reqs[1].body[..], b"\0\0\0\0\0");
        assert_eq!(reqs[1].header("te"), Some("trailers"));
    })
    .await;
}

#[tokio::test]
async fn grpc_successes_carry_a_message_and_status_trailers() {
    bounded(async {
        let server = FlakyServer::builder()
            .grpc_status(14)
            .script([Reply::grpc_ok().grpc_payload(&[0x08, 0x01])])
            .start()
            .await
            .unwrap();
        let client = h2();
        let req = || {
            Request::builder()
                .method(Method::POST)
                .uri(server.uri("/pkg.Svc/Call"))
                .header("content-type", "application/grpc")
                .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
                .unwrap()
        };
        // Scripted: one framed 2-byte message.
        let r = client.request(req()).await.unwrap();
        assert_eq!(r.headers()["content-type"], "application/grpc");
        assert!(r.headers().get("grpc-status").is_none());
        let collected = r.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(&collected.to_bytes()[..], &[0, 0, 0, 0, 2, 0x08, 0x01]);
        // Random success in gRPC mode: an empty message.
        let r = client.request(req()).await.unwrap();
        let collected = r.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(&collected.to_bytes()[..], &[0, 0, 0, 0, 0]);
        let reqs = server.requests();
        assert!(
            reqs.iter()
                .all(|r| r.reply.as_ref().unwrap().grpc_status() == Some(0))
        );
    })
    .await;
}

#[tokio::test]
async fn peak_inflight_and_load_dependent_latency() {
    bounded(async {
        let server = FlakyServer::builder()
            .latency(Duration::from_millis(300))
            .latency_per_inflight(Duration::from_millis(20))
            .start()
            .await
            .unwrap();
        let client = h2();
        let calls = (0..5).map(|_| client.get(server.uri("/")));
        let started = std::time::Instant::now();
        let results = futures_join_all(calls).await;
        assert!(results.iter().all(|r| r.as_ref().unwrap().status() == 200));
        assert_eq!(server.peak_inflight(), 5);
        assert_eq!(server.inflight(), 0);
        // At least base + 20 ms × (the last one's in-flight count of 5).
        assert!(started.elapsed() >= Duration::from_millis(400));
    })
    .await;
}

/// Minimal join_all on tasks, to avoid a futures dependency.
async fn futures_join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn handler_hook_decides_when_script_is_empty() {
    bounded(async {
        let server = FlakyServer::builder()
            .script([Reply::status(500)])
            .handler(|rec| {
                assert!(rec.reply.is_none());
                (rec.uri.path() == "/teapot").then(|| Reply::status(418).header("x-hook", "yes"))
            })
            .start()
            .await
            .unwrap();
        let client = h1();
        assert_eq!(get_status(&client, &server, "/teapot").await, Some(500)); // script first
        let r = client.get(server.uri("/teapot")).await.unwrap();
        assert_eq!(r.status(), 418);
        assert_eq!(r.headers()["x-hook"], "yes");
        assert_eq!(get_status(&client, &server, "/other").await, Some(200));
        let sources: Vec<_> = server
            .requests()
            .iter()
            .map(|r| r.source.unwrap())
            .collect();
        assert_eq!(
            sources,
            [
                ReplySource::Script,
                ReplySource::Handler,
                ReplySource::Random
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    bounded(async {
        let server = FlakyServer::builder()
            .latency(Duration::from_millis(200))
            .start()
            .await
            .unwrap();
        let url = server.uri("/slow");
        let addr = server.addr();
        let client = h1();
        let pending = tokio::spawn(async move { client.get(url).await.map(|r| r.status()) });
        // Wait until the request has arrived.
        while server.request_count() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.shutdown().await;
        assert_eq!(pending.await.unwrap().unwrap(), 200);
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    })
    .await;
}

#[test]
fn server_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<FlakyServer>();
    assert_send_sync::<rampart_testkit::Recorded>();
    assert_send_sync::<Reply>();
}

#[tokio::test]
async fn drop_stops_the_server_and_hanging_requests() {
    bounded(async {
        let server = FlakyServer::builder()
            .script([Reply::hang()])
            .start()
            .await
            .unwrap();
        let url = server.uri("/hang");
        let addr = server.addr();
        let client = h1();
        let pending = tokio::spawn(async move { client.get(url).await.map(|r| r.status()) });
        while server.request_count() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(server.inflight(), 1);
        drop(server);
        assert!(pending.await.unwrap().is_err());
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    })
    .await;
}
