//! A proxy-wasm [`Host`] with no proxy behind it, for `jwt-guard explain`: the real
//! [`crate::worker::Worker`] runs on it exactly as in Envoy, and this host records what
//! the worker did (callouts, the reply, the headers it set or removed, its stats).
//!
//! One worker, one clock that moves only when told, shared data with CAS as in Envoy.
//! Callouts are held until the caller answers them. Signatures are checked in pure Rust
//! (no `verify_signature` foreign function here): the same verdicts as Envoy's
//! BoringSSL, which the Wycheproof vectors hold both paths to.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::Duration;

use crate::headers::serialize;
use crate::host::{Host, HostError, MetricKind};

/// A callout the worker started, waiting for an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callout {
    pub token: u32,
    pub cluster: String,
    pub authority: String,
    pub path: String,
}

/// A local reply the worker sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// A request as the host holds it: its headers as the worker left them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeldRequest {
    pub headers: Vec<(String, String)>,
    pub reply: Option<Reply>,
    pub resumed: bool,
    /// The filter state the worker set (Envoy's `wasm.<name>`), by name.
    pub properties: Vec<(String, String)>,
}

struct Answer {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

pub struct OfflineHost {
    now_ms: Cell<u64>,
    /// What `source.address` reports (`ip:port`), if anything.
    peer: Option<String>,
    shared: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: Cell<u32>,
    effective: Cell<u32>,
    requests: RefCell<HashMap<u32, HeldRequest>>,
    pending: RefCell<Vec<Callout>>,
    next_token: Cell<u32>,
    answer: RefCell<Option<Answer>>,
    metrics: RefCell<Vec<(String, u64)>>,
}

impl OfflineHost {
    pub fn new(now_ms: u64, peer: Option<String>) -> OfflineHost {
        OfflineHost {
            now_ms: Cell::new(now_ms),
            peer,
            shared: RefCell::new(HashMap::new()),
            next_cas: Cell::new(1),
            effective: Cell::new(0),
            requests: RefCell::new(HashMap::new()),
            pending: RefCell::new(Vec::new()),
            next_token: Cell::new(1),
            answer: RefCell::new(None),
            metrics: RefCell::new(Vec::new()),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms.get()
    }

    pub fn advance(&self, ms: u64) {
        self.now_ms.set(self.now_ms.get().saturating_add(ms));
    }

    /// A new request in context `id` with these headers, effective from now on.
    pub fn begin(&self, id: u32, headers: &[(String, String)]) {
        self.requests.borrow_mut().insert(
            id,
            HeldRequest {
                headers: headers.to_vec(),
                ..HeldRequest::default()
            },
        );
        self.effective.set(id);
    }

    pub fn request(&self, id: u32) -> HeldRequest {
        self.requests.borrow().get(&id).cloned().unwrap_or_default()
    }

    /// The callouts started since the last call.
    pub fn take_callouts(&self) -> Vec<Callout> {
        std::mem::take(&mut *self.pending.borrow_mut())
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

    fn with_effective<T>(&self, f: impl FnOnce(&mut HeldRequest) -> T) -> Result<T, HostError> {
        self.requests
            .borrow_mut()
            .get_mut(&self.effective.get())
            .map(f)
            .ok_or(HostError::NotFound)
    }
}

impl Host for OfflineHost {
    fn now_nanos(&self) -> u64 {
        self.now_ms.get().saturating_mul(1_000_000)
    }

    fn shared_data(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        Ok(match self.shared.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
        let mut shared = self.shared.borrow_mut();
        if let (Some(cas), Some((_, current))) = (cas, shared.get(key)) {
            if *current != cas {
                return Err(HostError::CasMismatch);
            }
        }
        let next = self.next_cas.get();
        self.next_cas.set(next.wrapping_add(1));
        shared.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }

    /// Every cluster exists here: which ones Envoy has is for `jwt-guard check` to list.
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        _timeout: Duration,
    ) -> Result<u32, HostError> {
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
                .unwrap_or_default()
        };
        let token = self.next_token.get();
        self.next_token.set(token.wrapping_add(1));
        self.pending.borrow_mut().push(Callout {
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

    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError> {
        let known = self.requests.borrow().contains_key(&context_id);
        if !known && context_id > ROOT_CONTEXT {
            return Err(HostError::NotFound);
        }
        self.effective.set(context_id);
        Ok(())
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        match path {
            ["source", "address"] => self.peer.as_ref().map(|p| p.as_bytes().to_vec()),
            _ => None,
        }
    }

    fn set_property(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.with_effective(|r| {
            r.properties.retain(|(k, _)| k != name);
            r.properties.push((
                name.to_string(),
                String::from_utf8_lossy(value).into_owned(),
            ));
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
            *v = v.saturating_add(by);
        }
    }

    fn record_metric(&self, id: u32, value: u64) {
        if let Some((_, v)) = self.metrics.borrow_mut().get_mut(id as usize) {
            *v = value;
        }
    }
}

/// The root context's id (the worker's own; requests use higher ids).
pub const ROOT_CONTEXT: u32 = 1;
