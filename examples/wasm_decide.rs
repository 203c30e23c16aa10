//! The per-request work of `benches/verify.rs`, timed as wasm in V8 rather than natively:
//! `make bench-wasm` builds this for wasm32-wasip1 and runs it in Node's V8 (the engine
//! Envoy embeds), without Envoy, so the filter's own cost is seen apart from the host's.
//! Also runs natively (`cargo run --release --example wasm_decide`) for the ratio.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../benches/fixture/mod.rs"]
mod fixture;

use std::hint::black_box;
use std::time::Instant;

use fixture::{allowed, decide, fixture};
use jwt_guard::cache::VerifiedCache;
use jwt_guard::verify;

/// Mean time of `f` over enough runs to fill about `budget_ms`, after a warm-up (V8
/// compiles hot wasm functions with its optimizing tier).
fn time(name: &str, budget_ms: u128, mut f: impl FnMut()) {
    for _ in 0..50 {
        f();
    }
    let start = Instant::now();
    let mut runs: u32 = 0;
    while start.elapsed().as_millis() < budget_ms {
        for _ in 0..10 {
            f();
        }
        runs += 10;
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(runs);
    println!("{name:<40} {us:>10.2} us");
}

fn main() {
    let f = fixture();
    let target = if cfg!(target_arch = "wasm32") {
        "wasm in V8"
    } else {
        "native"
    };
    println!("jwt-guard per-request work ({target}; 200 rules, match at the last)");
    for (name, token) in [("es256", &f.es256), ("rs256", &f.rs256)] {
        assert!(
            allowed(&decide(&f.cfg, token, &mut VerifiedCache::new(0))),
            "{name}"
        );
        time(&format!("parse/{name}"), 500, || {
            black_box(verify::parse(black_box(token)).is_ok());
        });
        let mut cache = VerifiedCache::new(1024);
        time(&format!("decide/{name}/cache_hit"), 1000, || {
            black_box(allowed(&decide(&f.cfg, black_box(token), &mut cache)));
        });
        let mut off = VerifiedCache::new(0);
        time(
            &format!("decide/{name}/no_cache (pure-Rust crypto)"),
            2000,
            || {
                black_box(allowed(&decide(&f.cfg, black_box(token), &mut off)));
            },
        );
    }
}
