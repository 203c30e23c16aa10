//! A proxy-wasm host in memory: the fake proxy of the native tests, and the offline host on
//! which `jwt-guard explain` runs the real [`crate::worker::Worker`]. One [`Proxy`] (a
//! clock that moves only when told, and shared data with CAS as in Envoy) is shared by
//! [`MemoryHost`]s, one per simulated worker, each recording what its worker did: the
//! callouts it started, each request's headers as it left them, the reply, filter state,
//! metrics. Tests switch on the failures a broken host would have (`refuse_*`, no
//! `set_effective_context`, no filter state).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use crate::headers::serialize;
use crate::host::{Host, HostError, MetricKind};

/// What every worker of one proxy shares: the clock and shared data.
#[derive(Default)]
pub struct Proxy {
    now_ms: Cell<u64>,
    /// Nanoseconds the clock moves on each time it is read (0: stopped), so a test can
    /// count reads in a measured duration.
    step_per_read_ns: Cell<u64>,
    /// The clock's sub-millisecond part, moved by `step_per_read_ns`.
    extra_ns: Cell<u64>,
    shared: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: Cell<u32>,
    /// Writes with a CAS token that fail anyway, as if another worker wrote first.
    lose_cas: Cell<u32>,
}

impl Proxy {
    pub fn new(now_ms: u64) -> Rc<Proxy> {
        let p = Proxy::default();
        p.now_ms.set(now_ms);
        p.next_cas.set(1);
        Rc::new(p)
    }

    pub fn advance(&self, ms: u64) {
        self.now_ms.set(self.now_ms.get().saturating_add(ms));
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms.get()
    }

    /// Every later clock read moves the clock on by `ns`.
    pub fn step_on_each_read(&self, ns: u64) {
        self.step_per_read_ns.set(ns);
    }

    /// The next `n` CAS writes fail with CasMismatch.
    pub fn lose_next_cas(&self, n: u32) {
        self.lose_cas.set(n);
    }
}

/// A request as the host holds it: its headers as the worker left them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeldRequest {
    pub headers: Vec<(String, String)>,
    /// Properties set on the request, as Envoy's filter state keeps them (last write wins).
    pub filter_state: Vec<(String, String)>,
    pub reply: Option<Reply>,
    pub resumed: bool,
}

/// A local reply the worker sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The `code` of the JSON body.
    pub fn code(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("code")?.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// A callout the worker started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callout {
    pub token: u32,
    pub cluster: String,
    pub authority: String,
    pub path: String,
}

/// A callout answer: headers and body.
struct Answer {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// One worker's view of the proxy.
pub struct MemoryHost {
    pub proxy: Rc<Proxy>,
    /// `proxy_set_effective_context` exists on this host.
    pub resumes: bool,
    /// What `source.address` reports (`ip:port`), if anything.
    pub peer: RefCell<Option<String>>,
    /// Setting or removing this request header fails, as a broken host's would.
    pub refuse_header: RefCell<Option<String>>,
    /// Callouts through this cluster are refused, as Envoy refuses an unknown cluster.
    pub refuse_cluster: RefCell<Option<String>>,
    /// The `plugin_name` property (the filter instance's name), if the host has one.
    pub plugin_name: RefCell<Option<String>>,
    /// `proxy_set_property` exists on this host (else it answers Unimplemented).
    pub keeps_filter_state: bool,
    /// Calls to `set_property`, successful or not.
    pub set_property_calls: Cell<u32>,
    /// The callouts started (see [`MemoryHost::take_callouts`]).
    pub callouts: RefCell<Vec<Callout>>,
    effective: Cell<u32>,
    requests: RefCell<HashMap<u32, HeldRequest>>,
    next_token: Cell<u32>,
    /// The callout answer being delivered.
    answer: RefCell<Option<Answer>>,
    metrics: RefCell<Vec<(String, u64)>>,
    /// Histogram samples, by metric id.
    samples: RefCell<Vec<(u32, u64)>>,
}

impl MemoryHost {
    pub fn new(proxy: Rc<Proxy>) -> MemoryHost {
        MemoryHost {
            proxy,
            resumes: true,
            peer: RefCell::new(Some("127.0.0.1:40000".into())),
            refuse_header: RefCell::new(None),
            refuse_cluster: RefCell::new(None),
            plugin_name: RefCell::new(None),
            keeps_filter_state: true,
            set_property_calls: Cell::new(0),
            callouts: RefCell::new(Vec::new()),
            effective: Cell::new(0),
            requests: RefCell::new(HashMap::new()),
            next_token: Cell::new(1),
            answer: RefCell::new(None),
            metrics: RefCell::new(Vec::new()),
            samples: RefCell::new(Vec::new()),
        }
    }

    /// A new request in context `id`, effective from now on.
    pub fn begin(&self, id: u32, headers: &[(impl AsRef<str>, impl AsRef<str>)]) {
        let headers = headers
            .iter()
            .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
            .collect();
        self.requests.borrow_mut().insert(
            id,
            HeldRequest {
                headers,
                ..HeldRequest::default()
            },
        );
        self.effective.set(id);
    }

    pub fn request(&self, id: u32) -> HeldRequest {
        self.requests.borrow().get(&id).cloned().unwrap_or_default()
    }

    /// The request is gone (the client hung up).
    pub fn end(&self, id: u32) {
        self.requests.borrow_mut().remove(&id);
    }

    /// The callouts started since the last call.
    pub fn take_callouts(&self) -> Vec<Callout> {
        std::mem::take(&mut *self.callouts.borrow_mut())
    }

    /// Runs `f` (the worker's `on_http_call_response`) with this answer as the callout
    /// response it reads.
    pub fn answering<T>(&self, headers: &[(&str, &str)], body: &[u8], f: impl FnOnce() -> T) -> T {
        *self.answer.borrow_mut() = Some(Answer {
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
        });
        let out = f();
        *self.answer.borrow_mut() = None;
        out
    }

    /// Every metric defined, in the order it was, with its value.
    pub fn metrics(&self) -> Vec<(String, u64)> {
        self.metrics.borrow().clone()
    }

    /// A counter's value (0 if it was never defined).
    pub fn counter(&self, name: &str) -> u64 {
        self.metrics
            .borrow()
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v)
    }

    /// Whether a metric of that name was defined.
    pub fn has_metric(&self, name: &str) -> bool {
        self.metrics.borrow().iter().any(|(n, _)| n == name)
    }

    /// The samples recorded in the histogram `name`.
    pub fn samples(&self, name: &str) -> Vec<u64> {
        let metrics = self.metrics.borrow();
        self.samples
            .borrow()
            .iter()
            .filter(|(id, _)| metric(&metrics, *id).is_some_and(|(n, _)| n == name))
            .map(|(_, v)| *v)
            .collect()
    }

    /// A filter-state value of request `id`.
    pub fn filter_state(&self, id: u32, name: &str) -> Option<String> {
        self.request(id)
            .filter_state
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    fn with_effective<T>(&self, f: impl FnOnce(&mut HeldRequest) -> T) -> Result<T, HostError> {
        self.requests
            .borrow_mut()
            .get_mut(&self.effective.get())
            .map(f)
            .ok_or(HostError::NotFound)
    }
}

fn metric(metrics: &[(String, u64)], id: u32) -> Option<&(String, u64)> {
    metrics.get(usize::try_from(id).ok()?)
}

/// Runs `f` outside the allocation count of the worker's tests: what this host stores is
/// not the filter's allocation.
fn not_counted<T>(f: impl FnOnce() -> T) -> T {
    #[cfg(test)]
    return crate::worker::tests::allocations::not_counted(f);
    #[cfg(not(test))]
    f()
}

impl Host for MemoryHost {
    fn now_nanos(&self) -> u64 {
        let p = &self.proxy;
        let now = p
            .now_ms
            .get()
            .saturating_mul(1_000_000)
            .saturating_add(p.extra_ns.get());
        p.extra_ns
            .set(p.extra_ns.get().saturating_add(p.step_per_read_ns.get()));
        now
    }

    fn shared_data(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        Ok(match self.proxy.shared.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
        let mut shared = self.proxy.shared.borrow_mut();
        if let Some(cas) = cas {
            let lost = self.proxy.lose_cas.get();
            if lost > 0 {
                self.proxy.lose_cas.set(lost - 1);
                return Err(HostError::CasMismatch);
            }
            // CAS only guards a key that exists, as in Envoy.
            if shared.get(key).is_some_and(|(_, current)| *current != cas) {
                return Err(HostError::CasMismatch);
            }
        }
        let next = self.proxy.next_cas.get();
        self.proxy.next_cas.set(next.wrapping_add(1));
        shared.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }

    /// Every cluster exists but the refused one: which ones Envoy has is for
    /// `jwt-guard check` to list.
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        _timeout: Duration,
    ) -> Result<u32, HostError> {
        if self.refuse_cluster.borrow().as_deref() == Some(cluster) {
            return Err(HostError::BadArgument);
        }
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
                .unwrap_or_default()
        };
        let token = self.next_token.get();
        self.next_token.set(token.wrapping_add(1));
        self.callouts.borrow_mut().push(Callout {
            token,
            cluster: cluster.to_string(),
            authority: get(":authority"),
            path: get(":path"),
        });
        Ok(token)
    }

    fn call_response_header(&self, name: &str) -> Option<Vec<u8>> {
        let answer = self.answer.borrow();
        answer
            .as_ref()?
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_bytes().to_vec())
    }

    fn call_response_body(&self, size: usize) -> Option<Vec<u8>> {
        let answer = self.answer.borrow();
        Some(answer.as_ref()?.body.iter().take(size).copied().collect())
    }

    fn request_headers(&self) -> Result<Vec<u8>, HostError> {
        self.with_effective(|r| {
            let pairs: Vec<(&str, &str)> = r
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            serialize(&pairs)
        })
    }

    fn set_request_header(&self, name: &str, value: Option<&[u8]>) -> Result<(), HostError> {
        if self.refuse_header.borrow().as_deref() == Some(name) {
            return Err(HostError::Other(10));
        }
        self.with_effective(|r| {
            let at = r.headers.iter().position(|(k, _)| k == name);
            r.headers.retain(|(k, _)| k != name);
            if let Some(v) = value {
                // A replaced header keeps its place, as in Envoy's header map.
                let entry = (name.to_string(), String::from_utf8_lossy(v).into_owned());
                match at {
                    Some(i) if i <= r.headers.len() => r.headers.insert(i, entry),
                    _ => r.headers.push(entry),
                }
            }
        })
    }

    fn send_reply(
        &self,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        self.with_effective(|r| {
            r.reply = Some(Reply {
                status,
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                body: String::from_utf8_lossy(body).into_owned(),
            });
        })
    }

    fn resume_request(&self) -> Result<(), HostError> {
        self.with_effective(|r| r.resumed = true)
    }

    /// The root (context 1, and 0) is always there; a request only while it is held.
    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError> {
        if !self.resumes {
            return Err(HostError::Unimplemented);
        }
        let known = context_id <= 1 || self.requests.borrow().contains_key(&context_id);
        if !known {
            return Err(HostError::NotFound);
        }
        self.effective.set(context_id);
        Ok(())
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let bytes =
            |v: &RefCell<Option<String>>| v.borrow().as_ref().map(|s| s.as_bytes().to_vec());
        match path {
            ["source", "address"] => bytes(&self.peer),
            ["plugin_name"] => bytes(&self.plugin_name),
            _ => None,
        }
    }

    fn set_property(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.set_property_calls
            .set(self.set_property_calls.get().saturating_add(1));
        if !self.keeps_filter_state {
            return Err(HostError::Unimplemented);
        }
        not_counted(|| {
            let value = String::from_utf8_lossy(value).into_owned();
            self.with_effective(|r| {
                r.filter_state.retain(|(k, _)| k != name);
                r.filter_state.push((name.to_string(), value));
            })
        })
    }

    /// No `verify_signature` here: the pure-Rust crypto runs, with the same verdicts as
    /// Envoy's BoringSSL (the Wycheproof vectors hold both paths to them).
    fn foreign_function(&self, _name: &str, _args: &[u8]) -> Result<Option<Vec<u8>>, HostError> {
        Err(HostError::NotFound)
    }

    fn define_metric(&self, _kind: MetricKind, name: &str) -> Option<u32> {
        let mut m = self.metrics.borrow_mut();
        m.push((name.to_string(), 0));
        u32::try_from(m.len() - 1).ok()
    }

    fn increment_metric(&self, id: u32, by: u64) {
        let mut metrics = self.metrics.borrow_mut();
        if let Some((_, v)) = usize::try_from(id).ok().and_then(|i| metrics.get_mut(i)) {
            *v = v.saturating_add(by);
        }
    }

    fn record_metric(&self, id: u32, value: u64) {
        not_counted(|| self.samples.borrow_mut().push((id, value)));
        let mut metrics = self.metrics.borrow_mut();
        if let Some((_, v)) = usize::try_from(id).ok().and_then(|i| metrics.get_mut(i)) {
            *v = value;
        }
    }
}
