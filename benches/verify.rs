//! Native micro-benchmarks of the per-request work, through the crate's public API:
//! `cargo bench --bench verify` (under `cargo test --all-targets` each runs once, as a test).
//!
//! - `parse/*`: splitting and decoding a compact JWS (no signature work)
//! - `verify/*`: parse + signature (pure-Rust crypto, as the filter's fallback) + claims
//! - `policy/*`: first-match rule lookup over 200 rules
//! - `flow/*`: the whole decision (`flow::evaluate`) with 200 rules, the match at the end,
//!   with the verified-token cache hit and with the cache off
//! - `load/*`: JWKS and configuration parsing (once per key set / config, not per request)
//!
//! Keys are generated and tokens signed at start-up with jwt-compact, so nothing expires.
//! These numbers are native code; the filter runs as wasm in V8, which is slower, and in
//! Envoy the ES256/RS256 signature goes to BoringSSL when the host offers it.

// Bench set-up may fail loudly: nothing here runs in the filter.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use jwt_compact::alg::{Es256, Rsa};
use jwt_compact::{AlgorithmExt, Claims, Header};
use rand_core::OsRng;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Map, Value};

use jwt_guard::cache::VerifiedCache;
use jwt_guard::config::{Config, KeySource};
use jwt_guard::flow::{evaluate, KeyStore, Keys, Outcome, Refetch, Request, Runtime};
use jwt_guard::headers::HeaderSnapshot;
use jwt_guard::jwks::KeySet;
use jwt_guard::policy::find_rule;
use jwt_guard::verify::{self, RustCrypto};

const NOW: i64 = 1_800_000_000;
const ES_ISS: &str = "https://es256.bench.local";
const RS_ISS: &str = "https://rs256.bench.local";
const AUD: &str = "https://api.bench.local";
const HOST: &str = "api.bench.local";
const RULES: usize = 200;
/// The path only the last rule matches.
const LAST_PATH: &str = "/svc199/items/42";

struct Fixture {
    cfg: Config,
    jwks: String,
    es256: String,
    rs256: String,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn fixture() -> Fixture {
    let ec = p256::ecdsa::SigningKey::random(&mut OsRng);
    let rsa_key = rsa::RsaPrivateKey::new(&mut OsRng, 2048).expect("rsa keygen");
    let point = ec.verifying_key().to_encoded_point(false);
    let rsa_pub = rsa_key.to_public_key();
    let jwks = json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "bench-es256", "use": "sig", "alg": "ES256",
         "x": b64(point.x().expect("x")), "y": b64(point.y().expect("y"))},
        {"kty": "RSA", "kid": "bench-rs256", "use": "sig", "alg": "RS256",
         "n": b64(&rsa_pub.n().to_bytes_be()), "e": b64(&rsa_pub.e().to_bytes_be())}
    ]})
    .to_string();

    // Like the tokens of `make bench`, plus the scope of the last rule.
    let claims = |iss: &str| -> Claims<Map<String, Value>> {
        let custom = json!({"iss": iss, "aud": AUD, "sub": "bench-client", "iat": NOW,
                            "nbf": NOW - 5, "exp": NOW + 3600, "jti": "5f1c0a52-bench",
                            "scope": "openid bench:read svc199:read profile"});
        Claims::new(custom.as_object().cloned().expect("object"))
    };
    let es256 = Es256
        .token(
            &Header::empty().with_key_id("bench-es256"),
            &claims(ES_ISS),
            &ec,
        )
        .expect("sign es256");
    let rs256 = Rsa::rs256()
        .token(
            &Header::empty().with_key_id("bench-rs256"),
            &claims(RS_ISS),
            &rsa_key,
        )
        .expect("sign rs256");

    let rules: Vec<Value> = (0..RULES)
        .map(|i| {
            json!({"match": {"methods": ["GET"], "path_prefix": format!("/svc{i}"), "host": HOST},
                   "require": {"providers": ["es", "rs"], "scopes": [format!("svc{i}:read")]}})
        })
        .collect();
    let cfg = json!({
        "providers": [
            {"name": "es", "issuer": ES_ISS, "audiences": [AUD], "local_jwks": {"inline": jwks}},
            {"name": "rs", "issuer": RS_ISS, "audiences": [AUD], "local_jwks": {"inline": jwks}}
        ],
        "rules": rules,
        "default": "deny"
    });
    let cfg = Config::from_json(cfg.to_string().as_bytes()).expect("bench config");
    Fixture {
        cfg,
        jwks,
        es256,
        rs256,
    }
}

/// The providers' inline keys, always ready.
struct LocalKeys<'a>(&'a Config);

impl KeyStore for LocalKeys<'_> {
    fn keys(&mut self, provider: usize) -> Keys {
        match self.0.providers.get(provider).map(|p| &p.keys) {
            Some(KeySource::Local(k)) => Keys::Ready(Arc::clone(k)),
            _ => Keys::Unavailable,
        }
    }

    fn refetch_for_unknown_kid(&mut self, _provider: usize) -> Refetch {
        Refetch::Refused
    }
}

fn decide(cfg: &Config, token: &str, cache: &mut VerifiedCache) -> Outcome {
    let auth = format!("Bearer {token}");
    let headers = HeaderSnapshot::from_pairs(&[("authorization", &auth)]);
    let req = Request {
        method: "GET",
        authority: HOST,
        path: LAST_PATH,
        headers: &headers,
        source: None,
    };
    let mut keys = LocalKeys(cfg);
    let mut rt = Runtime {
        keys: &mut keys,
        cache,
        crypto: &RustCrypto,
        now: NOW,
    };
    evaluate(cfg, &req, &mut rt)
}

fn allowed(o: &Outcome) -> bool {
    matches!(o, Outcome::Allow(a) if a.identity.is_some() && a.rule == Some(RULES - 1))
}

fn benches(c: &mut Criterion) {
    let f = fixture();
    let provider = |name: &str| {
        let i = f.cfg.provider_index(name).expect("provider");
        f.cfg.providers.get(i).expect("provider")
    };
    let keys = KeySet::from_json(f.jwks.as_bytes()).expect("jwks");
    let tokens = [
        ("es256", &f.es256, provider("es")),
        ("rs256", &f.rs256, provider("rs")),
    ];

    // Never measure an error path.
    for (name, token, p) in &tokens {
        let t = verify::parse(token).expect("parse");
        verify::verify(&t, p, &p.audiences, &keys, NOW)
            .unwrap_or_else(|e| panic!("{name} does not verify: {e}"));
        assert!(
            allowed(&decide(&f.cfg, token, &mut VerifiedCache::new(0))),
            "{name} denied"
        );
    }
    assert_eq!(
        find_rule(&f.cfg.rules, "GET", HOST, LAST_PATH),
        Some(RULES - 1)
    );

    let mut g = c.benchmark_group("parse");
    for (name, token, _) in &tokens {
        g.bench_function(*name, |b| {
            b.iter(|| verify::parse(black_box(token)).is_ok())
        });
    }
    g.bench_function("es256+unverified_issuer", |b| {
        b.iter(|| {
            let t = verify::parse(black_box(&f.es256)).expect("parse");
            verify::unverified_issuer(&t)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("verify");
    for (name, token, p) in &tokens {
        g.bench_function(*name, |b| {
            b.iter(|| {
                let t = verify::parse(black_box(token)).expect("parse");
                verify::verify(&t, p, &p.audiences, &keys, NOW).is_ok()
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("policy");
    g.bench_function("find_rule/200_rules_match_last", |b| {
        b.iter(|| find_rule(black_box(&f.cfg.rules), "GET", HOST, black_box(LAST_PATH)))
    });
    g.bench_function("find_rule/200_rules_no_match", |b| {
        b.iter(|| find_rule(black_box(&f.cfg.rules), "GET", HOST, black_box("/other/x")))
    });
    g.finish();

    let mut g = c.benchmark_group("flow");
    for (name, token, _) in &tokens {
        let mut cache = VerifiedCache::new(1024);
        g.bench_function(format!("evaluate/{name}/200_rules/cache_hit"), |b| {
            b.iter(|| allowed(&decide(&f.cfg, black_box(token), &mut cache)))
        });
        let mut off = VerifiedCache::new(0);
        g.bench_function(format!("evaluate/{name}/200_rules/no_cache"), |b| {
            b.iter(|| allowed(&decide(&f.cfg, black_box(token), &mut off)))
        });
    }
    g.finish();

    let cfg_json = json!({
        "providers": [{"name": "es", "issuer": ES_ISS, "local_jwks": {"inline": f.jwks}}],
        "rules": (0..RULES).map(|i| json!({"match": {"path_prefix": format!("/svc{i}")},
                                           "require": {"scopes": [format!("svc{i}:read")]}}))
                           .collect::<Vec<_>>()
    })
    .to_string();
    let mut g = c.benchmark_group("load");
    g.bench_function("jwks/es256+rsa2048", |b| {
        b.iter(|| KeySet::from_json(black_box(f.jwks.as_bytes())).is_ok())
    });
    g.bench_function("config/200_rules", |b| {
        b.iter(|| Config::from_json(black_box(cfg_json.as_bytes())).is_ok())
    });
    g.finish();
}

criterion_group! {
    name = verify_benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(verify_benches);
