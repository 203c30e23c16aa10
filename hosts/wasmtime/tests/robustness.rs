//! Scenario 6: garbage from clients or from the IdP is refused, never a trap.

mod common;

use std::time::Duration;

use common::*;
use jwt_guard_wasmtime_host::{Action, Options};

#[test]
fn garbage_tokens_are_401s_and_never_trap() {
    let mut w = worker(&proxy(), Options::default(), &local_config());
    let long = "a".repeat(20_000);
    let tokens = [
        "garbage",
        "a.b.c",
        "..",
        "eyJhbGciOiJFUzI1NiJ9..",
        "eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.",
        "\u{1F600}.\u{e9}.x",
        &long,
    ];
    for token in tokens {
        let r = get(&mut w, "/workflows/active", Some(token));
        let resp = answered(&w, r);
        assert_eq!(resp.status, 401, "{token:.40}: {}", resp.body_text());
    }
    assert!(w.trap().is_none());
}

#[test]
fn garbage_jwks_bodies_are_failed_fetches_and_never_trap() {
    let bodies = [
        "",
        "not json",
        "{\"keys\": 5}",
        "{\"keys\": [{\"kty\": \"EC\", \"crv\": \"P-256\", \"x\": \"!\", \"y\": \"\"}]}",
        "{\"keys\": [{\"kty\": \"RSA\", \"n\": \"AQAB\", \"e\": \"AQAB\"}]}",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    ];
    for body in bodies {
        let proxy = proxy();
        let mut w = worker(&proxy, Options::default(), &remote_config());
        let r = get(&mut w, "/workflows/active", Some(&es256(&claims())));
        assert_eq!(r.action, Action::Pause);
        w.advance(Duration::from_millis(100)).unwrap();
        answer_jwks(&mut w, 200, body);
        let resp = answered(&w, r);
        assert_eq!(
            (resp.status, code(&resp).as_str()),
            (503, "AUTH_130"),
            "{body}"
        );
        assert!(w.trap().is_none());
    }
}

#[test]
fn a_callout_that_failed_to_connect_is_a_failed_fetch() {
    let proxy = proxy();
    let mut w = worker(&proxy, Options::default(), &remote_config());
    let r = get(&mut w, "/workflows/active", Some(&es256(&claims())));
    w.advance(Duration::from_millis(100)).unwrap();
    let token = w.pending_http_calls()[0].token;
    // What Envoy delivers when the cluster cannot be reached: no headers at all.
    w.answer_http_call(token, None, &[], b"").unwrap();
    let resp = answered(&w, r);
    assert_eq!(code(&resp), "AUTH_130");
    assert!(w.logged("no response"));
}
