//! A fake proxy for native tests: one [`Proxy`] (a stopped clock and shared data with
//! real CAS semantics) shared by several [`FakeHost`]s, one per simulated worker, each
//! with its requests, callouts, replies, filter state and metrics recorded.

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
        self.now_ms.set(self.now_ms.get() + ms);
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

/// A request as the fake host holds it.
#[derive(Debug, Default, Clone)]
pub struct FakeRequest {
    pub headers: Vec<(String, String)>,
    /// Properties set on the request, as Envoy's filter state keeps them (last write wins).
    pub filter_state: Vec<(String, String)>,
    pub reply: Option<Reply>,
    pub resumed: bool,
}

#[derive(Debug, Clone)]
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
            .and_then(|v| v["code"].as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// A callout the filter started.
#[derive(Debug, Clone)]
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
pub struct FakeHost {
    pub proxy: Rc<Proxy>,
    /// `proxy_set_effective_context` exists on this host.
    pub resumes: bool,
    /// The TCP peer `source.address` reports.
    pub peer: RefCell<String>,
    /// Setting or removing this request header fails, as a broken host's would.
    pub refuse_header: RefCell<Option<String>>,
    /// The `plugin_name` property (the filter instance's name), if the host has one.
    pub plugin_name: RefCell<Option<String>>,
    /// `proxy_set_property` exists on this host (else it answers Unimplemented).
    pub keeps_filter_state: bool,
    /// Calls to `set_property`, successful or not.
    pub set_property_calls: Cell<u32>,
    effective: Cell<u32>,
    requests: RefCell<HashMap<u32, FakeRequest>>,
    pub callouts: RefCell<Vec<Callout>>,
    next_token: Cell<u32>,
    /// The callout answer being delivered.
    answer: RefCell<Option<Answer>>,
    metrics: RefCell<Vec<(String, i64)>>,
    /// Histogram samples, by metric id.
    samples: RefCell<Vec<(u32, u64)>>,
}

impl FakeHost {
    pub fn new(proxy: Rc<Proxy>) -> FakeHost {
        FakeHost {
            proxy,
            resumes: true,
            peer: RefCell::new("127.0.0.1:40000".into()),
            refuse_header: RefCell::new(None),
            plugin_name: RefCell::new(None),
            keeps_filter_state: true,
            set_property_calls: Cell::new(0),
            effective: Cell::new(0),
            requests: RefCell::new(HashMap::new()),
            callouts: RefCell::new(Vec::new()),
            next_token: Cell::new(1),
            answer: RefCell::new(None),
            metrics: RefCell::new(Vec::new()),
            samples: RefCell::new(Vec::new()),
        }
    }

    /// A new request in context `id`, effective from now on.
    pub fn begin(&self, id: u32, headers: &[(&str, &str)]) {
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.requests.borrow_mut().insert(
            id,
            FakeRequest {
                headers,
                ..FakeRequest::default()
            },
        );
        self.effective.set(id);
    }

    pub fn request(&self, id: u32) -> FakeRequest {
        self.requests.borrow().get(&id).cloned().unwrap_or_default()
    }

    /// The request is gone (the client hung up).
    pub fn end(&self, id: u32) {
        self.requests.borrow_mut().remove(&id);
    }

    /// Delivers an answer to `f` as the callout response being handled.
    pub fn answering<T>(&self, headers: &[(&str, &str)], body: &[u8], f: impl FnOnce() -> T) -> T {
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        *self.answer.borrow_mut() = Some(Answer {
            headers,
            body: body.to_vec(),
        });
        let out = f();
        *self.answer.borrow_mut() = None;
        out
    }

    pub fn counter(&self, name: &str) -> i64 {
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
            .filter(|(id, _)| metrics.get(*id as usize).is_some_and(|(n, _)| n == name))
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

    fn with_effective<T>(&self, f: impl FnOnce(&mut FakeRequest) -> T) -> Result<T, HostError> {
        let id = self.effective.get();
        self.requests
            .borrow_mut()
            .get_mut(&id)
            .map(f)
            .ok_or(HostError::NotFound)
    }
}

impl Host for FakeHost {
    fn now_nanos(&self) -> u64 {
        let p = &self.proxy;
        let now = p.now_ms.get() * 1_000_000 + p.extra_ns.get();
        p.extra_ns.set(p.extra_ns.get() + p.step_per_read_ns.get());
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
        self.proxy.next_cas.set(next + 1);
        shared.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        _timeout: Duration,
    ) -> Result<u32, HostError> {
        if cluster == "missing" {
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
        self.next_token.set(token + 1);
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
            r.headers.retain(|(k, _)| k != name);
            if let Some(v) = value {
                r.headers
                    .push((name.to_string(), String::from_utf8_lossy(v).into_owned()));
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

    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError> {
        if !self.resumes {
            return Err(HostError::Unimplemented);
        }
        let known = context_id == 0 || self.requests.borrow().contains_key(&context_id);
        if !known && context_id > 1 {
            return Err(HostError::NotFound);
        }
        self.effective.set(context_id);
        Ok(())
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        match path {
            ["source", "address"] => Some(self.peer.borrow().as_bytes().to_vec()),
            ["plugin_name"] => self
                .plugin_name
                .borrow()
                .as_ref()
                .map(|n| n.as_bytes().to_vec()),
            _ => None,
        }
    }

    fn set_property(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.set_property_calls
            .set(self.set_property_calls.get() + 1);
        if !self.keeps_filter_state {
            return Err(HostError::Unimplemented);
        }
        super::tests::allocations::not_counted(|| {
            let value = String::from_utf8_lossy(value).into_owned();
            self.with_effective(|r| {
                r.filter_state.retain(|(k, _)| k != name);
                r.filter_state.push((name.to_string(), value));
            })
        })
    }

    fn foreign_function(&self, _name: &str, _args: &[u8]) -> Result<Option<Vec<u8>>, HostError> {
        Err(HostError::NotFound)
    }

    fn define_metric(&self, _kind: MetricKind, name: &str) -> Option<u32> {
        let mut m = self.metrics.borrow_mut();
        m.push((name.to_string(), 0));
        u32::try_from(m.len() - 1).ok()
    }

    fn increment_metric(&self, id: u32, by: u64) {
        if let Some((_, v)) = self.metrics.borrow_mut().get_mut(id as usize) {
            *v += i64::try_from(by).unwrap_or(i64::MAX);
        }
    }

    fn record_metric(&self, id: u32, value: u64) {
        super::tests::allocations::not_counted(|| self.samples.borrow_mut().push((id, value)));
        if let Some((_, v)) = self.metrics.borrow_mut().get_mut(id as usize) {
            *v = i64::try_from(value).unwrap_or(i64::MAX);
        }
    }
}
