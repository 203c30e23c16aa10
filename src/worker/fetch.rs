//! Fetching a provider's JWKS (through OpenID discovery when configured): who fetches
//! (the lease in [`crate::fetch_lease`]), the callouts, and what an answer changes.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::config::split_http_uri;
use crate::fetch_lease;
use crate::host::{Host, HostError};
use crate::jwks::KeySet;

use super::keys::{update_record, ProviderKeys, Remote, Stage};
use super::metrics::bump;

/// The fields of an OpenID configuration document the filter uses.
#[derive(Deserialize)]
struct Discovered {
    issuer: String,
    jwks_uri: String,
}

/// Why a fetch failed. Each has a stable `reason`, counted in
/// `provider.<name>.jwks_fetch_failure.<reason>`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FetchFailure {
    /// The host refused the callout: for Envoy, the cluster is not defined.
    Dispatch { cluster: String, error: HostError },
    /// The IdP was not reached: the cluster has no host (did not resolve), the connection
    /// failed or was reset, or the call timed out. Envoy reports these as its own 503/504
    /// replies; the detail is Envoy's text.
    Unreachable(String),
    /// An HTTP status other than 200.
    Status(String),
    /// A body larger than `max_bytes`.
    TooLarge { size: usize, max: usize },
    /// A discovery document that is not an OpenID configuration, or whose `jwks_uri` is
    /// not an http(s) URI.
    BadDiscovery(String),
    /// A discovery document whose `issuer` is not the provider's.
    IssuerMismatch { found: String },
    /// A body that is not a usable JWKS (not JSON, no key the filter can use).
    BadJwks(String),
}

impl FetchFailure {
    pub const REASONS: [&'static str; 7] = [
        "dispatch",
        "unreachable",
        "status",
        "too_large",
        "bad_discovery",
        "issuer_mismatch",
        "bad_jwks",
    ];

    pub fn reason(&self) -> &'static str {
        match self {
            FetchFailure::Dispatch { .. } => "dispatch",
            FetchFailure::Unreachable(_) => "unreachable",
            FetchFailure::Status(_) => "status",
            FetchFailure::TooLarge { .. } => "too_large",
            FetchFailure::BadDiscovery(_) => "bad_discovery",
            FetchFailure::IssuerMismatch { .. } => "issuer_mismatch",
            FetchFailure::BadJwks(_) => "bad_jwks",
        }
    }
}

impl std::fmt::Display for FetchFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchFailure::Dispatch {
                cluster,
                error: HostError::BadArgument | HostError::NotFound,
            } => write!(
                f,
                "the host has no cluster {cluster:?} (define it in Envoy)"
            ),
            FetchFailure::Dispatch { cluster, error } => {
                write!(
                    f,
                    "the host refused a call to cluster {cluster:?} ({error:?})"
                )
            }
            FetchFailure::Unreachable(detail) => write!(
                f,
                "the IdP was not reached (its cluster's hosts did not resolve or connect, or \
                 the call timed out): {detail}"
            ),
            FetchFailure::Status(s) => write!(f, "status {s}"),
            FetchFailure::TooLarge { size, max } => {
                write!(f, "body of {size} bytes is over the {max} byte limit")
            }
            FetchFailure::BadDiscovery(why) => {
                write!(f, "not a usable OpenID configuration: {why}")
            }
            FetchFailure::IssuerMismatch { found } => {
                write!(f, "the discovery document names another issuer, {found:?}")
            }
            FetchFailure::BadJwks(why) => write!(f, "not a usable JWKS: {why}"),
        }
    }
}

/// A finished callout, reduced to what the fetch logic needs.
pub struct Response {
    status: String,
    cache_control: Option<String>,
    body: Result<Vec<u8>, FetchFailure>,
}

impl Response {
    /// The answer being handled, read from the host; a body over `max_bytes` is not read.
    pub fn read(host: &dyn Host, body_size: usize, max_bytes: usize) -> Response {
        let header = |name: &str| {
            host.call_response_header(name)
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        };
        let body = if body_size > max_bytes {
            Err(FetchFailure::TooLarge {
                size: body_size,
                max: max_bytes,
            })
        } else {
            Ok(host.call_response_body(body_size).unwrap_or_default())
        };
        Response {
            status: header(":status").unwrap_or_default(),
            cache_control: header("cache-control"),
            body,
        }
    }
}

/// Takes the lease and starts a fetch for provider `p` if one is due: first keys, a
/// refresh, or a refetch a request asked for because of an unknown `kid`.
pub fn start_if_due(host: &dyn Host, p: &mut ProviderKeys, worker: u64, now: u64, jitter: u64) {
    p.sync(host);
    let Some(remote) = p.remote.as_mut() else {
        return;
    };
    remote.stats.observe(host, &remote.record, now);
    let refetch = std::mem::take(&mut remote.refetch_wanted);
    if remote.in_flight.is_some() {
        return;
    }
    let t = remote.timing;
    // Which branch produced the record written (the closure may run again on CAS
    // retries; the last run is the one that counts).
    let is_refetch = Cell::new(false);
    let leased = update_record(host, &remote.record_key, |r| {
        is_refetch.set(false);
        if fetch_lease::should_fetch(r, now) {
            Some(fetch_lease::acquire(r, worker, now, &t))
        } else if refetch && fetch_lease::refetch_allowed(r, now, &t) {
            is_refetch.set(true);
            Some(fetch_lease::acquire_refetch(r, worker, now, &t))
        } else {
            None
        }
    });
    let Some(leased) = leased else { return };
    if is_refetch.get() {
        bump(host, remote.stats.unknown_kid_refetch);
    }
    remote.record = leased;
    if remote.jwks.discovery {
        // Shared, so one worker's failed fetch makes every worker discover again.
        remote.discovered = remote.shared_discovery(host);
    }
    let jwks = &remote.jwks;
    let (stage, cluster, authority, path) = match (&remote.discovered, jwks.discovery) {
        (Some((authority, path)), true) => (Stage::Jwks, &jwks.jwks_cluster, authority, path),
        (None, true) => (Stage::Discovery, &jwks.cluster, &jwks.authority, &jwks.path),
        (_, false) => (Stage::Jwks, &jwks.cluster, &jwks.authority, &jwks.path),
    };
    let (cluster, authority, path) = (cluster.clone(), authority.clone(), path.clone());
    if let Err(failure) = dispatch(host, remote, stage, &cluster, &authority, &path) {
        fail(host, remote, stage, now, jitter, &failure);
    }
}

/// Handles the answer to provider `p`'s callout in `stage`. Returns a failure's reason
/// after recording it (the last good keys stay; a retry is scheduled).
pub fn on_response(
    host: &dyn Host,
    p: &mut ProviderKeys,
    issuer: &str,
    stage: Stage,
    resp: Response,
    now: u64,
    jitter: u64,
) {
    let result = match stage {
        Stage::Discovery => match p.remote.as_mut() {
            Some(remote) => on_discovery(host, remote, issuer, resp),
            None => Ok(()),
        },
        Stage::Jwks => on_jwks(host, p, resp, now).map(|count| {
            log::info!("jwt-guard: provider {}: loaded {count} keys", p.name);
        }),
    };
    if let (Err(failure), Some(remote)) = (result, p.remote.as_mut()) {
        fail(host, remote, stage, now, jitter, &failure);
    }
}

fn dispatch(
    host: &dyn Host,
    remote: &mut Remote,
    stage: Stage,
    cluster: &str,
    authority: &str,
    path: &str,
) -> Result<(), FetchFailure> {
    let headers = [
        (":method", "GET"),
        (":path", path),
        (":authority", authority),
        ("accept", "application/json"),
        ("user-agent", "jwt-guard"),
    ];
    let timeout = Duration::from_millis(remote.jwks.timeout_ms);
    bump(host, remote.stats.fetch_attempt);
    match host.http_call(cluster, &headers, timeout) {
        Ok(token) => {
            remote.in_flight = Some((token, stage));
            log::debug!("jwt-guard: fetching {authority}{path} through {cluster}");
            Ok(())
        }
        Err(error) => Err(FetchFailure::Dispatch {
            cluster: cluster.to_string(),
            error,
        }),
    }
}

fn fail(
    host: &dyn Host,
    remote: &mut Remote,
    stage: Stage,
    now: u64,
    jitter: u64,
    failure: &FetchFailure,
) {
    bump(host, remote.stats.fetch_failure);
    bump(host, remote.stats.failure_reason(failure.reason()));
    remote.in_flight = None;
    // The IdP may have moved its keys: discover again next time.
    if remote.discovered.is_some() {
        remote.share_discovery(host, None);
    }
    let t = remote.timing;
    if let Some(r) = update_record(host, &remote.record_key, |r| {
        Some(fetch_lease::failed(r, now, &t, jitter))
    }) {
        remote.record = r;
        let keeping = if r.version > 0 {
            "keeping the last good keys"
        } else {
            "no keys yet"
        };
        let what = match stage {
            Stage::Discovery => "discovery",
            Stage::Jwks => "JWKS",
        };
        log::warn!(
            "jwt-guard: {what} fetch for {} failed ({}): {failure}; {keeping}; retry in {} ms",
            remote.jwks.uri,
            failure.reason(),
            r.next_attempt_ms.saturating_sub(now)
        );
    }
}

/// Handles the discovery document: checks its issuer, then fetches the JWKS it names.
fn on_discovery(
    host: &dyn Host,
    remote: &mut Remote,
    issuer: &str,
    resp: Response,
) -> Result<(), FetchFailure> {
    check_status(&resp)?;
    let body = resp.body?;
    let doc: Discovered =
        serde_json::from_slice(&body).map_err(|e| FetchFailure::BadDiscovery(e.to_string()))?;
    if doc.issuer != issuer {
        return Err(FetchFailure::IssuerMismatch {
            found: doc.issuer.chars().take(200).collect(),
        });
    }
    let (authority, path) = split_http_uri(&doc.jwks_uri)
        .map_err(|e| FetchFailure::BadDiscovery(format!("jwks_uri {e}")))?;
    let cluster = remote.jwks.jwks_cluster.clone();
    dispatch(host, remote, Stage::Jwks, &cluster, &authority, &path)?;
    remote.share_discovery(host, Some(doc.jwks_uri));
    Ok(())
}

/// Handles the JWKS: stores a good one for every worker; a bad one changes nothing.
fn on_jwks(
    host: &dyn Host,
    p: &mut ProviderKeys,
    resp: Response,
    now: u64,
) -> Result<usize, FetchFailure> {
    check_status(&resp)?;
    let body = resp.body?;
    let set = KeySet::from_json(&body).map_err(|e| FetchFailure::BadJwks(e.to_string()))?;
    let count = set.len();
    let max_age = resp
        .cache_control
        .as_deref()
        .and_then(fetch_lease::max_age_s);
    let Some(remote) = p.remote.as_mut() else {
        return Ok(count);
    };
    remote.in_flight = None;
    bump(host, remote.stats.fetch_success);
    // Body first, then the version that points at it.
    let _ = host.set_shared_data(&remote.body_key, &body, None);
    let t = remote.timing;
    if let Some(r) = update_record(host, &remote.record_key, |r| {
        Some(fetch_lease::succeeded(r, now, max_age, &t))
    }) {
        remote.record = r;
        p.version = r.version;
    }
    p.keys = Some(Arc::new(set));
    Ok(count)
}

/// The texts of the replies Envoy makes itself when a callout cannot reach its cluster
/// (stable across Envoy releases), so they are told apart from an IdP's own 503.
const UNREACHABLE: [&str; 3] = [
    "no healthy upstream",
    "upstream connect error",
    "upstream request timeout",
];

fn check_status(resp: &Response) -> Result<(), FetchFailure> {
    let text = resp
        .body
        .as_deref()
        .map(|b| String::from_utf8_lossy(b.get(..200).unwrap_or(b)).into_owned())
        .unwrap_or_default();
    match resp.status.as_str() {
        "200" => Ok(()),
        "" => Err(FetchFailure::Unreachable("no response".into())),
        "503" | "504" if UNREACHABLE.iter().any(|u| text.starts_with(u)) => {
            Err(FetchFailure::Unreachable(text))
        }
        other => Err(FetchFailure::Status(other.chars().take(8).collect())),
    }
}
