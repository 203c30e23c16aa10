//! Scenario 5: a host whose `proxy_set_effective_context` does not work (it answers
//! Unimplemented). The proxy-wasm SDK needs that call to hand a callout's answer to the
//! root context (it traps without it), so the filter refuses a config that fetches keys
//! on such a host, naming the provider, and serves local keys as usual: no request is ever
//! left waiting for a resume that cannot come, and the VM never traps.

mod common;

use common::*;
use jwt_guard_wasmtime_host::{Action, Options};

fn without_effective_context() -> Options {
    Options {
        effective_context: false,
        ..Options::named("no-effective-context")
    }
}

#[test]
fn remote_keys_are_refused_at_configure_with_the_reason() {
    let mut w = proxy().worker(without_effective_context()).unwrap();
    assert!(!w.configure(&remote_config().to_string()).unwrap());
    assert!(
        w.logged(
            "provider \"corp\" fetches its keys, but this host has no proxy_set_effective_context"
        ),
        "{:?}",
        w.logs()
    );
    assert!(w.trap().is_none());
    assert!(w.http_calls().is_empty());
}

#[test]
fn local_keys_work_without_it() {
    let mut w = worker(&proxy(), without_effective_context(), &local_config());
    let r = get(&mut w, "/workflows/active", Some(&es256(&claims())));
    assert_eq!(r.action, Action::Continue);
    forwarded(&w, r);
    let r = get(&mut w, "/workflows/active", None);
    assert_eq!(code(&answered(&w, r)), "AUTH_100");
    assert!(w.trap().is_none());
}
