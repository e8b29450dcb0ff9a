//! Locks: the article's `asyncio.Lock` around a counter, lifted to a
//! service — and single-flight coalescing.
//!
//! Run it with `cargo run --example locks` (under a second).
//!
//! Part 1 is the article's scenario: two workers increment a shared counter
//! five times each through a service whose read-modify-write has an
//! `.await` between the read and the write (as a real store would). Without
//! a lock the workers interleave and updates are lost: the final value is
//! below 10. With `KeyedLockLayer` keyed by the counter's name the calls on
//! that counter run one at a time and the final value is exactly 10 — while
//! a second counter, another key, is updated in parallel.
//!
//! Part 2: 100 concurrent identical requests for a slow report, sent to a
//! loopback HTTP server through `CoalesceLayer`: the server sees one
//! request, and all 100 callers get its answer (shared behind an `Arc`,
//! since an `http::Response` is not `Clone`).
//!
//! The example exits non-zero if either part does not behave as above.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rampart::BoxError;
use rampart::prelude::*;
use rampart_testkit::FlakyServer;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

/// One increment of a named counter.
#[derive(Clone, Copy, Debug)]
struct Increment {
    counter: &'static str,
}

/// A store of counters whose increment reads, awaits (a round trip to a
/// real store), then writes: the race the article's lock prevents.
fn store(
    counters: Arc<Mutex<HashMap<&'static str, u32>>>,
) -> impl Service<Increment, Response = u32, Error = BoxError, Future: Send> + Clone + Send {
    service_fn(move |inc: Increment| {
        let counters = counters.clone();
        async move {
            let read = *counters.lock().unwrap().get(inc.counter).unwrap_or(&0);
            tokio::task::yield_now().await;
            let value = read + 1;
            counters.lock().unwrap().insert(inc.counter, value);
            Ok::<_, BoxError>(value)
        }
    })
}

/// The article's worker: five increments of `counter`, printing each.
async fn worker<S>(svc: S, counter: &'static str, worker: &'static str, print: bool)
where
    S: Service<Increment, Response = u32> + Clone,
    S::Error: std::fmt::Debug,
{
    for _ in 0..5 {
        let value = svc
            .clone()
            .oneshot(Increment { counter })
            .await
            .expect("the store answers");
        if print {
            println!("   Worker {worker} incremented {counter} to {value}");
        }
    }
}

async fn counters() -> bool {
    println!("Part 1: two workers increment a shared counter 5 times each");

    println!(" without a lock:");
    let values = Arc::new(Mutex::new(HashMap::new()));
    let svc = store(values.clone());
    tokio::join!(
        worker(svc.clone(), "hits", "A", true),
        worker(svc.clone(), "hits", "B", true),
    );
    let unlocked = values.lock().unwrap()["hits"];
    println!("   Final value: {unlocked} (updates lost to the race)");

    println!(" with KeyedLockLayer (key: the counter's name):");
    let values = Arc::new(Mutex::new(HashMap::new()));
    let lock = KeyedLockLayer::new(|inc: &Increment| inc.counter);
    let svc = ServiceBuilder::new()
        .keyed_lock(lock.clone())
        .service(store(values.clone()));
    tokio::join!(
        worker(svc.clone(), "hits", "A", true),
        worker(svc.clone(), "hits", "B", true),
        // Another counter, another key: not held up by the first.
        worker(svc.clone(), "misses", "C", false),
        worker(svc.clone(), "misses", "D", false),
    );
    let (locked, other) = {
        let v = values.lock().unwrap();
        (v["hits"], v["misses"])
    };
    let stats = lock.stats();
    println!("   Final value: {locked} (and {other} on the other counter)");
    println!(
        "   {} calls waited for their key; keys held now: {}",
        stats.waited, stats.keys
    );
    unlocked < 10 && locked == 10 && other == 10 && stats.keys == 0
}

/// A hyper client that reads the whole body.
fn http_client()
-> impl Service<Request<Empty<Bytes>>, Response = Response<Bytes>, Error = BoxError, Future: Send>
+ Clone
+ Send {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    service_fn(move |req| {
        let fut = client.request(req);
        async move {
            let (parts, body) = fut.await?.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, BoxError>(Response::from_parts(parts, body))
        }
    })
}

async fn coalescing() -> Result<bool, BoxError> {
    println!("Part 2: 100 concurrent identical requests through CoalesceLayer");
    let server = FlakyServer::builder()
        .latency(Duration::from_millis(200))
        .body("the quarterly report")
        .start()
        .await?;
    let http = http_client();
    let coalesce = CoalesceLayer::new(|req: &Request<Empty<Bytes>>| req.uri().to_string());
    let svc = ServiceBuilder::new()
        .coalesce(coalesce.clone())
        .map_response(Arc::new)
        .service(http);
    let started = Instant::now();
    let calls: Vec<_> = (0..100)
        .map(|_| {
            let svc = svc.clone();
            let req = Request::get(server.uri("/report")).body(Empty::new());
            tokio::spawn(async move {
                let res = svc.oneshot(req?).await?;
                Ok::<_, BoxError>(res)
            })
        })
        .collect();
    let mut same = 0;
    for c in calls {
        let res = c.await??;
        if res.status() == 200 && res.body() == "the quarterly report" {
            same += 1;
        }
    }
    let stats = coalesce.stats();
    println!(
        "   {same} callers got the report in {} ms; the server saw {} request(s)",
        started.elapsed().as_millis(),
        server.request_count()
    );
    println!(
        "   inner calls: {}, coalesced: {}, in flight now: {}",
        stats.calls, stats.coalesced, stats.in_flight
    );
    Ok(same == 100 && server.request_count() == 1 && stats.calls == 1)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let part1 = counters().await;
    println!();
    let part2 = coalescing().await?;
    if part1 && part2 {
        println!("\nok: the lock kept every update, the coalescer made one call");
        Ok(())
    } else {
        Err("an outcome was not the expected one".into())
    }
}
