//! Per-VM cache of verified signatures. A token seen again skips the signature check (the
//! costly part of a request); its time claims, issuer, audience and the route's rules are
//! still checked every time.
//!
//! Entries are keyed by the whole token (compared in full), so a lookup can only hit the
//! exact token that was verified. Only the token's tail is hashed (std's randomly keyed
//! SipHash over its last bytes): that is the signature, unique to each token, and hashing
//! the whole of a 700-byte token on every request cost more than the lookup. An entry
//! remembers the key set that verified it: when the provider's JWKS changes, its entries
//! stop matching (a removed key revokes its tokens at once).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Weak};

use crate::jwks::KeySet;
use crate::verify::Verified;

/// Tokens longer than this are verified every time rather than held in memory.
pub const MAX_CACHED_TOKEN_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone)]
pub struct Entry {
    pub provider: usize,
    pub verified: Arc<Verified>,
    /// The key set that verified it. `Weak` keeps the allocation (so no later key set can
    /// take its address) without keeping the keys.
    keys: Weak<KeySet>,
}

impl Entry {
    pub fn verified_by(&self, keys: &Arc<KeySet>) -> bool {
        Weak::ptr_eq(&self.keys, &Arc::downgrade(keys))
    }
}

/// A bounded map with two generations: new and used entries go to `hot`; when `hot` is
/// full it becomes `cold` and the old `cold` is dropped. A hit in `cold` moves back to
/// `hot`. This keeps the recently used entries, in O(1), without a linked list.
#[derive(Debug, Default)]
pub struct VerifiedCache {
    hot: HashMap<Box<str>, Entry, TailHash>,
    cold: HashMap<Box<str>, Entry, TailHash>,
    /// Entries per generation; 0 disables the cache.
    generation: usize,
    /// Lookups that spared a signature check, and those that did not, since the last
    /// [`VerifiedCache::take_lookups`].
    hits: u64,
    misses: u64,
    /// Local misses that the shared cache spared a signature check.
    shared_hits: u64,
}

impl VerifiedCache {
    /// A cache of at most `max_entries` tokens.
    pub fn new(max_entries: usize) -> VerifiedCache {
        let hash = TailHash::default();
        VerifiedCache {
            hot: HashMap::with_hasher(hash.clone()),
            cold: HashMap::with_hasher(hash),
            generation: max_entries / 2,
            hits: 0,
            misses: 0,
            shared_hits: 0,
        }
    }

    /// Counts a lookup: `hit` when the cached signature was used.
    pub fn note_lookup(&mut self, hit: bool) {
        if hit {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
    }

    /// Counts a local miss that another worker's entry spared a signature check.
    pub fn note_shared_hit(&mut self) {
        self.shared_hits += 1;
    }

    /// The (hits, misses, shared hits) counted since the last call.
    pub fn take_lookups(&mut self) -> (u64, u64, u64) {
        (
            std::mem::take(&mut self.hits),
            std::mem::take(&mut self.misses),
            std::mem::take(&mut self.shared_hits),
        )
    }

    pub fn len(&self) -> usize {
        self.hot.len() + self.cold.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry for `token`, if it is cached and has not expired by `now` (with up to
    /// `max_skew` seconds of grace, which the claim checks narrow).
    pub fn get(&mut self, token: &str, now: i64, max_skew: i64) -> Option<Entry> {
        let entry = match self.hot.get(token) {
            Some(e) => e.clone(),
            None => {
                let e = self.cold.remove(token)?;
                self.put(token, e.clone());
                e
            }
        };
        if now > entry.verified.expires_at.saturating_add(max_skew) {
            self.hot.remove(token);
            return None;
        }
        Some(entry)
    }

    pub fn insert(
        &mut self,
        token: &str,
        provider: usize,
        keys: &Arc<KeySet>,
        verified: Arc<Verified>,
    ) {
        let entry = Entry {
            provider,
            verified,
            keys: Arc::downgrade(keys),
        };
        self.put(token, entry);
    }

    fn put(&mut self, token: &str, entry: Entry) {
        if self.generation == 0 || token.len() > MAX_CACHED_TOKEN_BYTES {
            return;
        }
        if self.hot.len() >= self.generation && !self.hot.contains_key(token) {
            self.cold = std::mem::take(&mut self.hot);
        }
        self.hot.insert(token.into(), entry);
    }
}

/// Bytes of a token's end that are hashed: more than any signature's entropy needs.
const TAIL_BYTES: usize = 32;

/// Hashes the last [`TAIL_BYTES`] of what is written (a token's signature), keyed as
/// std's `RandomState`, so that colliding keys cannot be chosen from outside.
#[derive(Debug, Clone, Default)]
struct TailHash(RandomState);

impl BuildHasher for TailHash {
    type Hasher = TailHasher;

    fn build_hasher(&self) -> TailHasher {
        TailHasher {
            inner: self.0.build_hasher(),
            tail: [0; TAIL_BYTES],
            len: 0,
        }
    }
}

struct TailHasher {
    inner: std::collections::hash_map::DefaultHasher,
    tail: [u8; TAIL_BYTES],
    len: usize,
}

impl Hasher for TailHasher {
    fn write(&mut self, bytes: &[u8]) {
        // `str` writes its bytes, then a 0xff terminator: keep the last bytes of all.
        let take = bytes.len().min(TAIL_BYTES);
        self.tail.copy_within(take.., 0);
        let (Some(dst), Some(src)) = (
            self.tail.get_mut(TAIL_BYTES - take..),
            bytes.get(bytes.len() - take..),
        ) else {
            return;
        };
        dst.copy_from_slice(src);
        self.len = self.len.wrapping_add(bytes.len());
    }

    fn finish(&self) -> u64 {
        let mut h = self.inner.clone();
        h.write(&self.tail);
        h.write_usize(self.len);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use crate::verify::Alg;
    use serde_json::Map;

    fn verified(exp: i64) -> Arc<Verified> {
        Arc::new(Verified {
            claims: Map::new(),
            expires_at: exp,
            not_before: None,
            issued_at: None,
            kid: None,
            alg: Alg::Es256,
        })
    }

    #[test]
    fn tokens_differing_only_before_the_tail_are_still_told_apart() {
        let mut c = VerifiedCache::new(16);
        let keys = Arc::new(keys());
        let tail = "s".repeat(64);
        let (a, b) = (format!("a.{tail}"), format!("b.{tail}"));
        c.insert(&a, 0, &keys, verified(NOW + 60));
        assert!(c.get(&a, NOW, 0).is_some());
        assert!(c.get(&b, NOW, 0).is_none(), "same hash, compared in full");
        let h = TailHash::default();
        let hash = |t: &str| h.hash_one(t);
        assert_eq!(hash(&a), hash(&b), "only the tail is hashed");
        assert_ne!(hash(&a), hash(&format!("a.{tail}x")));
        assert_ne!(hash("ab"), hash("b"), "short keys: the length counts too");
    }

    #[test]
    fn hits_only_the_same_token_and_key_set() {
        let keys = Arc::new(keys());
        let mut c = VerifiedCache::new(10);
        c.insert("a.b.c", 1, &keys, verified(NOW + 60));
        let hit = c.get("a.b.c", NOW, 60).unwrap();
        assert_eq!(hit.provider, 1);
        assert!(hit.verified_by(&keys));
        assert!(c.get("a.b.d", NOW, 60).is_none());
        assert!(c.get("a.b.c ", NOW, 60).is_none());
        let rotated = Arc::new(self::keys());
        assert!(
            !hit.verified_by(&rotated),
            "a new key set does not vouch for old entries"
        );
    }

    #[test]
    fn expired_entries_are_dropped() {
        let keys = Arc::new(keys());
        let mut c = VerifiedCache::new(10);
        c.insert("t", 0, &keys, verified(NOW));
        assert!(c.get("t", NOW + 60, 60).is_some());
        assert!(c.get("t", NOW + 61, 60).is_none());
        assert!(c.is_empty());
        let huge = "x".repeat(MAX_CACHED_TOKEN_BYTES + 1);
        c.insert(&huge, 0, &keys, verified(NOW));
        assert!(c.is_empty(), "oversized tokens are not held");
    }

    #[test]
    fn stays_bounded_and_keeps_recently_used() {
        let keys = Arc::new(keys());
        let mut c = VerifiedCache::new(10);
        c.insert("token-0", 0, &keys, verified(NOW + 60));
        for i in 1..1000 {
            c.insert(&format!("token-{i}"), 0, &keys, verified(NOW + 60));
            // Touch the first token each time: it survives every generation change.
            assert!(c.get("token-0", NOW, 0).is_some(), "lost at {i}");
            assert!(c.len() <= 10);
        }
        assert!(c.get("token-1", NOW, 0).is_none());
        let mut off = VerifiedCache::new(0);
        off.insert("token-0", 0, &keys, verified(NOW + 60));
        assert!(off.is_empty());
    }
}
