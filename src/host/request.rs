//! Reads the current request (whichever context is effective) for `flow`, and carries out
//! an [`Outcome`]. Used by the http context on headers and by the root when it resumes a
//! request that waited for keys.

use crate::client_address::{client_address, ClientAddressFrom};
use crate::config::{Config, DRY_RUN_HEADER};
use crate::deny::{render, Denial, DenyCode};
use crate::extract::{cookie_header_without, path_without_param, TokenSource};
use crate::flow::{evaluate, Identity, Outcome, Request, Runtime};
use crate::forward::{identity_headers, spoofed_headers};
use crate::headers::HeaderSnapshot;

use super::abi;
use super::vm::{Metrics, Vm};

/// The current request's headers, read in one host call. If the host cannot give them,
/// the snapshot is empty: the request then has no token and is denied, never let through.
pub fn read_headers() -> HeaderSnapshot {
    match abi::request_header_pairs() {
        Ok(bytes) => HeaderSnapshot::parse(&bytes),
        Err(e) => {
            log::warn!("jwt-guard: could not read the request headers: {e:?}");
            HeaderSnapshot::default()
        }
    }
}

/// Sets or removes a request header, and keeps the snapshot in step.
fn set_header(headers: &mut HeaderSnapshot, name: &str, value: Option<&str>) {
    if let Err(e) = abi::set_request_header(name, value.map(str::as_bytes)) {
        log::warn!("jwt-guard: could not set header {name}: {e:?}");
    }
    match value {
        Some(v) => headers.set(name, v.as_bytes()),
        None => headers.remove(name),
    }
}

/// Removes every header the filter may set, under every spelling an upstream may read as
/// it, whatever the route: identity headers upstream come from the filter or not at all.
/// Host calls only for headers actually present.
pub fn strip_managed_headers(config: &Config, headers: &mut HeaderSnapshot) {
    for name in spoofed_headers(&config.managed_headers, headers) {
        set_header(headers, &name, None);
    }
}

/// What the audit log says of a request, read once by [`decide`].
pub struct RequestLine {
    method: String,
    path: String,
}

/// Decides for the current request. `waited`: it already waited for keys once, so it is
/// answered now whatever the keys.
pub fn decide(
    vm: &mut Vm,
    headers: &HeaderSnapshot,
    now_ms: u64,
    waited: bool,
) -> (Outcome, RequestLine) {
    let method = headers.get(":method").unwrap_or_default();
    let authority = headers.get(":authority").unwrap_or_default();
    let path = headers.get(":path").unwrap_or_default();
    // Only IP bindings need the client address; reading the peer costs a host call.
    let source = if vm.config.uses_source_address {
        let from = vm.config.client_address;
        let peer = match from {
            ClientAddressFrom::Peer => abi::property(&["source", "address"])
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
            ClientAddressFrom::ForwardedFor { .. } => None,
        };
        client_address(from, peer.as_deref(), headers)
    } else {
        None
    };
    let req = Request {
        method: &method,
        authority: &authority,
        path: &path,
        headers,
        source,
    };
    let config = vm.config.clone();
    let now_s = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
    let (mut keys, cache, crypto) = vm.for_decision(now_ms, waited);
    let mut rt = Runtime {
        keys: &mut keys,
        cache,
        crypto,
        now: now_s,
    };
    let outcome = evaluate(&config, &req, &mut rt);
    (outcome, RequestLine { method, path })
}

/// Carries out an allow or deny on the current request. Returns true when the request may
/// go on upstream (the caller continues or resumes it).
pub fn apply(
    config: &Config,
    metrics: &Metrics,
    headers: &mut HeaderSnapshot,
    outcome: &Outcome,
    line: &RequestLine,
) -> bool {
    if let Some(record) = crate::audit::record(config, outcome, &line.method, &line.path) {
        log::info!("jwt-guard audit {record}");
    }
    match outcome {
        Outcome::Allow(allowed) => {
            if let Some(id) = &allowed.identity {
                strip_token_if_asked(config, headers, id);
                forward_identity(config, headers, id);
            }
            if let Some(d) = &allowed.dry_run_denial {
                set_header(
                    headers,
                    DRY_RUN_HEADER,
                    Some(&format!("would-deny {} {}", d.code.code(), d.code.status())),
                );
            }
            metrics.allowed(
                allowed.rule,
                allowed.dry_run_denial.as_ref().map(|d| d.code),
            );
            true
        }
        Outcome::Deny(denied) => {
            metrics.denied(denied.rule, denied.denial.code);
            reply(config, &denied.denial);
            false
        }
        Outcome::WaitForKeys { .. } => {
            metrics.denied(None, DenyCode::KeysUnavailable);
            reply(config, &Denial::new(DenyCode::KeysUnavailable));
            false
        }
    }
}

/// A 503 for when the VM's state cannot be reached.
pub fn reply_unavailable() {
    send(
        &Denial::new(DenyCode::KeysUnavailable),
        crate::config::DEFAULT_REALM,
    );
}

/// Sends the local reply for a denial.
pub fn reply(config: &Config, denial: &Denial) {
    send(denial, &config.realm);
}

fn send(denial: &Denial, realm: &str) {
    let reply = render(denial, realm);
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    if let Err(e) = abi::send_local_response(reply.status, &headers, reply.body.as_bytes()) {
        log::warn!(
            "jwt-guard: could not send the {} reply: {e:?}",
            reply.status
        );
    }
}

fn forward_identity(config: &Config, headers: &mut HeaderSnapshot, id: &Identity) {
    let Some(provider) = config.providers.get(id.provider) else {
        return;
    };
    let (set, skipped) = identity_headers(provider, id);
    for (name, value) in &set {
        set_header(headers, name, Some(value));
    }
    for name in skipped {
        log::debug!("jwt-guard: {name} not set: claim absent or not a valid header value");
    }
}

fn strip_token_if_asked(config: &Config, headers: &mut HeaderSnapshot, id: &Identity) {
    if config
        .providers
        .get(id.provider)
        .is_none_or(|p| p.keep_token)
    {
        return;
    }
    match &id.source {
        TokenSource::Header { name, .. } => set_header(headers, name, None),
        TokenSource::Query(param) => {
            let path = headers.get(":path").unwrap_or_default();
            set_header(headers, ":path", Some(&path_without_param(&path, param)));
        }
        TokenSource::Cookie(name) => {
            let cookies = headers.get("cookie").unwrap_or_default();
            let rest = cookie_header_without(&cookies, name);
            set_header(headers, "cookie", rest.as_deref());
        }
    }
}
