//! Scenarios 2 and 3: keys fetched with `proxy_http_call`, shared between two workers
//! (two instances of the module over one shared-data map).

mod common;

use std::time::Duration;

use common::*;
use jwt_guard_wasmtime_host::{header, Action, Options, Verdict};

const TICK: Duration = Duration::from_millis(100);

#[test]
fn a_cold_request_waits_for_the_jwks_then_a_second_worker_uses_the_shared_keys() {
    let proxy = proxy();
    let mut a = worker(&proxy, Options::named("worker-a"), &remote_config());
    let mut b = worker(&proxy, Options::named("worker-b"), &remote_config());
    assert_eq!(a.tick_period(), TICK);

    // No keys yet: the request waits.
    let token = es256(&claims());
    let r = get(&mut a, "/workflows/active", Some(&token));
    assert_eq!(r.action, Action::Pause);
    assert!(matches!(a.verdict(r.id), Verdict::Waiting));

    // The first tick fetches the JWKS through the configured cluster.
    a.advance(TICK).unwrap();
    let calls = a.pending_http_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(call.upstream, CLUSTER);
    assert_eq!(call.header(":method"), Some("GET"));
    assert_eq!(call.header(":path"), Some(JWKS_PATH));
    assert_eq!(call.header(":authority"), Some(JWKS_AUTHORITY));
    assert_eq!(call.timeout_ms, 2000);
    assert!(call.body.is_empty());

    // The JWKS arrives: the waiting request is resumed, with its identity header.
    a.answer_http_call(
        call.token,
        Some(200),
        &[("content-type", "application/json")],
        jwks().to_string().as_bytes(),
    )
    .unwrap();
    let stream = a.stream(r.id).unwrap();
    assert!(stream.resumed);
    assert_eq!(header(&forwarded(&a, r), SUB_HEADER), Some("svc-a"));
    a.end(r.id).unwrap();

    // Worker B never fetched: its keys come from shared data.
    b.advance(TICK).unwrap();
    let r = get(&mut b, "/workflows/active", Some(&rs256(&claims())));
    assert_eq!(r.action, Action::Continue);
    assert_eq!(header(&forwarded(&b, r), SUB_HEADER), Some("svc-a"));
    assert!(b.http_calls().is_empty(), "{:?}", b.http_calls());
    assert_eq!(
        proxy.metric("jwt_guard.jwt_guard.provider.corp.jwks_fetch_attempt"),
        Some(1)
    );
    assert_eq!(
        proxy.metric("jwt_guard.jwt_guard.provider.corp.jwks_fetch_success"),
        Some(1)
    );
}

#[test]
fn a_request_that_ends_while_waiting_for_keys_is_no_longer_waited_for() {
    let proxy = proxy();
    let mut w = worker(&proxy, Options::default(), &remote_config());
    let gone = get(&mut w, "/workflows/active", Some(&es256(&claims())));
    let stays = get(&mut w, "/workflows/active", Some(&es256(&claims())));
    assert_eq!((gone.action, stays.action), (Action::Pause, Action::Pause));
    // The client goes away: the host deletes the request's context.
    w.end(gone.id).unwrap();
    w.advance(TICK).unwrap();
    answer_jwks(&mut w, 200, &jwks().to_string());
    assert!(w.stream(stays.id).unwrap().resumed);
    assert!(
        w.dead_contexts_asked().is_empty(),
        "{:?}",
        w.dead_contexts_asked()
    );
}

#[test]
fn a_failed_jwks_fetch_answers_the_waiting_request_503_auth_130() {
    let proxy = proxy();
    let mut w = worker(&proxy, Options::default(), &remote_config());
    let r = get(&mut w, "/workflows/active", Some(&es256(&claims())));
    assert_eq!(r.action, Action::Pause);
    w.advance(TICK).unwrap();
    answer_jwks(&mut w, 500, "oops");

    let resp = answered(&w, r);
    assert_eq!((resp.status, code(&resp).as_str()), (503, "AUTH_130"));
    assert_eq!(resp.header("retry-after"), Some("5"));
    assert!(w.logged("status 500"));
    assert_eq!(
        proxy.metric("jwt_guard.jwt_guard.provider.corp.jwks_fetch_failure"),
        Some(1)
    );
}

#[test]
fn a_jwks_that_never_answers_still_ends_the_wait_with_a_503() {
    let proxy = proxy();
    let mut w = worker(&proxy, Options::default(), &remote_config());
    let r = get(&mut w, "/workflows/active", Some(&es256(&claims())));
    w.advance(TICK).unwrap();
    assert_eq!(w.pending_http_calls().len(), 1);
    // Past the callout's timeout (2 s) and the filter's margin, on the tick alone.
    w.advance(Duration::from_secs(4)).unwrap();
    let resp = answered(&w, r);
    assert_eq!((resp.status, code(&resp).as_str()), (503, "AUTH_130"));
}
