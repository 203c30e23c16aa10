//! Reads the current request (whichever context is effective) for `flow`, and carries out
//! an [`Outcome`]. Used by the http context on headers and by the root when it resumes a
//! request that waited for keys.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MapType;

use crate::config::{Config, DRY_RUN_HEADER};
use crate::deny::{render, Denial, DenyCode};
use crate::extract::{cookie_header_without, path_without_param, TokenSource};
use crate::flow::{evaluate, Identity, Outcome, Request, Runtime};
use crate::forward::identity_headers;
use crate::policy::parse_source_address;

use super::vm::{Metrics, Vm};

/// A request header as text. Bytes that are not UTF-8 become U+FFFD (the SDK's
/// `get_map_value` would panic on them, and a panic takes down the worker).
pub fn header(name: &str) -> Option<String> {
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn set_header(name: &str, value: Option<&str>) {
    if let Err(e) = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value) {
        log::warn!("jwt-guard: could not set header {name}: {e:?}");
    }
}

/// Removes every header the filter may set, whatever the route: identity headers upstream
/// come from the filter or not at all.
pub fn strip_managed_headers(config: &Config) {
    for h in &config.managed_headers {
        if header(h).is_some() {
            set_header(h, None);
        }
    }
}

/// What the audit log says of a request, read once by [`decide`].
pub struct RequestLine {
    method: String,
    path: String,
}

/// Decides for the current request. `waited`: it already waited for keys once, so it is
/// answered now whatever the keys.
pub fn decide(vm: &mut Vm, now_ms: u64, waited: bool) -> (Outcome, RequestLine) {
    let method = header(":method").unwrap_or_default();
    let authority = header(":authority").unwrap_or_default();
    let path = header(":path").unwrap_or_default();
    // Only IP bindings need the client address; reading it costs a host call.
    let source = if vm.config.uses_source_address {
        hostcalls::get_property(vec!["source", "address"])
            .ok()
            .flatten()
            .and_then(|b| parse_source_address(&String::from_utf8_lossy(&b)))
    } else {
        None
    };
    let req = Request {
        method: &method,
        authority: &authority,
        path: &path,
        header: &header,
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
pub fn apply(config: &Config, metrics: &Metrics, outcome: &Outcome, line: &RequestLine) -> bool {
    if let Some(record) = crate::audit::record(config, outcome, &line.method, &line.path) {
        log::info!("jwt-guard audit {record}");
    }
    match outcome {
        Outcome::Allow(allowed) => {
            if let Some(id) = &allowed.identity {
                strip_token_if_asked(config, id);
                forward_identity(config, id);
            }
            if let Some(d) = &allowed.dry_run_denial {
                set_header(
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
    if let Err(e) =
        hostcalls::send_http_response(reply.status, headers, Some(reply.body.as_bytes()))
    {
        log::warn!(
            "jwt-guard: could not send the {} reply: {e:?}",
            reply.status
        );
    }
}

fn forward_identity(config: &Config, id: &Identity) {
    let Some(provider) = config.providers.get(id.provider) else {
        return;
    };
    let (set, skipped) = identity_headers(provider, id);
    for (name, value) in &set {
        set_header(name, Some(value));
    }
    for name in skipped {
        log::debug!("jwt-guard: {name} not set: claim absent or not a valid header value");
    }
}

fn strip_token_if_asked(config: &Config, id: &Identity) {
    if config
        .providers
        .get(id.provider)
        .is_none_or(|p| p.keep_token)
    {
        return;
    }
    match &id.source {
        TokenSource::Header { name, .. } => set_header(name, None),
        TokenSource::Query(param) => {
            let path = header(":path").unwrap_or_default();
            set_header(":path", Some(&path_without_param(&path, param)));
        }
        TokenSource::Cookie(name) => {
            let cookies = header("cookie").unwrap_or_default();
            set_header("cookie", cookie_header_without(&cookies, name).as_deref());
        }
    }
}
