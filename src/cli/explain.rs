//! `jwt-guard explain`: what the filter would do with one request, decided by the filter
//! itself. The real [`Worker`] runs on an in-memory host ([`MemoryHost`]): the same header reading and
//! stripping, routing, token extraction, JWKS fetch and parse, verification, policy,
//! identity headers and reply as in Envoy. Remote providers' fetches are answered from
//! `--jwks` files (a discovery provider gets a discovery document whose `jwks_uri` leads to
//! that JWKS), so the real fetch path runs too.
//!
//! Beside the decision, the explanation shows its parts, computed from the same config
//! with the filter's public functions: the rules the request's readings select
//! ([`crate::routing::select_rules`]), and for each rule that requires a token, each requirement and
//! whether the token meets it ([`super::trace`]). The decision, status, code, reply and
//! forwarded headers are the worker's own, never recomputed here.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Map, Value};

use super::logs;
use super::trace::{self, Trace};
use crate::client_address::client_address;
use crate::config::{Config, ConfigError, KeySource};
use crate::extract::{find_token, ExtractError, TokenSource};
use crate::headers::HeaderSnapshot;
use crate::host::memory::{Callout, HeldRequest, MemoryHost, Proxy};
use crate::policy::{source_allowed, Action, Requirement, Subject};
use crate::worker::{Next, Unsupported, Worker};

/// The worker's root context (requests use higher ids).
const ROOT_CONTEXT: u32 = 1;

/// The request to explain.
#[derive(Debug, Clone, Default)]
pub struct ExplainRequest {
    pub method: String,
    /// `:path`, query included.
    pub path: String,
    /// `:authority`.
    pub host: String,
    /// Other request headers, as sent.
    pub headers: Vec<(String, String)>,
    /// A token to send where its provider reads tokens (by its `iss`; `Authorization:
    /// Bearer` when no provider's issuer matches).
    pub token: Option<String>,
    /// The TCP peer Envoy would report as `source.address`: an IP (given port 40000), or
    /// `ip:port` (port 0 is how Envoy marks an address taken from `X-Forwarded-For`).
    pub source: Option<String>,
    /// The clock, in Unix seconds.
    pub now_s: u64,
}

/// A JWKS document and what to call it in the output (its file name).
#[derive(Debug, Clone)]
pub struct JwksFile {
    pub label: String,
    pub bytes: Vec<u8>,
}

/// The answers to the worker's key fetches.
#[derive(Debug, Clone, Default)]
pub struct JwksAnswers {
    /// For every remote provider that has none of its own.
    pub all: Option<JwksFile>,
    /// For one provider, by name.
    pub by_provider: Vec<(String, JwksFile)>,
}

impl JwksAnswers {
    fn for_provider(&self, name: &str) -> Option<&JwksFile> {
        self.by_provider
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, f)| f)
            .or(self.all.as_ref())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("{0}")]
    Config(ConfigError),
    #[error("{0}")]
    Unsupported(Unsupported),
    #[error("--jwks {0}=FILE: the config has no provider named {0:?}")]
    UnknownProvider(String),
    #[error("--source-ip {0:?}: not an IP address or ip:port")]
    BadSource(String),
}

/// The filter's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Sent on upstream.
    Allow,
    /// Answered by the filter.
    Deny,
    /// Neither, within the time the filter would wait (should not happen).
    Undecided,
}

impl Decision {
    pub fn word(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Undecided => "undecided",
        }
    }
}

/// A rule as the explanation names it (`None`: the default action).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    pub index: Option<usize>,
    pub name: String,
}

impl RuleRef {
    fn of(cfg: &Config, index: Option<usize>) -> RuleRef {
        let name = index
            .and_then(|i| cfg.rules.get(i))
            .map_or("default", |r| r.name.as_str())
            .to_string();
        RuleRef { index, name }
    }

    pub fn label(&self) -> String {
        match self.index {
            Some(i) => format!("rules[{i}] {:?}", self.name),
            None => "the default".into(),
        }
    }
}

/// A rule the request selects, and what it asks.
#[derive(Debug, Clone)]
pub struct SelectedRule {
    pub rule: RuleRef,
    /// `anonymous`, `require` or `deny`.
    pub action: &'static str,
    pub dry_run: bool,
    pub requirement: Option<RequirementView>,
}

/// A `require` against this request's token.
#[derive(Debug, Clone)]
pub struct RequirementView {
    pub providers: Vec<String>,
    pub allow_missing: bool,
    /// Where the token is, or why there is none the rule can use.
    pub token: String,
    /// The provider whose issuer the token names, among the rule's.
    pub provider: Option<String>,
    /// The audiences accepted here (empty: any) and the token's.
    pub audiences: Option<(Vec<String>, Value)>,
    /// Whether IP bindings let the caller through from this address, when one names it.
    pub ip_bindings: Option<bool>,
    /// Each requirement, evaluated on the token's claims.
    pub tree: Option<Trace>,
}

/// How a provider's keys were had.
#[derive(Debug, Clone)]
pub struct KeysNote {
    pub provider: String,
    pub note: String,
}

/// Everything `explain` says.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The token in the request, shown as `<token>` wherever a header carries it: the
    /// output goes to CI logs.
    pub token_text: Option<String>,
    /// The request's headers as the filter received them.
    pub request_headers: Vec<(String, String)>,
    pub source: Option<String>,
    pub now_s: u64,
    /// The token sent (decoded, not verified), if any.
    pub token: Option<TokenView>,
    pub keys: Vec<KeysNote>,
    /// Every rule some reading of the request selects (each must let it through).
    pub selected: Vec<SelectedRule>,
    pub decision: Decision,
    /// The rule whose decision it was, by the filter's own per-rule stats.
    pub decided_by: Option<RuleRef>,
    /// The local reply's status (none when allowed: the upstream answers).
    pub status: Option<u32>,
    pub code: Option<String>,
    pub reply_headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// Headers the filter set (or changed) on the request it sent upstream.
    pub set_upstream: Vec<(String, String)>,
    /// Headers it removed.
    pub removed_upstream: Vec<String>,
    /// The request headers as the upstream gets them.
    pub upstream_headers: Vec<(String, String)>,
    /// Time the filter spent waiting for keys (the clock moved this far).
    pub waited_ms: u64,
    /// The filter's log lines.
    pub log: Vec<String>,
}

/// A token's header and claims, decoded without trusting them.
#[derive(Debug, Clone)]
pub struct TokenView {
    pub header: Value,
    pub claims: Value,
}

const REQUEST_CONTEXT: u32 = 2;
/// The worker's tick, and how long a request may wait for keys before this gives up
/// (longer than the filter ever waits: two fetch timeouts at most).
const TICK_MS: u64 = 100;
const MAX_WAIT_MS: u64 = 130_000;
/// A fetch is at most a discovery document and a JWKS; a few more rounds for refetches.
const MAX_FETCH_ROUNDS: usize = 8;
/// The path of the JWKS a generated discovery document points at.
const DISCOVERED_JWKS_PATH: &str = "/.jwt-guard-explain/jwks/";
/// How a fetch without a `--jwks` answer fails: as Envoy answers when the IdP cannot be
/// reached (the filter reads this text as "unreachable").
const NO_JWKS_BODY: &str =
    "upstream connect error (jwt-guard explain: no --jwks file for this provider)";

/// Explains `req` under the configuration `config_bytes`.
pub fn explain(
    config_bytes: &[u8],
    req: &ExplainRequest,
    jwks: &JwksAnswers,
) -> Result<Explanation, ExplainError> {
    let cfg = Config::from_json(config_bytes).map_err(ExplainError::Config)?;
    if let Some((name, _)) = jwks
        .by_provider
        .iter()
        .find(|(n, _)| cfg.provider_index(n).is_none())
    {
        return Err(ExplainError::UnknownProvider(name.clone()));
    }
    let peer = match &req.source {
        None => None,
        Some(s) => Some(peer_address(s).ok_or_else(|| ExplainError::BadSource(s.clone()))?),
    };
    let request_headers = request_headers(&cfg, req);

    // The filter's decision: the worker on an offline host, with its own copy of the
    // config (it owns it).
    let worker_cfg = Config::from_json(config_bytes).map_err(ExplainError::Config)?;
    let now_ms = req.now_s.saturating_mul(1000);
    let host = Rc::new(MemoryHost::new(Proxy::new(now_ms)));
    *host.peer.borrow_mut() = peer.clone();
    logs::capture(log::max_level().max(log::LevelFilter::Info));
    logs::take();
    let mut worker =
        Worker::new(host.clone(), worker_cfg, ROOT_CONTEXT).map_err(ExplainError::Unsupported)?;
    worker.on_tick();
    answer_callouts(&host, &mut worker, &cfg, jwks);
    host.begin(REQUEST_CONTEXT, &request_headers);
    let next = worker.on_request_headers(REQUEST_CONTEXT);
    let mut waited_ms = 0;
    let settled = |r: &HeldRequest| r.reply.is_some() || r.resumed;
    if next == Next::Pause {
        while !settled(&host.request(REQUEST_CONTEXT)) && waited_ms < MAX_WAIT_MS {
            host.proxy.advance(TICK_MS);
            waited_ms += TICK_MS;
            worker.on_tick();
            answer_callouts(&host, &mut worker, &cfg, jwks);
        }
    }
    let held = host.request(REQUEST_CONTEXT);
    let decision = match (next, &held.reply, held.resumed) {
        (_, Some(_), _) => Decision::Deny,
        (Next::Continue, None, _) | (Next::Pause, None, true) => Decision::Allow,
        (Next::Pause, None, false) => Decision::Undecided,
    };
    worker.on_request_done(REQUEST_CONTEXT);
    // Per-request stats may be flushed on the tick.
    worker.on_tick();
    let decided_by = deciding_rule(&cfg, &host.metrics());
    let log = logs::take()
        .into_iter()
        // An artefact of this host, not of the request.
        .filter(|l| !l.contains("verify_signature"))
        .collect();

    // The parts of the decision, from the same config.
    let snapshot = decision_headers(&cfg, &request_headers);
    let source = client_address(cfg.client_address, peer.as_deref(), &snapshot);
    let selected = selected_rules(&cfg, &snapshot, source);
    let token_text = token_in_request(&cfg, &snapshot).or_else(|| req.token.clone());
    let token = token_text.as_deref().and_then(decode);

    let (status, code, reply_headers, body) = match &held.reply {
        Some(r) => (
            Some(r.status),
            serde_json::from_str::<Value>(&r.body)
                .ok()
                .and_then(|b| field(&b, "code").as_str().map(str::to_string)),
            r.headers.clone(),
            Some(r.body.clone()),
        ),
        None => (None, None, Vec::new(), None),
    };
    let (set_upstream, removed_upstream, upstream_headers) = if decision == Decision::Allow {
        header_changes(&request_headers, &held.headers)
    } else {
        (Vec::new(), Vec::new(), Vec::new())
    };
    Ok(Explanation {
        token_text,
        request_headers,
        source: peer,
        now_s: req.now_s,
        token,
        keys: keys_notes(&cfg, jwks),
        selected,
        decision,
        decided_by,
        status,
        code,
        reply_headers,
        body,
        set_upstream,
        removed_upstream,
        upstream_headers,
        waited_ms,
        log,
    })
}

/// `10.0.0.1` -> `10.0.0.1:40000`; `ip:port` as given.
fn peer_address(s: &str) -> Option<String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(addr.to_string());
    }
    let ip: IpAddr = s.parse().ok()?;
    Some(SocketAddr::new(ip, 40_000).to_string())
}

/// The request's headers as Envoy hands them to the filter: pseudo-headers, the given
/// headers, and the token where its provider reads it.
fn request_headers(cfg: &Config, req: &ExplainRequest) -> Vec<(String, String)> {
    let mut path = req.path.clone();
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if let Some(token) = &req.token {
        match token_source_for(cfg, token) {
            TokenSource::Header { name, prefix } => {
                headers.push((name.to_string(), format!("{prefix}{token}")))
            }
            TokenSource::Query(param) => {
                let sep = if path.contains('?') { '&' } else { '?' };
                path = format!("{path}{sep}{param}={token}");
            }
            TokenSource::Cookie(name) => match headers.iter_mut().find(|(k, _)| k == "cookie") {
                Some((_, v)) => *v = format!("{v}; {name}={token}"),
                None => headers.push(("cookie".into(), format!("{name}={token}"))),
            },
        }
    }
    let mut out = vec![
        (":authority".to_string(), req.host.clone()),
        (":path".to_string(), path),
        (":method".to_string(), req.method.clone()),
        (":scheme".to_string(), "http".to_string()),
    ];
    out.extend(headers);
    out
}

/// Where the provider whose issuer the token names reads tokens first; `Authorization:
/// Bearer` when none does.
fn token_source_for(cfg: &Config, token: &str) -> TokenSource {
    let iss = decode(token).and_then(|t| field(&t.claims, "iss").as_str().map(str::to_string));
    cfg.providers
        .iter()
        .find(|p| Some(&p.accepts.issuer) == iss.as_ref())
        .and_then(|p| p.token_sources.first().cloned())
        .unwrap_or(TokenSource::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        })
}

/// A token's header and claims, base64url-decoded; nothing checked.
pub fn decode(token: &str) -> Option<TokenView> {
    let mut parts = token.split('.');
    let part = |p: Option<&str>| -> Option<Value> {
        let bytes = URL_SAFE_NO_PAD.decode(p?.trim_end_matches('=')).ok()?;
        serde_json::from_slice::<Value>(&bytes)
            .ok()
            .filter(Value::is_object)
    };
    let header = part(parts.next())?;
    let claims = part(parts.next())?;
    Some(TokenView { header, claims })
}

/// The headers the filter decides on: the request's, without any copy of the headers
/// it sets (the worker strips those first).
fn decision_headers(cfg: &Config, headers: &[(String, String)]) -> HeaderSnapshot {
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut snapshot = HeaderSnapshot::from_pairs(&pairs);
    for name in snapshot.names_spelled_as(&cfg.managed_headers) {
        snapshot.remove(&name);
    }
    snapshot
}

/// The token any provider would find in the request (for display).
fn token_in_request(cfg: &Config, headers: &HeaderSnapshot) -> Option<String> {
    let path = headers.get(":path").unwrap_or_default();
    let sources = cfg.providers.iter().flat_map(|p| &p.token_sources);
    find_token(sources, headers, &path)
        .ok()
        .flatten()
        .map(|f| f.token.into_owned())
}

/// Answers every callout the worker started, until it starts no more.
fn answer_callouts(host: &MemoryHost, worker: &mut Worker, cfg: &Config, jwks: &JwksAnswers) {
    for _ in 0..MAX_FETCH_ROUNDS {
        let callouts = host.take_callouts();
        if callouts.is_empty() {
            return;
        }
        // Each provider has one fetch in flight at a time: two providers with the same
        // URI and cluster are told apart by taking them in turn.
        let mut answered = Vec::new();
        for c in callouts {
            let (status, body) = answer(cfg, jwks, &c, &mut answered);
            host.answering(&[(":status", status)], &body, || {
                worker.on_http_call_response(c.token, body.len())
            });
        }
    }
}

/// The answer to one key fetch: a JWKS file, a discovery document leading to it, or the
/// failure of an IdP that cannot be reached.
fn answer(
    cfg: &Config,
    jwks: &JwksAnswers,
    c: &Callout,
    answered: &mut Vec<usize>,
) -> (&'static str, Vec<u8>) {
    let jwks_answer = |i: usize| {
        let file = cfg
            .providers
            .get(i)
            .and_then(|p| jwks.for_provider(&p.name));
        match file {
            Some(f) => ("200", f.bytes.clone()),
            None => ("503", NO_JWKS_BODY.as_bytes().to_vec()),
        }
    };
    if let Some(i) = c
        .path
        .strip_prefix(DISCOVERED_JWKS_PATH)
        .and_then(|i| i.parse::<usize>().ok())
    {
        return jwks_answer(i);
    }
    let remote = cfg
        .providers
        .iter()
        .enumerate()
        .find_map(|(i, p)| match &p.keys {
            KeySource::Remote(r)
                if r.cluster == c.cluster
                    && r.authority == c.authority
                    && r.path == c.path
                    && !answered.contains(&i) =>
            {
                Some((i, p, r))
            }
            _ => None,
        });
    if let Some((i, _, _)) = remote {
        answered.push(i);
    }
    match remote {
        Some((i, p, r)) if r.discovery => {
            let doc = json!({
                "issuer": p.accepts.issuer,
                "jwks_uri": format!("https://{}{DISCOVERED_JWKS_PATH}{i}", r.authority),
            });
            ("200", doc.to_string().into_bytes())
        }
        Some((i, _, _)) => jwks_answer(i),
        None => ("404", b"not found".to_vec()),
    }
}

fn keys_notes(cfg: &Config, jwks: &JwksAnswers) -> Vec<KeysNote> {
    cfg.providers
        .iter()
        .map(|p| {
            let note = match &p.keys {
                KeySource::Local(k) => format!("local_jwks ({} keys)", k.len()),
                KeySource::Remote(r) => {
                    let how = if r.discovery {
                        "discovery, then its jwks_uri"
                    } else {
                        "remote_jwks"
                    };
                    match jwks.for_provider(&p.name) {
                        Some(f) => format!("{how}: answered with {}", f.label),
                        None => format!(
                            "{how}: no --jwks file, so its fetch fails as if the IdP could not \
                             be reached"
                        ),
                    }
                }
            };
            KeysNote {
                provider: p.name.clone(),
                note,
            }
        })
        .collect()
}

/// The rule whose counter the filter moved: `jwt_guard.<instance>.rule.<name>.<outcome>`
/// (this host names no plugin: the instance is `jwt_guard`), defined in rule order then
/// the default; a name used twice is told apart by that order.
fn deciding_rule(cfg: &Config, metrics: &[(String, u64)]) -> Option<RuleRef> {
    let names: Vec<&str> = cfg
        .rules
        .iter()
        .map(|r| r.name.as_str())
        .chain(std::iter::once("default"))
        .collect();
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    for (metric, value) in metrics {
        let Some((name, outcome)) = metric
            .strip_prefix("jwt_guard.jwt_guard.rule.")
            .and_then(|r| r.rsplit_once('.'))
        else {
            continue;
        };
        let ordinal = seen.entry((name, outcome)).or_insert(0);
        let nth = *ordinal;
        *ordinal += 1;
        if *value == 0 {
            continue;
        }
        let index = names
            .iter()
            .enumerate()
            .filter(|(_, n)| **n == name)
            .nth(nth)
            .map(|(i, _)| i)?;
        return Some(RuleRef::of(cfg, (index < cfg.rules.len()).then_some(index)));
    }
    None
}

/// Every rule the request's readings select, each with what it asks of this request.
fn selected_rules(
    cfg: &Config,
    headers: &HeaderSnapshot,
    source: Option<IpAddr>,
) -> Vec<SelectedRule> {
    let method = headers.get(":method").unwrap_or_default();
    let authority = headers.get(":authority").unwrap_or_default();
    let path = headers.get(":path").unwrap_or_default();
    let selected = crate::flow::select(cfg, &method, &authority, &path, headers);
    let deny_rules = selected.denies.iter().map(|&i| Some(i));
    selected
        .routes
        .iter()
        .copied()
        .chain(deny_rules)
        .collect::<Vec<_>>()
        .iter()
        .map(|pick| {
            let (action, dry_run) = match pick.and_then(|i| cfg.rules.get(i)) {
                Some(r) => (&r.action, r.dry_run),
                None => (&cfg.default_action, cfg.default_dry_run),
            };
            let (word, requirement) = match action {
                Action::Anonymous => ("anonymous", None),
                Action::Deny => ("deny", None),
                Action::Require(req) => (
                    "require",
                    Some(requirement_view(cfg, req, headers, &path, source)),
                ),
                // Shown as a requirement: "met" means the deny condition holds.
                Action::DenyWhen(cond) => match &cond.check {
                    None => ("deny rule (always)", None),
                    Some(check) => {
                        let as_requirement = Requirement {
                            providers: cond.providers.clone(),
                            audiences: None,
                            allow_missing: true,
                            allow_failed: false,
                            ip_bindings: Vec::new(),
                            check: check.clone(),
                        };
                        (
                            "deny rule (refuses when met)",
                            Some(requirement_view(
                                cfg,
                                &as_requirement,
                                headers,
                                &path,
                                source,
                            )),
                        )
                    }
                },
            };
            SelectedRule {
                rule: RuleRef::of(cfg, *pick),
                action: word,
                dry_run,
                requirement,
            }
        })
        .collect()
}

fn requirement_view(
    cfg: &Config,
    req: &Requirement,
    headers: &HeaderSnapshot,
    path: &str,
    source: Option<IpAddr>,
) -> RequirementView {
    let names: Vec<String> = cfg.providers.iter().map(|p| p.name.clone()).collect();
    let providers: Vec<String> = req
        .providers
        .iter()
        .filter_map(|i| names.get(*i).cloned())
        .collect();
    let mut view = RequirementView {
        providers,
        allow_missing: req.allow_missing,
        token: String::new(),
        provider: None,
        audiences: None,
        ip_bindings: None,
        tree: None,
    };
    let sources = req
        .providers
        .iter()
        .filter_map(|&i| cfg.providers.get(i))
        .flat_map(|p| &p.token_sources);
    let found = match find_token(sources, headers, path) {
        Ok(Some(found)) => found,
        Ok(None) => {
            view.token = if req.allow_missing {
                "none (allowed: allow_missing)".into()
            } else {
                "none where these providers look".into()
            };
            return view;
        }
        Err(ExtractError::Ambiguous) => {
            view.token = "more than one token".into();
            return view;
        }
        Err(_) => {
            view.token = "a malformed credential".into();
            return view;
        }
    };
    view.token = format!("found in {}", source_text(&found.source));
    let Some(decoded) = decode(&found.token) else {
        view.token.push_str(", but it does not decode as a JWT");
        return view;
    };
    let iss = field(&decoded.claims, "iss").as_str();
    let Some(index) = req
        .providers
        .iter()
        .copied()
        .find(|&i| cfg.providers.get(i).map(|p| p.accepts.issuer.as_str()) == iss)
    else {
        view.token.push_str(&format!(
            ", issued by {} which is none of these providers' issuer",
            iss.map_or("nobody".to_string(), |i| format!("{i:?}"))
        ));
        return view;
    };
    let Some(provider) = cfg.providers.get(index) else {
        return view;
    };
    view.provider = Some(provider.name.clone());
    let accepted = req
        .audiences
        .clone()
        .unwrap_or_else(|| provider.audiences.clone());
    view.audiences = Some((accepted, field(&decoded.claims, "aud").clone()));
    let Some(claims) = decoded.claims.as_object() else {
        return view;
    };
    let bound = |b: &[crate::policy::IpBinding]| b.iter().any(|b| b.principals.matches(claims));
    if bound(&provider.ip_bindings) || bound(&req.ip_bindings) {
        view.ip_bindings = Some(
            source_allowed(&provider.ip_bindings, claims, source)
                && source_allowed(&req.ip_bindings, claims, source),
        );
    }
    let subject = Subject {
        provider: index,
        claims,
        role_claims: &provider.role_claims,
    };
    view.tree = Some(trace::trace(&req.check, &subject, &names));
    view
}

fn source_text(s: &TokenSource) -> String {
    match s {
        TokenSource::Header { name, .. } => format!("header {name}"),
        TokenSource::Query(p) => format!("query parameter {p}"),
        TokenSource::Cookie(c) => format!("cookie {c}"),
    }
}

/// (set or changed, removed, all): what the filter did to the request it sent upstream.
type HeaderChanges = (Vec<(String, String)>, Vec<String>, Vec<(String, String)>);

fn header_changes(before: &[(String, String)], after: &[(String, String)]) -> HeaderChanges {
    let set: Vec<(String, String)> = after
        .iter()
        .filter(|pair| !before.contains(pair))
        .cloned()
        .collect();
    let mut removed: Vec<String> = before
        .iter()
        .filter(|(k, _)| !after.iter().any(|(a, _)| a == k))
        .map(|(k, _)| k.clone())
        .collect();
    removed.dedup();
    (set, removed, after.to_vec())
}

/// Seconds as `1h2m3s`.
fn duration_text(s: u64) -> String {
    let (h, m, sec) = (s / 3600, s % 3600 / 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{sec}s"),
        (0, _) => format!("{m}m{sec}s"),
        _ => format!("{h}h{m}m{sec}s"),
    }
}

fn token_summary(t: &TokenView, now_s: u64) -> String {
    let mut parts = Vec::new();
    for (field, v) in [
        ("alg", field(&t.header, "alg")),
        ("kid", field(&t.header, "kid")),
        ("typ", field(&t.header, "typ")),
    ] {
        if !v.is_null() {
            parts.push(format!("{field} {v}"));
        }
    }
    for claim in ["iss", "sub", "aud", "azp", "client_id", "scope", "scp"] {
        let v = field(&t.claims, claim);
        if !v.is_null() {
            parts.push(format!("{claim} {v}"));
        }
    }
    let now = i64::try_from(now_s).unwrap_or(i64::MAX);
    if let Some(exp) = field(&t.claims, "exp").as_i64() {
        parts.push(if exp >= now {
            format!("expires in {}", duration_text(exp.abs_diff(now)))
        } else {
            format!("expired {} ago", duration_text(now.abs_diff(exp)))
        });
    }
    if let Some(nbf) = field(&t.claims, "nbf").as_i64().filter(|n| *n > now) {
        parts.push(format!(
            "not valid for {} more",
            duration_text(nbf.abs_diff(now))
        ));
    }
    parts.join(", ")
}

/// `v[key]`, `null` when absent.
fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&Value::Null)
}

fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// For people.
pub fn render_human(e: &Explanation, verbose: bool) -> String {
    let mut out = String::new();
    let get = |n| header_value(&e.request_headers, n).unwrap_or_default();
    out.push_str(&format!(
        "request   {} {}  (host {}, source {})\n",
        get(":method"),
        get(":path"),
        get(":authority"),
        e.source.as_deref().unwrap_or("not given")
    ));
    match &e.token {
        Some(t) => out.push_str(&format!("token     {}\n", token_summary(t, e.now_s))),
        None => out.push_str("token     none\n"),
    }
    for k in &e.keys {
        out.push_str(&format!("keys      {}: {}\n", k.provider, k.note));
    }
    let n = e.selected.len();
    out.push_str(&if n == 1 {
        "rules     the request selects one rule:\n".to_string()
    } else {
        format!("rules     the request's readings select {n} rules; each must let it through:\n")
    });
    for s in &e.selected {
        let decided = if e.decided_by.as_ref() == Some(&s.rule) {
            "  <- decided"
        } else {
            ""
        };
        let dry = if s.dry_run { ", dry run" } else { "" };
        out.push_str(&format!(
            "  {} ({}{dry}){decided}\n",
            s.rule.label(),
            s.action
        ));
        if let Some(r) = &s.requirement {
            render_requirement(r, &mut out);
        }
    }
    match (&e.decision, &e.decided_by) {
        (Decision::Allow, by) => out.push_str(&format!(
            "decision  allow{}\n",
            by.as_ref()
                .map_or(String::new(), |r| format!(" ({})", r.label()))
        )),
        (Decision::Deny, by) => out.push_str(&format!(
            "decision  deny: {} {}{}\n",
            e.status.map_or(String::new(), |s| s.to_string()),
            e.code.as_deref().unwrap_or_default(),
            by.as_ref()
                .map_or(String::new(), |r| format!(" ({})", r.label()))
        )),
        (Decision::Undecided, _) => {
            out.push_str("decision  none: the filter was still waiting for keys\n")
        }
    }
    if e.waited_ms > 0 {
        out.push_str(&format!(
            "          after waiting {} ms for keys\n",
            e.waited_ms
        ));
    }
    if let Some(d) = header_value(&e.set_upstream, crate::config::DRY_RUN_HEADER) {
        out.push_str(&format!("          dry run: {d}\n"));
    }
    if e.decision == Decision::Deny {
        if let Some(w) = header_value(&e.reply_headers, "www-authenticate") {
            out.push_str(&format!("reply     www-authenticate: {w}\n"));
        }
        if let Some(b) = &e.body {
            out.push_str(&format!("reply     body: {b}\n"));
        }
    }
    if e.decision == Decision::Allow {
        if e.set_upstream.is_empty() && e.removed_upstream.is_empty() {
            out.push_str("upstream  the request as received\n");
        }
        for (k, v) in &e.set_upstream {
            let v = match e.token_text.as_deref() {
                Some(t) if !t.is_empty() => v.replace(t, "<token>"),
                _ => v.clone(),
            };
            out.push_str(&format!("upstream  sets {k}: {v}\n"));
        }
        for k in &e.removed_upstream {
            out.push_str(&format!("upstream  removes {k}\n"));
        }
    }
    if verbose {
        if let Some(t) = &e.token {
            out.push_str(&format!(
                "token header  {}\ntoken claims  {}\n",
                t.header, t.claims
            ));
        }
        for l in &e.log {
            out.push_str(&format!("log       {l}\n"));
        }
    }
    out
}

fn render_requirement(r: &RequirementView, out: &mut String) {
    let providers = if r.providers.is_empty() {
        "none".to_string()
    } else {
        r.providers.join(", ")
    };
    out.push_str(&format!(
        "    providers: {providers}\n    token: {}",
        r.token
    ));
    if let Some(p) = &r.provider {
        out.push_str(&format!(", for provider {p}"));
    }
    out.push('\n');
    if let Some((accepted, aud)) = &r.audiences {
        let accepted = if accepted.is_empty() {
            "any".to_string()
        } else {
            accepted.join(", ")
        };
        out.push_str(&format!(
            "    audiences accepted: {accepted}; the token's aud: {aud}\n"
        ));
    }
    if let Some(ok) = r.ip_bindings {
        let verdict = if ok {
            "the caller may call from this address"
        } else {
            "the caller may not call from this address"
        };
        out.push_str(&format!("    ip_bindings: {verdict}\n"));
    }
    if let Some(t) = &r.tree {
        out.push_str("    requirements, on the token's claims:\n");
        trace::render_human(t, 3, out);
    }
}

/// For machines (and the e2e test that compares with Envoy).
pub fn render_json(e: &Explanation) -> Value {
    let redact = |v: &str| match e.token_text.as_deref() {
        Some(t) if !t.is_empty() => v.replace(t, "<token>"),
        _ => v.to_string(),
    };
    let pairs = |h: &[(String, String)]| -> Value {
        Value::Array(h.iter().map(|(k, v)| json!([k, redact(v)])).collect())
    };
    let map = |h: &[(String, String)]| -> Value {
        let mut m = Map::new();
        for (k, v) in h {
            m.insert(k.clone(), Value::String(redact(v)));
        }
        Value::Object(m)
    };
    let rule = |r: &RuleRef| json!({"index": r.index, "name": r.name});
    json!({
        "request": {"headers": pairs(&e.request_headers), "source": e.source, "now": e.now_s},
        "token": e.token.as_ref().map(|t| json!({"header": t.header, "claims": t.claims})),
        "keys": e.keys.iter().map(|k| json!({"provider": k.provider, "note": k.note})).collect::<Vec<_>>(),
        "selected_rules": e.selected.iter().map(|s| json!({
            "rule": rule(&s.rule),
            "action": s.action,
            "dry_run": s.dry_run,
            "requirement": s.requirement.as_ref().map(|r| json!({
                "providers": r.providers,
                "allow_missing": r.allow_missing,
                "token": r.token,
                "provider": r.provider,
                "audiences": r.audiences.as_ref().map(|(accepted, aud)| json!({
                    "accepted": accepted, "token": aud})),
                "ip_bindings_allow": r.ip_bindings,
                "tree": r.tree.as_ref().map(trace::render_json),
            })),
        })).collect::<Vec<_>>(),
        "decision": e.decision.word(),
        "decided_by": e.decided_by.as_ref().map(rule),
        "status": e.status,
        "code": e.code,
        "www_authenticate": header_value(&e.reply_headers, "www-authenticate"),
        "reply_headers": map(&e.reply_headers),
        "body": e.body,
        "upstream": {
            "set": map(&e.set_upstream),
            "removed": e.removed_upstream,
            "headers": pairs(&e.upstream_headers),
        },
        "waited_ms": e.waited_ms,
        "log": e.log,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{jwks_json, mint, AUD, ISS, NOW};
    use crate::verify::Alg;
    use serde_json::json;

    fn token(extra: Value) -> String {
        let mut c = json!({"iss": ISS, "aud": AUD, "sub": "svc-a", "iat": NOW,
                           "exp": NOW + 300, "scope": "workflow:read"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        mint(Alg::Es256, Some("ec1"), &c)
    }

    /// Provider "corp" with the test keys (local, or remote and answered by `--jwks`),
    /// and rules for /health, GET /workflows and /admin.
    fn config(keys: Value, provider_extra: Value) -> Vec<u8> {
        let mut p = json!({"name": "corp", "issuer": ISS, "audiences": [AUD],
                           "claims_to_headers": [{"claim": "sub", "header": "x-jwt-sub"}]});
        p.as_object_mut()
            .unwrap()
            .extend(keys.as_object().unwrap().clone());
        p.as_object_mut()
            .unwrap()
            .extend(provider_extra.as_object().unwrap().clone());
        json!({"providers": [p], "rules": [
            {"name": "health", "match": {"path_prefix": "/health"}, "allow": "anonymous"},
            {"name": "read", "match": {"methods": ["GET"], "path_prefix": "/workflows"},
             "require": {"scopes": ["workflow:read"]}},
            {"name": "admin", "match": {"path_prefix": "/admin"},
             "require": {"scopes": ["admin"]}},
        ]})
        .to_string()
        .into_bytes()
    }

    fn local() -> Vec<u8> {
        config(json!({"local_jwks": {"inline": jwks_json()}}), json!({}))
    }

    fn get(path: &str, token: Option<String>) -> ExplainRequest {
        ExplainRequest {
            method: "GET".into(),
            path: path.into(),
            host: "api.example.com".into(),
            headers: Vec::new(),
            token,
            source: Some("10.0.1.5".into()),
            now_s: NOW as u64,
        }
    }

    fn run(cfg: &[u8], req: &ExplainRequest) -> Explanation {
        explain(cfg, req, &JwksAnswers::default()).unwrap()
    }

    fn with_jwks() -> JwksAnswers {
        JwksAnswers {
            all: Some(JwksFile {
                label: "jwks.json".into(),
                bytes: jwks_json().into_bytes(),
            }),
            by_provider: Vec::new(),
        }
    }

    #[test]
    fn an_allowed_request_and_what_goes_upstream() {
        let e = run(&local(), &get("/workflows/7", Some(token(json!({})))));
        assert_eq!(e.decision, Decision::Allow);
        assert_eq!(e.decided_by.as_ref().map(|r| r.index), Some(Some(1)));
        assert_eq!(e.status, None);
        assert_eq!(
            e.set_upstream,
            vec![("x-jwt-sub".to_string(), "svc-a".to_string())]
        );
        assert!(e.removed_upstream.is_empty());
        let tree = e.selected[0].requirement.as_ref().unwrap().tree.as_ref();
        assert_eq!(tree.map(|t| t.verdict.is_ok()), Some(true));
        let j = render_json(&e);
        assert_eq!(j["decision"], "allow");
        // The token is never printed, wherever a header carries it.
        let t = e.token_text.clone().unwrap();
        assert!(!j.to_string().contains(&t));
        assert!(j["request"]["headers"]
            .to_string()
            .contains("Bearer <token>"));
        assert_eq!(j["upstream"]["set"]["x-jwt-sub"], "svc-a");
        assert_eq!(j["decided_by"]["name"], "read");
    }

    #[test]
    fn refusals_carry_the_filters_reply() {
        let e = run(&local(), &get("/workflows", None));
        assert_eq!((e.status, e.code.as_deref()), (Some(401), Some("AUTH_100")));
        assert_eq!(
            header_value(&e.reply_headers, "www-authenticate"),
            Some("Bearer realm=\"jwt-guard\"")
        );
        let e = run(&local(), &get("/admin", Some(token(json!({})))));
        assert_eq!((e.status, e.code.as_deref()), (Some(403), Some("AUTH_102")));
        assert!(header_value(&e.reply_headers, "www-authenticate")
            .unwrap()
            .contains("scope=\"admin\""));
        assert_eq!(
            e.decided_by.as_ref().map(|r| r.name.as_str()),
            Some("admin")
        );
        let tree = e.selected[0].requirement.as_ref().unwrap().tree.clone();
        assert!(tree.unwrap().verdict.is_err());
        let expired = token(json!({"exp": NOW - 3600}));
        let e = run(&local(), &get("/workflows", Some(expired)));
        assert_eq!((e.status, e.code.as_deref()), (Some(401), Some("AUTH_111")));
        let other_aud = token(json!({"aud": "https://other.example.com"}));
        let e = run(&local(), &get("/workflows", Some(other_aud)));
        assert_eq!(e.code.as_deref(), Some("AUTH_107"));
        // The default: deny, 403 AUTH_120.
        let e = run(&local(), &get("/elsewhere", None));
        assert_eq!((e.status, e.code.as_deref()), (Some(403), Some("AUTH_120")));
        assert_eq!(e.decided_by.map(|r| r.index), Some(None));
    }

    #[test]
    fn now_moves_the_clock() {
        let t = token(json!({"nbf": NOW}));
        let mut req = get("/workflows", Some(t));
        req.now_s = NOW as u64 + 3_600;
        assert_eq!(run(&local(), &req).code.as_deref(), Some("AUTH_111"));
        req.now_s = NOW as u64 - 3_600;
        assert_eq!(run(&local(), &req).code.as_deref(), Some("AUTH_112"));
    }

    #[test]
    fn remote_keys_come_from_the_jwks_file_or_the_fetch_fails() {
        let remote =
            json!({"remote_jwks": {"uri": "https://idp.example.com/jwks", "cluster": "idp"}});
        let cfg = config(remote, json!({}));
        let req = get("/workflows", Some(token(json!({}))));
        let e = explain(&cfg, &req, &with_jwks()).unwrap();
        assert_eq!(e.decision, Decision::Allow, "{:?}", e.log);
        assert_eq!(e.waited_ms, 0);
        assert!(e.keys[0].note.contains("jwks.json"));
        let e = run(&cfg, &req);
        assert_eq!((e.status, e.code.as_deref()), (Some(503), Some("AUTH_130")));
        assert!(
            e.log.iter().any(|l| l.contains("unreachable")),
            "{:?}",
            e.log
        );
        // A JWKS for another provider name is a usage error.
        let wrong = JwksAnswers {
            all: None,
            by_provider: vec![("nope".into(), with_jwks().all.unwrap())],
        };
        assert!(matches!(
            explain(&cfg, &req, &wrong),
            Err(ExplainError::UnknownProvider(_))
        ));
    }

    #[test]
    fn discovery_is_answered_with_a_document_leading_to_the_jwks() {
        let disc = json!({"discovery": {"uri": "https://idp.example.com/.well-known/openid-configuration",
                                        "cluster": "idp", "jwks_cluster": "idp_keys"}});
        let cfg = config(disc, json!({}));
        let e = explain(
            &cfg,
            &get("/workflows", Some(token(json!({})))),
            &with_jwks(),
        )
        .unwrap();
        assert_eq!(e.decision, Decision::Allow, "{:?}", e.log);
        // An unknown kid: the filter refetches (once), then refuses.
        let t = mint(
            Alg::Es256,
            Some("rotated"),
            &json!({"iss": ISS, "aud": AUD, "exp": NOW + 60, "scope": "workflow:read"}),
        );
        let e = explain(&cfg, &get("/workflows", Some(t)), &with_jwks()).unwrap();
        assert_eq!(e.code.as_deref(), Some("AUTH_115"), "{:?}", e.log);
    }

    #[test]
    fn source_ip_bindings_and_a_removed_token() {
        let bound = json!({"ip_bindings": [{"principals": {"sub": ["svc-*"]}, "cidrs": ["10.0.1.0/24"]}],
                           "keep_token": false});
        let cfg = config(json!({"local_jwks": {"inline": jwks_json()}}), bound);
        let mut req = get("/workflows", Some(token(json!({}))));
        let e = run(&cfg, &req);
        assert_eq!(e.decision, Decision::Allow);
        assert_eq!(e.removed_upstream, vec!["authorization".to_string()]);
        let r = e.selected[0].requirement.clone().unwrap();
        assert_eq!(r.ip_bindings, Some(true));
        req.source = Some("10.0.9.9:5000".into());
        let e = run(&cfg, &req);
        assert_eq!((e.status, e.code.as_deref()), (Some(403), Some("AUTH_104")));
        assert_eq!(
            e.selected[0].requirement.clone().unwrap().ip_bindings,
            Some(false)
        );
        // An address Envoy took from X-Forwarded-For (port 0) is not trusted.
        req.source = Some("10.0.1.5:0".into());
        assert_eq!(run(&cfg, &req).code.as_deref(), Some("AUTH_104"));
        req.source = None;
        assert_eq!(run(&cfg, &req).code.as_deref(), Some("AUTH_104"));
        req.source = Some("not an address".into());
        assert!(matches!(
            explain(&cfg, &req, &JwksAnswers::default()),
            Err(ExplainError::BadSource(_))
        ));
    }

    #[test]
    fn every_rule_the_readings_select_is_shown() {
        let e = run(&local(), &get("/health/..;/admin", Some(token(json!({})))));
        let rules: Vec<Option<usize>> = e.selected.iter().map(|s| s.rule.index).collect();
        assert_eq!(rules, vec![Some(0), Some(2)]);
        assert_eq!(e.code.as_deref(), Some("AUTH_102"));
        assert_eq!(e.decided_by.map(|r| r.index), Some(Some(2)));
        let text = render_human(&run(&local(), &get("/health/..;/admin", None)), false);
        assert!(text.contains("select 2 rules"), "{text}");
    }

    #[test]
    fn several_providers_each_where_it_reads_tokens() {
        let cfg = json!({"providers": [
            {"name": "corp", "issuer": ISS, "audiences": [AUD],
             "local_jwks": {"inline": jwks_json()}},
            {"name": "partner", "issuer": "https://partner.example", "audiences": [AUD],
             "remote_jwks": {"uri": "https://partner.example/jwks", "cluster": "partner"},
             "from_params": ["access_token"], "from_headers": [],
             "claims_to_headers": [{"claim": "sub", "header": "x-partner"}]}],
            "rules": [{"name": "p", "match": {"path_prefix": "/p"},
                       "require": {"providers": ["partner"]}}]})
        .to_string();
        let t = mint(
            Alg::Es256,
            Some("ec1"),
            &json!({"iss": "https://partner.example", "aud": AUD, "sub": "p1", "exp": NOW + 60}),
        );
        let jwks = JwksAnswers {
            all: None,
            by_provider: vec![("partner".into(), with_jwks().all.unwrap())],
        };
        let e = explain(cfg.as_bytes(), &get("/p/x", Some(t.clone())), &jwks).unwrap();
        assert_eq!(e.decision, Decision::Allow, "{:?}", e.log);
        let path = header_value(&e.request_headers, ":path").unwrap();
        assert_eq!(path, format!("/p/x?access_token={t}"));
        assert_eq!(header_value(&e.set_upstream, "x-partner"), Some("p1"));
        assert!(e.keys[0].note.starts_with("local_jwks"));
        // corp's token on partner's route: another provider's token, refused before
        // any key lookup.
        let e = explain(cfg.as_bytes(), &get("/p/x", Some(token(json!({})))), &jwks).unwrap();
        assert_eq!(
            e.code.as_deref(),
            Some("AUTH_100"),
            "corp's header is not read here"
        );
    }

    #[test]
    fn two_providers_of_one_jwks_uri_get_their_own_files() {
        let remote = json!({"uri": "https://idp.example.com/jwks", "cluster": "idp"});
        let cfg = json!({"providers": [
            {"name": "a", "issuer": "https://a", "audiences": [AUD], "remote_jwks": remote},
            {"name": "b", "issuer": ISS, "audiences": [AUD], "remote_jwks": remote}],
            "rules": [{"match": {"path": "/x"}, "require": {}}]})
        .to_string();
        let empty = JwksFile {
            label: "empty.json".into(),
            bytes: br#"{"keys": []}"#.to_vec(),
        };
        let jwks = JwksAnswers {
            all: None,
            by_provider: vec![("a".into(), empty), ("b".into(), with_jwks().all.unwrap())],
        };
        let e = explain(cfg.as_bytes(), &get("/x", Some(token(json!({})))), &jwks).unwrap();
        assert_eq!(e.decision, Decision::Allow, "{:?}", e.log);
    }

    #[test]
    fn a_dry_run_rule_lets_through_and_says_what_it_would_have_done() {
        let cfg = json!({"providers": [{"name": "corp", "issuer": ISS, "audiences": [AUD],
                                         "local_jwks": {"inline": jwks_json()}}],
                         "rules": [{"name": "trial", "mode": "dry_run", "match": {"path": "/t"},
                                    "require": {"scopes": ["beta"]}}]})
        .to_string();
        let e = run(cfg.as_bytes(), &get("/t", None));
        assert_eq!(e.decision, Decision::Allow);
        assert_eq!(
            header_value(&e.set_upstream, "x-jwt-guard-dry-run"),
            Some("would-deny AUTH_100 401")
        );
        assert!(render_human(&e, false).contains("dry run: would-deny AUTH_100 401"));
    }

    #[test]
    fn a_client_copy_of_an_identity_header_never_reaches_upstream() {
        let mut req = get("/health", None);
        req.headers = vec![("X-JWT-Sub".into(), "admin".into())];
        let e = run(&local(), &req);
        assert_eq!(e.decision, Decision::Allow);
        assert_eq!(e.removed_upstream, vec!["x-jwt-sub".to_string()]);
    }

    #[test]
    fn the_deciding_rule_is_told_apart_when_names_repeat() {
        let cfg = json!({"providers": [{"name": "corp", "issuer": ISS, "audiences": [AUD],
                                         "local_jwks": {"inline": jwks_json()}}],
                         "rules": [{"name": "default", "match": {"path": "/a"}, "allow": "anonymous"},
                                   {"name": "x", "match": {"path": "/b"}, "allow": "anonymous"},
                                   {"name": "x", "match": {"path": "/c"}, "require": {}}]})
        .to_string();
        let by = |path: &str| {
            run(cfg.as_bytes(), &get(path, None))
                .decided_by
                .map(|r| r.index)
        };
        assert_eq!(by("/a"), Some(Some(0)));
        assert_eq!(by("/b"), Some(Some(1)));
        assert_eq!(by("/c"), Some(Some(2)));
        assert_eq!(by("/d"), Some(None));
    }

    /// The worker's decision agrees with the pure decision function on the same inputs.
    #[test]
    fn decisions_agree_with_flow_evaluate() {
        let cfg_bytes = local();
        let cfg = Config::from_json(&cfg_bytes).unwrap();
        let cases = [
            ("/workflows", token(json!({}))),
            ("/admin", token(json!({}))),
            ("/admin", token(json!({"scope": "admin"}))),
            ("/health", "garbage".to_string()),
            ("/workflows", token(json!({"exp": NOW - 1000}))),
            ("/nowhere", token(json!({}))),
        ];
        for (path, t) in cases {
            let outcome = crate::testkit::decide(
                &cfg,
                path,
                "api.example.com",
                &format!("Bearer {t}"),
                &mut crate::cache::VerifiedCache::new(0),
                NOW,
            );
            let want = match outcome {
                crate::flow::Outcome::Deny(d) => Some(d.denial.code.code()),
                _ => None,
            };
            let e = run(&cfg_bytes, &get(path, Some(t)));
            assert_eq!(e.code.as_deref(), want, "{path}");
        }
    }
}
