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

mod fixture;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;

use fixture::{allowed, decide, fixture, AUD, ES_ISS, HOST, LAST_PATH, NOW, RULES};
use jwt_guard::cache::VerifiedCache;
use jwt_guard::config::Config;
use jwt_guard::jwks::KeySet;
use jwt_guard::routing::select_rules;
use jwt_guard::verify;

fn matchers(cfg: &Config) -> impl Iterator<Item = (usize, &jwt_guard::routing::Matcher)> + Clone {
    cfg.rules.iter().map(|r| &r.matcher).enumerate()
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

    let none = jwt_guard::headers::HeaderSnapshot::default();
    // Never measure an error path.
    for (name, token, p) in &tokens {
        let t = verify::parse(token).expect("parse");
        verify::verify(&t, &p.accepts, &p.audiences, &keys, NOW)
            .unwrap_or_else(|e| panic!("{name} does not verify: {e}"));
        assert!(
            allowed(&decide(&f.cfg, token, &mut VerifiedCache::new(0))),
            "{name} denied"
        );
    }
    assert_eq!(
        select_rules(
            matchers(&f.cfg),
            std::iter::empty(),
            f.cfg.matcher_traits,
            "GET",
            HOST,
            LAST_PATH,
            &none
        )
        .routes
        .to_vec(),
        vec![Some(RULES - 1)]
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
                verify::verify(&t, &p.accepts, &p.audiences, &keys, NOW).is_ok()
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("policy");
    g.bench_function("select_rules/200_rules_match_last", |b| {
        b.iter(|| {
            select_rules(
                matchers(black_box(&f.cfg)),
                std::iter::empty(),
                f.cfg.matcher_traits,
                "GET",
                HOST,
                black_box(LAST_PATH),
                &none,
            )
        })
    });
    g.bench_function("select_rules/200_rules_no_match", |b| {
        b.iter(|| {
            select_rules(
                matchers(black_box(&f.cfg)),
                std::iter::empty(),
                f.cfg.matcher_traits,
                "GET",
                HOST,
                black_box("/other/x"),
                &none,
            )
        })
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
        "providers": [{"name": "es", "issuer": ES_ISS, "audiences": [AUD], "local_jwks": {"inline": f.jwks}}],
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
