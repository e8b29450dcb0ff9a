//! Snapshots of the state of a keyed lock and of a coalescer.

/// A snapshot of a [`KeyedLockLayer`](crate::KeyedLockLayer)'s state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockStats {
    /// Keys in the map: keys held by a call (or being handed to the next
    /// one). Zero when the service is idle.
    pub keys: usize,
    /// Calls waiting for a key another call holds.
    pub waiting: usize,
    /// Calls that had to wait, since the layer was built.
    pub waited: u64,
    /// Waiting calls that gave up (cancelled, deadline passed, or dropped)
    /// before they got their key, since the layer was built.
    pub gave_up: u64,
}

impl LockStats {
    /// Calls holding a key: one per key in the map.
    pub fn holders(&self) -> usize {
        self.keys
    }
}

/// A snapshot of a [`CoalesceLayer`](crate::CoalesceLayer)'s state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CoalesceStats {
    /// Shared calls to the inner service running now (one per key).
    pub in_flight: usize,
    /// Callers waiting for a shared call, leaders included.
    pub waiting: usize,
    /// Calls made to the inner service, since the layer was built.
    pub calls: u64,
    /// Requests that joined a call already in flight instead of making
    /// their own, since the layer was built.
    pub coalesced: u64,
    /// Requests answered from a result kept for the time to live, since the
    /// layer was built.
    pub cached: u64,
    /// Shared calls dropped because every caller waiting for them had gone,
    /// since the layer was built.
    pub abandoned: u64,
}
