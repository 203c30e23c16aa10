//! The plugin JSON as written: serde types that refuse unknown fields (so a typo never
//! silently weakens a rule), the error that names a field by its JSON path, and the small
//! validations every part of the configuration shares. `config.rs` compiles it, with each
//! rule node built next to its type (`policy.rs`, `routing/matcher.rs`).

use std::fmt;

use serde::Deserialize;

/// A configuration problem, with the JSON path of the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.path == "." {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

pub(crate) fn err(path: impl Into<String>, message: impl fmt::Display) -> ConfigError {
    ConfigError {
        path: path.into(),
        message: message.to_string(),
    }
}

/// Who checks signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum CryptoBackend {
    /// The host's crypto where it has it (Envoy's BoringSSL), pure Rust otherwise.
    #[default]
    Auto,
    /// Always pure Rust.
    Rust,
}

/// The jwt-guard plugin configuration: the `configuration` value of the Envoy wasm filter
/// (or Istio `WasmPlugin.pluginConfig`). Unknown fields are refused everywhere.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    /// The `realm` of `WWW-Authenticate` (default "jwt-guard").
    #[serde(default)]
    pub(crate) realm: Option<String>,
    /// Token issuers; at least one.
    pub(crate) providers: Vec<RawProvider>,
    /// Tried in order: the first rule whose `match` fits decides (every rule any reading
    /// of the request selects must let it through).
    #[serde(default)]
    pub(crate) rules: Vec<RawRule>,
    /// When no rule matches: "deny" (403 AUTH_120, the default) or "allow".
    #[serde(default)]
    pub(crate) default: Option<RawDefault>,
    /// "dry_run": every rule reports instead of refusing (a rule's own `mode` wins).
    #[serde(default)]
    pub(crate) mode: Option<RawMode>,
    /// One JSON log line per decision: denials unless `denied` is false, allowed requests
    /// when `allowed` is true.
    #[serde(default)]
    pub(crate) audit_log: Option<RawAudit>,
    /// Verified tokens each worker remembers (default 1024).
    #[serde(default)]
    pub(crate) cache: Option<RawCache>,
    /// Who checks signatures: "auto" (the host's crypto where it has it) or "rust".
    #[serde(default)]
    pub(crate) crypto: CryptoBackend,
    /// true: a CORS preflight (OPTIONS with Origin and Access-Control-Request-Method, no
    /// method override) passes without a token, unless the default or an unconditional
    /// deny rule refuses everyone (default false).
    #[serde(default)]
    pub(crate) bypass_cors_preflight: bool,
    /// true: each decision is also set as Envoy filter state (`wasm.jwt_guard.sub`, ...)
    /// for access logs, RBAC and CEL (default false: up to 7 host calls a request).
    #[serde(default)]
    pub(crate) filter_state: bool,
    /// Path comparison defaults for every rule.
    #[serde(default)]
    pub(crate) path_matching: Option<RawPathMatching>,
    /// The address `ip_bindings` check (default: the TCP peer).
    #[serde(default)]
    pub(crate) client_address: Option<RawClientAddress>,
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPathMatching {
    /// Every rule's path compares case-insensitively (a rule's `match.ignore_case` wins).
    #[serde(default)]
    pub(crate) ignore_case: bool,
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClientAddress {
    /// "peer" (the TCP peer Envoy reports) or "x-forwarded-for".
    pub(crate) from: RawAddressSource,
    /// With "x-forwarded-for" (required then, 1 to 16): how many addresses at its right end
    /// were written by proxies you trust.
    #[serde(default)]
    pub(crate) trusted_hops: Option<usize>,
}

#[derive(Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) enum RawAddressSource {
    #[serde(rename = "peer")]
    Peer,
    #[serde(rename = "x-forwarded-for")]
    ForwardedFor,
}

/// `["aud", ...]`, or `"any"` to skip the check.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub(crate) enum RawAudiences {
    List(Vec<String>),
    Any(String),
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCache {
    /// Verified tokens each worker remembers; 0 turns the cache off (at most 1000000;
    /// default 1024).
    #[serde(default = "default_cache_entries")]
    pub(crate) max_entries: usize,
    /// Slots of the cache all workers share (one token each); 0 turns it off (at most
    /// 100000; default 1024, or 0 when `max_entries` is 0).
    pub(crate) shared_entries: Option<usize>,
}

fn default_cache_entries() -> usize {
    crate::config::DEFAULT_CACHE_ENTRIES
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawMode {
    Enforce,
    DryRun,
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAudit {
    /// Log allowed requests (default false).
    #[serde(default)]
    pub(crate) allowed: bool,
    /// Log denied requests (default true).
    #[serde(default = "yes")]
    pub(crate) denied: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProvider {
    /// Unique; names stats and shared data: ASCII letters, digits, '-', '_' and '~'.
    pub(crate) name: String,
    /// `iss` must equal it exactly.
    pub(crate) issuer: String,
    /// Required: `aud` must contain one of these, or "any" to skip the check (then a token
    /// the same issuer minted for any other service passes too).
    #[serde(default)]
    pub(crate) audiences: Option<RawAudiences>,
    /// Accepted `typ` header values, e.g. ["at+jwt"]; empty: `typ` is not checked.
    #[serde(default)]
    pub(crate) token_types: Vec<String>,
    /// Fetch the JWKS through an Envoy cluster.
    #[serde(default)]
    pub(crate) remote_jwks: Option<RawRemoteJwks>,
    /// Fetch the OpenID configuration, check its issuer, then fetch its `jwks_uri`.
    #[serde(default)]
    pub(crate) discovery: Option<RawRemoteJwks>,
    /// Keys in the configuration itself.
    #[serde(default)]
    pub(crate) local_jwks: Option<RawLocalJwks>,
    /// Allowed `alg`s (default ["ES256", "RS256"]): ES256, RS256, RS384, RS512, PS256, PS384,
    /// PS512, EdDSA.
    #[serde(default)]
    pub(crate) algorithms: Option<Vec<String>>,
    /// Leeway on `exp` and `nbf` in seconds (default 60, at most 3600).
    #[serde(default)]
    pub(crate) clock_skew_s: Option<u64>,
    /// Headers holding the token (default: `Authorization: Bearer <token>`).
    #[serde(default)]
    pub(crate) from_headers: Option<Vec<RawHeaderSource>>,
    /// Query parameters holding the token.
    #[serde(default)]
    pub(crate) from_params: Vec<String>,
    /// Cookies holding the token.
    #[serde(default)]
    pub(crate) from_cookies: Vec<String>,
    /// false: remove the token before forwarding (default true).
    #[serde(default)]
    pub(crate) keep_token: Option<bool>,
    /// Where roles are read (default ["realm_access.roles", "resource_access.*.roles"]).
    #[serde(default)]
    pub(crate) role_claims: Option<Vec<String>>,
    /// Verified claims forwarded upstream as headers.
    #[serde(default)]
    pub(crate) claims_to_headers: Vec<RawClaimHeader>,
    /// A header carrying the verified payload (base64url JSON) upstream.
    #[serde(default)]
    pub(crate) payload_header: Option<String>,
    /// Callers a binding names must call from its networks (403 AUTH_104).
    #[serde(default)]
    pub(crate) ip_bindings: Vec<RawIpBinding>,
    /// The longest lifetime (`exp - iat`) a token may claim.
    #[serde(default)]
    pub(crate) max_lifetime_s: Option<u64>,
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClaimHeader {
    /// A dotted claim path, e.g. realm_access.roles.
    pub(crate) claim: String,
    /// The request header upstream that carries it.
    pub(crate) header: String,
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIpBinding {
    /// The callers bound: {"<claim>": ["pattern", ...]}; a pattern is `name`, `prefix*`,
    /// `*suffix` or `*`.
    pub(crate) principals: serde_json::Value,
    /// Networks they may call from: IP addresses or CIDRs like 10.0.1.0/24.
    pub(crate) cidrs: Vec<String>,
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRemoteJwks {
    /// http(s)://host/path of the JWKS (or of the discovery document).
    pub(crate) uri: String,
    /// The Envoy cluster that reaches it.
    pub(crate) cluster: String,
    /// Discovery only: the cluster that reaches the host of the discovered `jwks_uri`.
    #[serde(default)]
    pub(crate) jwks_cluster: Option<String>,
    /// Per callout, in ms (default 2000).
    #[serde(default)]
    pub(crate) timeout_ms: Option<u64>,
    /// Refresh period when the response has no `Cache-Control: max-age` (default 300).
    #[serde(default)]
    pub(crate) refresh_s: Option<u64>,
    /// Lower bound on the IdP's `max-age` (default 30).
    #[serde(default)]
    pub(crate) refresh_min_s: Option<u64>,
    /// Upper bound on the IdP's `max-age` (default 3600).
    #[serde(default)]
    pub(crate) refresh_max_s: Option<u64>,
    /// Least time between refetches caused by tokens with an unknown `kid` (default 10).
    #[serde(default)]
    pub(crate) unknown_kid_refetch_s: Option<u64>,
    /// How long the last good keys serve while the IdP is unreachable (default 86400).
    #[serde(default)]
    pub(crate) max_stale_s: Option<u64>,
    /// A larger JWKS is refused (default 262144).
    #[serde(default)]
    pub(crate) max_bytes: Option<usize>,
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLocalJwks {
    /// The JWKS, as a JSON string or as an object.
    pub(crate) inline: serde_json::Value,
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderSource {
    /// The header name.
    pub(crate) name: String,
    /// What precedes the token, compared case-insensitively (e.g. "Bearer ").
    #[serde(default)]
    pub(crate) value_prefix: String,
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    /// Names the rule in the audit log, filter state and stats (default `rule-<index>`):
    /// ASCII letters, digits, '-', '_' and '~'.
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// Which requests the rule applies to; absent: every request.
    #[serde(default, rename = "match")]
    pub(crate) matcher: RawMatch,
    /// "anonymous": no token needed.
    #[serde(default)]
    pub(crate) allow: Option<String>,
    /// What the token must meet.
    #[serde(default)]
    pub(crate) require: Option<RawRequire>,
    /// A deny rule: refuses every request it matches whose token meets the condition.
    #[serde(default)]
    pub(crate) deny: Option<RawDeny>,
    /// "dry_run" (report, never refuse) or "enforce".
    #[serde(default)]
    pub(crate) mode: Option<RawMode>,
}

/// `"always"`, or a condition on the token (the language of `require`).
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub(crate) enum RawDeny {
    Always(String),
    When(Box<RawRequire>),
}

#[derive(Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMatch {
    /// The exact path (query string ignored).
    #[serde(default)]
    pub(crate) path: Option<String>,
    /// A segment-aware prefix: /health matches /health and /health/live, not /healthz.
    #[serde(default)]
    pub(crate) path_prefix: Option<String>,
    /// /workflows/{id}/steps: `{name}` and `*` match one segment, a final `**` the rest.
    #[serde(default)]
    pub(crate) path_template: Option<String>,
    /// HTTP methods; empty: any.
    #[serde(default)]
    pub(crate) methods: Vec<String>,
    /// api.example.com or *.example.com, case-insensitive; end with :* to accept a port.
    #[serde(default)]
    pub(crate) host: Option<String>,
    /// Compare this rule's path case-insensitively (default: `path_matching.ignore_case`).
    #[serde(default)]
    pub(crate) ignore_case: Option<bool>,
    /// Conditions on request headers, all of which must hold.
    #[serde(default)]
    pub(crate) headers: Vec<RawHeaderMatch>,
    /// Matches only requests this does not match.
    #[serde(default)]
    pub(crate) not: Option<Box<RawMatch>>,
}

/// A condition on one request header: give one of `exact`, `prefix` and `present`.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderMatch {
    /// The header name (any case).
    pub(crate) name: String,
    /// The value equals this.
    #[serde(default)]
    pub(crate) exact: Option<String>,
    /// The value starts with this.
    #[serde(default)]
    pub(crate) prefix: Option<String>,
    /// true: the header is present; false: it is absent.
    #[serde(default)]
    pub(crate) present: Option<bool>,
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRequire {
    /// The token must come from one of these providers (default: any).
    #[serde(default)]
    pub(crate) providers: Vec<String>,
    /// Scopes read from `scope` and `scp`: a list (all of them), {"all_of": [...]} or
    /// {"any_of": [...]}.
    #[serde(default)]
    pub(crate) scopes: Option<RawNames>,
    /// Roles read from the provider's `role_claims`, as `scopes`.
    #[serde(default)]
    pub(crate) roles: Option<RawNames>,
    /// {"<claim>": ["pattern", ...]}: a listed claim matches one of its own patterns.
    #[serde(default)]
    pub(crate) principals: Option<serde_json::Value>,
    /// {"<dotted claim path>": [values]}: the claim equals one of the values.
    #[serde(default)]
    pub(crate) claims: Option<serde_json::Map<String, serde_json::Value>>,
    /// Requirements that must all be met.
    #[serde(default)]
    pub(crate) all: Option<Vec<RawRequire>>,
    /// Requirements of which one must be met.
    #[serde(default)]
    pub(crate) any: Option<Vec<RawRequire>>,
    /// A requirement that must not be met.
    #[serde(default)]
    pub(crate) not: Option<Box<RawRequire>>,
    // Rule level only:
    /// Top level only: replaces the provider's audiences for this rule.
    #[serde(default)]
    pub(crate) audiences: Option<Vec<String>>,
    /// Top level only: no token is fine; a token that is sent must be valid and meet the rest.
    #[serde(default)]
    pub(crate) allow_missing: Option<bool>,
    /// Top level only: a token that fails verification is taken as no token (implies
    /// allow_missing).
    #[serde(default)]
    pub(crate) allow_failed: Option<bool>,
    /// Top level only: as the provider's `ip_bindings`, for this rule.
    #[serde(default)]
    pub(crate) ip_bindings: Vec<RawIpBinding>,
}

/// `["a", "b"]` (all of them), `{"all_of": [...]}` or `{"any_of": [...]}`.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub(crate) enum RawNames {
    List(Vec<String>),
    Spec(RawNameSpec),
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNameSpec {
    /// All of these.
    #[serde(default)]
    pub(crate) all_of: Option<Vec<String>>,
    /// At least one of these.
    #[serde(default)]
    pub(crate) any_of: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawDefault {
    Deny,
    Allow,
}

pub(crate) fn check_path(p: &str, at: &str) -> Result<(), ConfigError> {
    if !p.starts_with('/') {
        return Err(err(at, "must start with '/'"));
    }
    if p.contains(['?', '#']) {
        return Err(err(at, "must not contain a query or fragment"));
    }
    Ok(())
}

/// RFC 7230 token characters: header names, methods, cookie names.
pub(crate) fn is_token_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A name that is one part of a stat name (rules, providers): ASCII letters, digits, `-`,
/// `_` and `~`. No `.`, which separates the parts: `stats_tags` regexes could not tell a
/// rule `a.b` from a rule `a` and a stat `b`.
pub(crate) fn is_stat_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_~".contains(&b))
}

pub(crate) const STAT_NAME_RULE: &str =
    "letters, digits, '-', '_' and '~' only: it names stats, whose parts '.' separates";

/// Can appear inside a quoted-string of a WWW-Authenticate parameter (RFC 6750 §3).
pub fn is_quotable(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\')
}

/// A value of the configuration whose syntax is wrong; [`ConfigError`] adds where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyntaxError {
    #[error("a pattern is a name, \"prefix*\", \"*suffix\" or \"*\"")]
    Pattern,
    #[error("a claim path is dot-separated names, like realm_access.roles")]
    ClaimPath,
    #[error(
        "must be a host name, optionally starting with \"*.\" and ending with \":*\" (any \
         port); no trailing dot, user info or port number"
    )]
    HostName,
    #[error("a wildcard must be \"*.\" followed by a domain")]
    HostWildcard,
    #[error("\"**\" may only end a template")]
    TemplateRest,
    #[error("segment {0:?}: use {{name}}, * or a final **")]
    TemplateSegment(String),
    #[error("{0} is symmetric: a public JWKS cannot verify it safely, so it is not supported")]
    SymmetricAlgorithm(String),
    #[error("unsupported algorithm {name:?}; use one of {known}")]
    UnknownAlgorithm { name: String, known: String },
}
