//! Request id: tower-http `SetRequestIdLayer::x_request_id(MakeRequestUuid)`
//! then `PropagateRequestIdLayer::x_request_id()` against the bare inner
//! service, ct and mt, one caller, ready inner.
//!
//! - group `request_id_generated`: requests carry no `x-request-id`, so one
//!   is generated (a v4 UUID for tower-http);
//! - group `request_id_accepted`: requests carry a valid `x-request-id`,
//!   which is kept and echoed on the response. Building such a request (a
//!   header map with one static value) is part of every id's time,
//!   `floor` included.
//!
//! `rampart`: `rampart_context::RequestIdLayer::new()` (accept a valid
//! incoming id or generate a UUIDv7, run the request inside its `Context`,
//! store the context in the request's extensions, a `DEBUG` span that is
//! disabled here (no subscriber), echo the id on the response).

mod common;

use common::{
    InnerKind::Ready,
    Req,
    Rt::{Ct, Mt},
    bench_floor_with, bench_layer_with, cases, group, plain_request,
};
use criterion::Criterion;
use http::HeaderValue;
use rampart::context::RequestIdLayer;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

/// A valid incoming request id (a v7 UUID, as rampart generates them).
const INCOMING_ID: &str = "01936f8e-7b7c-7cc3-9b1a-3f2d5e6a7b8c";

/// A request that already carries `x-request-id`.
fn request_with_id() -> Req {
    let mut req = plain_request();
    req.headers_mut()
        .insert("x-request-id", HeaderValue::from_static(INCOMING_ID));
    req
}

fn request_id(c: &mut Criterion) {
    let tower_layer = || {
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(PropagateRequestIdLayer::x_request_id())
            .into_inner()
    };
    for (name, make_req) in [
        ("request_id_generated", plain_request as fn() -> Req),
        ("request_id_accepted", request_with_id),
    ] {
        let mut g = group(c, name);
        for case in cases(&[Ct, Mt], &[Ready], &[1, 64]) {
            bench_floor_with(&mut g, case, make_req);
            bench_layer_with(&mut g, "tower", case, make_req, tower_layer());
            bench_layer_with(&mut g, "rampart", case, make_req, RequestIdLayer::new());
        }
        g.finish();
    }
}

fn main() {
    common::main(&[request_id]);
}
