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
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Weak};

use hashbrown::HashTable;

use crate::extract::is_token68;
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
    hot: HashTable<Slot>,
    cold: HashTable<Slot>,
    hash: TailHash,
    /// Entries per generation; 0 disables the cache.
    generation: usize,
    /// Lookups that spared a signature check, and those that did not, since the last
    /// [`VerifiedCache::take_lookups`].
    hits: u64,
    misses: u64,
    /// Local misses that the shared cache spared a signature check.
    shared_hits: u64,
}

#[derive(Debug)]
struct Slot {
    token: Box<str>,
    hash: u64,
    entry: Entry,
}

impl VerifiedCache {
    /// A cache of at most `max_entries` tokens.
    pub fn new(max_entries: usize) -> VerifiedCache {
        VerifiedCache {
            generation: max_entries / 2,
            ..VerifiedCache::default()
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
    pub fn get(&mut self, token: &[u8], now: i64, max_skew: i64) -> Option<Entry> {
        if self.generation == 0 {
            return None;
        }
        let hash = self.hash.of(token);
        let expired = |e: &Entry| now > e.verified.expires_at.saturating_add(max_skew);
        if let Ok(found) = self.hot.find_entry(hash, holds(hash, token)) {
            if expired(&found.get().entry) {
                found.remove();
                return None;
            }
            return Some(found.get().entry.clone());
        }
        // A hit in `cold` moves back to `hot`; an expired one is just dropped.
        let (slot, _) = self
            .cold
            .find_entry(hash, holds(hash, token))
            .ok()?
            .remove();
        if expired(&slot.entry) {
            return None;
        }
        let entry = slot.entry.clone();
        self.put_slot(slot);
        Some(entry)
    }

    pub fn insert(
        &mut self,
        token: &str,
        provider: usize,
        keys: &Arc<KeySet>,
        verified: Arc<Verified>,
    ) {
        // Only token68 tokens (every verified JWT is one): a hit then vouches for the
        // shape of the request's token too, and spares the check (see flow::find).
        let held = token.len() <= MAX_CACHED_TOKEN_BYTES && is_token68(token.as_bytes());
        if self.generation == 0 || !held {
            return;
        }
        let entry = Entry {
            provider,
            verified,
            keys: Arc::downgrade(keys),
        };
        let hash = self.hash.of(token.as_bytes());
        if let Some(slot) = self.hot.find_mut(hash, holds(hash, token.as_bytes())) {
            slot.entry = entry;
            return;
        }
        self.put_slot(Slot {
            token: token.into(),
            hash,
            entry,
        });
    }

    /// Adds a slot known not to be in `hot`.
    fn put_slot(&mut self, slot: Slot) {
        if self.hot.len() >= self.generation {
            self.cold = std::mem::take(&mut self.hot);
        }
        self.hot.insert_unique(slot.hash, slot, |s| s.hash);
    }
}

/// The test that a slot holds `token`, whose hash is `hash`.
fn holds(hash: u64, token: &[u8]) -> impl Fn(&Slot) -> bool + '_ {
    move |s| s.hash == hash && same_token(&s.token, token)
}

/// Whether two tokens are the same bytes, compared eight at a time. A hit compares the
/// whole token, and wasm32's `memcmp` (what `==` calls) goes a byte at a time: this was
/// the costliest step of a cached request in V8.
fn same_token(a: &str, b: &[u8]) -> bool {
    let a = a.as_bytes();
    if a.len() != b.len() {
        return false;
    }
    let (a, b) = (a.chunks_exact(8), b.chunks_exact(8));
    let word = |w: &[u8]| u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
    a.remainder() == b.remainder() && a.zip(b).fold(0, |d, (x, y)| d | (word(x) ^ word(y))) == 0
}

/// Bytes of a token's end that are hashed: more than any signature's entropy needs.
const TAIL_BYTES: usize = 32;

/// Hashes a token's last [`TAIL_BYTES`] (its signature) and its length, keyed as std's
/// `RandomState`, so that colliding keys cannot be chosen from outside.
#[derive(Debug, Clone, Default)]
struct TailHash(RandomState);

impl TailHash {
    fn of(&self, bytes: &[u8]) -> u64 {
        let tail = bytes.get(bytes.len().saturating_sub(TAIL_BYTES)..);
        let mut h = self.0.build_hasher();
        h.write(tail.unwrap_or_default());
        h.write_usize(bytes.len());
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
        assert!(c.get(a.as_bytes(), NOW, 0).is_some());
        assert!(
            c.get(b.as_bytes(), NOW, 0).is_none(),
            "same hash, compared in full"
        );
        let h = TailHash::default();
        let hash = |t: &str| h.of(t.as_bytes());
        assert_eq!(hash(&a), hash(&b), "only the tail is hashed");
        assert_ne!(hash(&a), hash(&format!("a.{tail}x")));
        assert_ne!(hash("ab"), hash("b"), "short keys: the length counts too");
    }

    #[test]
    fn tokens_are_the_same_only_when_every_byte_is() {
        let base: String = (0..40).map(|i| char::from(b'a' + i % 26)).collect();
        for len in 0..=base.len() {
            let a = &base[..len];
            assert!(same_token(a, a.as_bytes()));
            assert!(!same_token(a, &base.as_bytes()[..len.saturating_sub(1)]) || len == 0);
            // One byte changed, in a word or in the remainder.
            for at in 0..len {
                let mut b = a.as_bytes().to_vec();
                b[at] ^= 1;
                assert!(!same_token(a, &b), "{len} {at}");
            }
        }
    }

    #[test]
    fn hits_only_the_same_token_and_key_set() {
        let keys = Arc::new(keys());
        let mut c = VerifiedCache::new(10);
        c.insert("a.b.c", 1, &keys, verified(NOW + 60));
        let hit = c.get(b"a.b.c", NOW, 60).unwrap();
        assert_eq!(hit.provider, 1);
        assert!(hit.verified_by(&keys));
        assert!(c.get(b"a.b.d", NOW, 60).is_none());
        assert!(c.get(b"a.b.c ", NOW, 60).is_none());
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
        assert!(c.get(b"t", NOW + 60, 60).is_some());
        assert!(c.get(b"t", NOW + 61, 60).is_none());
        assert!(c.is_empty());
        let huge = "x".repeat(MAX_CACHED_TOKEN_BYTES + 1);
        c.insert(&huge, 0, &keys, verified(NOW));
        assert!(c.is_empty(), "oversized tokens are not held");
    }

    #[test]
    fn an_expired_token_found_in_the_older_generation_costs_no_other_entry() {
        // Moving it back to `hot` first would turn the generations over and drop `y`.
        let keys = Arc::new(keys());
        let mut c = VerifiedCache::new(4);
        c.insert("x", 0, &keys, verified(NOW));
        c.insert("y", 0, &keys, verified(NOW + 600));
        c.insert("z", 0, &keys, verified(NOW + 600));
        c.insert("w", 0, &keys, verified(NOW + 600));
        assert!(c.get(b"x", NOW + 61, 60).is_none());
        assert_eq!(c.len(), 3);
        for t in [&b"y"[..], b"z", b"w"] {
            assert!(c.get(t, NOW + 61, 60).is_some());
        }
    }

    #[test]
    fn only_token68_tokens_are_held() {
        // A hit vouches for the request's token being a token68 (flow::find then skips
        // that check), so nothing else may be held, whatever verified it.
        let keys = Arc::new(keys());
        let mut c = VerifiedCache::new(10);
        for odd in ["a b.c", "a.b=.c", "a.b.c\u{e9}", "a,b.c"] {
            c.insert(odd, 0, &keys, verified(NOW + 60));
            assert!(c.get(odd.as_bytes(), NOW, 0).is_none(), "{odd:?}");
        }
        assert!(c.is_empty());
        c.insert("a-b_c.d~e+f/g==", 0, &keys, verified(NOW + 60));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn stays_bounded_and_keeps_recently_used() {
        let keys = Arc::new(keys());
        let mut c = VerifiedCache::new(10);
        c.insert("token-0", 0, &keys, verified(NOW + 60));
        for i in 1..1000 {
            c.insert(&format!("token-{i}"), 0, &keys, verified(NOW + 60));
            // Touch the first token each time: it survives every generation change.
            assert!(c.get(b"token-0", NOW, 0).is_some(), "lost at {i}");
            assert!(c.len() <= 10);
        }
        assert!(c.get(b"token-1", NOW, 0).is_none());
        let mut off = VerifiedCache::new(0);
        off.insert("token-0", 0, &keys, verified(NOW + 60));
        assert!(off.is_empty());
    }
}
