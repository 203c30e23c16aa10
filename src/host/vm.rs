//! State one VM (one Envoy worker) keeps across requests: the compiled config, prepared keys
//! per provider, and the requests waiting for keys. Shared data is read on the root's tick,
//! and on the request path only when this worker lacks keys.

use std::rc::Rc;
use std::sync::Arc;

use crate::cache::VerifiedCache;
use crate::config::{Config, CryptoBackend, KeySource, RemoteJwks};
use crate::verify::{Crypto, RustCrypto};

use super::abi::{self, Status, COUNTER, GAUGE};
use super::crypto::HostCrypto;
use crate::deny::DenyCode;
use crate::flow::{KeyStore, Keys, Refetch};
use crate::jwks::KeySet;
use crate::keystore::{self, Cold, Record, Timing};

/// Per-provider state of this worker.
pub struct ProviderRuntime {
    pub name: String,
    pub keys: Option<Arc<KeySet>>,
    /// The shared version `keys` were prepared from (0: none yet).
    pub version: u64,
    pub remote: Option<Remote>,
}

/// Which callout of a fetch is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Discovery,
    Jwks,
}

pub struct Remote {
    pub jwks: RemoteJwks,
    pub timing: Timing,
    pub record_key: String,
    pub body_key: String,
    /// This worker's callout, while one is in flight.
    pub in_flight: Option<(u32, Stage)>,
    /// With discovery: the `jwks_uri` found (authority, path), shared by all workers
    /// under `discovered_key` and reused until a JWKS fetch fails, so a refresh is one
    /// callout, not two.
    pub discovered: Option<(String, String)>,
    pub discovered_key: String,
    /// A request saw an unknown `kid`: refetch on the next tick, if the rate limit allows.
    pub refetch_wanted: bool,
    /// The record as last read.
    pub record: Record,
    pub stats: ProviderStats,
}

/// A request paused until its provider's keys change (first keys, or a refetch).
pub struct Waiter {
    pub context_id: u32,
    pub provider: usize,
    pub since_ms: u64,
    pub seen_version: u64,
}

pub fn bump(id: Option<u32>) {
    if let Some(id) = id {
        abi::increment_metric(id);
    }
}

fn set_gauge(id: Option<u32>, value: u64) {
    if let Some(id) = id {
        abi::record_metric(id, value);
    }
}

/// Envoy stats of one provider's keys (`wasmcustom.jwt_guard.provider.<name>.*`).
pub struct ProviderStats {
    pub fetch_attempt: Option<u32>,
    pub fetch_success: Option<u32>,
    pub fetch_failure: Option<u32>,
    pub unknown_kid_refetch: Option<u32>,
    keys_age_s: Option<u32>,
    stale: Option<u32>,
}

impl ProviderStats {
    fn define(provider: &str) -> ProviderStats {
        let name = |s: &str| format!("jwt_guard.provider.{provider}.{s}");
        ProviderStats {
            fetch_attempt: abi::define_metric(COUNTER, &name("jwks_fetch_attempt")),
            fetch_success: abi::define_metric(COUNTER, &name("jwks_fetch_success")),
            fetch_failure: abi::define_metric(COUNTER, &name("jwks_fetch_failure")),
            unknown_kid_refetch: abi::define_metric(COUNTER, &name("unknown_kid_refetch")),
            keys_age_s: abi::define_metric(GAUGE, &name("keys_age_s")),
            stale: abi::define_metric(GAUGE, &name("stale")),
        }
    }

    pub fn observe(&self, r: &Record, now_ms: u64) {
        if r.version > 0 {
            set_gauge(
                self.keys_age_s,
                now_ms.saturating_sub(r.fetched_at_ms) / 1000,
            );
        }
        set_gauge(self.stale, u64::from(keystore::serving_stale(r, now_ms)));
    }
}

/// Envoy stats of decisions (`wasmcustom.jwt_guard.*`): per deny code and per rule. An
/// allowed request costs one counter update (the total is the sum over rules).
pub struct Metrics {
    denied: Vec<(DenyCode, Option<u32>)>,
    /// Per rule, then one for the default: (allowed, denied, dry-run denied).
    rules: Vec<[Option<u32>; 3]>,
}

impl Metrics {
    fn define(config: &Config) -> Metrics {
        let counter = |name: &str| abi::define_metric(COUNTER, name);
        let names = config
            .rules
            .iter()
            .map(|r| r.name.as_str())
            .chain(std::iter::once("default"));
        Metrics {
            denied: DenyCode::ALL
                .iter()
                .map(|c| (*c, counter(&format!("jwt_guard.denied.{}", c.code()))))
                .collect(),
            rules: names
                .map(|n| {
                    ["allowed", "denied", "dry_run_denied"]
                        .map(|what| counter(&format!("jwt_guard.rule.{n}.{what}")))
                })
                .collect(),
        }
    }

    fn rule(&self, rule: Option<usize>) -> Option<&[Option<u32>; 3]> {
        match rule {
            Some(i) => self.rules.get(i),
            None => self.rules.last(),
        }
    }

    pub fn allowed(&self, rule: Option<usize>, dry_run_denied: Option<DenyCode>) {
        if let Some([allowed, _, dry]) = self.rule(rule) {
            bump(if dry_run_denied.is_some() {
                *dry
            } else {
                *allowed
            });
        }
    }

    pub fn denied(&self, rule: Option<usize>, code: DenyCode) {
        if let Some((_, id)) = self.denied.iter().find(|(c, _)| *c == code) {
            bump(*id);
        }
        if let Some([_, denied, _]) = self.rule(rule) {
            bump(*denied);
        }
    }
}

pub struct Vm {
    pub config: Rc<Config>,
    /// This worker's id in leases and logs.
    pub worker: u64,
    pub providers: Vec<ProviderRuntime>,
    pub waiters: Vec<Waiter>,
    pub metrics: Rc<Metrics>,
    pub cache: VerifiedCache,
    crypto: Box<dyn Crypto>,
    rng: u64,
}

impl Vm {
    pub fn new(config: Config, seed: u64) -> Vm {
        let providers = config
            .providers
            .iter()
            .map(|p| ProviderRuntime {
                name: p.name.clone(),
                keys: match &p.keys {
                    KeySource::Local(k) => Some(k.clone()),
                    KeySource::Remote(_) => None,
                },
                version: 0,
                remote: match &p.keys {
                    KeySource::Local(_) => None,
                    KeySource::Remote(r) => Some(Remote::new(&p.name, r)),
                },
            })
            .collect();
        let metrics = Rc::new(Metrics::define(&config));
        let config_cache_entries = config.cache_entries;
        let crypto: Box<dyn Crypto> = match config.crypto {
            CryptoBackend::Auto => Box::new(HostCrypto::new()),
            CryptoBackend::Rust => Box::new(RustCrypto),
        };
        let mut vm = Vm {
            config: Rc::new(config),
            worker: 0,
            providers,
            waiters: Vec::new(),
            metrics,
            cache: VerifiedCache::new(config_cache_entries),
            crypto,
            rng: seed | 1,
        };
        vm.worker = vm.random().max(1);
        vm
    }

    /// xorshift64: jitter and ids need spread, not secrecy.
    pub fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// Reads provider `i`'s shared record, and prepares its JWKS when the version moved on.
    pub fn sync(&mut self, i: usize) {
        if let Some(p) = self.providers.get_mut(i) {
            p.sync();
        }
    }

    /// A view of this VM's keys for one decision, and its token cache. `waited`: the
    /// request already waited once, so it must not wait again.
    pub fn for_decision(
        &mut self,
        now_ms: u64,
        waited: bool,
    ) -> (VmKeys<'_>, &mut VerifiedCache, &dyn Crypto) {
        let keys = VmKeys {
            providers: &mut self.providers,
            now_ms,
            waited,
        };
        (keys, &mut self.cache, self.crypto.as_ref())
    }
}

impl Remote {
    /// The `jwks_uri` some worker discovered, if any.
    pub fn shared_discovery(&self) -> Option<(String, String)> {
        let bytes = abi::shared_data(&self.discovered_key).ok()?.0?;
        let text = String::from_utf8(bytes).ok()?;
        let (authority, path) = text.split_once('\n')?;
        Some((authority.to_string(), path.to_string()))
    }

    pub fn share_discovery(&mut self, found: Option<(String, String)>) {
        let value = found
            .as_ref()
            .map(|(a, p)| format!("{a}\n{p}"))
            .unwrap_or_default();
        let _ = abi::set_shared_data(&self.discovered_key, value.as_bytes(), None);
        self.discovered = found;
    }
}

impl ProviderRuntime {
    fn sync(&mut self) {
        let Some(r) = self.remote.as_mut() else {
            return;
        };
        r.record = read_record(&r.record_key).0;
        if r.record.version == 0 || r.record.version == self.version {
            return;
        }
        let body = abi::shared_data(&r.body_key).ok().and_then(|(b, _)| b);
        match body.as_deref().map(KeySet::from_json) {
            Some(Ok(set)) => {
                self.keys = Some(Arc::new(set));
                self.version = r.record.version;
            }
            // Only validated bodies are stored: a torn read, so retry on the next tick.
            _ => log::debug!(
                "jwt-guard: jwks body for version {} not readable yet",
                r.record.version
            ),
        }
    }
}

impl Remote {
    fn new(provider: &str, r: &RemoteJwks) -> Remote {
        let ns = format!(
            "jwt-guard/v1/{provider}/{:016x}",
            fnv1a(&[&r.cluster, &r.uri, &r.jwks_cluster])
        );
        let remote = Remote {
            jwks: r.clone(),
            timing: Timing::new(r),
            record_key: format!("{ns}/record"),
            body_key: format!("{ns}/jwks"),
            in_flight: None,
            discovered: None,
            discovered_key: format!("{ns}/discovered"),
            refetch_wanted: false,
            record: Record::default(),
            stats: ProviderStats::define(provider),
        };
        create_record_if_absent(&remote.record_key);
        remote
    }
}

pub struct VmKeys<'a> {
    providers: &'a mut Vec<ProviderRuntime>,
    now_ms: u64,
    waited: bool,
}

impl KeyStore for VmKeys<'_> {
    fn keys(&mut self, i: usize) -> Keys {
        let Some(p) = self.providers.get_mut(i) else {
            return Keys::Unavailable;
        };
        if p.keys.is_none() {
            p.sync();
        }
        match (&p.keys, &p.remote) {
            (Some(_), Some(r)) if keystore::too_stale(&r.record, self.now_ms, &r.timing) => {
                Keys::Stale
            }
            (Some(k), _) => Keys::Ready(k.clone()),
            (None, Some(r)) => match keystore::cold_status(&r.record, self.now_ms) {
                Cold::Wait if !self.waited => Keys::Pending,
                _ => Keys::Unavailable,
            },
            (None, None) => Keys::Unavailable,
        }
    }

    fn refetch_for_unknown_kid(&mut self, i: usize) -> Refetch {
        if self.waited {
            return Refetch::Refused;
        }
        let Some(p) = self.providers.get_mut(i) else {
            return Refetch::Refused;
        };
        let before = p.version;
        p.sync();
        if p.version != before {
            return p.keys.clone().map_or(Refetch::Refused, Refetch::Retry);
        }
        let Some(r) = p.remote.as_mut() else {
            return Refetch::Refused;
        };
        if r.record.lease_active(self.now_ms) {
            return Refetch::Wait;
        }
        if keystore::refetch_allowed(&r.record, self.now_ms, &r.timing) {
            r.refetch_wanted = true;
            return Refetch::Wait;
        }
        Refetch::Refused
    }
}

/// FNV-1a over the parts, to namespace shared data by where keys come from: a changed
/// URI or cluster never reuses keys fetched from the old one.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

pub fn read_record(key: &str) -> (Record, Option<u32>) {
    match abi::shared_data(key) {
        Ok((Some(bytes), cas)) => (Record::decode(&bytes).unwrap_or_default(), cas),
        _ => (Record::default(), None),
    }
}

/// CAS only guards a key that exists, so every worker creates the record at configure
/// time, before any traffic, and all later writes are CAS updates.
fn create_record_if_absent(key: &str) {
    if let Ok((None, _)) = abi::shared_data(key) {
        let _ = abi::set_shared_data(key, &Record::default().encode(), None);
    }
}

/// Applies `change` to the shared record with CAS retries. `None` from `change` means
/// "nothing to do"; the result is the record written, if any.
pub fn update_record(key: &str, change: impl Fn(&Record) -> Option<Record>) -> Option<Record> {
    for _ in 0..16 {
        let (current, cas) = read_record(key);
        let next = change(&current)?;
        match abi::set_shared_data(key, &next.encode(), cas) {
            Ok(()) => return Some(next),
            Err(Status::CAS_MISMATCH) => continue,
            Err(_) => return None,
        }
    }
    None
}

pub fn now_ms() -> u64 {
    abi::now_nanos() / 1_000_000
}
