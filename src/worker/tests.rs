//! Whole scenarios of the fetch, lease and waiter logic, natively, in milliseconds: several
//! workers on one fake proxy, a stopped clock, scripted IdP answers.

use std::rc::Rc;

use serde_json::json;

use super::{Next, Worker};
use crate::config::Config;
use crate::host::memory::{MemoryHost, Proxy, Reply};
use crate::testkit::{claims, jwks_json, mint, AUD, ISS, NOW};
use crate::verify::Alg;

const ROOT: u32 = 1;

/// One provider whose keys come from `source` (`remote_jwks` or `discovery`); any valid
/// token passes the one rule.
fn config_with(source: &str, fetch: serde_json::Value) -> Config {
    let v = json!({"providers": [{"name": "corp", "issuer": ISS, "audiences": [AUD], source: fetch}],
                   "crypto": "rust",
                   "rules": [{"match": {"path_prefix": "/"}, "require": {}}]});
    Config::from_json(v.to_string().as_bytes()).unwrap()
}

fn remote_config() -> Config {
    config_with(
        "remote_jwks",
        json!({"uri": "http://idp.test/jwks", "cluster": "idp",
        "timeout_ms": 2000, "refresh_s": 300, "max_stale_s": 3600}),
    )
}

/// One simulated worker: its host and its filter state.
struct Node {
    host: Rc<MemoryHost>,
    worker: Worker,
}

impl Node {
    fn new(proxy: &Rc<Proxy>, config: Config) -> Node {
        Node::with_host(MemoryHost::new(proxy.clone()), config)
    }

    fn with_host(host: MemoryHost, config: Config) -> Node {
        let host = Rc::new(host);
        let worker = Worker::new(host.clone(), config, ROOT).unwrap();
        Node { host, worker }
    }

    /// A GET with `token` (if any) in context `id`.
    fn send(&mut self, id: u32, token: Option<&str>) -> Next {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![(":method", "GET"), (":path", "/x"), (":authority", "api")];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        self.host.begin(id, &headers);
        self.worker.on_request_headers(id)
    }

    fn reply(&self, id: u32) -> Option<Reply> {
        self.host.request(id).reply
    }

    fn callouts(&self) -> usize {
        self.host.callouts.borrow().len()
    }

    /// Answers this worker's latest callout.
    fn answer(&mut self, status: &str, body: &[u8]) {
        let Some(call) = self.host.callouts.borrow().last().cloned() else {
            panic!("no callout to answer");
        };
        let host = self.host.clone();
        let worker = &mut self.worker;
        host.answering(&[(":status", status)], body, || {
            worker.on_http_call_response(call.token, body.len())
        });
    }
}

fn token() -> String {
    mint(Alg::Es256, Some("ec1"), &claims(NOW))
}

fn proxy() -> Rc<Proxy> {
    Proxy::new(u64::try_from(NOW).unwrap() * 1000)
}

#[test]
fn cold_start_two_workers_one_fetch_and_every_waiter_resumed() {
    let proxy = proxy();
    let mut a = Node::new(&proxy, remote_config());
    let mut b = Node::new(&proxy, remote_config());
    a.worker.on_tick();
    b.worker.on_tick();
    assert_eq!(a.callouts() + b.callouts(), 1, "one fetch for both workers");
    let (fetcher, other) = if a.callouts() == 1 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let call = fetcher.host.callouts.borrow()[0].clone();
    assert_eq!(
        (
            call.cluster.as_str(),
            call.authority.as_str(),
            call.path.as_str()
        ),
        ("idp", "idp.test", "/jwks")
    );
    // Cold requests on both workers wait, body included.
    assert_eq!(fetcher.send(2, Some(&token())), Next::Pause);
    assert_eq!(other.send(3, Some(&token())), Next::Pause);
    assert!(fetcher.worker.holds(2) && other.worker.holds(3));
    proxy.advance(50);
    fetcher.answer("200", jwks_json().as_bytes());
    let r = fetcher.host.request(2);
    assert!(r.resumed && r.reply.is_none(), "{r:?}");
    assert!(!fetcher.worker.holds(2));
    // The other worker picks the keys up from shared data on its tick.
    proxy.advance(100);
    other.worker.on_tick();
    assert!(other.host.request(3).resumed);
    assert_eq!(other.callouts(), 0);
    assert_eq!(other.send(4, Some(&token())), Next::Continue);
}

#[test]
fn a_worker_that_dies_holding_the_lease_is_taken_over() {
    let proxy = proxy();
    let mut a = Node::new(&proxy, remote_config());
    let mut b = Node::new(&proxy, remote_config());
    a.worker.on_tick();
    assert_eq!(a.callouts(), 1);
    // a never answers (its worker died). Before the lease ends b does not fetch...
    proxy.advance(2_900);
    b.worker.on_tick();
    assert_eq!(b.callouts(), 0);
    // ...after it (timeout 2 s + 1 s margin), b takes over.
    proxy.advance(200);
    b.worker.on_tick();
    assert_eq!(b.callouts(), 1);
    b.answer("200", jwks_json().as_bytes());
    assert_eq!(b.send(2, Some(&token())), Next::Continue);
}

#[test]
fn discovery_then_jwks_and_an_impostor_issuer_is_refused() {
    let proxy = proxy();
    let config = || {
        config_with(
            "discovery",
            json!({"uri": "http://idp.test/.well-known/openid-configuration",
                                        "cluster": "idp", "jwks_cluster": "keys"}),
        )
    };
    let mut a = Node::new(&proxy, config());
    a.worker.on_tick();
    assert_eq!(
        a.host.callouts.borrow()[0].path,
        "/.well-known/openid-configuration"
    );
    let doc = json!({"issuer": ISS, "jwks_uri": "https://keys.test/certs"}).to_string();
    a.answer("200", doc.as_bytes());
    let jwks_call = a.host.callouts.borrow()[1].clone();
    assert_eq!(
        (
            jwks_call.cluster.as_str(),
            jwks_call.authority.as_str(),
            jwks_call.path.as_str()
        ),
        ("keys", "keys.test", "/certs")
    );
    a.answer("200", jwks_json().as_bytes());
    assert_eq!(a.send(2, Some(&token())), Next::Continue);

    // Another proxy whose IdP answers with someone else's issuer gets no keys.
    let proxy = self::proxy();
    let mut b = Node::new(&proxy, config());
    b.worker.on_tick();
    let doc = json!({"issuer": "https://impostor.test", "jwks_uri": "https://keys.test/certs"})
        .to_string();
    b.answer("200", doc.as_bytes());
    assert_eq!(b.callouts(), 1, "the impostor's jwks_uri is not followed");
    assert_eq!(
        b.host
            .counter("jwt_guard.jwt_guard.provider.corp.jwks_fetch_failure"),
        1
    );
    assert_eq!(
        b.host
            .counter("jwt_guard.jwt_guard.provider.corp.jwks_fetch_failure.issuer_mismatch"),
        1
    );
}

#[test]
fn each_fetch_failure_is_counted_under_its_reason() {
    let reason = |n: &Node, r: &str| {
        n.host.counter(&format!(
            "jwt_guard.jwt_guard.provider.corp.jwks_fetch_failure.{r}"
        ))
    };
    // A cluster the host does not know.
    let proxy = proxy();
    let missing = json!({"uri": "http://idp.test/jwks", "cluster": "missing"});
    let mut a = Node::new(&proxy, config_with("remote_jwks", missing));
    *a.host.refuse_cluster.borrow_mut() = Some("missing".into());
    a.worker.on_tick();
    assert_eq!(reason(&a, "dispatch"), 1);
    // Envoy's own replies when the IdP is not reached (no host, connection refused,
    // timeout), the IdP's own 503, a body too large, a body that is no JWKS: each after the
    // backoff of the one before.
    let mut b = Node::new(&proxy, remote_config());
    for (status, body) in [
        ("503", b"no healthy upstream".to_vec()),
        ("503", b"upstream connect error or disconnect/reset before headers. reset reason: connection failure".to_vec()),
        ("504", b"upstream request timeout".to_vec()),
        ("503", b"{\"error\": \"maintenance\"}".to_vec()),
        ("200", vec![b' '; 300 * 1024]),
        ("200", b"<html>".to_vec()),
    ] {
        proxy.advance(60_000);
        b.worker.on_tick();
        b.answer(status, &body);
    }
    for (r, n) in [
        ("unreachable", 3),
        ("status", 1),
        ("too_large", 1),
        ("bad_jwks", 1),
    ] {
        assert_eq!(reason(&b, r), n, "{r}");
    }
    assert_eq!(
        b.host
            .counter("jwt_guard.jwt_guard.provider.corp.jwks_fetch_failure"),
        6
    );
}

#[test]
fn unknown_kid_waits_for_one_refetch_then_refetches_are_rate_limited() {
    let proxy = proxy();
    let mut a = Node::new(&proxy, remote_config());
    a.worker.on_tick();
    a.answer("200", jwks_json().as_bytes());
    let rotated = mint(Alg::Es256, Some("rotated"), &claims(NOW));
    assert_eq!(a.send(2, Some(&rotated)), Next::Pause);
    proxy.advance(100);
    a.worker.on_tick();
    assert_eq!(a.callouts(), 2, "the unknown kid made one refetch");
    a.answer("200", jwks_json().as_bytes());
    // The IdP still lacks the kid: the waiter is answered, not held.
    assert_eq!(a.reply(2).map(|r| r.code()).as_deref(), Some("AUTH_115"));
    // Within unknown_kid_refetch_s, another unknown kid is refused at once, no callout.
    assert_eq!(a.send(3, Some(&rotated)), Next::Pause);
    assert_eq!(a.reply(3).map(|r| r.code()).as_deref(), Some("AUTH_115"));
    a.worker.on_tick();
    assert_eq!(a.callouts(), 2);
    assert_eq!(
        a.host
            .counter("jwt_guard.jwt_guard.provider.corp.unknown_kid_refetch"),
        1
    );
}

#[test]
fn an_outage_serves_the_last_keys_until_max_stale_then_503() {
    let proxy = proxy();
    let mut a = Node::new(&proxy, remote_config());
    a.worker.on_tick();
    a.answer("200", jwks_json().as_bytes());
    // The refresh is due after refresh_s; the IdP fails.
    proxy.advance(300_000);
    a.worker.on_tick();
    assert_eq!(a.callouts(), 2);
    a.answer("500", b"{}");
    assert_eq!(
        a.send(2, Some(&token_at(&proxy))),
        Next::Continue,
        "last good keys"
    );
    // Past max_stale_s (1 h) without a good fetch: 503 AUTH_131.
    proxy.advance(3_300_001);
    assert_eq!(a.send(3, Some(&token_at(&proxy))), Next::Pause);
    assert_eq!(
        a.reply(3).map(|r| (r.status, r.code())),
        Some((503, "AUTH_131".into()))
    );
}

/// A token valid at the proxy's current time.
fn token_at(proxy: &Proxy) -> String {
    let now = i64::try_from(proxy.now_ms() / 1000).unwrap();
    mint(Alg::Es256, Some("ec1"), &claims(now))
}

#[test]
fn a_failed_first_fetch_answers_the_waiters_503_and_backs_off_with_jitter() {
    let proxy = proxy();
    let mut a = Node::new(&proxy, remote_config());
    a.worker.on_tick();
    assert_eq!(a.send(2, Some(&token())), Next::Pause);
    a.answer("500", b"oops");
    let r = a.reply(2).expect("answered, never left hanging");
    assert_eq!((r.status, r.code().as_str()), (503, "AUTH_130"));
    assert!(r
        .headers
        .iter()
        .any(|(k, v)| k == "retry-after" && v == "5"));
    // The first retry comes 0.5 to 1 s later (1 s with equal jitter), not before.
    proxy.advance(499);
    a.worker.on_tick();
    assert_eq!(a.callouts(), 1);
    proxy.advance(502);
    a.worker.on_tick();
    assert_eq!(a.callouts(), 2);
}

#[test]
fn lost_cas_writes_are_retried_and_a_worker_gives_up_only_for_a_tick() {
    let proxy = proxy();
    let mut a = Node::new(&proxy, remote_config());
    proxy.lose_next_cas(5);
    a.worker.on_tick();
    assert_eq!(a.callouts(), 1, "five lost writes, then the lease");
    a.answer("200", jwks_json().as_bytes());
    // Every write lost this tick (another worker always first): no fetch, no panic; the
    // refresh happens on a later tick.
    proxy.advance(300_000);
    proxy.lose_next_cas(100);
    a.worker.on_tick();
    assert_eq!(a.callouts(), 1);
    proxy.lose_next_cas(0);
    a.worker.on_tick();
    assert_eq!(a.callouts(), 2);
}

#[test]
fn a_request_that_hangs_up_while_waiting_is_forgotten() {
    let proxy = proxy();
    let mut a = Node::new(&proxy, remote_config());
    a.worker.on_tick();
    assert_eq!(a.send(2, Some(&token())), Next::Pause);
    a.host.end(2);
    a.worker.on_request_done(2);
    assert!(!a.worker.holds(2));
    a.answer("200", jwks_json().as_bytes());
    assert_eq!(a.send(3, Some(&token())), Next::Continue);
}

#[test]
fn a_host_without_set_effective_context_refuses_remote_keys_and_serves_local_ones() {
    let proxy = proxy();
    let mut host = MemoryHost::new(proxy.clone());
    host.resumes = false;
    let refused = Worker::new(Rc::new(host), remote_config(), ROOT).err();
    assert_eq!(
        refused,
        Some(super::Unsupported::NoEffectiveContext("corp".into()))
    );
    assert!(refused.unwrap().to_string().contains("use local_jwks"));
    let local = json!({"providers": [{"name": "corp", "issuer": ISS, "audiences": [AUD],
                        "local_jwks": {"inline": jwks_json()}}],
                       "rules": [{"match": {"path_prefix": "/"}, "require": {}}]});
    let mut host = MemoryHost::new(proxy);
    host.resumes = false;
    let mut a = Node::with_host(
        host,
        Config::from_json(local.to_string().as_bytes()).unwrap(),
    );
    assert_eq!(a.send(2, Some(&token())), Next::Continue);
    assert_eq!(a.send(3, None), Next::Pause);
    assert_eq!(a.reply(3).map(|r| r.code()).as_deref(), Some("AUTH_100"));
}

#[test]
fn identity_headers_are_set_and_spoofed_ones_removed_through_the_host() {
    let proxy = proxy();
    let v = json!({"providers": [{"name": "corp", "issuer": ISS, "audiences": [AUD],
                    "local_jwks": {"inline": jwks_json()},
                    "claims_to_headers": [{"claim": "sub", "header": "x-sub"}]}],
                   "rules": [{"match": {"path_prefix": "/"}, "require": {}}]});
    let mut a = Node::new(&proxy, Config::from_json(v.to_string().as_bytes()).unwrap());
    let auth = format!("Bearer {}", token());
    a.host.begin(
        2,
        &[
            (":method", "GET"),
            (":path", "/x"),
            ("authorization", &auth),
            ("x_sub", "spoofed"),
            ("X-SUB", "spoofed"),
        ],
    );
    assert_eq!(a.worker.on_request_headers(2), Next::Continue);
    let seen: Vec<(String, String)> = a.host.request(2).headers;
    let subs: Vec<&(String, String)> = seen
        .iter()
        .filter(|(k, _)| k.replace('_', "-").eq_ignore_ascii_case("x-sub"))
        .collect();
    assert_eq!(subs, vec![&("x-sub".to_string(), "svc-a".to_string())]);
}

#[test]
fn a_header_the_host_cannot_set_or_remove_fails_closed() {
    let v = json!({"providers": [{"name": "corp", "issuer": ISS, "audiences": [AUD],
                    "local_jwks": {"inline": jwks_json()},
                    "claims_to_headers": [{"claim": "sub", "header": "x-sub"}]}],
                   "rules": [{"match": {"path_prefix": "/"}, "require": {}}]});
    let config = || Config::from_json(v.to_string().as_bytes()).unwrap();
    let auth = format!("Bearer {}", token());
    // A client's spoofed identity header that cannot be removed never goes upstream...
    let mut a = Node::new(&proxy(), config());
    *a.host.refuse_header.borrow_mut() = Some("x_sub".into());
    a.host.begin(
        2,
        &[
            (":path", "/x"),
            ("authorization", &auth),
            ("x_sub", "admin"),
        ],
    );
    assert_eq!(a.worker.on_request_headers(2), Next::Pause);
    let r = a.reply(2).expect("answered");
    assert_eq!((r.status, r.code().as_str()), (503, "AUTH_140"));
    // ...nor a request whose identity header could not be set.
    let mut b = Node::new(&proxy(), config());
    *b.host.refuse_header.borrow_mut() = Some("x-sub".into());
    b.host
        .begin(2, &[(":path", "/x"), ("authorization", &auth)]);
    assert_eq!(b.worker.on_request_headers(2), Next::Pause);
    assert_eq!(b.reply(2).map(|r| r.code()).as_deref(), Some("AUTH_140"));
    b.worker.on_tick();
    assert_eq!(b.host.counter("jwt_guard.jwt_guard.denied.AUTH_140"), 1);
}

/// Counts this thread's allocations while asked to: the other tests run on other threads.
pub(crate) mod allocations {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static COUNTING: Cell<bool> = const { Cell::new(false) };
        static COUNT: Cell<usize> = const { Cell::new(0) };
    }

    struct Counting;

    // SAFETY: forwards every call to the system allocator unchanged.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if COUNTING.with(Cell::get) {
                COUNT.with(|c| c.set(c.get() + 1));
            }
            System.alloc(layout)
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            System.dealloc(ptr, layout)
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
            if COUNTING.with(Cell::get) {
                COUNT.with(|c| c.set(c.get() + 1));
            }
            System.realloc(ptr, layout, size)
        }
    }

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    /// Runs `f` without counting its allocations: the fake host's own bookkeeping, which a
    /// real host does outside the VM.
    pub fn not_counted<T>(f: impl FnOnce() -> T) -> T {
        let was = COUNTING.with(|c| c.replace(false));
        let out = f();
        COUNTING.with(|c| c.set(was));
        out
    }

    /// `f`'s result and how many allocations it made on this thread.
    pub fn count<T>(f: impl FnOnce() -> T) -> (T, usize) {
        COUNT.with(|c| c.set(0));
        COUNTING.with(|c| c.set(true));
        let out = f();
        COUNTING.with(|c| c.set(false));
        (out, COUNT.with(Cell::get))
    }
}

#[test]
fn a_cached_allowed_request_allocates_nothing_in_the_filter() {
    // Allocations are most of what a decision costs inside a VM; the host's copy of the
    // headers (made by the fake host here too) is the one left.
    let v = json!({"providers": [{"name": "corp", "issuer": ISS, "audiences": [AUD],
                                  "local_jwks": {"inline": jwks_json()}}],
                   "crypto": "rust",
                   "rules": [{"match": {"path_prefix": "/"}, "require": {"scopes": ["workflow:read"]}}]});
    let cfg = Config::from_json(v.to_string().as_bytes()).unwrap();
    let proxy = Proxy::new(NOW as u64 * 1000);
    let mut node = Node::new(&proxy, cfg);
    let token = mint(Alg::Es256, Some("ec1"), &claims(NOW));
    assert_eq!(
        node.send(10, Some(&token)),
        Next::Continue,
        "verified and cached"
    );
    let auth = format!("Bearer {token}");
    node.host.begin(
        11,
        &[
            (":method", "GET"),
            (":path", "/x"),
            (":authority", "api"),
            ("authorization", &auth),
        ],
    );
    let host_copies = allocations::count(|| crate::host::Host::request_headers(&*node.host)).1;
    let (next, made) = allocations::count(|| node.worker.on_request_headers(11));
    assert_eq!(next, Next::Continue);
    assert_eq!(
        made, host_copies,
        "allocations beyond the host's copy of the headers"
    );
}
