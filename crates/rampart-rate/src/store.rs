//! Where the limiter's state lives: the [`RateStore`] trait, the in-process
//! [`LocalStore`] (one bucket) and [`KeyedStore`] (a bucket per key).

use crate::gcra::{Step, step};
use crate::quota::{Quota, nanos};
use rampart_core::Error;
use rampart_core::hashed::HashedMap;
use rampart_core::telemetry::{Gauge, LayerName, Registered};
use std::future::{Future, Ready, ready};
use std::hash::{BuildHasher, Hash};
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

#[cfg(rampart_loom)]
use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(rampart_loom))]
use std::sync::atomic::{AtomicU64, Ordering};

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Admitted: go ahead after `wait` (zero for most calls). The slot is
    /// already taken; a caller that gives up while waiting does not return
    /// it.
    Admit {
        /// How long to wait before calling.
        wait: Duration,
    },
    /// Refused: the same request would be admitted without waiting after
    /// `retry_after`.
    Reject {
        /// The exact time until a request would be admitted.
        retry_after: Duration,
    },
}

/// A limiter's state, decided in one atomic check-and-update per request.
///
/// The layer asks the store one question per request: "admit a request for
/// `key` under `quota`, waiting at most `max_wait`?" and gets the decision
/// and the wait together, so a store shared across replicas (Redis, with
/// the GCRA step as one script) needs one round trip per decision. The
/// in-process stores answer at once ([`std::future::Ready`]).
///
/// An error from the store (say, its server is unreachable) fails the
/// request with that error; a store that prefers to fail open returns
/// [`Decision::Admit`] instead.
///
/// Keys are anything [`Hash`]: a store that keeps them elsewhere hashes them
/// with a fixed, seeded hasher of its own so every replica agrees.
pub trait RateStore: Send + Sync + 'static {
    /// The future of one decision.
    type Future: Future<Output = Result<Decision, Error>> + Send + Unpin;

    /// Whether [`check`](RateStore::check)'s future is always ready on its
    /// first poll (an in-process store). A limiter that never waits then
    /// decides inside `call`, keeping no state between `poll_ready` and
    /// `call`. Default `false`, right for any store behind a network; a
    /// store that says `true` and then answers later fails that request with
    /// an error instead of waiting.
    const IMMEDIATE: bool = false;

    /// Decides one request for `key`.
    fn check<K: Hash + ?Sized>(&self, key: &K, quota: &Quota, max_wait: Duration) -> Self::Future;

    /// Called once, when the layer built over this store makes its first
    /// service (`Layer::layer`), with the name the layer has then: a store
    /// may register metric handles under it (`rampart_core::telemetry`),
    /// as [`KeyedStore`] registers the `rampart.rate.keys` gauge. Building
    /// and naming the layer do not call it, so a store never registers
    /// under a name the layer did not end up with. The default does
    /// nothing.
    fn register_metrics(&self, layer: &LayerName) {
        let _ = layer;
    }
}

#[inline]
fn decide(tat: u64, now: u64, quota: &Quota, max_wait: Duration) -> Step {
    step(
        tat,
        now,
        quota.interval_nanos(),
        quota.span_nanos(),
        nanos(max_wait),
    )
}

#[inline]
fn decision(s: Step) -> Decision {
    match s {
        // No division for the common case: admitted with no wait.
        Step::Admit { wait: 0, .. } => Decision::Admit {
            wait: Duration::ZERO,
        },
        Step::Admit { wait, .. } => Decision::Admit {
            wait: Duration::from_nanos(wait),
        },
        Step::Reject { retry_after } => Decision::Reject {
            retry_after: Duration::from_nanos(retry_after),
        },
    }
}

/// Nanoseconds since `epoch` (tokio's clock, so a paused test clock
/// drives it).
#[inline]
fn since(epoch: Instant) -> u64 {
    nanos(Instant::now().saturating_duration_since(epoch))
}

/// One bucket for every request, whatever its key: one atomic word,
/// updated with a compare-and-swap loop (no lock, no allocation).
#[derive(Debug)]
pub struct LocalStore {
    epoch: Instant,
    tat: AtomicU64,
}

impl LocalStore {
    /// A full bucket.
    pub fn new() -> LocalStore {
        LocalStore {
            epoch: Instant::now(),
            tat: AtomicU64::new(0),
        }
    }

    /// The decision at `now` ns since the epoch.
    #[inline]
    pub(crate) fn check_at(&self, now: u64, quota: &Quota, max_wait: Duration) -> Decision {
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let s = decide(tat, now, quota, max_wait);
            let Step::Admit { tat: next, .. } = s else {
                return decision(s);
            };
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return decision(s),
                Err(actual) => tat = actual,
            }
        }
    }
}

impl Default for LocalStore {
    fn default() -> Self {
        LocalStore::new()
    }
}

impl RateStore for LocalStore {
    type Future = Ready<Result<Decision, Error>>;
    const IMMEDIATE: bool = true;

    #[inline]
    fn check<K: Hash + ?Sized>(&self, _key: &K, quota: &Quota, max_wait: Duration) -> Self::Future {
        ready(Ok(self.check_at(since(self.epoch), quota, max_wait)))
    }
}

const SHARDS: usize = 16;
/// A shard sweeps its idle keys after this many checks.
const SWEEP_EVERY: u32 = 1024;

/// A bucket per key, in 16 locked shards, with a cap on the number of keys.
///
/// Keys are hashed with a per-store random seed (so clients cannot aim at
/// one shard) and only the 64-bit hash is kept. The hash is foldhash's
/// `quality` variant (foldhash is hashbrown's default hasher), seeded per
/// store: about 10 instructions for a short key where std's SipHash-1-3
/// takes about 120, a third of what the keyed limiter adds to a request.
/// It is not a cryptographic hash: two keys share a bucket only if their
/// 64-bit hashes collide under a seed the clients never see.
///
/// A key whose bucket has refilled is *idle*: its state is the same as a
/// key never seen, so dropping it changes no decision. Each shard drops its
/// idle keys every 1 024 checks and whenever it is full, so memory follows
/// the number of keys active within one `burst × interval`, not the number
/// ever seen. [`KeyedStore::sweep`] drops them on demand.
///
/// When a shard is full of keys that are all still active, a request with
/// a new key is refused with [`ErrorKind::Overloaded`](rampart_core::ErrorKind::Overloaded)
/// and a `retry_after` of the time until the first of them goes idle: the
/// limiter never forgets a client that is over its rate to make room.
#[derive(Debug)]
pub struct KeyedStore {
    epoch: Instant,
    seed: foldhash::quality::RandomState,
    per_shard: usize,
    shards: Box<[Mutex<Shard>]>,
    /// `rampart.rate.keys` of the layer the store is in (none until the
    /// layer makes its first service and registers it).
    keys: Registered<Gauge>,
}

#[derive(Debug, Default)]
struct Shard {
    tats: HashedMap<u64>,
    checks: u32,
    /// A full shard does not sweep again before this time (ns): the
    /// earliest moment one of its keys goes idle.
    full_until: u64,
}

impl Shard {
    /// Drops idle keys (taking them off `keys`); returns the earliest time
    /// a remaining key goes idle.
    fn sweep(&mut self, now: u64, keys: &Registered<Gauge>) -> u64 {
        let before = self.tats.len();
        self.tats.retain(|_, tat| *tat > now);
        let dropped = before - self.tats.len();
        if dropped > 0
            && let Some(keys) = keys.get()
        {
            keys.decrement(dropped as f64);
        }
        if self.tats.capacity() > 4 * self.tats.len().max(16) {
            self.tats.shrink_to_fit();
        }
        self.checks = 0;
        self.tats.values().copied().min().unwrap_or(now)
    }
}

impl KeyedStore {
    /// A store holding at most about `max_keys` keys (the cap is split
    /// evenly over 16 shards, each holding `ceil(max_keys / 16)`).
    pub fn new(max_keys: NonZeroUsize) -> KeyedStore {
        KeyedStore {
            epoch: Instant::now(),
            seed: foldhash::quality::RandomState::default(),
            per_shard: max_keys.get().div_ceil(SHARDS),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            keys: Registered::new(),
        }
    }

    /// How many keys the store holds now (idle ones not yet swept
    /// included).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).tats.len()).sum()
    }

    /// [`len`](Self::len) with the store held exclusively (no lock taken).
    fn held(&mut self) -> usize {
        self.shards
            .iter_mut()
            .map(|s| {
                s.get_mut()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .tats
                    .len()
            })
            .sum()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every idle key now.
    pub fn sweep(&self) {
        let now = since(self.epoch);
        for s in &*self.shards {
            lock(s).sweep(now, &self.keys);
        }
    }

    fn check_hash(&self, hash: u64, quota: &Quota, max_wait: Duration) -> Result<Decision, Error> {
        let now = since(self.epoch);
        let mut shard = lock(&self.shards[(hash >> 60) as usize]);
        shard.checks += 1;
        if shard.checks >= SWEEP_EVERY {
            shard.sweep(now, &self.keys);
        }
        if let Some(tat) = shard.tats.get_mut(&hash) {
            let s = decide(*tat, now, quota, max_wait);
            if let Step::Admit { tat: next, .. } = s {
                *tat = next;
            }
            return Ok(decision(s));
        }
        if shard.tats.len() >= self.per_shard {
            if now >= shard.full_until {
                shard.full_until = shard.sweep(now, &self.keys);
            }
            if shard.tats.len() >= self.per_shard {
                let wait = shard.full_until.saturating_sub(now);
                return Err(Error::overloaded(Some(Duration::from_nanos(wait))));
            }
        }
        let s = decide(0, now, quota, max_wait);
        if let Step::Admit { tat, .. } = s {
            shard.tats.insert(hash, tat);
            if let Some(keys) = self.keys.get() {
                keys.increment(1.0);
            }
            // The new key may be the first to go idle.
            shard.full_until = shard.full_until.min(tat);
        }
        Ok(decision(s))
    }
}

fn lock(m: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    // A panic cannot happen while a shard is held (no user code runs under
    // the lock), but a poisoned map is still a consistent map.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RateStore for KeyedStore {
    type Future = Ready<Result<Decision, Error>>;
    const IMMEDIATE: bool = true;

    #[inline]
    fn check<K: Hash + ?Sized>(&self, key: &K, quota: &Quota, max_wait: Duration) -> Self::Future {
        ready(self.check_hash(self.seed.hash_one(key), quota, max_wait))
    }

    /// Registers `rampart.rate.keys{layer}`, the keys held (idle ones not
    /// yet swept included, as [`len`](KeyedStore::len)).
    ///
    /// The store owns its share of the series (the keys it holds), moved
    /// only by its own inserts and sweeps, and dropping the store takes it
    /// off, so stores whose layers share a name add up. Registered once:
    /// a later call (the layer renamed after its services were dropped)
    /// keeps the first name.
    fn register_metrics(&self, layer: &LayerName) {
        self.keys.register(|| {
            let g = Gauge::new(crate::metrics::KEYS, layer);
            g.increment(self.len() as f64);
            g
        });
    }
}

impl Drop for KeyedStore {
    fn drop(&mut self) {
        let held = self.held();
        if held > 0
            && let Some(keys) = self.keys.get()
        {
            keys.decrement(held as f64);
        }
    }
}

#[cfg(all(test, rampart_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use std::num::NonZeroU32;

    /// Three threads race for a bucket of two at the same instant: exactly
    /// two are admitted, and the TAT ends two intervals ahead (no lost or
    /// doubled update through the CAS loop).
    #[test]
    fn concurrent_checks_admit_exactly_the_burst() {
        loom::model(|| {
            let quota =
                Quota::every(Duration::from_nanos(10)).with_burst(NonZeroU32::new(2).unwrap());
            let store = Arc::new(LocalStore {
                epoch: Instant::now(),
                tat: AtomicU64::new(0),
            });
            let threads: Vec<_> = (0..3)
                .map(|_| {
                    let store = Arc::clone(&store);
                    loom::thread::spawn(move || {
                        matches!(
                            store.check_at(100, &quota, Duration::ZERO),
                            Decision::Admit { .. }
                        )
                    })
                })
                .collect();
            let admitted = threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .filter(|a| *a)
                .count();
            assert_eq!(admitted, 2);
            assert_eq!(store.tat.load(Ordering::SeqCst), 120);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn quota(burst: u32) -> Quota {
        Quota::every(Duration::from_millis(100)).with_burst(NonZeroU32::new(burst).unwrap())
    }

    fn admitted(d: Result<Decision, Error>) -> bool {
        matches!(d, Ok(Decision::Admit { .. }))
    }

    #[tokio::test(start_paused = true)]
    async fn keys_have_separate_buckets() {
        let store = KeyedStore::new(NonZeroUsize::new(100).unwrap());
        let q = quota(1);
        assert!(admitted(store.check("a", &q, Duration::ZERO).await));
        assert!(!admitted(store.check("a", &q, Duration::ZERO).await));
        assert!(admitted(store.check("b", &q, Duration::ZERO).await));
        assert_eq!(store.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn refilled_keys_are_swept_and_forget_nothing_that_matters() {
        let store = KeyedStore::new(NonZeroUsize::new(1_000).unwrap());
        let q = quota(2);
        for k in 0..500u32 {
            assert!(admitted(store.check(&k, &q, Duration::ZERO).await));
        }
        assert_eq!(store.len(), 500);
        tokio::time::advance(Duration::from_millis(99)).await;
        store.sweep();
        assert_eq!(store.len(), 500, "not yet refilled");
        tokio::time::advance(Duration::from_millis(1)).await;
        store.sweep();
        assert!(store.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_once_per_forever_quota_refuses_the_second_call() {
        let store = LocalStore::new();
        let q = Quota::every(Duration::MAX);
        assert!(admitted(store.check(&(), &q, Duration::ZERO).await));
        assert!(!admitted(store.check(&(), &q, Duration::ZERO).await));
        let keyed = KeyedStore::new(NonZeroUsize::new(10).unwrap());
        assert!(admitted(keyed.check("k", &q, Duration::ZERO).await));
        assert!(!admitted(keyed.check("k", &q, Duration::ZERO).await));
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_full_of_active_keys_refuses_new_keys_with_the_time_until_one_idles() {
        let store = KeyedStore::new(NonZeroUsize::new(16).unwrap()); // one per shard
        let q = quota(1);
        let mut refused = None;
        for k in 0..1_000u32 {
            match store.check(&k, &q, Duration::ZERO).await {
                Ok(_) => {}
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        let e = refused.expect("a full shard refuses a new key");
        assert_eq!(e.kind(), rampart_core::ErrorKind::Overloaded);
        assert_eq!(e.retry_after(), Some(Duration::from_millis(100)));
        assert!(store.len() <= 16);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(admitted(store.check(&5_000u32, &q, Duration::ZERO).await));
    }
}
