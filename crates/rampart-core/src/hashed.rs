//! Maps keyed by a hash already taken: what the keyed layers (limit,
//! breaker, lock, rate) store per key.
//!
//! Each keyed layer hashes a request's key once, with a randomly seeded
//! hasher of its own (std's `RandomState`, or a seeded foldhash in the rate
//! limiter's store), so clients cannot aim at one bucket, and keeps only
//! that `u64`.
//! Hashing the `u64` again to find its map slot would be wasted work:
//! [`HashedMap`] uses it as it is.
//!
//! ```
//! use rampart_core::hashed::HashedMap;
//! use std::hash::{BuildHasher, RandomState};
//!
//! let seed = RandomState::new();
//! let mut per_key: HashedMap<u32> = HashedMap::default();
//! *per_key.entry(seed.hash_one("tenant-a")).or_default() += 1;
//! assert_eq!(per_key[&seed.hash_one("tenant-a")], 1);
//! ```

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` whose `u64` keys are already hashes (see the module docs).
pub type HashedMap<V> = HashMap<u64, V, BuildHasherDefault<PassThrough>>;

/// The hasher of [`HashedMap`]: a `u64` key is its own hash.
#[derive(Clone, Copy, Debug, Default)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `HashedMap`; other input still mixes.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
