//! Plugin JSON ([`crate::schema`]) -> validated, compiled [`Config`].
//!
//! Everything a request needs is prepared here once: providers, local keys parsed, URIs
//! split into the pieces a callout needs; rules are built next to their types
//! (`Rule::compile` in `policy.rs`, `Matcher::compile` in `routing/matcher.rs`). Errors
//! name the JSON path of the bad field.

use std::sync::Arc;

use crate::client_address::ClientAddressFrom;
use crate::extract::TokenSource;
use crate::jwks::KeySet;
use crate::policy::{default_role_claims, Action, ClaimPath, IpBinding, Rule};
use crate::routing::MatcherTraits;
use crate::schema::{
    err, is_quotable, is_stat_name, is_token_name, RawAddressSource, RawAudiences,
    RawClientAddress, RawConfig, RawDefault, RawHeaderSource, RawLocalJwks, RawMode, RawProvider,
    RawRemoteJwks, STAT_NAME_RULE,
};
pub use crate::schema::{ConfigError, CryptoBackend};
use crate::verify::{Acceptance, Alg};

pub const DEFAULT_CLOCK_SKEW_S: u64 = 60;
pub const MAX_SKEW_S: i64 = 3_600;
pub const DEFAULT_CACHE_ENTRIES: usize = 1_024;
pub const DEFAULT_SHARED_ENTRIES: usize = 1_024;
/// Shared data has no delete: every slot ever written stays, so their number is bounded.
pub const MAX_SHARED_ENTRIES: u32 = 100_000;
pub const DEFAULT_TIMEOUT_MS: u64 = 2_000;
pub const DEFAULT_REFRESH_S: u64 = 300;
pub const DEFAULT_REFRESH_MIN_S: u64 = 30;
pub const DEFAULT_REFRESH_MAX_S: u64 = 3_600;
pub const DEFAULT_UNKNOWN_KID_REFETCH_S: u64 = 10;
pub const DEFAULT_MAX_STALE_S: u64 = 86_400;
pub const DEFAULT_MAX_JWKS_BYTES: usize = 256 * 1024;
pub const DEFAULT_REALM: &str = "jwt-guard";

/// The header on requests let through by a dry-run rule that would have refused them.
pub const DRY_RUN_HEADER: &str = "x-jwt-guard-dry-run";

/// The compiled configuration a filter instance runs with.
#[derive(Debug)]
pub struct Config {
    pub realm: String,
    pub providers: Vec<Provider>,
    /// In config order: route rules (first match) and deny rules.
    pub rules: Vec<Rule>,
    /// Some rule is a deny rule: without one, the route scan need not skip any.
    pub has_deny_rules: bool,
    pub default_action: Action,
    /// The default action only reports what it would refuse.
    pub default_dry_run: bool,
    /// Audit-log allowed requests (off by default).
    pub audit_allowed: bool,
    /// Audit-log denied requests (on by default; off when a flood of bad requests would
    /// flood the log, the per-code stats still count them).
    pub audit_denied: bool,
    /// Every header the filter may set upstream: removed from every incoming request, so
    /// a client can never supply its own identity.
    pub managed_headers: Vec<String>,
    /// Verified tokens each worker remembers (0: no cache).
    pub cache_entries: usize,
    /// Slots of the verified-token cache shared by all workers (0: none).
    pub shared_entries: u32,
    pub crypto: CryptoBackend,
    /// A CORS preflight passes without a token ([`crate::cors`]).
    pub bypass_cors_preflight: bool,
    /// Set each decision as Envoy filter state.
    pub filter_state: bool,
    /// Some provider or rule binds callers to networks, so decisions need the client address.
    pub uses_source_address: bool,
    /// Where that address comes from.
    pub client_address: ClientAddressFrom,
    /// What the rules' matchers read as a whole (whether hosts and case matter).
    pub matcher_traits: MatcherTraits,
}

/// A claim forwarded upstream as a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimHeader {
    pub claim: ClaimPath,
    pub header: String,
}

#[derive(Debug)]
pub struct Provider {
    pub name: String,
    /// Issuer, algorithms, skew and token types: what verification needs.
    pub accepts: Acceptance,
    /// Empty only when the config says `"audiences": "any"`: the audience is not checked.
    pub audiences: Vec<String>,
    pub keys: KeySource,
    pub token_sources: Vec<TokenSource>,
    pub keep_token: bool,
    /// Where roles are read from (default: Keycloak's realm and client roles).
    pub role_claims: Vec<ClaimPath>,
    pub claims_to_headers: Vec<ClaimHeader>,
    /// Header carrying the verified payload (base64url JSON) upstream.
    pub payload_header: Option<String>,
    pub ip_bindings: Vec<IpBinding>,
}

#[derive(Debug)]
pub enum KeySource {
    Remote(RemoteJwks),
    Local(Arc<KeySet>),
}

/// Where and how to fetch a JWKS, split into what `dispatch_http_call` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwks {
    /// With discovery, `uri` is the OpenID configuration document; the JWKS is at its
    /// `jwks_uri`, fetched through `jwks_cluster`.
    pub discovery: bool,
    pub uri: String,
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub jwks_cluster: String,
    pub timeout_ms: u64,
    /// Refresh period when the response has no `Cache-Control: max-age`.
    pub refresh_s: u64,
    /// Bounds on a `max-age` the IdP sends.
    pub refresh_min_s: u64,
    pub refresh_max_s: u64,
    /// Least time between two refetches caused by tokens with an unknown `kid`.
    pub unknown_kid_refetch_s: u64,
    /// How long the last good keys serve while the IdP cannot be reached.
    pub max_stale_s: u64,
    pub max_bytes: usize,
}

// ---- compile --------------------------------------------------------------------------

impl Config {
    /// Parses and validates the plugin configuration.
    pub fn from_json(bytes: &[u8]) -> Result<Config, ConfigError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let raw: RawConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            err(path, e.into_inner().to_string())
        })?;
        compile(raw)
    }

    pub fn provider_index(&self, name: &str) -> Option<usize> {
        self.providers.iter().position(|p| p.name == name)
    }
}

fn compile(raw: RawConfig) -> Result<Config, ConfigError> {
    let realm = raw.realm.unwrap_or_else(|| DEFAULT_REALM.to_string());
    if !is_quotable(&realm) {
        return Err(err("realm", "must be printable ASCII without '\"' or '\\'"));
    }
    if raw.providers.is_empty() {
        return Err(err("providers", "at least one provider is required"));
    }
    let mut providers = Vec::with_capacity(raw.providers.len());
    for (i, rp) in raw.providers.into_iter().enumerate() {
        let p = compile_provider(rp, &format!("providers[{i}]"))?;
        if providers.iter().any(|q: &Provider| q.name == p.name) {
            return Err(err(
                format!("providers[{i}].name"),
                format!("duplicate provider name {:?}", p.name),
            ));
        }
        providers.push(p);
    }
    let global_dry_run = raw.mode == Some(RawMode::DryRun);
    let cache_entries = raw
        .cache
        .as_ref()
        .map_or(DEFAULT_CACHE_ENTRIES, |c| c.max_entries);
    if cache_entries > 1_000_000 {
        return Err(err("cache.max_entries", "must be at most 1000000"));
    }
    // The shared cache follows the local one unless set: "caches off" means both.
    let shared_default = if cache_entries == 0 {
        0
    } else {
        DEFAULT_SHARED_ENTRIES
    };
    let shared_entries = raw
        .cache
        .as_ref()
        .and_then(|c| c.shared_entries)
        .unwrap_or(shared_default);
    let shared_entries = u32::try_from(shared_entries)
        .ok()
        .filter(|n| *n <= MAX_SHARED_ENTRIES)
        .ok_or_else(|| err("cache.shared_entries", "must be at most 100000"))?;
    let names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
    let ignore_case = raw.path_matching.is_some_and(|p| p.ignore_case);
    let mut rules = Vec::with_capacity(raw.rules.len());
    for (i, rr) in raw.rules.into_iter().enumerate() {
        rules.push(Rule::compile(rr, i, &names, global_dry_run, ignore_case)?);
    }
    let client_address = match raw.client_address {
        None => ClientAddressFrom::Peer,
        Some(c) => compile_client_address(&c)?,
    };
    let default_action = match raw.default {
        None | Some(RawDefault::Deny) => Action::Deny,
        Some(RawDefault::Allow) => Action::Anonymous,
    };
    let uses_source_address = providers.iter().any(|p| !p.ip_bindings.is_empty())
        || rules
            .iter()
            .any(|r| matches!(&r.action, Action::Require(req) if !req.ip_bindings.is_empty()));
    let mut managed_headers = vec![DRY_RUN_HEADER.to_string()];
    for p in &providers {
        let names = p.claims_to_headers.iter().map(|h| &h.header);
        for h in names.chain(p.payload_header.as_ref()) {
            if !managed_headers.contains(h) {
                managed_headers.push(h.clone());
            }
        }
    }
    Ok(Config {
        realm,
        providers,
        default_action,
        default_dry_run: global_dry_run,
        audit_allowed: raw.audit_log.as_ref().is_some_and(|a| a.allowed),
        audit_denied: raw.audit_log.as_ref().is_none_or(|a| a.denied),
        managed_headers,
        cache_entries,
        shared_entries,
        crypto: raw.crypto,
        bypass_cors_preflight: raw.bypass_cors_preflight,
        filter_state: raw.filter_state,
        uses_source_address,
        client_address,
        matcher_traits: MatcherTraits::of(rules.iter().map(|r| &r.matcher)),
        has_deny_rules: rules.iter().any(Rule::is_deny_rule),
        rules,
    })
}

fn compile_provider(rp: RawProvider, at: &str) -> Result<Provider, ConfigError> {
    if !is_stat_name(&rp.name) {
        return Err(err(format!("{at}.name"), STAT_NAME_RULE));
    }
    if rp.issuer.trim().is_empty() {
        return Err(err(format!("{at}.issuer"), "must not be empty"));
    }
    let audiences =
        match rp.audiences {
            None => return Err(err(
                format!("{at}.audiences"),
                "required: list the audiences this API accepts (the `aud` its tokens carry), or \
             \"any\" to skip the check (then a token minted for any other service of this \
             issuer passes too)",
            )),
            Some(RawAudiences::Any(a)) if a == "any" => Vec::new(),
            Some(RawAudiences::Any(_)) => {
                return Err(err(
                    format!("{at}.audiences"),
                    "a list of audiences, or \"any\"",
                ))
            }
            Some(RawAudiences::List(list)) => {
                if list.is_empty() {
                    return Err(err(
                        format!("{at}.audiences"),
                        "must not be empty (write \"any\" to skip the check)",
                    ));
                }
                if let Some(j) = list.iter().position(String::is_empty) {
                    return Err(err(format!("{at}.audiences[{j}]"), "must not be empty"));
                }
                list
            }
        };
    let mut token_types = Vec::with_capacity(rp.token_types.len());
    for (j, t) in rp.token_types.iter().enumerate() {
        let t = crate::verify::normalize_typ(t);
        if t.is_empty() || !is_token_name(&t.replace(['+', '/'], "-")) {
            return Err(err(
                format!("{at}.token_types[{j}]"),
                "must be a media type such as \"at+jwt\"",
            ));
        }
        token_types.push(t);
    }
    let keys = match (rp.remote_jwks, rp.discovery, rp.local_jwks) {
        (Some(r), None, None) => {
            KeySource::Remote(compile_remote(r, false, &format!("{at}.remote_jwks"))?)
        }
        (None, Some(d), None) => {
            KeySource::Remote(compile_remote(d, true, &format!("{at}.discovery"))?)
        }
        (None, None, Some(l)) => {
            KeySource::Local(Arc::new(compile_local(l, &format!("{at}.local_jwks"))?))
        }
        (None, None, None) => {
            return Err(err(
                at,
                "one of remote_jwks, discovery or local_jwks is required",
            ))
        }
        _ => {
            return Err(err(
                at,
                "give only one of remote_jwks, discovery and local_jwks, not both",
            ))
        }
    };
    let algorithms = match rp.algorithms {
        None => vec![Alg::Es256, Alg::Rs256],
        Some(names) => {
            if names.is_empty() {
                return Err(err(format!("{at}.algorithms"), "must not be empty"));
            }
            let mut algs = Vec::with_capacity(names.len());
            for (j, n) in names.iter().enumerate() {
                algs.push(
                    Alg::from_config_name(n)
                        .map_err(|m| err(format!("{at}.algorithms[{j}]"), m))?,
                );
            }
            algs
        }
    };
    let clock_skew_s = rp.clock_skew_s.unwrap_or(DEFAULT_CLOCK_SKEW_S);
    if clock_skew_s > MAX_SKEW_S.unsigned_abs() {
        return Err(err(format!("{at}.clock_skew_s"), "must be at most 3600"));
    }
    let max_lifetime_s = match rp.max_lifetime_s {
        Some(0) => return Err(err(format!("{at}.max_lifetime_s"), "must be at least 1")),
        other => other,
    };
    let token_sources = compile_sources(rp.from_headers, rp.from_params, rp.from_cookies, at)?;
    let role_claims = match rp.role_claims {
        None => default_role_claims(),
        Some(paths) => paths
            .iter()
            .enumerate()
            .map(|(j, p)| ClaimPath::parse(p).map_err(|m| err(format!("{at}.role_claims[{j}]"), m)))
            .collect::<Result<_, _>>()?,
    };
    let mut claims_to_headers = Vec::with_capacity(rp.claims_to_headers.len());
    for (j, ch) in rp.claims_to_headers.iter().enumerate() {
        let here = format!("{at}.claims_to_headers[{j}]");
        claims_to_headers.push(ClaimHeader {
            claim: ClaimPath::parse(&ch.claim).map_err(|m| err(format!("{here}.claim"), m))?,
            header: upstream_header(&ch.header, &format!("{here}.header"))?,
        });
    }
    let payload_header = match rp.payload_header {
        None => None,
        Some(h) => Some(upstream_header(&h, &format!("{at}.payload_header"))?),
    };
    let ip_bindings = IpBinding::compile_list(&rp.ip_bindings, &format!("{at}.ip_bindings"))?;
    Ok(Provider {
        name: rp.name,
        accepts: Acceptance {
            issuer: rp.issuer,
            algorithms,
            clock_skew_s,
            token_types,
            max_lifetime_s,
        },
        audiences,
        keys,
        token_sources,
        keep_token: rp.keep_token.unwrap_or(true),
        role_claims,
        claims_to_headers,
        payload_header,
        ip_bindings,
    })
}

fn compile_remote(r: RawRemoteJwks, discovery: bool, at: &str) -> Result<RemoteJwks, ConfigError> {
    if r.cluster.trim().is_empty() {
        return Err(err(format!("{at}.cluster"), "must name an Envoy cluster"));
    }
    let (authority, path) = split_http_uri(&r.uri).map_err(|m| err(format!("{at}.uri"), m))?;
    let jwks_cluster = match (r.jwks_cluster, discovery) {
        (None, _) => r.cluster.clone(),
        (Some(c), true) if !c.trim().is_empty() => c,
        (Some(_), true) => {
            return Err(err(
                format!("{at}.jwks_cluster"),
                "must name an Envoy cluster",
            ))
        }
        (Some(_), false) => {
            return Err(err(
                format!("{at}.jwks_cluster"),
                "only for discovery: remote_jwks fetches through its cluster",
            ))
        }
    };
    let ranged = |v: Option<u64>, default: u64, field: &str, lo: u64, hi: u64| {
        let v = v.unwrap_or(default);
        if (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(err(
                format!("{at}.{field}"),
                format!("must be between {lo} and {hi}"),
            ))
        }
    };
    const WEEK: u64 = 7 * 86_400;
    let timeout_ms = ranged(r.timeout_ms, DEFAULT_TIMEOUT_MS, "timeout_ms", 1, 60_000)?;
    let refresh_s = ranged(r.refresh_s, DEFAULT_REFRESH_S, "refresh_s", 1, WEEK)?;
    let refresh_min_s = ranged(
        r.refresh_min_s,
        DEFAULT_REFRESH_MIN_S.min(refresh_s),
        "refresh_min_s",
        1,
        WEEK,
    )?;
    let refresh_max_s = ranged(
        r.refresh_max_s,
        DEFAULT_REFRESH_MAX_S.max(refresh_s),
        "refresh_max_s",
        refresh_min_s,
        WEEK,
    )?;
    let unknown_kid_refetch_s = ranged(
        r.unknown_kid_refetch_s,
        DEFAULT_UNKNOWN_KID_REFETCH_S,
        "unknown_kid_refetch_s",
        1,
        86_400,
    )?;
    let max_stale_s = ranged(
        r.max_stale_s,
        DEFAULT_MAX_STALE_S,
        "max_stale_s",
        1,
        30 * 86_400,
    )?;
    let max_bytes = r.max_bytes.unwrap_or(DEFAULT_MAX_JWKS_BYTES);
    if !(64..=16 * 1024 * 1024).contains(&max_bytes) {
        return Err(err(
            format!("{at}.max_bytes"),
            "must be between 64 and 16777216",
        ));
    }
    Ok(RemoteJwks {
        discovery,
        uri: r.uri,
        cluster: r.cluster,
        authority,
        path,
        jwks_cluster,
        timeout_ms,
        refresh_s,
        refresh_min_s,
        refresh_max_s,
        unknown_kid_refetch_s,
        max_stale_s,
        max_bytes,
    })
}

fn compile_local(l: RawLocalJwks, at: &str) -> Result<KeySet, ConfigError> {
    let text = match l.inline {
        serde_json::Value::String(s) => s,
        v @ serde_json::Value::Object(_) => v.to_string(),
        _ => {
            return Err(err(
                format!("{at}.inline"),
                "must be a JWKS object or a JSON string",
            ))
        }
    };
    KeySet::from_json(text.as_bytes()).map_err(|e| err(format!("{at}.inline"), e.to_string()))
}

fn compile_sources(
    headers: Option<Vec<RawHeaderSource>>,
    params: Vec<String>,
    cookies: Vec<String>,
    at: &str,
) -> Result<Vec<TokenSource>, ConfigError> {
    let mut sources = Vec::new();
    let headers = headers.unwrap_or_else(|| {
        vec![RawHeaderSource {
            name: "authorization".into(),
            value_prefix: "Bearer ".into(),
        }]
    });
    for (j, h) in headers.into_iter().enumerate() {
        if !is_token_name(&h.name) {
            return Err(err(
                format!("{at}.from_headers[{j}].name"),
                "must be a header name",
            ));
        }
        sources.push(TokenSource::Header {
            name: h.name.to_ascii_lowercase().into(),
            prefix: h.value_prefix.into(),
        });
    }
    for (j, p) in params.into_iter().enumerate() {
        if p.is_empty() || p.contains(['&', '=', '?', '#']) {
            return Err(err(
                format!("{at}.from_params[{j}]"),
                "must be a query parameter name",
            ));
        }
        sources.push(TokenSource::Query(p.into()));
    }
    for (j, c) in cookies.into_iter().enumerate() {
        if !is_token_name(&c) {
            return Err(err(
                format!("{at}.from_cookies[{j}]"),
                "must be a cookie name",
            ));
        }
        sources.push(TokenSource::Cookie(c.into()));
    }
    if sources.is_empty() {
        return Err(err(
            at,
            "no token source: from_headers, from_params and from_cookies are all empty",
        ));
    }
    Ok(sources)
}

fn compile_client_address(c: &RawClientAddress) -> Result<ClientAddressFrom, ConfigError> {
    match (&c.from, c.trusted_hops) {
        (RawAddressSource::Peer, None) => Ok(ClientAddressFrom::Peer),
        (RawAddressSource::Peer, Some(_)) => Err(err(
            "client_address.trusted_hops",
            "only with \"from\": \"x-forwarded-for\"",
        )),
        (RawAddressSource::ForwardedFor, Some(n)) if (1..=16).contains(&n) => {
            Ok(ClientAddressFrom::ForwardedFor { trusted_hops: n })
        }
        (RawAddressSource::ForwardedFor, _) => Err(err(
            "client_address.trusted_hops",
            "required with x-forwarded-for: how many addresses at its right end were \
             written by proxies you trust (1 to 16)",
        )),
    }
}

/// A header the filter sets upstream: a plain lower-case name that is not one Envoy or
/// the request's meaning depends on.
fn upstream_header(name: &str, at: &str) -> Result<String, ConfigError> {
    const RESERVED: [&str; 9] = [
        "host",
        "authorization",
        "cookie",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "te",
        "upgrade",
    ];
    let lower = name.to_ascii_lowercase();
    if !is_token_name(&lower) || RESERVED.contains(&lower.as_str()) || lower.starts_with("x-envoy-")
    {
        return Err(err(at, format!("{name:?} cannot be set by the filter")));
    }
    if lower == DRY_RUN_HEADER {
        return Err(err(
            at,
            format!("{DRY_RUN_HEADER} is the filter's own dry-run header"),
        ));
    }
    Ok(lower)
}

/// `http(s)://authority/path?query` -> (authority, path-and-query).
pub fn split_http_uri(uri: &str) -> Result<(String, String), String> {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains(['@', ' ']) {
        return Err("must have a host".into());
    }
    let path = path.split('#').next().unwrap_or("/");
    Ok((authority.to_string(), path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Check;

    const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

    fn base() -> serde_json::Value {
        serde_json::json!({
            "providers": [{
                "name": "corp",
                "issuer": "https://auth.example.com",
                "audiences": ["https://api.example.com"],
                "remote_jwks": {"uri": "https://auth.example.com/.well-known/jwks.json", "cluster": "auth"}
            }],
            "rules": [
                {"match": {"path_prefix": "/health"}, "allow": "anonymous"},
                {"match": {"methods": ["get"], "path_prefix": "/workflows"},
                 "require": {"providers": ["corp"], "scopes": ["workflow:read"]}}
            ]
        })
    }

    fn load(v: serde_json::Value) -> Result<Config, ConfigError> {
        Config::from_json(v.to_string().as_bytes())
    }

    #[test]
    fn design_example_compiles_with_defaults() {
        let c = load(base()).unwrap();
        assert_eq!(c.realm, "jwt-guard");
        let p = &c.providers[0];
        assert_eq!(p.accepts.algorithms, vec![Alg::Es256, Alg::Rs256]);
        assert_eq!(p.accepts.clock_skew_s, 60);
        assert!(p.keep_token);
        match &p.keys {
            KeySource::Remote(r) => {
                assert_eq!(r.authority, "auth.example.com");
                assert_eq!(r.path, "/.well-known/jwks.json");
                assert_eq!(r.timeout_ms, DEFAULT_TIMEOUT_MS);
                assert_eq!(r.refresh_s, DEFAULT_REFRESH_S);
            }
            KeySource::Local(_) => panic!("expected remote"),
        }
        assert_eq!(c.rules[1].matcher.methods, vec!["GET"]);
        assert!(matches!(c.default_action, Action::Deny));
    }

    #[test]
    fn cache_sizes_default_together_and_are_bounded() {
        let sizes = |cache: serde_json::Value| {
            let mut v = base();
            v["cache"] = cache;
            load(v).map(|c| (c.cache_entries, c.shared_entries))
        };
        assert_eq!(sizes(serde_json::json!({})), Ok((1024, 1024)));
        assert_eq!(
            sizes(serde_json::json!({"max_entries": 10})),
            Ok((10, 1024))
        );
        // Caches off means both, unless the shared one is asked for.
        assert_eq!(sizes(serde_json::json!({"max_entries": 0})), Ok((0, 0)));
        assert_eq!(
            sizes(serde_json::json!({"max_entries": 0, "shared_entries": 8})),
            Ok((0, 8))
        );
        assert_eq!(
            sizes(serde_json::json!({"shared_entries": 0})),
            Ok((1024, 0))
        );
        let e = sizes(serde_json::json!({"shared_entries": 100_001})).unwrap_err();
        assert_eq!(e.path, "cache.shared_entries");
        let e = sizes(serde_json::json!({"shared_entries": -1})).unwrap_err();
        assert!(e.path.starts_with("cache"), "{e}");
    }

    #[test]
    fn unknown_field_names_its_path() {
        let mut v = base();
        v["providers"][0]["remote_jwks"]["clutser"] = "x".into();
        let e = load(v).unwrap_err();
        assert!(e.to_string().starts_with("providers[0].remote_jwks"), "{e}");
        assert!(e.to_string().contains("clutser"), "{e}");
    }

    #[test]
    fn missing_issuer_names_the_provider() {
        let mut v = base();
        v["providers"][0].as_object_mut().unwrap().remove("issuer");
        let e = load(v).unwrap_err();
        assert_eq!(e.path, "providers[0]");
        assert!(e.message.contains("issuer"), "{e}");
    }

    #[test]
    fn audiences_are_required_and_any_is_explicit() {
        let mut v = base();
        v["providers"][0]
            .as_object_mut()
            .unwrap()
            .remove("audiences");
        let e = load(v).unwrap_err();
        assert_eq!(e.path, "providers[0].audiences");
        assert!(e.message.contains("\"any\""), "{e}");
        for bad in [
            serde_json::json!([]),
            serde_json::json!(["a", ""]),
            "all".into(),
        ] {
            let mut v = base();
            v["providers"][0]["audiences"] = bad.clone();
            assert!(
                load(v)
                    .unwrap_err()
                    .path
                    .starts_with("providers[0].audiences"),
                "{bad}"
            );
        }
        let mut v = base();
        v["providers"][0]["audiences"] = "any".into();
        assert!(load(v).unwrap().providers[0].audiences.is_empty());
    }

    #[test]
    fn token_types_client_address_and_case() {
        let mut v = base();
        v["providers"][0]["token_types"] = serde_json::json!(["application/AT+JWT", "jwt"]);
        v["client_address"] = serde_json::json!({"from": "x-forwarded-for", "trusted_hops": 2});
        v["path_matching"] = serde_json::json!({"ignore_case": true});
        v["rules"][0]["match"]["ignore_case"] = false.into();
        let c = load(v).unwrap();
        assert_eq!(c.providers[0].accepts.token_types, vec!["at+jwt", "jwt"]);
        assert_eq!(
            c.client_address,
            ClientAddressFrom::ForwardedFor { trusted_hops: 2 }
        );
        assert!(
            !c.rules[0].matcher.ignore_case,
            "the rule's own setting wins"
        );
        assert!(c.rules[1].matcher.ignore_case);
        assert_eq!(
            load(base()).unwrap().client_address,
            ClientAddressFrom::Peer
        );
        let bad = [
            (
                "client_address",
                serde_json::json!({"from": "x-forwarded-for"}),
            ),
            (
                "client_address",
                serde_json::json!({"from": "peer", "trusted_hops": 1}),
            ),
            (
                "client_address",
                serde_json::json!({"from": "x-forwarded-for", "trusted_hops": 0}),
            ),
            ("client_address", serde_json::json!({"from": "header"})),
        ];
        for (field, value) in bad {
            let mut v = base();
            v[field] = value.clone();
            assert!(load(v).unwrap_err().path.starts_with(field), "{value}");
        }
        let mut v = base();
        v["providers"][0]["token_types"] = serde_json::json!(["a b"]);
        assert_eq!(load(v).unwrap_err().path, "providers[0].token_types[0]");
        let mut v = base();
        v["rules"][0]["match"]["host"] = "api.example.com:443".into();
        assert_eq!(load(v).unwrap_err().path, "rules[0].match.host");
    }

    #[test]
    fn rule_naming_unknown_provider_is_refused() {
        let mut v = base();
        v["rules"][1]["require"]["providers"][0] = "nope".into();
        let e = load(v).unwrap_err();
        assert_eq!(e.path, "rules[1].require.providers[0]");
    }

    #[test]
    fn symmetric_and_none_algorithms_are_refused() {
        for alg in ["HS256", "none", "ES999"] {
            let mut v = base();
            v["providers"][0]["algorithms"] = serde_json::json!(["ES256", alg]);
            let e = load(v).unwrap_err();
            assert_eq!(e.path, "providers[0].algorithms[1]", "{alg}");
        }
    }

    #[test]
    fn both_or_neither_key_source_is_refused() {
        let mut v = base();
        v["providers"][0]["local_jwks"] = serde_json::json!({"inline": JWKS});
        assert!(load(v).unwrap_err().message.contains("not both"));
        let mut v = base();
        v["providers"][0]
            .as_object_mut()
            .unwrap()
            .remove("remote_jwks");
        assert!(load(v).unwrap_err().message.contains("required"));
    }

    #[test]
    fn discovery_with_a_separate_jwks_cluster() {
        let mut v = base();
        v["providers"][0]
            .as_object_mut()
            .unwrap()
            .remove("remote_jwks");
        v["providers"][0]["discovery"] = serde_json::json!({
            "uri": "https://auth.example.com/.well-known/openid-configuration",
            "cluster": "auth", "jwks_cluster": "auth_keys"});
        let c = load(v).unwrap();
        match &c.providers[0].keys {
            KeySource::Remote(r) => {
                assert!(r.discovery);
                assert_eq!(r.cluster, "auth");
                assert_eq!(r.jwks_cluster, "auth_keys");
            }
            KeySource::Local(_) => panic!("expected remote"),
        }
        let mut v = base();
        v["providers"][0]["remote_jwks"]["jwks_cluster"] = "x".into();
        assert_eq!(
            load(v).unwrap_err().path,
            "providers[0].remote_jwks.jwks_cluster"
        );
        let mut v = base();
        v["providers"][0]["discovery"] = serde_json::json!({"uri": "https://a/", "cluster": "a"});
        assert!(load(v).unwrap_err().message.contains("not both"));
    }

    #[test]
    fn refresh_bounds_and_limits_are_checked() {
        let mut v = base();
        v["providers"][0]["remote_jwks"]["refresh_min_s"] = 600.into();
        v["providers"][0]["remote_jwks"]["refresh_max_s"] = 60.into();
        assert_eq!(
            load(v).unwrap_err().path,
            "providers[0].remote_jwks.refresh_max_s"
        );
        let mut v = base();
        v["providers"][0]["remote_jwks"]["max_bytes"] = 10.into();
        assert_eq!(
            load(v).unwrap_err().path,
            "providers[0].remote_jwks.max_bytes"
        );
        let mut v = base();
        v["providers"][0]["remote_jwks"]["max_stale_s"] = 0.into();
        assert_eq!(
            load(v).unwrap_err().path,
            "providers[0].remote_jwks.max_stale_s"
        );
        let c = load(base()).unwrap();
        match &c.providers[0].keys {
            KeySource::Remote(r) => {
                assert_eq!((r.refresh_min_s, r.refresh_max_s), (30, 3_600));
                assert_eq!(r.unknown_kid_refetch_s, 10);
                assert_eq!(r.max_stale_s, 86_400);
                assert_eq!(r.max_bytes, 256 * 1024);
            }
            KeySource::Local(_) => panic!("expected remote"),
        }
    }

    #[test]
    fn requirement_trees_compile_and_name_bad_fields() {
        let mut v = base();
        v["rules"][1]["require"] = serde_json::json!({
            "any": [{"roles": {"any_of": ["admin", "my-api:reader"]}},
                    {"principals": {"email": ["*@proj.iam.gserviceaccount.com"]}, "claims": {"email_verified": true}}],
            "audiences": ["https://svc.a.run.app"], "allow_missing": true,
            "ip_bindings": [{"principals": {"client_id": ["val_svc_*"]}, "cidrs": ["10.0.1.0/24", "10.0.2.7"]}]});
        v["rules"][1]["name"] = "workflows-read".into();
        v["rules"][1]["mode"] = "dry_run".into();
        let c = load(v).unwrap();
        let r = &c.rules[1];
        assert_eq!(r.name, "workflows-read");
        assert!(r.dry_run);
        assert!(!c.rules[0].dry_run);
        match &r.action {
            Action::Require(req) => {
                assert!(req.allow_missing);
                assert_eq!(
                    req.audiences.as_deref(),
                    Some(&["https://svc.a.run.app".to_string()][..])
                );
                assert_eq!(req.ip_bindings[0].cidrs.len(), 2);
                assert!(matches!(&req.check, Check::Any(list) if list.len() == 2));
            }
            _ => panic!("expected require"),
        }
        let bad = [
            (serde_json::json!({"any": []}), "rules[1].require.any"),
            (
                serde_json::json!({"all": [{"audiences": ["x"]}]}),
                "rules[1].require.all[0].audiences",
            ),
            (
                serde_json::json!({"roles": {"one_of": ["x"]}}),
                "rules[1].require.roles",
            ),
            (serde_json::json!({"scopes": []}), "rules[1].require.scopes"),
            (
                serde_json::json!({"principals": {"sub": ["a*b"]}}),
                "rules[1].require.principals.sub[0]",
            ),
            (
                serde_json::json!({"principals": ["someone@example.com"]}),
                "rules[1].require.principals",
            ),
            (
                serde_json::json!({"principals": {"email": []}}),
                "rules[1].require.principals.email",
            ),
            (
                serde_json::json!({"claims": {"a..b": [1]}}),
                "rules[1].require.claims.a..b",
            ),
            (
                serde_json::json!({"ip_bindings": [{"principals": {"sub": ["x"]}, "cidrs": ["10.0.0.0/33"]}]}),
                "rules[1].require.ip_bindings[0].cidrs[0]",
            ),
            (
                serde_json::json!({"any": [{"providers": ["nope"]}]}),
                "rules[1].require.any[0].providers[0]",
            ),
        ];
        for (require, path) in bad {
            let mut v = base();
            v["rules"][1]["require"] = require;
            assert_eq!(load(v).unwrap_err().path, path);
        }
    }

    #[test]
    fn deny_rules_not_headers_and_lifetimes_name_bad_fields() {
        let mut v = base();
        v["rules"][0] = serde_json::json!({"match": {"path_prefix": "/admin",
            "headers": [{"name": "X-Env", "exact": "prod"}], "not": {"methods": ["GET"]}},
            "deny": {"not": {"principals": {"sub": ["ops-*"]}}}});
        let c = load(v).unwrap();
        assert!(c.has_deny_rules && c.rules[0].is_deny_rule());
        assert_eq!(c.rules[0].matcher.headers[0].name, "x-env");
        assert!(!load(base()).unwrap().has_deny_rules);
        let bad_rules = [
            (serde_json::json!({"deny": "sometimes"}), "rules[0].deny"),
            (serde_json::json!({"deny": {}}), "rules[0].deny"),
            (
                serde_json::json!({"deny": {"not": {}}}),
                "rules[0].deny.not",
            ),
            (
                serde_json::json!({"deny": {"allow_missing": true, "scopes": ["a"]}}),
                "rules[0].deny.allow_missing",
            ),
            (
                serde_json::json!({"deny": "always", "allow": "anonymous"}),
                "rules[0]",
            ),
            (
                serde_json::json!({"require": {"allow_failed": true, "allow_missing": false}}),
                "rules[0].require.allow_missing",
            ),
            (
                serde_json::json!({"require": {"any": [{"allow_failed": true}]}}),
                "rules[0].require.any[0].allow_failed",
            ),
            (
                serde_json::json!({"match": {"headers": [{"name": "x", "exact": "a", "prefix": "b"}]}, "allow": "anonymous"}),
                "rules[0].match.headers[0]",
            ),
            (
                serde_json::json!({"match": {"headers": [{"name": ":path", "present": true}]}, "allow": "anonymous"}),
                "rules[0].match.headers[0].name",
            ),
            (
                serde_json::json!({"match": {"not": {"host": "a.*.com"}}, "allow": "anonymous"}),
                "rules[0].match.not.host",
            ),
        ];
        for (rule, path) in bad_rules {
            let mut v = base();
            v["rules"][0] = rule;
            assert_eq!(load(v).unwrap_err().path, path);
        }
        let mut v = base();
        v["providers"][0]["max_lifetime_s"] = 0.into();
        assert_eq!(load(v).unwrap_err().path, "providers[0].max_lifetime_s");
        let mut v = base();
        v["rules"][1]["require"] = serde_json::json!({"allow_failed": true});
        match &load(v).unwrap().rules[1].action {
            Action::Require(r) => assert!(r.allow_failed && r.allow_missing),
            _ => panic!("expected require"),
        }
    }

    #[test]
    fn templates_and_identity_headers() {
        let mut v = base();
        v["rules"][1]["match"] = serde_json::json!({"path_template": "/workflows/{id}/steps"});
        v["providers"][0]["claims_to_headers"] = serde_json::json!([
            {"claim": "sub", "header": "X-JWT-Sub"}, {"claim": "realm_access.roles", "header": "x-jwt-roles"}]);
        v["providers"][0]["payload_header"] = "x-jwt-payload".into();
        let c = load(v).unwrap();
        assert_eq!(
            c.managed_headers,
            vec![
                "x-jwt-guard-dry-run",
                "x-jwt-sub",
                "x-jwt-roles",
                "x-jwt-payload"
            ]
        );
        for (field, value) in [
            ("payload_header", serde_json::json!("authorization")),
            ("payload_header", serde_json::json!("x-jwt-guard-dry-run")),
            (
                "claims_to_headers",
                serde_json::json!([{"claim": "sub", "header": "bad header"}]),
            ),
        ] {
            let mut v = base();
            v["providers"][0][field] = value;
            assert!(load(v)
                .unwrap_err()
                .path
                .starts_with(&format!("providers[0].{field}")));
        }
        let mut v = base();
        v["rules"][0]["match"] = serde_json::json!({"path": "/a", "path_template": "/b"});
        assert_eq!(load(v).unwrap_err().path, "rules[0].match");
        let mut v = base();
        v["rules"][0]["match"] = serde_json::json!({"path_template": "/a/**/b"});
        assert_eq!(load(v).unwrap_err().path, "rules[0].match.path_template");
    }

    #[test]
    fn local_jwks_is_parsed_at_load() {
        let mut v = base();
        v["providers"][0]
            .as_object_mut()
            .unwrap()
            .remove("remote_jwks");
        v["providers"][0]["local_jwks"] = serde_json::json!({"inline": JWKS});
        let c = load(v).unwrap();
        assert!(matches!(&c.providers[0].keys, KeySource::Local(k) if k.len() == 1));

        let mut v = base();
        v["providers"][0]
            .as_object_mut()
            .unwrap()
            .remove("remote_jwks");
        v["providers"][0]["local_jwks"] = serde_json::json!({"inline": "{not json"});
        assert_eq!(load(v).unwrap_err().path, "providers[0].local_jwks.inline");
    }

    #[test]
    fn bad_uri_path_and_timeout_are_refused() {
        let mut v = base();
        v["providers"][0]["remote_jwks"]["uri"] = "ftp://x/jwks".into();
        assert_eq!(load(v).unwrap_err().path, "providers[0].remote_jwks.uri");
        let mut v = base();
        v["providers"][0]["remote_jwks"]["timeout_ms"] = 0.into();
        assert_eq!(
            load(v).unwrap_err().path,
            "providers[0].remote_jwks.timeout_ms"
        );
        let mut v = base();
        v["rules"][0]["match"]["path_prefix"] = "health".into();
        assert_eq!(load(v).unwrap_err().path, "rules[0].match.path_prefix");
    }

    #[test]
    fn wrong_type_names_its_path() {
        let mut v = base();
        v["providers"][0]["clock_skew_s"] = "sixty".into();
        assert_eq!(load(v).unwrap_err().path, "providers[0].clock_skew_s");
        assert!(Config::from_json(b"not json").is_err());
        assert!(Config::from_json(b"").is_err());
    }

    #[test]
    fn duplicate_provider_names_are_refused() {
        let mut v = base();
        let p = v["providers"][0].clone();
        v["providers"].as_array_mut().unwrap().push(p);
        assert_eq!(load(v).unwrap_err().path, "providers[1].name");
    }

    #[test]
    fn rule_needs_exactly_one_action() {
        let mut v = base();
        v["rules"][0]["allow"] = "everyone".into();
        assert_eq!(load(v).unwrap_err().path, "rules[0].allow");
        let mut v = base();
        v["rules"][0].as_object_mut().unwrap().remove("allow");
        assert_eq!(load(v).unwrap_err().path, "rules[0]");
    }

    #[test]
    fn default_allow_and_empty_require_providers() {
        let mut v = base();
        v["default"] = "allow".into();
        v["rules"][1]["require"]
            .as_object_mut()
            .unwrap()
            .remove("providers");
        let c = load(v).unwrap();
        assert!(matches!(c.default_action, Action::Anonymous));
        match &c.rules[1].action {
            Action::Require(r) => assert_eq!(r.providers, vec![0]),
            _ => panic!("expected require"),
        }
    }
}
