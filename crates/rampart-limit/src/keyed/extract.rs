//! [`KeyExtractor`]: how a keyed limit finds a request's key.

use http::HeaderName;
use std::hash::Hash;

/// Finds the key of a request (tenant, host, route, client address…).
///
/// Implemented for closures `Fn(&Req) -> K` with `K: Hash`, and by
/// [`HeaderKey`]. Keys are never stored: the map holds a keyed 64-bit hash
/// of each (see [`KeyedConcurrencyLimitLayer`](crate::KeyedConcurrencyLimitLayer)),
/// so a hostile, huge key costs no memory.
pub trait KeyExtractor<Req> {
    /// The key; it may borrow from the request.
    type Key<'a>: Hash
    where
        Self: 'a,
        Req: 'a;

    /// The key of `req`.
    fn extract<'a>(&'a self, req: &'a Req) -> Self::Key<'a>;
}

impl<Req, K, F> KeyExtractor<Req> for F
where
    F: Fn(&Req) -> K,
    K: Hash,
{
    type Key<'a>
        = K
    where
        Self: 'a,
        Req: 'a;

    fn extract<'a>(&'a self, req: &'a Req) -> K {
        self(req)
    }
}

/// The value of one request header as the key. Requests without it share
/// one key (the absent header), so they are limited together rather than
/// not at all.
#[derive(Clone, Debug)]
pub struct HeaderKey {
    name: HeaderName,
}

impl HeaderKey {
    /// Keys requests by the header `name`.
    pub fn new(name: HeaderName) -> HeaderKey {
        HeaderKey { name }
    }

    /// Keys requests by the header `name` (a static, lower-case name; use
    /// [`HeaderKey::new`] for names built at run time).
    pub fn from_static(name: &'static str) -> HeaderKey {
        HeaderKey {
            name: HeaderName::from_static(name),
        }
    }

    /// The header's name.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }
}

impl<B> KeyExtractor<http::Request<B>> for HeaderKey {
    type Key<'a>
        = Option<&'a [u8]>
    where
        Self: 'a,
        B: 'a;

    fn extract<'a>(&'a self, req: &'a http::Request<B>) -> Option<&'a [u8]> {
        req.headers()
            .get(&self.name)
            .map(http::HeaderValue::as_bytes)
    }
}
