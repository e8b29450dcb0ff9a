//! The axum extractors (feature `axum`), driven through a `Router` without
//! sockets.

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use rampart_context::{CurrentContext, ReqId, RequestIdLayer};
use tower::ServiceExt;

async fn body_of(router: Router, req: Request<Body>) -> (StatusCode, String) {
    let res = router.oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

fn with_id(id: &str) -> Request<Body> {
    Request::builder()
        .uri("/")
        .header("x-request-id", id)
        .body(Body::empty())
        .unwrap()
}

async fn both(ReqId(id): ReqId, CurrentContext(ctx): CurrentContext) -> String {
    let same = ctx.request_id() == Some(&id);
    format!("{id} {same}")
}

async fn optional(id: Option<ReqId>, CurrentContext(ctx): CurrentContext) -> String {
    format!(
        "{:?} {:?}",
        id.map(|ReqId(id)| id.to_string()),
        ctx.request_id()
    )
}

#[tokio::test]
async fn req_id_and_current_context_extract_the_layers_id() {
    let router = Router::new()
        .route("/", get(both))
        .layer(RequestIdLayer::new());
    assert_eq!(
        body_of(router, with_id("ext-1")).await,
        (StatusCode::OK, "ext-1 true".into())
    );
}

#[tokio::test]
async fn without_the_layer_req_id_is_a_500_and_option_is_none() {
    let router = Router::new().route("/", get(both));
    let (status, body) = body_of(router, with_id("ignored")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("RequestIdLayer"), "{body}");

    let router = Router::new().route("/", get(optional));
    assert_eq!(
        body_of(router, with_id("ignored")).await,
        (StatusCode::OK, "None None".into())
    );
}

#[tokio::test]
async fn extractors_fall_back_to_the_task_context() {
    // A context set further out (here: around the whole call), no layer.
    let router = Router::new().route("/", get(optional));
    let ctx = rampart_core::Context::new().with_request_id("task-ctx".parse().unwrap());
    let res = ctx.scope(body_of(router, with_id("ignored"))).await;
    assert_eq!(
        res,
        (
            StatusCode::OK,
            "Some(\"task-ctx\") Some(\"task-ctx\")".into()
        )
    );
}
