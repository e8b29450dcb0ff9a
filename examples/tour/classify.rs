//! Tour section: classification and error mapping (rampart-core).
//!
//! A scripted flaky server answers a series of requests; core's classifiers
//! say what each answer means for a GET and for a POST, then every rampart
//! error is shown as the HTTP and gRPC response a server would send.

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rampart::classify::{ClassifyResult, ErrorRef};
use rampart::{BoxError, Error, GrpcClassify, HttpClassify, Outcome};
use rampart_testkit::{FlakyServer, Reply};
use std::time::Duration;

fn show(o: Outcome) -> String {
    match o {
        Outcome::Success => "success".into(),
        Outcome::Retryable { after: None } => "retryable".into(),
        Outcome::Retryable { after: Some(d) } => format!("retryable after {d:?}"),
        Outcome::Fatal => "fatal".into(),
    }
}

/// What a classifier is given: a response, or an error.
type Judged<'a, T> = Result<&'a T, ErrorRef<'a>>;

pub(crate) async fn run() -> Result<(), BoxError> {
    crate::heading("classification and error mapping (rampart-core)");
    let script = [
        ("200 OK", Reply::ok()),
        ("503 + Retry-After: 2", Reply::status(503).retry_after("2")),
        (
            "503 + Retry-After: 99999",
            Reply::status(503).retry_after("99999"),
        ),
        (
            "429 + Retry-After: -1 (garbage)",
            Reply::status(429).retry_after("-1"),
        ),
        ("500", Reply::status(500)),
        ("connection reset", Reply::reset()),
        (
            "grpc-status 14 + pushback 250 ms",
            Reply::grpc(14).grpc_pushback_ms(250),
        ),
        (
            "grpc-status 14 + pushback -1",
            Reply::grpc(14).grpc_pushback_ms(-1),
        ),
        ("grpc-status 8, no pushback", Reply::grpc(8)),
    ];
    let server = FlakyServer::builder()
        .script(script.iter().map(|(_, r)| r.clone()))
        .start()
        .await?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let http = HttpClassify::new();
    let grpc = GrpcClassify::new();
    let grpc_judge = grpc.classify_request(
        &Request::post("/shop.Orders/Create")
            .header("content-type", "application/grpc")
            .body(())?,
    );
    crate::line(format_args!("flaky server on {}", server.addr()));
    crate::line(format_args!(
        "{:<34} {:<22} {:<22}",
        "server answer", "GET", "POST"
    ));
    for (what, _) in &script {
        let get = Request::get(server.uri("/item")).body(Empty::new())?;
        let post = Request::post(server.uri("/item")).body(Empty::<Bytes>::new())?;
        let (judge_get, judge_post) = (http.classify_request(&get), http.classify_request(&post));
        let grpc_call = what.starts_with("grpc");
        let (g, p) = match client.request(get).await {
            Ok(res) if grpc_call => {
                let o = show(grpc_judge.classify(Judged::Ok(&res)));
                (o, "(gRPC: by code only)".to_string())
            }
            Ok(res) => (
                show(judge_get.classify(Judged::Ok(&res))),
                show(judge_post.classify(Judged::Ok(&res))),
            ),
            Err(e) => {
                let e = Error::from_inner(e);
                (
                    show(judge_get.classify(Judged::<http::Response<()>>::Err(&e))),
                    show(judge_post.classify(Judged::<http::Response<()>>::Err(&e))),
                )
            }
        };
        crate::line(format_args!("{what:<34} {g:<22} {p:<22}"));
    }
    // A refused connection: the request never left, so even a POST may be retried.
    let refused_at = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    let post = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{refused_at}/"))
        .body(Empty::new())?;
    let get = Request::get(format!("http://{refused_at}/")).body(Empty::<Bytes>::new())?;
    let (judge_get, judge_post) = (http.classify_request(&get), http.classify_request(&post));
    let e = Error::from_inner(
        client
            .request(post)
            .await
            .expect_err("nothing listens there"),
    );
    crate::line(format_args!(
        "{:<34} {:<22} {:<22}",
        "connection refused",
        show(judge_get.classify(Judged::<http::Response<()>>::Err(&e))),
        show(judge_post.classify(Judged::<http::Response<()>>::Err(&e)))
    ));
    server.shutdown().await;

    // gRPC: a reset may come after the request was sent, so only a method
    // marked safe is repeated (a CreateOrder is never sent twice).
    let reset = Error::from_inner(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
    let grpc = grpc.idempotent_methods(["/shop.Orders/Get"]);
    for method in ["/shop.Orders/Get", "/shop.Orders/Create"] {
        let req = Request::post(method)
            .header("content-type", "application/grpc")
            .body(())?;
        let outcome = grpc
            .classify_request(&req)
            .classify(Judged::<http::Response<()>>::Err(&reset));
        crate::line(format_args!(
            "{:<34} {:<22}",
            format!("gRPC {method}, reset"),
            show(outcome)
        ));
        if outcome.is_retryable() != (method == "/shop.Orders/Get") {
            return Err(format!("gRPC {method} after a reset: unexpected {outcome:?}").into());
        }
    }

    crate::line("");
    crate::line(format_args!(
        "{:<42} {:<22} {}",
        "rampart error", "HTTP", "gRPC"
    ));
    let errors = [
        Error::timeout(),
        Error::deadline_exceeded(),
        Error::overloaded(Some(Duration::from_millis(1500))),
        Error::overloaded(Some(Duration::MAX)),
        Error::cancelled(),
        Error::closed(),
        Error::retries_exhausted(3, Error::timeout()),
        Error::retries_exhausted(3, Error::closed()),
        Error::from_inner("database unreachable"),
    ];
    for e in &errors {
        let h: http::Response<()> = e.to_http_response();
        let retry_after = h
            .headers()
            .get("retry-after")
            .map(|v| format!(" Retry-After: {}", v.to_str().unwrap_or("?")))
            .unwrap_or_default();
        crate::line(format_args!(
            "{:<42} {:<22} {}",
            e.to_string(),
            format!("{}{retry_after}", h.status().as_u16()),
            e.grpc_code()
        ));
    }
    // Retries that ran out on timeouts are a timeout; a huge hint saturates.
    let expected = [504, 504, 503, 503, 499, 503, 504, 502, 500];
    let got: Vec<u16> = errors.iter().map(|e| e.http_status().as_u16()).collect();
    if got != expected {
        return Err(format!("HTTP statuses {got:?}, expected {expected:?}").into());
    }
    let huge: http::Response<()> = errors[3].to_http_response();
    if huge.headers()["retry-after"] != "1000000000" {
        return Err("a huge Retry-After was not saturated".into());
    }
    Ok(())
}
