//! The key map: one semaphore per key, at most `max_keys` of them, in
//! shards with a short lock each.

use crate::config::Policy;
use crate::metrics::KeyedMetrics;
use crate::permit::Owner;
use crate::sem::Sem;
use crate::stats::Counters;
use rampart_core::hashed::HashedMap;
use rampart_core::telemetry::{LayerName, Registered};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// One key's semaphore. Permits and waiters hold an `Arc` to it, so an
/// entry whose only owner is the map is idle.
#[derive(Debug)]
pub(crate) struct KeyEntry {
    sem: Sem,
    counters: Arc<Counters>,
    policy: Policy,
}

impl Owner for KeyEntry {
    fn sem(&self) -> &Sem {
        &self.sem
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn policy(&self) -> &Policy {
        &self.policy
    }
}

type Index = HashedMap<usize>;

/// Shards of the map, chosen by key hash: requests for different keys
/// rarely share a lock.
const SHARDS: usize = 16;
/// At most this many entries are looked at, across all shards, when a new
/// key finds the map full.
pub(crate) const SWEEP: usize = 64;

/// One shard: its entries in a vector (so a sweep can resume where the
/// last one stopped), and an index from key to position.
#[derive(Debug, Default)]
struct Shard {
    index: Index,
    entries: Vec<(u64, Arc<KeyEntry>)>,
    /// Where the next sweep starts (a clock hand).
    hand: usize,
}

impl Shard {
    fn get(&self, key: u64) -> Option<&Arc<KeyEntry>> {
        self.index.get(&key).map(|&i| &self.entries[i].1)
    }

    fn insert(&mut self, key: u64, entry: Arc<KeyEntry>) {
        self.index.insert(key, self.entries.len());
        self.entries.push((key, entry));
    }

    /// Looks at up to `budget` entries from the hand towards the end and
    /// evicts the idle ones; returns (entries looked at, entries evicted,
    /// whether the hand reached the end and went back to the start).
    fn sweep(&mut self, budget: usize) -> (usize, usize, bool) {
        let mut looked = 0;
        let mut evicted = 0;
        while looked < budget && self.hand < self.entries.len() {
            looked += 1;
            // Entries are only cloned under this shard's lock, so a count
            // of 1 (the map's own) cannot grow while we look.
            if Arc::strong_count(&self.entries[self.hand].1) == 1 {
                let (key, _) = self.entries.swap_remove(self.hand);
                self.index.remove(&key);
                if let Some((moved, _)) = self.entries.get(self.hand) {
                    self.index.insert(*moved, self.hand);
                }
                evicted += 1;
            } else {
                self.hand += 1;
            }
        }
        let wrapped = self.hand >= self.entries.len();
        if wrapped {
            self.hand = 0;
        }
        (looked, evicted, wrapped)
    }
}

/// Keeps the shard locks on separate cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(Mutex<Shard>);

#[derive(Debug)]
pub(crate) struct KeyMap {
    shards: Box<[Padded]>,
    /// Keys in all shards; never above `max_keys` (a key's slot is reserved
    /// here before it is inserted).
    keys: AtomicUsize,
    hasher: RandomState,
    limit: u32,
    max_keys: usize,
    policy: Policy,
    pub(crate) counters: Arc<Counters>,
    /// The keyed-only metric handles (keys, key map refusals), registered
    /// with the counters' when the layer makes its first service.
    metrics: Registered<KeyedMetrics>,
    /// The shard the next sweep starts in.
    clock: AtomicUsize,
    /// Entries looked at by sweeps (to prove they are bounded).
    swept: AtomicU64,
}

/// A snapshot of the map for stats.
pub(crate) struct Totals {
    pub(crate) keys: usize,
    pub(crate) in_flight: usize,
    pub(crate) waiting: usize,
}

impl KeyMap {
    pub(crate) fn new(limit: u32, max_keys: usize, policy: Policy, name: LayerName) -> KeyMap {
        KeyMap {
            metrics: Registered::new(),
            shards: (0..SHARDS).map(|_| Padded::default()).collect(),
            keys: AtomicUsize::new(0),
            hasher: RandomState::new(),
            limit,
            max_keys,
            policy,
            counters: Arc::new(Counters::new(name)),
            clock: AtomicUsize::new(0),
            swept: AtomicU64::new(0),
        }
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        self.shards[shard]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn limit(&self) -> u32 {
        self.limit
    }

    pub(crate) fn policy(&self) -> &Policy {
        &self.policy
    }

    pub(crate) fn hash<K: std::hash::Hash>(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Renames the layer, if no key holds its counters yet (`false`
    /// otherwise).
    pub(crate) fn rename(&mut self, name: LayerName) -> bool {
        let Some(counters) = Arc::get_mut(&mut self.counters) else {
            return false;
        };
        // Handles registered under the old name (a service was made and
        // dropped since) take the map's keys off the old series.
        let keys = *self.keys.get_mut();
        if let Some(m) = self.metrics.get() {
            m.keys.decrement(keys as f64);
        }
        self.metrics = Registered::new();
        counters.rename(name);
        true
    }

    /// Registers the metric handles under the layer's name with the
    /// recorder installed now, unless done already (`Layer::layer`).
    pub(crate) fn register_metrics(&self) {
        let limit = self.limit;
        self.counters.register_metrics(|| limit);
        self.metrics
            .register(|| KeyedMetrics::new(&self.counters.name, self.keys.load(Ordering::Acquire)));
    }

    /// The keyed-only metric handles, once registered.
    #[inline]
    pub(crate) fn metrics(&self) -> Option<&KeyedMetrics> {
        self.metrics.get()
    }

    /// Takes a slot for a new key, if the map is not full.
    fn reserve(&self) -> bool {
        let reserved = self
            .keys
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_keys).then_some(n + 1)
            })
            .is_ok();
        if reserved && let Some(m) = self.metrics() {
            m.keys.increment(1.0);
        }
        reserved
    }

    /// The entry of `key`, created if needed; `None` if the map is full of
    /// busy keys. When full, idle keys are evicted first: a sweep looks at
    /// no more than [`SWEEP`] entries, starting where the last one stopped,
    /// so a full map costs a new key O(1) work, and an idle key is found
    /// within `max_keys / SWEEP + 1` sweeps (a new key may be refused while
    /// an idle key waits further round the clock).
    pub(crate) fn entry(&self, key: u64) -> Option<Arc<KeyEntry>> {
        let home = (key >> 32) as usize % SHARDS;
        {
            let mut shard = self.lock(home);
            if let Some(e) = shard.get(key) {
                return Some(Arc::clone(e));
            }
            if self.reserve() {
                return Some(self.create(&mut shard, key));
            }
        }
        self.sweep();
        let mut shard = self.lock(home);
        if let Some(e) = shard.get(key) {
            return Some(Arc::clone(e));
        }
        if self.reserve() {
            return Some(self.create(&mut shard, key));
        }
        None
    }

    fn create(&self, shard: &mut Shard, key: u64) -> Arc<KeyEntry> {
        let entry = Arc::new(KeyEntry {
            sem: Sem::new(self.limit),
            counters: Arc::clone(&self.counters),
            policy: self.policy,
        });
        shard.insert(key, Arc::clone(&entry));
        entry
    }

    /// Evicts idle keys, looking at no more than [`SWEEP`] entries; the
    /// sweep goes round the shards like a clock hand, resuming where the
    /// last one stopped. Returns how many keys were evicted.
    fn sweep(&self) -> usize {
        let mut budget = SWEEP;
        let mut freed = 0;
        let mut at = self.clock.load(Ordering::Relaxed) % SHARDS;
        // Bounded by the budget, and by one round of the shards when they
        // are (nearly) empty.
        for _ in 0..=SHARDS {
            let (looked, evicted, wrapped) = self.lock(at).sweep(budget);
            if evicted > 0 {
                self.keys.fetch_sub(evicted, Ordering::AcqRel);
                if let Some(m) = self.metrics() {
                    m.keys.decrement(evicted as f64);
                }
                freed += evicted;
            }
            budget -= looked;
            if wrapped {
                at = (at + 1) % SHARDS;
            }
            if budget == 0 || freed > 0 {
                break;
            }
        }
        self.clock.store(at, Ordering::Relaxed);
        self.swept
            .fetch_add((SWEEP - budget) as u64, Ordering::Relaxed);
        tracing::debug!(
            layer = %self.counters.name,
            evicted = freed,
            looked = SWEEP - budget,
            "keyed concurrency limit: key map full, idle keys evicted"
        );
        freed
    }

    /// Entries looked at by sweeps so far.
    #[cfg(test)]
    pub(crate) fn swept(&self) -> u64 {
        self.swept.load(Ordering::Relaxed)
    }

    pub(crate) fn totals(&self) -> Totals {
        let mut t = Totals {
            keys: 0,
            in_flight: 0,
            waiting: 0,
        };
        for i in 0..SHARDS {
            let shard = self.lock(i);
            t.keys += shard.entries.len();
            for (_, e) in &shard.entries {
                t.in_flight += crate::error::count(e.sem.in_flight());
                t.waiting += e.sem.waiting();
            }
        }
        t
    }
}

impl Drop for KeyMap {
    /// Takes the map's share (the keys it holds) off `rampart.limit.keys`,
    /// so maps sharing a name add up and the series returns to 0 when all
    /// are gone.
    fn drop(&mut self) {
        let keys = *self.keys.get_mut();
        if keys > 0
            && let Some(m) = self.metrics()
        {
            m.keys.decrement(keys as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WaitPolicy;

    fn map(max_keys: usize) -> KeyMap {
        KeyMap::new(
            1,
            max_keys,
            WaitPolicy::default().check().unwrap(),
            LayerName::default(),
        )
    }

    #[test]
    fn a_full_map_of_busy_keys_refuses_10_000_new_keys_with_bounded_work() {
        const CAP: usize = 1_000;
        let keys = map(CAP);
        // Every tracked key is busy: someone holds its entry.
        let busy: Vec<_> = (0..CAP as u64)
            .map(|k| keys.entry(keys.hash(&k)).expect("room"))
            .collect();
        assert_eq!(keys.totals().keys, CAP);
        for k in CAP as u64..CAP as u64 + 10_000 {
            assert!(keys.entry(keys.hash(&k)).is_none(), "key {k} admitted");
        }
        // A full scan per refusal would be 10 000 × 1 000 entries.
        assert!(
            keys.swept() <= 10_000 * SWEEP as u64,
            "{} entries looked at",
            keys.swept()
        );
        assert_eq!(keys.totals().keys, CAP);
        // Tracked keys are still served.
        for k in 0..CAP as u64 {
            assert!(keys.entry(keys.hash(&k)).is_some());
        }
        drop(busy);
    }

    #[test]
    fn idle_keys_anywhere_in_a_full_map_are_found_within_a_few_sweeps() {
        const CAP: usize = 1_000;
        let keys = map(CAP);
        let mut held: Vec<_> = (0..CAP as u64)
            .map(|k| Some(keys.entry(keys.hash(&k)).expect("room")))
            .collect();
        // One key becomes idle.
        held[617] = None;
        let mut refused = 0;
        let mut k = 1_000_000u64;
        while keys.entry(keys.hash(&k)).is_none() {
            refused += 1;
            k += 1;
            assert!(refused <= CAP.div_ceil(SWEEP) + 1, "idle key not found");
        }
        assert_eq!(keys.totals().keys, CAP);
        drop(held);
    }

    #[test]
    fn total_keys_never_exceed_the_cap_across_shards() {
        for cap in [1, 3, 17, 100] {
            let keys = map(cap);
            let mut held = Vec::new();
            for k in 0..10 * cap as u64 {
                if let Some(e) = keys.entry(keys.hash(&k))
                    && k % 2 == 0
                {
                    held.push(e);
                }
                assert!(keys.totals().keys <= cap);
            }
            assert!(keys.keys.load(Ordering::Relaxed) <= cap);
        }
    }
}
