//! The request being handled (whichever context is effective): its headers read for the
//! decision, and an [`Outcome`] carried out on it.

use crate::audit::{rule_name, RequestLine, Verdict};
use crate::client_address::{client_address, ClientAddressFrom};
use crate::config::{Config, DRY_RUN_HEADER};
use crate::deny::{render, Denial, DenyCode};
use crate::extract::{cookie_header_without, path_without_param, TokenSource};
use crate::flow::{Identity, Outcome};
use crate::forward::identity_headers;
use crate::headers::HeaderSnapshot;
use crate::host::Host;

use super::metrics::Metrics;
use super::properties::Properties;

/// The request's headers, read in one host call. If the host cannot give them, the
/// snapshot is empty: the request then has no token and is denied, never let through.
pub fn read_headers(host: &dyn Host) -> HeaderSnapshot {
    match host.request_headers() {
        Ok(bytes) => HeaderSnapshot::from_wire(bytes),
        Err(e) => {
            log::warn!("jwt-guard: could not read the request headers: {e:?}");
            HeaderSnapshot::default()
        }
    }
}

/// Sets or removes a request header, and keeps the snapshot in step. False when the host
/// could not: the caller must not send the request on as if it had.
#[must_use]
fn set_header(
    host: &dyn Host,
    headers: &mut HeaderSnapshot,
    name: &str,
    value: Option<&str>,
) -> bool {
    if let Err(e) = host.set_request_header(name, value.map(str::as_bytes)) {
        log::warn!("jwt-guard: could not set header {name}: {e:?}");
        return false;
    }
    match value {
        Some(v) => headers.set(name, v.as_bytes()),
        None => headers.remove(name),
    }
    true
}

/// Removes every header the filter may set, under every spelling an upstream may read as
/// it, whatever the route: identity headers upstream come from the filter or not at all.
/// Host calls only for headers actually present.
/// False when one could not be removed: the request must then not go upstream.
#[must_use]
pub fn strip_managed_headers(
    host: &dyn Host,
    config: &Config,
    headers: &mut HeaderSnapshot,
) -> bool {
    let mut ok = true;
    for name in headers.names_spelled_as(&config.managed_headers) {
        ok &= set_header(host, headers, &name, None);
    }
    ok
}

/// The client address the config's `ip_bindings` check, if any binding needs it (reading
/// the peer costs a host call).
pub fn client_ip(
    host: &dyn Host,
    config: &Config,
    headers: &HeaderSnapshot,
) -> Option<std::net::IpAddr> {
    if !config.uses_source_address {
        return None;
    }
    let from = config.client_address;
    let peer = match from {
        ClientAddressFrom::Peer => host
            .property(&["source", "address"])
            .map(|b| String::from_utf8_lossy(&b).into_owned()),
        ClientAddressFrom::ForwardedFor { .. } => None,
    };
    client_address(from, peer.as_deref(), headers)
}

/// Carries out an allow or deny on the request: audit line, filter state, identity
/// headers, stats, reply. Returns true when the request may go on upstream (the caller
/// continues or resumes it).
pub fn apply(
    host: &dyn Host,
    config: &Config,
    metrics: &Metrics,
    properties: &Properties,
    headers: &mut HeaderSnapshot,
    outcome: &Outcome,
) -> bool {
    let source = || {
        host.property(&["source", "address"])
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    let line = || RequestLine::of(headers);
    if let Some(record) = crate::audit::record(config, outcome, line, source) {
        log::info!("jwt-guard audit {record}");
    }
    // Filter state goes first on a refusal: a local reply can end the request (and write
    // its access log) before this returns.
    let verdict = Verdict::of(config, outcome);
    match outcome {
        Outcome::Allow(allowed) => {
            let mut prepared = true;
            if let Some(id) = &allowed.identity {
                prepared &= strip_token_if_asked(host, config, headers, id);
                prepared &= forward_identity(host, config, headers, id);
            }
            if let Some(d) = &allowed.dry_run_denial {
                let value = format!("would-deny {} {}", d.code.code(), d.code.status());
                prepared &= set_header(host, headers, DRY_RUN_HEADER, Some(&value));
            }
            if !prepared {
                // An identity header the upstream would trust is missing or stale, or the
                // token it was told not to see is still there: never send that on.
                let rule = Some(rule_name(config, allowed.rule));
                refuse(
                    host,
                    config,
                    metrics,
                    properties,
                    allowed.rule,
                    rule,
                    DenyCode::NotPrepared,
                );
                return false;
            }
            if let Some(v) = &verdict {
                properties.publish(host, v);
            }
            metrics.allowed(
                allowed.rule,
                allowed.dry_run_denial.as_ref().map(|d| d.code),
            );
            true
        }
        Outcome::Deny(denied) => {
            if let Some(v) = &verdict {
                properties.publish(host, v);
            }
            metrics.denied(denied.rule, denied.denial.code);
            reply(host, &config.realm, &denied.denial);
            false
        }
        Outcome::CorsPreflight => {
            if let Some(v) = &verdict {
                properties.publish(host, v);
            }
            metrics.cors_preflight();
            true
        }
        Outcome::WaitForKeys { .. } => {
            // It waited as long as it may.
            refuse(
                host,
                config,
                metrics,
                properties,
                None,
                None,
                DenyCode::KeysUnavailable,
            );
            false
        }
    }
}

/// Refuses the request for a reason of the filter's own (`rule`: the one that had let it
/// through, by index for the stats and by name for the filter state).
pub fn refuse(
    host: &dyn Host,
    config: &Config,
    metrics: &Metrics,
    properties: &Properties,
    rule: Option<usize>,
    rule_name: Option<&str>,
    code: DenyCode,
) {
    properties.publish(host, &Verdict::refused(code, rule_name));
    metrics.denied(rule, code);
    reply(host, &config.realm, &Denial::new(code));
}

/// Sends the local reply for a denial.
pub fn reply(host: &dyn Host, realm: &str, denial: &Denial) {
    let reply = render(denial, realm);
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    if let Err(e) = host.send_reply(reply.status, &headers, reply.body.as_bytes()) {
        log::warn!(
            "jwt-guard: could not send the {} reply: {e:?}",
            reply.status
        );
    }
}

/// False when a header could not be set.
fn forward_identity(
    host: &dyn Host,
    config: &Config,
    headers: &mut HeaderSnapshot,
    id: &Identity,
) -> bool {
    let Some(provider) = config.providers.get(id.provider) else {
        return true;
    };
    let (set, skipped) = identity_headers(provider, id);
    let mut ok = true;
    for (name, value) in &set {
        ok &= set_header(host, headers, name, Some(value));
    }
    for name in skipped {
        log::debug!("jwt-guard: {name} not set: claim absent or not a valid header value");
    }
    ok
}

/// False when the token could not be removed.
fn strip_token_if_asked(
    host: &dyn Host,
    config: &Config,
    headers: &mut HeaderSnapshot,
    id: &Identity,
) -> bool {
    if config
        .providers
        .get(id.provider)
        .is_none_or(|p| p.keep_token)
    {
        return true;
    }
    match &id.source {
        TokenSource::Header { name, .. } => {
            // Every spelling the token was found under.
            let spellings = headers.names_spelled_as(std::slice::from_ref(name));
            // Every spelling is tried, whatever failed before.
            let mut ok = true;
            for n in &spellings {
                ok &= set_header(host, headers, n, None);
            }
            ok
        }
        TokenSource::Query(param) => {
            let path = headers.get(":path").unwrap_or_default();
            let stripped = path_without_param(&path, param);
            set_header(host, headers, ":path", Some(&stripped))
        }
        TokenSource::Cookie(name) => {
            let cookies = headers.get("cookie").unwrap_or_default();
            let rest = cookie_header_without(&cookies, name);
            set_header(host, headers, "cookie", rest.as_deref())
        }
    }
}
