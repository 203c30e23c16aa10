//! The verified-token cache shared by workers (`cache.shared_entries`), on the fake host:
//! several workers of one proxy share its shared data, as Envoy's worker VMs do.

use std::rc::Rc;

use serde_json::{json, Value};

use super::{Next, Worker};
use crate::alg::Alg;
use crate::config::Config;
use crate::host::memory::{MemoryHost, Proxy};
use crate::jwks::KeySet;
use crate::shared_cache::{encode, slot_keys, Vouch};
use crate::testkit::{
    b64, claims, jwks_json, mint, mint_with_other_key, signing_keys, AUD, ISS, NOW,
};

const ROOT: u32 = 1;

/// One provider with `jwks` inline; every path needs a token.
fn config_with(jwks: &str, cache: Value) -> Config {
    let v = json!({
        "providers": [{"name": "corp", "issuer": ISS, "audiences": [AUD],
                       "local_jwks": {"inline": jwks},
                       "algorithms": ["ES256", "RS256", "EdDSA"]}],
        "crypto": "rust",
        "cache": cache,
        "rules": [{"name": "all", "match": {"path_prefix": "/"}, "require": {}}]
    });
    Config::from_json(v.to_string().as_bytes()).unwrap()
}

fn config() -> Config {
    config_with(&jwks_json(), json!({}))
}

/// A worker of `proxy`, with its own host (its own VM).
fn worker(proxy: &Rc<Proxy>, config: Config) -> (Rc<MemoryHost>, Worker) {
    let host = Rc::new(MemoryHost::new(proxy.clone()));
    let w = Worker::new(host.clone(), config, ROOT).unwrap();
    (host, w)
}

fn proxy() -> Rc<Proxy> {
    Proxy::new(u64::try_from(NOW).unwrap() * 1000)
}

/// Sends `token` in context `id`; the reply's code, or "allowed".
fn send(host: &MemoryHost, w: &mut Worker, id: u32, token: &str) -> String {
    let auth = format!("Bearer {token}");
    host.begin(
        id,
        &[
            (":authority", "api"),
            (":method", "GET"),
            (":path", "/x"),
            ("authorization", &auth),
        ],
    );
    match w.on_request_headers(id) {
        Next::Continue => "allowed".to_string(),
        Next::Pause => host.request(id).reply.map(|r| r.code()).unwrap_or_default(),
    }
}

/// The worker's (hits, misses, shared hits) so far (they are added on the tick).
fn lookups(host: &MemoryHost, w: &mut Worker) -> (u64, u64, u64) {
    w.on_tick();
    let c = |s: &str| host.counter(&format!("jwt_guard.jwt_guard.{s}"));
    (c("cache_hit"), c("cache_miss"), c("cache_shared_hit"))
}

fn es256_token() -> String {
    mint(Alg::Es256, Some("ec1"), &claims(NOW))
}

/// The shared slots written so far.
fn slots(host: &MemoryHost) -> usize {
    (0..1024)
        .filter(|i| {
            crate::host::Host::shared_data(host, &format!("jwt-guard/v1/verified/{i}"))
                .is_ok_and(|(v, _)| v.is_some())
        })
        .count()
}

#[test]
fn a_token_one_worker_verified_is_not_verified_again_by_another() {
    let proxy = proxy();
    let (host_a, mut a) = worker(&proxy, config());
    let (host_b, mut b) = worker(&proxy, config());
    for alg in [Alg::Es256, Alg::Rs256, Alg::EdDsa] {
        let token = mint(alg, Some(crate::testkit::kid_for(alg)), &claims(NOW));
        assert_eq!(send(&host_a, &mut a, 2, &token), "allowed", "{alg:?}");
        assert_eq!(send(&host_b, &mut b, 2, &token), "allowed", "{alg:?}");
        // Then B's own cache answers.
        assert_eq!(send(&host_b, &mut b, 3, &token), "allowed", "{alg:?}");
    }
    assert_eq!(lookups(&host_a, &mut a), (0, 3, 0));
    assert_eq!(lookups(&host_b, &mut b), (3, 3, 3));
}

#[test]
fn the_claims_are_checked_again_on_a_shared_hit() {
    let proxy = proxy();
    let (host_a, mut a) = worker(&proxy, config());
    let token = es256_token();
    assert_eq!(send(&host_a, &mut a, 2, &token), "allowed");
    // Expired by the time another worker sees it (exp NOW+300, skew 60).
    proxy.advance(361_000);
    let (host_b, mut b) = worker(&proxy, config());
    assert_eq!(send(&host_b, &mut b, 2, &token), "AUTH_111");
}

#[test]
fn an_entry_stands_in_only_for_a_key_this_provider_holds() {
    let proxy = proxy();
    let (host, mut w) = worker(&proxy, config());
    // Signed by a key the JWKS does not hold, under a kid it does.
    let forged = mint_with_other_key(Alg::Es256, "ec1", &claims(NOW));
    let other_der = {
        let point = signing_keys().ec_other.verifying_key().to_sec1_point(false);
        let jwk = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "ec1",
            "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())}]});
        let set = KeySet::from_json(jwk.to_string().as_bytes()).unwrap();
        let key = set.candidates(Some("ec1"), Alg::Es256).next().unwrap();
        key.spki_der.clone().unwrap()
    };
    let entry = |alg, key_der: &[u8]| {
        encode(
            &forged,
            &Vouch {
                alg,
                key_der: key_der.to_vec(),
            },
            0,
        )
        .unwrap()
    };
    // Into both of the token's slots.
    let write = |bytes: &[u8]| {
        for key in slot_keys(&forged, 1024) {
            crate::host::Host::set_shared_data(&*host, &key, bytes, None).unwrap();
        }
    };
    // An entry naming the key that did sign it, which this provider does not hold.
    write(&entry(Alg::Es256, &other_der));
    assert_eq!(send(&host, &mut w, 2, &forged), "AUTH_105");
    // An entry for another algorithm than the token's.
    let ours = crate::testkit::keys()
        .candidates(Some("ec1"), Alg::Es256)
        .next()
        .unwrap()
        .spki_der
        .clone()
        .unwrap();
    write(&entry(Alg::Rs256, &ours));
    assert_eq!(send(&host, &mut w, 3, &forged), "AUTH_105");
    // Garbage in the slot.
    write(b"jv2\x00\x00garbage");
    assert_eq!(send(&host, &mut w, 4, &forged), "AUTH_105");
    assert_eq!(lookups(&host, &mut w).2, 0);
}

#[test]
fn instances_with_other_keys_under_the_same_kid_do_not_vouch_for_each_other() {
    let proxy = proxy();
    // B's JWKS names another key "ec1".
    let point = signing_keys().ec_other.verifying_key().to_sec1_point(false);
    let other_jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "ec1",
        "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())}]})
    .to_string();
    let (host_a, mut a) = worker(&proxy, config());
    let (host_b, mut b) = worker(&proxy, config_with(&other_jwks, json!({})));
    let token = es256_token();
    assert_eq!(send(&host_a, &mut a, 2, &token), "allowed");
    assert_eq!(send(&host_b, &mut b, 2, &token), "AUTH_105");
    assert_eq!(lookups(&host_b, &mut b).2, 0);
}

#[test]
fn the_shared_cache_is_off_with_the_local_one_or_when_asked() {
    // (cache config, slots written, shared hits): on by default, and alone when asked.
    let cases = [
        (json!({"max_entries": 0}), 0, 0),
        (json!({"shared_entries": 0}), 0, 0),
        (json!({}), 1, 1),
        (json!({"max_entries": 0, "shared_entries": 16}), 1, 1),
    ];
    for (cache, written, shared_hits) in cases {
        let proxy = proxy();
        let (host_a, mut a) = worker(&proxy, config_with(&jwks_json(), cache.clone()));
        let (host_b, mut b) = worker(&proxy, config_with(&jwks_json(), cache.clone()));
        let token = es256_token();
        assert_eq!(send(&host_a, &mut a, 2, &token), "allowed");
        assert_eq!(send(&host_b, &mut b, 2, &token), "allowed");
        assert_eq!(slots(&host_a), written, "{cache}");
        assert_eq!(lookups(&host_b, &mut b).2, shared_hits, "{cache}");
    }
}

#[test]
fn a_slot_holds_the_last_token_verified_into_it() {
    let proxy = proxy();
    let cache = json!({"shared_entries": 1});
    let (host_a, mut a) = worker(&proxy, config_with(&jwks_json(), cache.clone()));
    let (host_b, mut b) = worker(&proxy, config_with(&jwks_json(), cache));
    let first = es256_token();
    let mut c = claims(NOW);
    c["sub"] = json!("svc-b");
    let second = mint(Alg::Es256, Some("ec1"), &c);
    assert_eq!(send(&host_a, &mut a, 2, &first), "allowed");
    assert_eq!(send(&host_a, &mut a, 3, &second), "allowed");
    assert_eq!(slots(&host_a), 1);
    // The slot holds the second; the first, replaced, B verifies itself.
    assert_eq!(send(&host_b, &mut b, 2, &second), "allowed");
    assert_eq!(lookups(&host_b, &mut b).2, 1);
    assert_eq!(send(&host_b, &mut b, 3, &first), "allowed");
    assert_eq!(lookups(&host_b, &mut b).2, 1);
}

#[test]
fn a_token_takes_an_empty_slot_of_its_two_then_the_one_written_longer_ago() {
    // Two slots: every token may use both.
    let proxy = proxy();
    let cache = json!({"shared_entries": 2});
    let config = || config_with(&jwks_json(), cache.clone());
    let token = |sub: &str| {
        let mut c = claims(NOW);
        c["sub"] = json!(sub);
        mint(Alg::Es256, Some("ec1"), &c)
    };
    let (t1, t2, t3) = (token("one"), token("two"), token("three"));
    let (host_a, mut a) = worker(&proxy, config());
    assert_eq!(send(&host_a, &mut a, 2, &t1), "allowed");
    proxy.advance(1_000);
    assert_eq!(send(&host_a, &mut a, 3, &t2), "allowed");
    assert_eq!(slots(&host_a), 2);
    // Both are there for another worker: t2 did not take t1's place.
    let (host_b, mut b) = worker(&proxy, config());
    assert_eq!(send(&host_b, &mut b, 2, &t1), "allowed");
    assert_eq!(send(&host_b, &mut b, 3, &t2), "allowed");
    assert_eq!(lookups(&host_b, &mut b).2, 2);
    // A third replaces the older, t1.
    proxy.advance(1_000);
    assert_eq!(send(&host_a, &mut a, 4, &t3), "allowed");
    let (host_c, mut c) = worker(&proxy, config());
    for (id, t) in [(2, &t2), (3, &t3), (4, &t1)] {
        assert_eq!(send(&host_c, &mut c, id, t), "allowed");
    }
    assert_eq!(lookups(&host_c, &mut c), (0, 3, 2));
}
