//! What the rest of the proxy sees of a decision, on the fake host: filter state, stats
//! named after the filter instance, cache and latency stats, CORS preflights.

use std::rc::Rc;

use serde_json::{json, Value};

use super::{Next, Worker};
use crate::config::Config;
use crate::filter_state::{CLIENT_ID, CODE, DECISION, ISS, RULE, SCOPE, SUB};
use crate::host::memory::{MemoryHost, Proxy};
use crate::testkit::{claims, jwks_json, mint, AUD, ISS as ISSUER, NOW};
use crate::verify::Alg;

const ROOT: u32 = 1;

/// Local keys; `/public` is anonymous, `/workflows` needs `workflow:read`, the rest is
/// refused by the default. `extra` adds top-level fields.
fn config(extra: Value) -> Config {
    let mut v = json!({
        "providers": [{"name": "corp", "issuer": ISSUER, "audiences": [AUD],
                       "local_jwks": {"inline": jwks_json()},
                       "claims_to_headers": [{"claim": "sub", "header": "x-sub"}]}],
        "crypto": "rust",
        "filter_state": true,
        "rules": [
            {"name": "public", "match": {"path_prefix": "/public"}, "allow": "anonymous"},
            {"name": "workflows-read", "match": {"path_prefix": "/workflows"},
             "require": {"scopes": ["workflow:read"]}}
        ]
    });
    if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
        v.extend(extra);
    }
    Config::from_json(v.to_string().as_bytes()).unwrap()
}

fn host() -> MemoryHost {
    MemoryHost::new(Proxy::new(u64::try_from(NOW).unwrap() * 1000))
}

fn worker(host: &Rc<MemoryHost>, config: Config) -> Worker {
    Worker::new(host.clone(), config, ROOT).unwrap()
}

fn token_with(extra: Value) -> String {
    let mut c = claims(NOW);
    if let (Some(c), Value::Object(extra)) = (c.as_object_mut(), extra) {
        c.extend(extra);
    }
    mint(Alg::Es256, Some("ec1"), &c)
}

/// Sends a request in context `id`.
fn send(host: &MemoryHost, w: &mut Worker, id: u32, headers: &[(&str, &str)]) -> Next {
    let mut all = vec![(":authority", "api"), (":method", "GET")];
    all.retain(|(k, _)| !headers.iter().any(|(h, _)| h == k));
    all.extend_from_slice(headers);
    host.begin(id, &all);
    w.on_request_headers(id)
}

#[test]
fn an_allowed_request_carries_its_verified_identity_in_filter_state() {
    let host = Rc::new(host());
    let mut w = worker(&host, config(json!({})));
    let auth = format!("Bearer {}", token_with(json!({"azp": "client-7"})));
    let next = send(
        &host,
        &mut w,
        2,
        &[(":path", "/workflows/1"), ("authorization", &auth)],
    );
    assert_eq!(next, Next::Continue);
    let state = |name| host.filter_state(2, name);
    assert_eq!(state(DECISION).as_deref(), Some("allow"));
    assert_eq!(state(RULE).as_deref(), Some("workflows-read"));
    assert_eq!(state(SUB).as_deref(), Some("svc-a"));
    assert_eq!(state(ISS).as_deref(), Some(ISSUER));
    assert_eq!(state(CLIENT_ID).as_deref(), Some("client-7"));
    assert_eq!(
        state(SCOPE).as_deref(),
        Some("workflow:read validation:write")
    );
    assert_eq!(state(CODE), None);
}

#[test]
fn filter_state_is_set_only_when_the_config_asks() {
    // Each entry is a host call on every request: opt-in, like jwt_authn's metadata.
    let host = Rc::new(host());
    let mut w = worker(&host, config(json!({"filter_state": false})));
    let auth = format!("Bearer {}", token_with(json!({})));
    let next = send(
        &host,
        &mut w,
        2,
        &[(":path", "/workflows/1"), ("authorization", &auth)],
    );
    assert_eq!(next, Next::Continue);
    assert_eq!(host.filter_state(2, DECISION), None);
    assert_eq!(host.filter_state(2, SUB), None);
}

#[test]
fn a_denied_request_gets_the_decision_rule_and_code_and_no_identity_without_a_token() {
    let host = Rc::new(host());
    let mut w = worker(&host, config(json!({})));
    assert_eq!(
        send(&host, &mut w, 2, &[(":path", "/workflows/1")]),
        Next::Pause
    );
    assert_eq!(host.request(2).reply.map(|r| r.status), Some(401));
    let state = |id, name| host.filter_state(id, name);
    assert_eq!(state(2, DECISION).as_deref(), Some("deny"));
    assert_eq!(state(2, RULE).as_deref(), Some("workflows-read"));
    assert_eq!(state(2, CODE).as_deref(), Some("AUTH_100"));
    assert_eq!(state(2, SUB), None);
    // A valid token without the scope: refused, and who it was is known.
    let auth = format!("Bearer {}", token_with(json!({"scope": "other"})));
    send(
        &host,
        &mut w,
        3,
        &[(":path", "/workflows/1"), ("authorization", &auth)],
    );
    assert_eq!(state(3, CODE).as_deref(), Some("AUTH_102"));
    assert_eq!(state(3, SUB).as_deref(), Some("svc-a"));
    // The default refuses an unmatched path; an anonymous rule has no identity to give,
    // even for a token that was sent (it is not checked there).
    send(&host, &mut w, 4, &[(":path", "/other")]);
    assert_eq!(state(4, RULE).as_deref(), Some("default"));
    assert_eq!(state(4, CODE).as_deref(), Some("AUTH_120"));
    let forged = format!("Bearer {}", token_with(json!({"sub": "admin"})));
    send(
        &host,
        &mut w,
        5,
        &[(":path", "/public/x"), ("authorization", &forged)],
    );
    assert_eq!(state(5, DECISION).as_deref(), Some("allow"));
    assert_eq!(state(5, RULE).as_deref(), Some("public"));
    assert_eq!(state(5, SUB), None, "only verified claims");
}

#[test]
fn a_host_without_filter_state_is_asked_once_and_requests_are_unaffected() {
    let mut h = host();
    h.keeps_filter_state = false;
    let host = Rc::new(h);
    let mut w = worker(&host, config(json!({})));
    let auth = format!("Bearer {}", token_with(json!({})));
    for id in [2, 3] {
        let next = send(
            &host,
            &mut w,
            id,
            &[(":path", "/workflows/1"), ("authorization", &auth)],
        );
        assert_eq!(next, Next::Continue);
        assert_eq!(host.request(id).reply.map(|r| r.status), None);
    }
    assert_eq!(host.set_property_calls.get(), 1);
}

#[test]
fn stats_are_named_after_the_filter_instance() {
    let named = |name: Option<&str>| {
        let h = host();
        *h.plugin_name.borrow_mut() = name.map(str::to_string);
        let host = Rc::new(h);
        let mut w = worker(&host, config(json!({})));
        send(&host, &mut w, 2, &[(":path", "/public/x")]);
        w.on_tick();
        host
    };
    let edge = named(Some("edge"));
    assert_eq!(edge.counter("jwt_guard.edge.rule.public.allowed"), 1);
    assert!(edge.has_metric("jwt_guard.edge.denied.AUTH_100"));
    assert!(edge.has_metric("jwt_guard.edge.decision_duration_us"));
    assert!(!edge.has_metric("jwt_guard.jwt_guard.rule.public.allowed"));
    // Istio names a plugin `<namespace>.<name>`: one part of the stat name all the same.
    let istio = named(Some("istio-system.jwt-guard"));
    assert_eq!(
        istio.counter("jwt_guard.istio-system_jwt-guard.rule.public.allowed"),
        1
    );
    let unnamed = named(None);
    assert_eq!(
        unnamed.counter("jwt_guard.jwt_guard.rule.public.allowed"),
        1
    );
}

#[test]
fn decisions_and_cache_lookups_are_counted_on_the_tick() {
    let host = Rc::new(host());
    let mut w = worker(&host, config(json!({})));
    let auth = format!("Bearer {}", token_with(json!({})));
    for id in 2..5 {
        send(
            &host,
            &mut w,
            id,
            &[(":path", "/workflows/1"), ("authorization", &auth)],
        );
    }
    send(&host, &mut w, 5, &[(":path", "/workflows/1")]);
    let (hit, miss) = (
        "jwt_guard.jwt_guard.cache_hit",
        "jwt_guard.jwt_guard.cache_miss",
    );
    let (allowed, denied, no_token) = (
        "jwt_guard.jwt_guard.rule.workflows-read.allowed",
        "jwt_guard.jwt_guard.rule.workflows-read.denied",
        "jwt_guard.jwt_guard.denied.AUTH_100",
    );
    let counts = || {
        [hit, miss, allowed, denied, no_token]
            .into_iter()
            .map(|c| host.counter(c))
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(), [0, 0, 0, 0, 0], "not per request");
    w.on_tick();
    assert_eq!(counts(), [2, 1, 3, 1, 1]);
    w.on_tick();
    assert_eq!(counts(), [2, 1, 3, 1, 1], "added once");
    // With the cache off, every token is verified: every lookup misses.
    let host = Rc::new(self::host());
    let mut w = worker(&host, config(json!({"cache": {"max_entries": 0}})));
    for id in 2..4 {
        send(
            &host,
            &mut w,
            id,
            &[(":path", "/workflows/1"), ("authorization", &auth)],
        );
    }
    w.on_tick();
    assert_eq!((host.counter(hit), host.counter(miss)), (0, 2));
}

#[test]
fn each_decision_is_timed_between_two_clock_reads() {
    let host = Rc::new(host());
    let mut w = worker(&host, config(json!({})));
    // Each clock read moves the clock 7 µs on: a decision that read it more than at its
    // start and end would show more.
    host.proxy.step_on_each_read(7_000);
    let auth = format!("Bearer {}", token_with(json!({})));
    let kinds: [&[(&str, &str)]; 3] = [
        &[(":path", "/workflows/1"), ("authorization", &auth)],
        &[(":path", "/workflows/1")],
        &[(":path", "/public")],
    ];
    // One decision in DECISION_SAMPLE is timed, the first included: allowed, denied and
    // anonymous ones alike.
    let n = 2 * super::DECISION_SAMPLE + 1;
    for id in 0..n {
        send(&host, &mut w, 10 + id, kinds[id as usize % 3]);
    }
    assert_eq!(
        host.samples("jwt_guard.jwt_guard.decision_duration_us"),
        [7, 7, 7]
    );
}

const ORIGIN: (&str, &str) = ("origin", "https://app.example.com");
const ACRM: (&str, &str) = ("access-control-request-method", "POST");

fn preflight_config(on: bool) -> Config {
    config(json!({"bypass_cors_preflight": on}))
}

#[test]
fn a_preflight_passes_without_a_token_only_when_switched_on() {
    let preflight = [
        (":method", "OPTIONS"),
        (":path", "/workflows/1"),
        ORIGIN,
        ACRM,
    ];
    let host = Rc::new(host());
    let mut off = worker(&host, preflight_config(false));
    assert_eq!(send(&host, &mut off, 2, &preflight), Next::Pause);
    assert_eq!(host.request(2).reply.map(|r| r.status), Some(401));

    let host = Rc::new(self::host());
    let mut on = worker(&host, preflight_config(true));
    assert_eq!(send(&host, &mut on, 2, &preflight), Next::Continue);
    on.on_tick();
    assert_eq!(host.counter("jwt_guard.jwt_guard.cors_preflight"), 1);
    assert_eq!(
        host.filter_state(2, DECISION).as_deref(),
        Some("cors_preflight")
    );
    assert_eq!(host.filter_state(2, RULE), None, "no rule decided it");
    assert_eq!(
        host.counter("jwt_guard.jwt_guard.rule.workflows-read.allowed"),
        0
    );
}

#[test]
fn a_preflight_carries_no_identity_and_its_token_is_not_verified() {
    let host = Rc::new(host());
    let mut w = worker(&host, preflight_config(true));
    let auth = format!("Bearer {}", token_with(json!({})));
    let headers = [
        (":method", "OPTIONS"),
        (":path", "/workflows/1"),
        ORIGIN,
        ACRM,
        ("authorization", auth.as_str()),
        ("x-sub", "admin"),
        ("x_sub", "admin"),
    ];
    assert_eq!(send(&host, &mut w, 2, &headers), Next::Continue);
    let upstream = host.request(2).headers;
    assert!(
        !upstream
            .iter()
            .any(|(k, _)| k.replace('_', "-").eq_ignore_ascii_case("x-sub")),
        "spoofed identity headers are stripped and none is set: {upstream:?}"
    );
    assert_eq!(host.filter_state(2, SUB), None);
    w.on_tick();
    assert_eq!(
        host.counter("jwt_guard.jwt_guard.cache_miss"),
        0,
        "not looked at"
    );
}

#[test]
fn what_is_no_real_preflight_gets_the_rules() {
    let host = Rc::new(host());
    let mut w = worker(&host, preflight_config(true));
    let cases: [&[(&str, &str)]; 5] = [
        // An override header: an upstream may serve it as a DELETE.
        &[
            (":method", "OPTIONS"),
            (":path", "/workflows/1"),
            ORIGIN,
            ACRM,
            ("x-http-method-override", "DELETE"),
        ],
        &[
            (":method", "OPTIONS"),
            (":path", "/workflows/1?_method=DELETE"),
            ORIGIN,
            ACRM,
        ],
        // Not a CORS request.
        &[(":method", "OPTIONS"), (":path", "/workflows/1"), ACRM],
        &[(":method", "OPTIONS"), (":path", "/workflows/1"), ORIGIN],
        &[(":method", "GET"), (":path", "/workflows/1"), ORIGIN, ACRM],
    ];
    for (i, headers) in (2..).zip(cases) {
        assert_eq!(send(&host, &mut w, i, headers), Next::Pause, "{headers:?}");
        let reply = host.request(i).reply.map(|r| (r.status, r.code()));
        assert_eq!(reply, Some((401, "AUTH_100".into())), "{headers:?}");
    }
    // Where the rules refuse everyone (the default here), the preflight is refused too.
    let unmatched = [(":method", "OPTIONS"), (":path", "/internal"), ORIGIN, ACRM];
    assert_eq!(send(&host, &mut w, 9, &unmatched), Next::Pause);
    assert_eq!(
        host.request(9).reply.map(|r| r.code()).as_deref(),
        Some("AUTH_120")
    );
    w.on_tick();
    assert_eq!(host.counter("jwt_guard.jwt_guard.cors_preflight"), 0);
}

#[test]
fn an_unconditional_deny_rule_refuses_preflights_too() {
    let v = json!({
        "providers": [{"name": "corp", "issuer": ISSUER, "audiences": [AUD],
                       "local_jwks": {"inline": jwks_json()}}],
        "bypass_cors_preflight": true,
        "rules": [
            {"name": "internal", "match": {"path_prefix": "/internal"}, "deny": "always"},
            {"match": {"path_prefix": "/"}, "require": {}}
        ]
    });
    let host = Rc::new(host());
    let mut w = worker(&host, Config::from_json(v.to_string().as_bytes()).unwrap());
    let to = |path| [(":method", "OPTIONS"), (":path", path), ORIGIN, ACRM];
    assert_eq!(send(&host, &mut w, 2, &to("/internal/x")), Next::Pause);
    assert_eq!(send(&host, &mut w, 3, &to("/api")), Next::Continue);
}
