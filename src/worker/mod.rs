//! One worker VM's state and its answers to the host's events: configure, tick, a
//! request's headers (and body, while it waits), the answer to a JWKS callout, a request's
//! end. Everything it asks of the proxy goes through [`Host`], so the whole of it (fetch
//! orchestration, leases, waiters, replies) runs natively in tests against a fake host.

mod crypto;
mod fetch;
mod keys;
mod metrics;
mod properties;
mod request;
mod shared;

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_integration;
#[cfg(test)]
mod tests_shared_cache;

use std::rc::Rc;

use crate::cache::VerifiedCache;
use crate::config::{Config, CryptoBackend};
use crate::deny::{Denial, DenyCode};
use crate::fetch_lease;
use crate::flow::{evaluate, Outcome, Request, Runtime};
use crate::headers::HeaderSnapshot;
use crate::host::Host;
use crate::shared_cache::{NoSharedTokens, SharedTokens};
use crate::verify::{Crypto, RustCrypto};

use self::crypto::HostCrypto;
use self::fetch::Response;
use self::keys::{KeyView, ProviderKeys};
use self::metrics::{Metrics, StatPrefix};
use self::properties::Properties;
use self::shared::SharedSlots;

/// What the host should do with a request after its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Send it on upstream.
    Continue,
    /// Hold it: answered locally, or waiting for keys (resumed or answered later).
    Pause,
}

/// A request paused until its provider's keys change (first keys, or a refetch).
struct Waiter {
    context_id: u32,
    provider: usize,
    since_ms: u64,
    seen_version: u64,
}

/// Every how many decisions one is timed for `decision_duration_us`.
pub const DECISION_SAMPLE: u32 = 8;

pub struct Worker {
    host: Rc<dyn Host>,
    config: Rc<Config>,
    /// This worker's id in leases and logs.
    id: u64,
    providers: Vec<ProviderKeys>,
    waiters: Vec<Waiter>,
    metrics: Metrics,
    properties: Properties,
    cache: VerifiedCache,
    /// The cache shared with the other workers (`cache.shared_entries`).
    shared: Box<dyn SharedTokens>,
    crypto: Box<dyn Crypto>,
    rng: u64,
    root_context: u32,
    /// Decisions so far, to sample which are timed.
    decisions: u32,
}

/// A host this configuration cannot run on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unsupported {
    /// The host has no `proxy_set_effective_context`: the proxy-wasm SDK needs it to hand a
    /// callout's answer to the root context (it traps without it), and the filter to resume
    /// a request that waited for keys. Local keys need neither.
    #[error(
        "provider {0:?} fetches its keys, but this host has no proxy_set_effective_context, \
         which the proxy-wasm SDK needs to deliver a callout's answer: use local_jwks here"
    )]
    NoEffectiveContext(String),
}

impl Worker {
    /// A worker for `config`, in the root context `root_context`; refused on a host that
    /// could not run it.
    pub fn new(
        host: Rc<dyn Host>,
        config: Config,
        root_context: u32,
    ) -> Result<Worker, Unsupported> {
        let remote = config
            .providers
            .iter()
            .find(|p| matches!(p.keys, crate::config::KeySource::Remote(_)));
        if let Some(p) = remote {
            if host.set_effective_context(root_context).is_err() {
                return Err(Unsupported::NoEffectiveContext(p.name.clone()));
            }
        }
        // Stats are named after the filter instance (the plugin's name in Envoy).
        let stats = StatPrefix::of(host.property(&["plugin_name"]).as_deref());
        let providers = config
            .providers
            .iter()
            .map(|p| ProviderKeys::new(&*host, &p.name, &p.keys, &stats))
            .collect();
        let metrics = Metrics::define(host.clone(), &config, &stats);
        let crypto: Box<dyn Crypto> = match config.crypto {
            CryptoBackend::Auto => Box::new(HostCrypto::new(host.clone(), &stats)),
            CryptoBackend::Rust => Box::new(RustCrypto),
        };
        // Nanoseconds: workers configure within the same millisecond, and their ids (drawn
        // from this seed) must differ for the fetch lease to mean anything.
        let seed = host.now_nanos() ^ (u64::from(root_context) << 40);
        let filter_state = config.filter_state;
        let shared: Box<dyn SharedTokens> = match config.shared_entries {
            0 => Box::new(NoSharedTokens),
            slots => Box::new(SharedSlots::new(host.clone(), slots)),
        };
        let mut worker = Worker {
            cache: VerifiedCache::new(config.cache_entries),
            shared,
            config: Rc::new(config),
            host,
            id: 0,
            providers,
            waiters: Vec::new(),
            metrics,
            properties: Properties::new(filter_state),
            crypto,
            rng: seed | 1,
            root_context,
            decisions: 0,
        };
        worker.id = worker.random().max(1);
        Ok(worker)
    }

    /// xorshift64: jitter and ids need spread, not secrecy.
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// The periodic tick: start due fetches, then settle waiting requests; add the
    /// decisions and cache lookups counted since the last tick to the host's stats.
    pub fn on_tick(&mut self) {
        let now = self.host.now_ms();
        let (hits, misses, shared_hits) = self.cache.take_lookups();
        self.metrics.cache_lookups(hits, misses, shared_hits);
        self.metrics.flush();
        for i in 0..self.providers.len() {
            let jitter = self.random();
            if let Some(p) = self.providers.get_mut(i) {
                fetch::start_if_due(&*self.host, p, self.id, now, jitter);
            }
        }
        self.resolve_waiters(now);
    }

    /// A request's headers: decide, then let it go on, answer it, or hold it for keys.
    /// A sampled decision is timed from the clock reading it needs anyway to one more at
    /// its end.
    pub fn on_request_headers(&mut self, context_id: u32) -> Next {
        let host = self.host.clone();
        let started_ns = host.now_nanos();
        let now = started_ns / 1_000_000;
        let mut headers = request::read_headers(&*host);
        let next = if request::strip_managed_headers(&*host, &self.config, &mut headers) {
            let outcome = self.decide(&headers, now, false);
            if let Outcome::WaitForKeys { provider } = outcome {
                let seen_version = self.providers.get(provider).map_or(0, |p| p.version);
                self.waiters.push(Waiter {
                    context_id,
                    provider,
                    since_ms: now,
                    seen_version,
                });
                // Not decided yet: not timed.
                return Next::Pause;
            }
            if self.apply(&mut headers, &outcome) {
                Next::Continue
            } else {
                Next::Pause
            }
        } else {
            // A client's copy of an identity header would reach the upstream.
            request::refuse(
                &*host,
                &self.config,
                &self.metrics,
                &self.properties,
                None,
                None,
                DenyCode::NotPrepared,
            );
            Next::Pause
        };
        // One decision in DECISION_SAMPLE is timed: the histogram's shape stays, and the
        // others spare a clock read and a histogram update (two host calls).
        if self.decisions.is_multiple_of(DECISION_SAMPLE) {
            self.metrics.decision_took(started_ns, host.now_nanos());
        }
        self.decisions = self.decisions.wrapping_add(1);
        next
    }

    /// Whether a request's body or trailers must be held: it is waiting for keys. (Envoy
    /// keeps a paused request paused whatever these callbacks return, but proxy-wasm lets a
    /// host resume a request whose body callback says Continue: that would send it
    /// upstream undecided.)
    pub fn holds(&self, context_id: u32) -> bool {
        self.waiters.iter().any(|w| w.context_id == context_id)
    }

    /// The request is over (answered, or the client went away).
    pub fn on_request_done(&mut self, context_id: u32) {
        self.waiters.retain(|w| w.context_id != context_id);
    }

    /// The answer to a JWKS or discovery callout.
    pub fn on_http_call_response(&mut self, token: u32, body_size: usize) {
        let host = self.host.clone();
        let now = host.now_ms();
        let found = self.providers.iter().enumerate().find_map(|(i, p)| {
            let (t, stage) = p.remote.as_ref()?.in_flight?;
            (t == token).then_some((i, stage))
        });
        let Some((i, stage)) = found else { return };
        let issuer = self
            .config
            .providers
            .get(i)
            .map(|p| p.accepts.issuer.clone())
            .unwrap_or_default();
        let jitter = self.random();
        if let Some(p) = self.providers.get_mut(i) {
            let max_bytes = p.remote.as_ref().map_or(0, |r| r.jwks.max_bytes);
            if let Some(remote) = p.remote.as_mut() {
                remote.in_flight = None;
            }
            let resp = Response::read(&*host, body_size, max_bytes);
            fetch::on_response(&*host, p, &issuer, stage, resp, now, jitter);
        }
        self.resolve_waiters(now);
    }

    /// Carries out `outcome` on the effective request; true when it may go on upstream.
    fn apply(&self, headers: &mut HeaderSnapshot, outcome: &Outcome) -> bool {
        request::apply(
            &*self.host,
            &self.config,
            &self.metrics,
            &self.properties,
            headers,
            outcome,
        )
    }

    /// Decides for the effective request. `waited`: it may not wait (again) for keys.
    fn decide(&mut self, headers: &HeaderSnapshot, now_ms: u64, waited: bool) -> Outcome {
        // Borrowed from the snapshot: a request allocates nothing to be read.
        let method = headers.get_str(":method").unwrap_or_default();
        let path = headers.get_str(":path").unwrap_or_default();
        let authority = headers.get_str(":authority").unwrap_or_default();
        let source = request::client_ip(&*self.host, &self.config, headers);
        let req = Request {
            method: &method,
            authority: &authority,
            path: &path,
            headers,
            source,
        };
        let mut keys = KeyView {
            host: &*self.host,
            providers: &mut self.providers,
            now_ms,
            waited,
        };
        let mut rt = Runtime {
            keys: &mut keys,
            cache: &mut self.cache,
            shared: self.shared.as_mut(),
            crypto: self.crypto.as_ref(),
            now: i64::try_from(now_ms / 1000).unwrap_or(i64::MAX),
        };
        evaluate(&self.config, &req, &mut rt)
    }

    /// Decides again for every waiting request whose provider's keys changed, or whose
    /// wait is over, and resumes or answers it.
    fn resolve_waiters(&mut self, now: u64) {
        let providers = &self.providers;
        let (ready, keep): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|w| {
                let p = providers.get(w.provider);
                let changed = p.is_some_and(|p| p.keys.is_some() && p.version != w.seen_version);
                let gives_up = p.and_then(|p| p.remote.as_ref()).is_none_or(|r| {
                    fetch_lease::waiter_gives_up(&r.record, w.since_ms, now, &r.timing)
                });
                changed || gives_up
            });
        self.waiters = keep;
        if ready.is_empty() {
            return;
        }
        let host = self.host.clone();
        for w in ready {
            if host.set_effective_context(w.context_id).is_err() {
                continue; // the client went away
            }
            // Managed headers were stripped when the request first came in.
            let mut headers = request::read_headers(&*host);
            let outcome = self.decide(&headers, now, true);
            if self.apply(&mut headers, &outcome) {
                if let Err(e) = host.resume_request() {
                    log::warn!(
                        "jwt-guard: could not resume request {}: {e:?}",
                        w.context_id
                    );
                }
            }
        }
        // Later host calls from the root (callouts) must be its own again.
        let _ = host.set_effective_context(self.root_context);
    }

    /// A 503 for when this worker cannot be reached (it is busy: cannot happen in a
    /// single-threaded VM, but if it ever did, fail closed).
    pub fn reply_unavailable(host: &dyn Host) {
        request::reply(
            host,
            crate::config::DEFAULT_REALM,
            &Denial::new(DenyCode::KeysUnavailable),
        );
    }
}
