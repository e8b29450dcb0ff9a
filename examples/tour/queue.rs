//! Tour section: a bounded queue with N workers (`rampart-queue`): the
//! article's producer/consumer (10 items, a queue of 5, 2 consumers) with
//! both consumers stopped at the end, backpressure against shedding, and a
//! panicking job that fails alone. The `producer_consumer` example runs the
//! long version.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rampart::queue::{Panicked, Queue, QueueLayer};
use rampart::{BoxError, ErrorKind};
use tower::{Layer, ServiceExt, service_fn};

/// Sends one call, and once the worker runs it, `n - 1` more at once;
/// returns how many were served and how many shed.
async fn burst(queue: &Queue<u32, u32>, n: u32) -> Result<(usize, usize), BoxError> {
    let call = |i| tokio::spawn(queue.clone().oneshot(i));
    let mut calls = vec![call(0)];
    while queue.stats().running == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    calls.extend((1..n).map(call));
    let (mut served, mut shed) = (0, 0);
    for c in calls {
        match c.await? {
            Ok(_) => served += 1,
            Err(e) if e.kind() == ErrorKind::Overloaded => shed += 1,
            Err(e) => return Err(e.into()),
        }
    }
    Ok((served, shed))
}

pub(crate) async fn run() -> Result<(), BoxError> {
    crate::heading("queue: bounded backlog + N workers (producer/consumer)");

    // The article: 10 items, Queue(maxsize=5), two consumers.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let consumer = service_fn(move |item: u32| {
        let seen = s2.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            seen.lock().unwrap().push(item);
            Ok::<_, BoxError>(())
        }
    });
    let queue: Queue<u32, ()> = QueueLayer::new(5, 2).layer(consumer);
    for item in 0..10 {
        queue.submit(item).await?; // waits while 5 are queued
    }
    queue.close();
    tokio::time::timeout(Duration::from_secs(2), queue.stopped()).await?;
    let stats = queue.stats();
    crate::line(format_args!(
        "10 items produced into a queue of 5: {} consumed by 2 workers, workers still running after close: {}",
        seen.lock().unwrap().len(),
        stats.live_workers
    ));
    if seen.lock().unwrap().len() != 10 || stats.live_workers != 0 {
        return Err(
            "the producer/consumer run did not consume every item and stop both workers".into(),
        );
    }

    // Backpressure against shedding: a burst of 10, a queue of 3, 1 worker.
    let work = service_fn(|n: u32| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok::<_, BoxError>(n)
    });
    let waiting: Queue<u32, u32> = QueueLayer::new(3, 1).layer(work);
    let shedding: Queue<u32, u32> = QueueLayer::new(3, 1).shed().layer(work);
    let (w_served, w_shed) = burst(&waiting, 10).await?;
    let (s_served, s_shed) = burst(&shedding, 10).await?;
    crate::line(format_args!(
        "burst of 10 into a queue of 3: waiting for space serves {w_served} (shed {w_shed}); shedding serves {s_served}, refuses {s_shed} with Overloaded (503)"
    ));
    if (w_served, w_shed, s_served, s_shed) != (10, 0, 4, 6) {
        return Err("backpressure/shed counts are not 10/0 and 4/6".into());
    }

    // A panicking job fails alone; the worker keeps serving.
    let jobs: Queue<u32, u32> = QueueLayer::new(4, 1).layer(service_fn(|n: u32| async move {
        assert!(n != 2, "job {n} hit a bug");
        Ok::<_, BoxError>(n)
    }));
    // The queue catches the panic; keep the default hook's report (and
    // backtrace) out of the tour while it runs.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut outcomes = Vec::new();
    for n in 1..=3 {
        outcomes.push(match jobs.clone().oneshot(n).await {
            Ok(_) => "ok".to_owned(),
            Err(e) => match e.find_source::<Panicked>() {
                Some(p) => format!("failed ({})", p.message()),
                None => format!("failed ({e})"),
            },
        });
    }
    std::panic::set_hook(hook);
    crate::line(format_args!(
        "jobs 1, 2 (panics), 3 on one worker: {}; panicked {}, worker alive: {}",
        outcomes.join(", "),
        jobs.stats().panicked,
        jobs.stats().live_workers == 1
    ));
    if outcomes[0] != "ok" || outcomes[2] != "ok" || jobs.stats().panicked != 1 {
        return Err("the panicking job did not fail alone".into());
    }
    Ok(())
}
