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
#[serde(rename_all = "snake_case")]
pub enum CryptoBackend {
    /// The host's crypto where it has it (Envoy's BoringSSL), pure Rust otherwise.
    #[default]
    Auto,
    /// Always pure Rust.
    Rust,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub(crate) realm: Option<String>,
    pub(crate) providers: Vec<RawProvider>,
    #[serde(default)]
    pub(crate) rules: Vec<RawRule>,
    #[serde(default)]
    pub(crate) default: Option<RawDefault>,
    #[serde(default)]
    pub(crate) mode: Option<RawMode>,
    #[serde(default)]
    pub(crate) audit_log: Option<RawAudit>,
    #[serde(default)]
    pub(crate) cache: Option<RawCache>,
    #[serde(default)]
    pub(crate) crypto: CryptoBackend,
    #[serde(default)]
    pub(crate) path_matching: Option<RawPathMatching>,
    #[serde(default)]
    pub(crate) client_address: Option<RawClientAddress>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPathMatching {
    #[serde(default)]
    pub(crate) ignore_case: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClientAddress {
    pub(crate) from: RawAddressSource,
    #[serde(default)]
    pub(crate) trusted_hops: Option<usize>,
}

#[derive(Deserialize, PartialEq, Eq)]
pub(crate) enum RawAddressSource {
    #[serde(rename = "peer")]
    Peer,
    #[serde(rename = "x-forwarded-for")]
    ForwardedFor,
}

/// `["aud", ...]`, or `"any"` to skip the check.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum RawAudiences {
    List(Vec<String>),
    Any(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCache {
    pub(crate) max_entries: usize,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawMode {
    Enforce,
    DryRun,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAudit {
    #[serde(default)]
    pub(crate) allowed: bool,
    #[serde(default = "yes")]
    pub(crate) denied: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProvider {
    pub(crate) name: String,
    pub(crate) issuer: String,
    #[serde(default)]
    pub(crate) audiences: Option<RawAudiences>,
    #[serde(default)]
    pub(crate) token_types: Vec<String>,
    #[serde(default)]
    pub(crate) remote_jwks: Option<RawRemoteJwks>,
    #[serde(default)]
    pub(crate) discovery: Option<RawRemoteJwks>,
    #[serde(default)]
    pub(crate) local_jwks: Option<RawLocalJwks>,
    #[serde(default)]
    pub(crate) algorithms: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) clock_skew_s: Option<u64>,
    #[serde(default)]
    pub(crate) from_headers: Option<Vec<RawHeaderSource>>,
    #[serde(default)]
    pub(crate) from_params: Vec<String>,
    #[serde(default)]
    pub(crate) from_cookies: Vec<String>,
    #[serde(default)]
    pub(crate) keep_token: Option<bool>,
    #[serde(default)]
    pub(crate) role_claims: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) claims_to_headers: Vec<RawClaimHeader>,
    #[serde(default)]
    pub(crate) payload_header: Option<String>,
    #[serde(default)]
    pub(crate) ip_bindings: Vec<RawIpBinding>,
    /// The longest lifetime (`exp - iat`) a token may claim.
    #[serde(default)]
    pub(crate) max_lifetime_s: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClaimHeader {
    pub(crate) claim: String,
    pub(crate) header: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIpBinding {
    pub(crate) principals: serde_json::Value,
    pub(crate) cidrs: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRemoteJwks {
    pub(crate) uri: String,
    pub(crate) cluster: String,
    /// Discovery only: the cluster that reaches the host of the discovered `jwks_uri`.
    #[serde(default)]
    pub(crate) jwks_cluster: Option<String>,
    #[serde(default)]
    pub(crate) timeout_ms: Option<u64>,
    #[serde(default)]
    pub(crate) refresh_s: Option<u64>,
    #[serde(default)]
    pub(crate) refresh_min_s: Option<u64>,
    #[serde(default)]
    pub(crate) refresh_max_s: Option<u64>,
    #[serde(default)]
    pub(crate) unknown_kid_refetch_s: Option<u64>,
    #[serde(default)]
    pub(crate) max_stale_s: Option<u64>,
    #[serde(default)]
    pub(crate) max_bytes: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLocalJwks {
    /// The JWKS, as a JSON string or as an object.
    pub(crate) inline: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderSource {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) value_prefix: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default, rename = "match")]
    pub(crate) matcher: RawMatch,
    #[serde(default)]
    pub(crate) allow: Option<String>,
    #[serde(default)]
    pub(crate) require: Option<RawRequire>,
    /// A deny rule: refuses every request it matches whose token meets the condition.
    #[serde(default)]
    pub(crate) deny: Option<RawDeny>,
    #[serde(default)]
    pub(crate) mode: Option<RawMode>,
}

/// `"always"`, or a condition on the token (the language of `require`).
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum RawDeny {
    Always(String),
    When(Box<RawRequire>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMatch {
    #[serde(default)]
    pub(crate) path: Option<String>,
    #[serde(default)]
    pub(crate) path_prefix: Option<String>,
    #[serde(default)]
    pub(crate) path_template: Option<String>,
    #[serde(default)]
    pub(crate) methods: Vec<String>,
    #[serde(default)]
    pub(crate) host: Option<String>,
    #[serde(default)]
    pub(crate) ignore_case: Option<bool>,
    #[serde(default)]
    pub(crate) headers: Vec<RawHeaderMatch>,
    /// Matches only requests this does not match.
    #[serde(default)]
    pub(crate) not: Option<Box<RawMatch>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderMatch {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) exact: Option<String>,
    #[serde(default)]
    pub(crate) prefix: Option<String>,
    #[serde(default)]
    pub(crate) present: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRequire {
    #[serde(default)]
    pub(crate) providers: Vec<String>,
    #[serde(default)]
    pub(crate) scopes: Option<RawNames>,
    #[serde(default)]
    pub(crate) roles: Option<RawNames>,
    #[serde(default)]
    pub(crate) principals: Option<serde_json::Value>,
    #[serde(default)]
    pub(crate) claims: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub(crate) all: Option<Vec<RawRequire>>,
    #[serde(default)]
    pub(crate) any: Option<Vec<RawRequire>>,
    #[serde(default)]
    pub(crate) not: Option<Box<RawRequire>>,
    // Rule level only:
    #[serde(default)]
    pub(crate) audiences: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) allow_missing: Option<bool>,
    #[serde(default)]
    pub(crate) allow_failed: Option<bool>,
    #[serde(default)]
    pub(crate) ip_bindings: Vec<RawIpBinding>,
}

/// `["a", "b"]` (all of them), `{"all_of": [...]}` or `{"any_of": [...]}`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum RawNames {
    List(Vec<String>),
    Spec(RawNameSpec),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNameSpec {
    #[serde(default)]
    pub(crate) all_of: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) any_of: Option<Vec<String>>,
}

#[derive(Deserialize)]
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
