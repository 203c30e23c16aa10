//! Scenario 1: keys inline in the config; ES256 and RS256 through the pure-Rust crypto
//! (this host has no `verify_signature` foreign function).

mod common;

use common::*;
use jwt_guard_wasmtime_host::{header, Action, Options};

#[test]
fn valid_es256_and_rs256_tokens_go_upstream_with_the_identity_header() {
    let proxy = proxy();
    let mut w = worker(&proxy, Options::default(), &local_config());
    for token in [es256(&claims()), rs256(&claims())] {
        let r = get(&mut w, "/workflows/active", Some(&token));
        assert_eq!(r.action, Action::Continue);
        let upstream = forwarded(&w, r);
        assert_eq!(header(&upstream, SUB_HEADER), Some("svc-a"));
        assert_eq!(
            header(&upstream, "authorization"),
            Some(&*format!("Bearer {token}"))
        );
        w.end(r.id).unwrap();
    }
    // The host answered NotFound, so the filter checked both signatures in pure Rust.
    assert!(w.foreign_calls().iter().all(|f| f == "verify_signature"));
    assert!(w.logged("using pure-Rust crypto"));
    assert_eq!(
        proxy.metric("jwt_guard.jwt_guard.signature_checks.host"),
        Some(0)
    );
    // Decisions are added to the counters on the tick.
    assert_eq!(
        proxy.metric("jwt_guard.jwt_guard.rule.rule-1.allowed"),
        Some(0)
    );
    w.tick().unwrap();
    assert_eq!(
        proxy.metric("jwt_guard.jwt_guard.rule.rule-1.allowed"),
        Some(2)
    );
    assert!(
        w.unsupported_calls().is_empty(),
        "{:?}",
        w.unsupported_calls()
    );
    // Nothing on WASI stdout or stderr: the filter logs through proxy_log only.
    assert_eq!(w.stdio(), (String::new(), String::new()));
}

#[test]
fn no_token_is_a_401_auth_100_with_a_challenge() {
    let mut w = worker(&proxy(), Options::default(), &local_config());
    let r = get(&mut w, "/workflows/active", None);
    let resp = answered(&w, r);
    assert_eq!(resp.status, 401);
    assert_eq!(code(&resp), "AUTH_100");
    let challenge = resp.header("www-authenticate").unwrap();
    assert!(
        challenge.starts_with("Bearer realm=\"jwt-guard\""),
        "{challenge}"
    );
    // The reply ended the request: the host ran done, log and delete.
    assert!(w.stream(r.id).unwrap().deleted);
}

#[test]
fn a_bad_signature_is_a_401_auth_105() {
    let mut w = worker(&proxy(), Options::default(), &local_config());
    let token = es256_with(&keys().ec_other, &claims());
    let r = get(&mut w, "/workflows/active", Some(&token));
    let resp = answered(&w, r);
    assert_eq!((resp.status, code(&resp).as_str()), (401, "AUTH_105"));
    assert!(resp
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
}

#[test]
fn a_public_route_needs_no_token_and_never_forwards_a_spoofed_identity() {
    let mut w = worker(&proxy(), Options::default(), &local_config());
    let r = w
        .request(&[
            (":method", "GET"),
            (":path", "/health"),
            (":authority", "api.example.com"),
            (SUB_HEADER, "admin"),
        ])
        .unwrap();
    assert_eq!(r.action, Action::Continue);
    assert_eq!(header(&forwarded(&w, r), SUB_HEADER), None);
}

#[test]
fn an_ip_binding_reads_the_peer_from_source_address() {
    let mut config = local_config();
    config["providers"][0]["ip_bindings"] =
        serde_json::json!([{"principals": {"sub": ["svc-a"]}, "cidrs": ["10.0.1.0/24"]}]);
    let proxy = proxy();
    let token = es256(&claims());

    // The default peer, 127.0.0.1, is outside the binding.
    let mut w = worker(&proxy, Options::default(), &config);
    let r = get(&mut w, "/workflows/active", Some(&token));
    let resp = answered(&w, r);
    assert_eq!((resp.status, code(&resp).as_str()), (403, "AUTH_104"));

    let mut options = Options::named("inside");
    options.set_property("source.address", "10.0.1.7:5555");
    let mut w = worker(&proxy, options, &config);
    let r = get(&mut w, "/workflows/active", Some(&token));
    forwarded(&w, r);
}

#[test]
fn the_decision_is_set_as_properties_and_stats_carry_the_plugin_name() {
    let proxy = proxy();
    let mut options = Options::default();
    options.set_property("plugin_name", "edge");
    let mut config = local_config();
    config["filter_state"] = true.into();
    let mut w = worker(&proxy, options, &config);
    let allowed = get(&mut w, "/workflows/active", Some(&es256(&claims())));
    let denied = get(&mut w, "/workflows/active", None);
    let property = |id, name| w.stream(id).unwrap().property(name);
    assert_eq!(
        property(allowed.id, "jwt_guard.decision").as_deref(),
        Some("allow")
    );
    assert_eq!(
        property(allowed.id, "jwt_guard.sub").as_deref(),
        Some("svc-a")
    );
    assert_eq!(property(allowed.id, "jwt_guard.iss").as_deref(), Some(ISS));
    assert_eq!(
        property(allowed.id, "jwt_guard.scope").as_deref(),
        Some("workflow:read")
    );
    assert_eq!(
        property(denied.id, "jwt_guard.decision").as_deref(),
        Some("deny")
    );
    assert_eq!(
        property(denied.id, "jwt_guard.code").as_deref(),
        Some("AUTH_100")
    );
    assert_eq!(property(denied.id, "jwt_guard.sub"), None);
    w.tick().unwrap();
    assert_eq!(proxy.metric("jwt_guard.edge.rule.rule-1.allowed"), Some(1));
    assert_eq!(proxy.metric("jwt_guard.edge.rule.rule-1.denied"), Some(1));
    assert_eq!(
        proxy.metric("jwt_guard.jwt_guard.rule.rule-1.allowed"),
        None
    );
    assert!(
        w.unsupported_calls().is_empty(),
        "{:?}",
        w.unsupported_calls()
    );
}
