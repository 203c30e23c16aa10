//! The verified-token cache shared by every worker of a proxy, in proxy-wasm shared data.
//!
//! Each worker keeps its own cache ([`crate::cache`]); without this one, a token is
//! verified once per worker that sees it (as Envoy's native `jwt_authn` does). On a local
//! miss, a worker reads the token's slots (two at most): if another worker verified exactly
//! this token, the entry says with which algorithm and which key, and the worker runs the
//! whole signature step as usual ([`crate::verify::verify_signature`]: algorithm
//! allow-list, `typ`, `kid`, the provider's current keys) with only the arithmetic
//! replaced by that record ([`Vouching`]). So an entry can never widen what a provider
//! accepts: it is used only if the token names a key that is, byte for byte, in this
//! provider's current key set, under an algorithm the provider allows; a key dropped from
//! the JWKS revokes its entries at once, and two filter instances sharing one VM id cannot
//! vouch for each other's keys.
//!
//! Shared data has no delete, so the cache is a fixed number of slots (`shared_entries`),
//! each holding the last token written into it: memory is bounded by the slot count, and a
//! slot's entry is replaced, never removed. A token may go into either of two slots, taking
//! an empty one or the one written longer ago. Entries trust shared data exactly as far as
//! the JWKS cached there is trusted (see the security model in README.md).

use std::cell::{Cell, RefCell};
use std::hash::Hasher;

use crate::alg::Alg;
use crate::cache::MAX_CACHED_TOKEN_BYTES;
use crate::jwks::Jwk;
use crate::verify::{Crypto, RustCrypto};

/// What one worker recorded after checking a token's signature: the algorithm and the
/// key (its SubjectPublicKeyInfo DER) that verified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vouch {
    pub alg: Alg,
    pub key_der: Vec<u8>,
}

/// The shared slots, as the decision flow sees them.
pub trait SharedTokens {
    /// What another worker recorded for exactly `token`, if its slot still holds it.
    fn vouch(&mut self, token: &str) -> Option<Vouch>;

    /// Records that `token` was verified as `vouch` says, at `now` (Unix seconds).
    fn record(&mut self, token: &str, vouch: &Vouch, now: i64);
}

/// No shared cache (one worker, the CLI, or `shared_entries: 0`).
pub struct NoSharedTokens;

impl SharedTokens for NoSharedTokens {
    fn vouch(&mut self, _token: &str) -> Option<Vouch> {
        None
    }

    fn record(&mut self, _token: &str, _vouch: &Vouch, _now: i64) {}
}

/// Whether a token may go into the shared cache at all.
pub fn shareable(token: &str) -> bool {
    token.len() <= MAX_CACHED_TOKEN_BYTES
}

/// The shared-data keys of the two slots `token` may be in, among `slots` (one if there
/// is one slot). Only the token's tail is hashed (its signature); SipHash with fixed keys,
/// so every worker finds the same slots. Two places, the older entry replaced: far fewer
/// tokens lose their place to another than with one. A collision costs a verification,
/// never a wrong answer: an entry is used only for the exact token it holds.
pub fn slot_keys(token: &str, slots: u32) -> [String; 2] {
    let h = tail_hash(token);
    let n = u64::from(slots.max(1));
    let first = h % n;
    // Another slot than the first, whenever there are two.
    let second = match n {
        1 => first,
        _ => (first + 1 + (h >> 32) % (n - 1)) % n,
    };
    [first, second].map(|i| format!("jwt-guard/v1/verified/{i}"))
}

/// SipHash (fixed keys) of the token's last 32 bytes: its signature.
pub fn tail_hash(token: &str) -> u64 {
    let bytes = token.as_bytes();
    let tail = bytes.get(bytes.len().saturating_sub(32)..).unwrap_or(bytes);
    #[allow(deprecated)] // SipHasher: stable across workers, unlike RandomState.
    let mut h = std::hash::SipHasher::new();
    h.write(tail);
    h.finish()
}

const TAG: &[u8; 3] = b"jv2";

/// An entry: tag, algorithm, when it was written (Unix seconds, to replace the older of
/// two), the key's length and DER, then the token. (Time claims are checked on every
/// request, cached or not, so the entry needs no expiry.)
pub fn encode(token: &str, vouch: &Vouch, written_at: i64) -> Option<Vec<u8>> {
    let alg = u8::try_from(Alg::ALL.iter().position(|a| *a == vouch.alg)?).ok()?;
    let key_len = u16::try_from(vouch.key_der.len()).ok()?;
    let mut out = Vec::with_capacity(14 + vouch.key_der.len() + token.len());
    out.extend_from_slice(TAG);
    out.push(alg);
    out.extend_from_slice(&written_at.to_le_bytes());
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(&vouch.key_der);
    out.extend_from_slice(token.as_bytes());
    Some(out)
}

/// An entry's parts, if it is well formed.
struct Entry<'b> {
    alg: u8,
    written_at: i64,
    key_der: &'b [u8],
    token: &'b [u8],
}

fn parse(bytes: &[u8]) -> Option<Entry<'_>> {
    let rest = bytes.strip_prefix(TAG)?;
    let (&alg, rest) = rest.split_first()?;
    let (at, rest) = rest.split_at_checked(8)?;
    let written_at = i64::from_le_bytes(at.try_into().ok()?);
    let (len, rest) = rest.split_at_checked(2)?;
    let key_len = usize::from(u16::from_le_bytes(len.try_into().ok()?));
    let (key_der, token) = rest.split_at_checked(key_len)?;
    Some(Entry {
        alg,
        written_at,
        key_der,
        token,
    })
}

/// The entry in `bytes` if it is for exactly `token`. Anything malformed is no entry.
pub fn decode_for(bytes: &[u8], token: &str) -> Option<Vouch> {
    let e = parse(bytes)?;
    if e.token != token.as_bytes() {
        return None;
    }
    Some(Vouch {
        alg: *Alg::ALL.get(usize::from(e.alg))?,
        key_der: e.key_der.to_vec(),
    })
}

/// When a slot's entry was written; `None` for an empty slot or one that holds no entry
/// (either is taken before any other).
pub fn written_at(bytes: Option<&[u8]>) -> Option<i64> {
    parse(bytes?).map(|e| e.written_at)
}

/// Which of two slots takes a new entry: an empty one, else the one written longer ago;
/// between two written in the same second, `tie` (a bit of the token's hash, so that such
/// entries are replaced evenly).
pub fn slot_to_replace(written: [Option<i64>; 2], tie: usize) -> usize {
    match written {
        [None, _] => 0,
        [_, None] => 1,
        [Some(a), Some(b)] if a == b => tie & 1,
        [Some(a), Some(b)] => usize::from(b < a),
    }
}

/// The signature backend for one verification that may be vouched for: a key and algorithm
/// that match the shared entry count as checked; any other goes to the real backend (and
/// the pure-Rust fallback, as [`crate::verify::verify_signature`] would). Remembers which
/// key really verified the token, to record it.
pub struct Vouching<'a> {
    vouch: Option<&'a Vouch>,
    inner: &'a dyn Crypto,
    vouched: Cell<bool>,
    verified_by: RefCell<Option<Vouch>>,
}

impl<'a> Vouching<'a> {
    pub fn new(vouch: Option<&'a Vouch>, inner: &'a dyn Crypto) -> Vouching<'a> {
        Vouching {
            vouch,
            inner,
            vouched: Cell::new(false),
            verified_by: RefCell::new(None),
        }
    }

    /// Whether the shared entry stood in for the arithmetic.
    pub fn vouched(&self) -> bool {
        self.vouched.get()
    }

    /// The algorithm and key that were checked and verified the token (not vouched for).
    pub fn verified_by(self) -> Option<Vouch> {
        self.verified_by.into_inner()
    }
}

impl Crypto for Vouching<'_> {
    fn verify(&self, alg: Alg, key: &Jwk, input: &[u8], signature: &[u8]) -> Option<bool> {
        let der = key.spki_der.as_deref();
        if let (Some(v), Some(der)) = (self.vouch, der) {
            if v.alg == alg && v.key_der == der {
                self.vouched.set(true);
                return Some(true);
            }
        }
        let valid = self
            .inner
            .verify(alg, key, input, signature)
            .unwrap_or_else(|| RustCrypto.verify_key(alg, &key.key, input, signature));
        if let (true, Some(der)) = (valid, der) {
            *self.verified_by.borrow_mut() = Some(Vouch {
                alg,
                key_der: der.to_vec(),
            });
        }
        Some(valid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vouch() -> Vouch {
        Vouch {
            alg: Alg::Rs256,
            key_der: vec![0x30, 1, 2, 3],
        }
    }

    #[test]
    fn an_entry_answers_only_for_its_own_token() {
        let bytes = encode("a.b.c", &vouch(), 7).unwrap();
        assert_eq!(decode_for(&bytes, "a.b.c"), Some(vouch()));
        assert_eq!(written_at(Some(&bytes)), Some(7));
        assert_eq!(decode_for(&bytes, "a.b.d"), None);
        assert_eq!(decode_for(&bytes, "a.b.c."), None);
        assert_eq!(decode_for(&bytes, "a.b"), None);
        assert_eq!(decode_for(&bytes, ""), None);
    }

    #[test]
    fn malformed_entries_are_no_entry() {
        let bytes = encode("a.b.c", &vouch(), 7).unwrap();
        for n in 0..bytes.len() {
            let cut = bytes.get(..n).unwrap();
            assert_eq!(decode_for(cut, "a.b.c"), None, "cut at {n}");
        }
        assert_eq!(written_at(None), None);
        assert_eq!(written_at(Some(b"jv1 an entry of an older build")), None);
        let mut bad_alg = bytes.clone();
        if let Some(b) = bad_alg.get_mut(3) {
            *b = 200;
        }
        assert_eq!(decode_for(&bad_alg, "a.b.c"), None);
        assert_eq!(decode_for(b"jv1 whatever", "a.b.c"), None);
        // A key length that runs past the end.
        let mut long_key = bytes.clone();
        if let Some(b) = long_key.get_mut(13) {
            *b = 0xff;
        }
        assert_eq!(decode_for(&long_key, "a.b.c"), None);
    }

    #[test]
    fn every_worker_finds_a_token_in_the_same_two_slots() {
        let token = "header.payload.c2lnbmF0dXJlLXRoYXQtaXMtbG9uZy1lbm91Z2gtdG8tZmlsbC10aGUtdGFpbA";
        assert_eq!(slot_keys(token, 1024), slot_keys(token, 1024));
        let [a, b] = slot_keys(token, 1024);
        assert!(a.starts_with("jwt-guard/v1/verified/"), "{a}");
        assert_ne!(a, b);
        // With two slots, every token may use both; with one (or none), the one.
        let mut two = slot_keys(token, 2);
        two.sort();
        assert_eq!(two, ["jwt-guard/v1/verified/0", "jwt-guard/v1/verified/1"]);
        assert_eq!(
            slot_keys(token, 1),
            ["jwt-guard/v1/verified/0", "jwt-guard/v1/verified/0"]
        );
        assert_eq!(slot_keys(token, 0), slot_keys(token, 1));
        // Tokens spread over the slots.
        let slots: std::collections::HashSet<String> = (0..200)
            .flat_map(|i| slot_keys(&format!("h.p.signature{i:04}"), 64))
            .collect();
        assert!(slots.len() > 50, "{}", slots.len());
    }

    #[test]
    fn an_empty_slot_is_taken_first_then_the_older_entry() {
        assert_eq!(slot_to_replace([None, None], 1), 0);
        assert_eq!(slot_to_replace([Some(5), None], 0), 1);
        assert_eq!(slot_to_replace([None, Some(5)], 1), 0);
        assert_eq!(slot_to_replace([Some(5), Some(9)], 1), 0);
        assert_eq!(slot_to_replace([Some(9), Some(5)], 0), 1);
        assert_eq!(slot_to_replace([Some(5), Some(5)], 0), 0);
        assert_eq!(slot_to_replace([Some(5), Some(5)], 3), 1);
    }
}
