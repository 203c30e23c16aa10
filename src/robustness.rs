//! Bad input never crashes the filter, and no altered token gets through: garbage into
//! every parser, and every one-character change of a valid token through a full decision.

use crate::cache::VerifiedCache;
use crate::config::Config;
use crate::flow::Outcome;
use crate::jwks::KeySet;
use crate::testkit::*;
use crate::verify::Alg;

/// A small deterministic generator: the same inputs on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = (self.next() as usize) % max;
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// Bytes drawn from JSON's and JWT's alphabets, to get past the first checks.
    fn texty(&mut self, max: usize) -> String {
        const ALPHABET: &[u8] = b"{}[]\":,.0123456789abcdefxyz-_eyJ \\/keysktyRSAECP256nxy";
        let len = (self.next() as usize) % max;
        (0..len)
            .map(|_| ALPHABET[(self.next() as usize) % ALPHABET.len()] as char)
            .collect()
    }
}

#[test]
fn garbage_into_every_parser() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..5_000 {
        let raw = rng.bytes(300);
        let text = rng.texty(300);
        let _ = Config::from_json(&raw);
        let _ = Config::from_json(text.as_bytes());
        let _ = KeySet::from_json(&raw);
        let _ = KeySet::from_json(text.as_bytes());
        let _ = crate::fetch_lease::Record::decode(&raw);
        let _ = crate::fetch_lease::max_age_s(&text);
        let _ = crate::envoy_crypto::decode_result(&raw);
        // A shared-cache slot holding anything, for a token that is its tail or not.
        let _ = crate::shared_cache::decode_for(&raw, &text);
        let tail = raw
            .get(6..)
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let _ = crate::shared_cache::decode_for(&raw, &tail);
        let _ = crate::shared_cache::slot_keys(&text, (rng.next() % 3) as u32);
        let _ = crate::shared_cache::written_at(Some(&raw));
        let _ = crate::envoy_crypto::es256_der(&raw);
        let _ = crate::client_address::client_address(
            crate::client_address::ClientAddressFrom::Peer,
            Some(&text),
            &crate::headers::HeaderSnapshot::from_pairs(&[("x-forwarded-for", &text)]),
        );
        for path in [text.as_str(), &String::from_utf8_lossy(&raw)] {
            let _ = crate::routing::path_readings(path);
            let h = crate::headers::HeaderSnapshot::from_pairs(&[("x-original-url", path)]);
            let _ = crate::routing::select_rules(
                std::iter::empty(),
                std::iter::empty(),
                Default::default(),
                path,
                path,
                path,
                &h,
            );
        }
        let lossy = String::from_utf8_lossy(&raw);
        for token in [lossy.as_ref(), text.as_str()] {
            if let Ok(t) = crate::verify::parse(token) {
                let _ = crate::verify::unverified_issuer(&t);
                let _ = crate::verify::verify(
                    &t,
                    &provider().accepts,
                    &[AUD.to_string()],
                    &keys(),
                    NOW,
                );
            }
        }
    }
}

fn decide(cfg: &Config, authorization: &str) -> Outcome {
    crate::testkit::decide(
        cfg,
        "/api",
        "api.example.com",
        authorization,
        &mut VerifiedCache::new(0),
        NOW,
    )
}

#[test]
fn every_one_character_change_of_a_token_is_refused() {
    let cfg = Config::from_json(
        serde_json::json!({
            "providers": [{"name": "corp", "issuer": ISS, "audiences": [AUD],
                           "local_jwks": {"inline": jwks_json()}, "algorithms": ["ES256", "RS256"]}],
            "rules": [{"match": {"path_prefix": "/api"}, "require": {"scopes": ["workflow:read"]}}]
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    for alg in [Alg::Es256, Alg::Rs256] {
        let token = mint(alg, Some(kid_for(alg)), &claims(NOW));
        assert!(matches!(
            decide(&cfg, &format!("Bearer {token}")),
            Outcome::Allow(_)
        ));
        // The last character of a base64url segment carries padding bits: changing only
        // those bits decodes to the same bytes, which is the same, validly signed token.
        let segment_ends: Vec<usize> = token
            .char_indices()
            .filter(|(i, _)| token.as_bytes().get(i + 1).is_none_or(|b| *b == b'.'))
            .map(|(i, _)| i)
            .collect();
        for (i, original) in token.char_indices() {
            for replacement in ['A', '-', '.'] {
                if replacement == original {
                    continue;
                }
                let mut changed = token.clone();
                changed.replace_range(i..i + 1, &replacement.to_string());
                let allowed = matches!(
                    decide(&cfg, &format!("Bearer {changed}")),
                    Outcome::Allow(_)
                );
                assert!(
                    !allowed || segment_ends.contains(&i),
                    "{alg:?}: changing position {i} to {replacement:?} was allowed"
                );
            }
        }
    }
}
