//! The key map: one semaphore per key, at most `max_keys` of them.

use crate::config::Policy;
use crate::permit::Owner;
use crate::sem::Sem;
use crate::stats::Counters;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
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

/// The keys are already SipHash values under a random key: hash them no
/// further.
#[derive(Default)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Map = HashMap<u64, Arc<KeyEntry>, BuildHasherDefault<PassThrough>>;

#[derive(Debug)]
pub(crate) struct KeyMap {
    map: Mutex<Map>,
    hasher: RandomState,
    limit: u32,
    max_keys: usize,
    policy: Policy,
    pub(crate) counters: Arc<Counters>,
}

/// A snapshot of the map for stats.
pub(crate) struct Totals {
    pub(crate) keys: usize,
    pub(crate) in_flight: u64,
    pub(crate) waiting: usize,
}

impl KeyMap {
    pub(crate) fn new(limit: u32, max_keys: usize, policy: Policy) -> KeyMap {
        KeyMap {
            map: Mutex::new(Map::default()),
            hasher: RandomState::new(),
            limit,
            max_keys,
            policy,
            counters: Arc::new(Counters::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Map> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
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

    /// The entry of `key`, created if needed; `None` if the map is full of
    /// busy keys. When full, idle keys are evicted first.
    pub(crate) fn entry(&self, key: u64) -> Option<Arc<KeyEntry>> {
        let mut map = self.lock();
        if let Some(e) = map.get(&key) {
            return Some(Arc::clone(e));
        }
        if map.len() >= self.max_keys {
            // Entries are only cloned under this lock, so a count of 1
            // (the map's own) cannot grow while we look.
            let before = map.len();
            map.retain(|_, e| Arc::strong_count(e) > 1);
            tracing::debug!(
                evicted = before - map.len(),
                keys = map.len(),
                "keyed concurrency limit: idle keys evicted"
            );
            if map.len() >= self.max_keys {
                return None;
            }
        }
        let entry = Arc::new(KeyEntry {
            sem: Sem::new(self.limit),
            counters: Arc::clone(&self.counters),
            policy: self.policy,
        });
        map.insert(key, Arc::clone(&entry));
        Some(entry)
    }

    pub(crate) fn totals(&self) -> Totals {
        let map = self.lock();
        let mut t = Totals {
            keys: map.len(),
            in_flight: 0,
            waiting: 0,
        };
        for e in map.values() {
            t.in_flight += u64::from(e.sem.in_flight());
            t.waiting += e.sem.waiting();
        }
        t
    }
}
