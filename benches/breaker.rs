//! Circuit breaker, closed-state call: rampart's `CircuitBreakerLayer`
//! against tower-resilience's `CircuitBreakerLayer` (tower has none) and the
//! bare inner service.
//!
//! - group `breaker`: one caller, ready, yielding and remote inner, ct and
//!   mt. Both breakers: failure ratio 50 % over the last 100 calls, at
//!   least 100 calls (resilience4j's defaults), every call succeeds, so the
//!   circuit stays closed and each call is judged and recorded.
//!
//! Both layers are applied once and the service cloned per request, as axum
//! does; both then share one circuit among the clones (tower-resilience's
//! layer keeps its circuit per `layer()` call, which is once here).

mod common;

use common::{
    InnerKind::{Ready, Remote, Yield},
    Rt::{Ct, Mt},
    bench_floor, bench_layer, cases, group,
};
use criterion::Criterion;
use rampart::breaker::{CircuitBreakerLayer, Window};

fn rampart_layer() -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .failure_ratio(0.5)
        .window(Window::Calls(100))
        .min_calls(100)
        .build()
        .expect("valid breaker")
}

fn tower_layer() -> tower_resilience_circuitbreaker::CircuitBreakerLayer {
    tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .minimum_number_of_calls(100)
        .build()
        .expect("valid breaker")
}

fn breaker(c: &mut Criterion) {
    let mut g = group(c, "breaker");
    for case in cases(&[Ct, Mt], &[Ready, Yield, Remote], &[1]) {
        bench_floor(&mut g, case);
        bench_layer(&mut g, "tower", case, tower_layer());
        bench_layer(&mut g, "rampart", case, rampart_layer());
    }
    g.finish();
}

fn main() {
    common::main(&[breaker]);
}
