//! Each provider's keys as this worker holds them, the shared-data records every worker
//! reads them from, and the view of them one decision gets ([`KeyView`]).

use std::sync::Arc;

use crate::config::{split_http_uri, RemoteJwks};
use crate::fetch_lease::{self, Cold, Record, Timing};
use crate::flow::{Keyring, Keys, Refetch};
use crate::host::{Host, HostError};
use crate::jwks::KeySet;

use super::metrics::{ProviderStats, StatPrefix};

/// One provider's keys on this worker.
pub struct ProviderKeys {
    pub name: String,
    pub keys: Option<Arc<KeySet>>,
    /// The shared version `keys` were prepared from (0: none yet).
    pub version: u64,
    /// How they are fetched, for a provider with a remote JWKS.
    pub remote: Option<Remote>,
}

/// Which callout of a fetch is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Discovery,
    Jwks,
}

/// A remote JWKS: where it is, its shared records, and this worker's part in fetching it.
pub struct Remote {
    pub jwks: RemoteJwks,
    pub timing: Timing,
    pub record_key: String,
    pub body_key: String,
    /// This worker's callout, while one is in flight.
    pub in_flight: Option<(u32, Stage)>,
    /// With discovery: the `jwks_uri` found, as (authority, path), shared by all workers
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

impl ProviderKeys {
    pub fn new(
        host: &dyn Host,
        name: &str,
        source: &crate::config::KeySource,
        stats: &StatPrefix,
    ) -> ProviderKeys {
        use crate::config::KeySource as Source;
        let (keys, remote) = match source {
            Source::Local(k) => (Some(k.clone()), None),
            Source::Remote(r) => (None, Some(Remote::new(host, name, r, stats))),
        };
        ProviderKeys {
            name: name.to_string(),
            keys,
            version: 0,
            remote,
        }
    }

    /// Reads the shared record, and prepares the JWKS when its version moved on.
    pub fn sync(&mut self, host: &dyn Host) {
        let Some(r) = self.remote.as_mut() else {
            return;
        };
        r.record = read_record(host, &r.record_key).0;
        if r.record.version == 0 || r.record.version == self.version {
            return;
        }
        let body = host.shared_data(&r.body_key).ok().and_then(|(b, _)| b);
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
    fn new(host: &dyn Host, provider: &str, r: &RemoteJwks, stats: &StatPrefix) -> Remote {
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
            stats: ProviderStats::define(host, stats, provider),
        };
        create_record_if_absent(host, &remote.record_key);
        remote
    }

    /// The `jwks_uri` some worker discovered, if any, as (authority, path).
    pub fn shared_discovery(&self, host: &dyn Host) -> Option<(String, String)> {
        let bytes = host.shared_data(&self.discovered_key).ok()?.0?;
        split_http_uri(std::str::from_utf8(&bytes).ok()?).ok()
    }

    /// Shares the `jwks_uri` found (`None`: discover again next time).
    pub fn share_discovery(&mut self, host: &dyn Host, jwks_uri: Option<String>) {
        let uri = jwks_uri.unwrap_or_default();
        let _ = host.set_shared_data(&self.discovered_key, uri.as_bytes(), None);
        self.discovered = split_http_uri(&uri).ok();
    }
}

/// The keys one decision sees: this worker's, read from shared data when it has none yet.
/// `waited`: the request already waited once, so it must not wait again.
pub struct KeyView<'a> {
    pub host: &'a dyn Host,
    pub providers: &'a mut Vec<ProviderKeys>,
    pub now_ms: u64,
    pub waited: bool,
}

impl Keyring for KeyView<'_> {
    fn keys(&mut self, i: usize) -> Keys {
        let Some(p) = self.providers.get_mut(i) else {
            return Keys::Unavailable;
        };
        if p.keys.is_none() {
            p.sync(self.host);
        }
        match (&p.keys, &p.remote) {
            (Some(_), Some(r)) if fetch_lease::too_stale(&r.record, self.now_ms, &r.timing) => {
                Keys::Stale
            }
            (Some(k), _) => Keys::Ready(k.clone()),
            (None, Some(r)) => match fetch_lease::cold_status(&r.record, self.now_ms) {
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
        p.sync(self.host);
        if p.version != before {
            return p.keys.clone().map_or(Refetch::Refused, Refetch::Retry);
        }
        let Some(r) = p.remote.as_mut() else {
            return Refetch::Refused;
        };
        if r.record.lease_active(self.now_ms) {
            return Refetch::Wait;
        }
        if fetch_lease::refetch_allowed(&r.record, self.now_ms, &r.timing) {
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

pub fn read_record(host: &dyn Host, key: &str) -> (Record, Option<u32>) {
    match host.shared_data(key) {
        Ok((Some(bytes), cas)) => (Record::decode(&bytes).unwrap_or_default(), cas),
        _ => (Record::default(), None),
    }
}

/// CAS only guards a key that exists, so every worker creates the record at configure
/// time, before any traffic, and all later writes are CAS updates.
fn create_record_if_absent(host: &dyn Host, key: &str) {
    if let Ok((None, _)) = host.shared_data(key) {
        let _ = host.set_shared_data(key, &Record::default().encode(), None);
    }
}

/// Applies `change` to the shared record with CAS retries. `None` from `change` means
/// "nothing to do"; the result is the record written, if any.
pub fn update_record(
    host: &dyn Host,
    key: &str,
    change: impl Fn(&Record) -> Option<Record>,
) -> Option<Record> {
    for _ in 0..16 {
        let (current, cas) = read_record(host, key);
        let next = change(&current)?;
        match host.set_shared_data(key, &next.encode(), cas) {
            Ok(()) => return Some(next),
            Err(HostError::CasMismatch) => continue,
            Err(_) => return None,
        }
    }
    None
}
