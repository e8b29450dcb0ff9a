//! The state every clone of a [`ConcurrencyLimitLayer`](crate::ConcurrencyLimitLayer)
//! (and every service it made) shares.

use crate::adaptive::Adaptive;
use crate::config::Policy;
use crate::permit::Owner;
use crate::sem::Sem;
use crate::stats::{Counters, Stats};

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) sem: Sem,
    pub(crate) adaptive: Option<Adaptive>,
    pub(crate) policy: Policy,
    pub(crate) counters: Counters,
}

impl Shared {
    pub(crate) fn stats(&self) -> Stats {
        Stats {
            in_flight: crate::error::count(self.sem.in_flight()),
            waiting: self.sem.waiting(),
            limit: crate::error::count(self.sem.limit()),
            shed: self.counters.shed_count(),
            expired: self.counters.expired_count(),
        }
    }
}

impl Owner for Shared {
    fn sem(&self) -> &Sem {
        &self.sem
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn policy(&self) -> &Policy {
        &self.policy
    }

    fn adaptive(&self) -> Option<&Adaptive> {
        self.adaptive.as_ref()
    }
}
