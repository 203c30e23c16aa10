//! Rules: a request's (method, host, path) -> the first matching rule's [`Action`]; and
//! whether a verified token meets a rule's [`Requirement`] tree.

use std::borrow::Cow;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value};

#[derive(Debug)]
pub struct Rule {
    /// For logs and stats; `rule-<index>` when the config gives none.
    pub name: String,
    pub matcher: Matcher,
    pub action: Action,
    /// Evaluate and report, but never refuse.
    pub dry_run: bool,
}

#[derive(Debug)]
pub enum Action {
    /// No token needed (a token that is sent is not checked).
    Anonymous,
    /// A valid token meeting the requirement.
    Require(Requirement),
    /// Refused whatever the token (the `default: deny` when no rule matched).
    Deny,
}

/// What a rule asks of a token.
#[derive(Debug)]
pub struct Requirement {
    /// Providers that may verify the token: those the tree names, or all of them.
    pub providers: Vec<usize>,
    /// Replaces the provider's `audiences` for this rule.
    pub audiences: Option<Vec<String>>,
    /// No token is fine; a token that is sent must be valid and meet `check`.
    pub allow_missing: bool,
    pub ip_bindings: Vec<IpBinding>,
    pub check: Check,
}

/// A requirement tree over a verified token.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    All(Vec<Check>),
    Any(Vec<Check>),
    /// Verified by one of these providers.
    Providers(Vec<usize>),
    Scopes {
        names: Vec<String>,
        any: bool,
    },
    Roles {
        names: Vec<String>,
        any: bool,
    },
    /// `sub`, `email`, `azp` or `client_id` matches one of the patterns.
    Principals(Vec<Pattern>),
    /// The claim at `path` equals one of `values` (for an array claim: any element does).
    Claim {
        path: ClaimPath,
        values: Vec<Value>,
    },
}

/// Why a token did not meet a requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmet {
    /// Scopes missing: the scopes of the leaf that failed (for RFC 6750's `scope`).
    Scope(Vec<String>),
    /// A role, principal, claim or provider requirement failed.
    Denied,
}

/// What the checks read from a verified token.
pub struct Subject<'a> {
    pub provider: usize,
    pub claims: &'a Map<String, Value>,
    pub role_claims: &'a [ClaimPath],
}

impl Check {
    pub fn eval(&self, s: &Subject<'_>) -> Result<(), Unmet> {
        match self {
            Check::All(list) => list.iter().try_for_each(|c| c.eval(s)),
            Check::Any(list) => {
                let mut first_failure = None;
                for c in list {
                    match c.eval(s) {
                        Ok(()) => return Ok(()),
                        // A scope failure is the more useful answer: a new token can fix it.
                        Err(u) => match (&first_failure, u) {
                            (None, u) | (Some(Unmet::Denied), u @ Unmet::Scope(_)) => {
                                first_failure = Some(u)
                            }
                            _ => {}
                        },
                    }
                }
                Err(first_failure.unwrap_or(Unmet::Denied))
            }
            Check::Providers(list) => list
                .contains(&s.provider)
                .then_some(())
                .ok_or(Unmet::Denied),
            Check::Scopes { names, any } => {
                let granted = granted_scopes(s.claims);
                let has = |n: &String| granted.contains(&n.as_str());
                let ok = if *any {
                    names.iter().any(has)
                } else {
                    names.iter().all(has)
                };
                ok.then_some(()).ok_or_else(|| Unmet::Scope(names.clone()))
            }
            Check::Roles { names, any } => {
                let granted = granted_roles(s.claims, s.role_claims);
                let has = |n: &String| granted.contains(n);
                let ok = if *any {
                    names.iter().any(has)
                } else {
                    names.iter().all(has)
                };
                ok.then_some(()).ok_or(Unmet::Denied)
            }
            Check::Principals(patterns) => principal_ids(s.claims)
                .any(|id| patterns.iter().any(|p| p.matches(id)))
                .then_some(())
                .ok_or(Unmet::Denied),
            Check::Claim { path, values } => {
                let fits = |v: &Value| values.contains(v);
                let ok = match path.lookup(s.claims) {
                    Some(Value::Array(items)) => items.iter().any(fits),
                    Some(v) => fits(v),
                    None => false,
                };
                ok.then_some(()).ok_or(Unmet::Denied)
            }
        }
    }
}

/// The ids a token's caller goes by: `sub`, `email` (Google service accounts), `azp` and
/// `client_id` (OAuth clients).
pub fn principal_ids(claims: &Map<String, Value>) -> impl Iterator<Item = &str> {
    ["sub", "email", "azp", "client_id"]
        .into_iter()
        .filter_map(|c| claims.get(c).and_then(Value::as_str))
}

/// `name`, `prefix*`, `*suffix` or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Any,
}

impl Pattern {
    pub fn parse(p: &str) -> Result<Pattern, String> {
        let inner = p.trim_start_matches('*').trim_end_matches('*');
        if p.is_empty()
            || inner.contains('*')
            || (p.starts_with('*') && p.ends_with('*') && p.len() > 1)
        {
            return Err("a pattern is a name, \"prefix*\", \"*suffix\" or \"*\"".into());
        }
        Ok(if p == "*" {
            Pattern::Any
        } else if let Some(s) = p.strip_prefix('*') {
            Pattern::Suffix(s.to_string())
        } else if let Some(s) = p.strip_suffix('*') {
            Pattern::Prefix(s.to_string())
        } else {
            Pattern::Exact(p.to_string())
        })
    }

    pub fn matches(&self, id: &str) -> bool {
        match self {
            Pattern::Exact(s) => id == s,
            Pattern::Prefix(s) => id.starts_with(s.as_str()),
            Pattern::Suffix(s) => id.ends_with(s.as_str()),
            Pattern::Any => true,
        }
    }
}

/// A dotted claim path; a `*` segment stands for every key of an object there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath(pub Vec<String>);

impl ClaimPath {
    pub fn parse(p: &str) -> Result<ClaimPath, String> {
        let segs: Vec<String> = p.split('.').map(str::to_string).collect();
        if segs.iter().any(String::is_empty) {
            return Err("a claim path is dot-separated names, like realm_access.roles".into());
        }
        Ok(ClaimPath(segs))
    }

    /// The value at a path without wildcards.
    pub fn lookup<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        let (first, rest) = self.0.split_first()?;
        rest.iter()
            .try_fold(claims.get(first)?, |v, seg| v.as_object()?.get(seg))
    }

    /// Every value the path reaches, each with the keys its `*` segments took.
    fn collect<'a>(
        &self,
        claims: &'a Map<String, Value>,
        out: &mut Vec<(Vec<&'a str>, &'a Value)>,
    ) {
        fn walk<'a>(
            v: &'a Value,
            segs: &[String],
            keys: &mut Vec<&'a str>,
            out: &mut Vec<(Vec<&'a str>, &'a Value)>,
        ) {
            let Some((seg, rest)) = segs.split_first() else {
                out.push((keys.clone(), v));
                return;
            };
            let Some(obj) = v.as_object() else { return };
            if seg == "*" {
                for (k, child) in obj {
                    keys.push(k);
                    walk(child, rest, keys, out);
                    keys.pop();
                }
            } else if let Some(child) = obj.get(seg) {
                walk(child, rest, keys, out);
            }
        }
        let Some((first, rest)) = self.0.split_first() else {
            return;
        };
        let mut keys = Vec::new();
        if first == "*" {
            for (k, child) in claims {
                keys.push(k.as_str());
                walk(child, rest, &mut keys, out);
                keys.pop();
            }
        } else if let Some(v) = claims.get(first) {
            walk(v, rest, &mut keys, out);
        }
    }
}

/// Keycloak's layout: realm roles by name, client roles as `client:role`.
pub fn default_role_claims() -> Vec<ClaimPath> {
    vec![
        ClaimPath(vec!["realm_access".into(), "roles".into()]),
        ClaimPath(vec!["resource_access".into(), "*".into(), "roles".into()]),
    ]
}

/// Roles the token grants under `paths`. A role reached through `*` segments is named
/// after them: `resource_access.*.roles` gives `my-api:reader`.
pub fn granted_roles(claims: &Map<String, Value>, paths: &[ClaimPath]) -> Vec<String> {
    let mut found = Vec::new();
    for p in paths {
        p.collect(claims, &mut found);
    }
    let mut roles = Vec::new();
    for (keys, v) in found {
        let prefix: String = keys.iter().map(|k| format!("{k}:")).collect();
        let mut push = |r: &str| roles.push(format!("{prefix}{r}"));
        match v {
            Value::Array(items) => items.iter().filter_map(Value::as_str).for_each(&mut push),
            Value::String(s) => s.split_whitespace().for_each(&mut push),
            _ => {}
        }
    }
    roles
}

/// Scopes the token grants: `scope` (space-delimited, RFC 8693/9068) and `scp` (array or
/// string, as Azure AD and Okta send it).
pub fn granted_scopes(claims: &Map<String, Value>) -> Vec<&str> {
    let mut out = Vec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(s)) => out.extend(s.split_whitespace()),
            Some(Value::Array(a)) => out.extend(a.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    out
}

/// Binds callers (by `sub`/`email`/`azp`/`client_id`) to the networks they may call from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpBinding {
    pub principals: Vec<Pattern>,
    pub cidrs: Vec<IpNet>,
}

/// Whether the caller may call from `source`: callers named by a binding must come from
/// one of its networks; callers no binding names are not limited.
pub fn source_allowed(
    bindings: &[IpBinding],
    claims: &Map<String, Value>,
    source: Option<IpAddr>,
) -> bool {
    let mut bound = bindings
        .iter()
        .filter(|b| principal_ids(claims).any(|id| b.principals.iter().any(|p| p.matches(id))))
        .peekable();
    if bound.peek().is_none() {
        return true;
    }
    let Some(ip) = source else { return false };
    let ip = canonical(ip);
    bound.any(|b| b.cidrs.iter().any(|net| net.contains(&ip)))
}

/// `::ffff:10.0.0.1` is `10.0.0.1`, so IPv4 networks match on dual-stack listeners.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client address of Envoy's `source.address` property (`ip:port` or `[v6]:port`).
pub fn parse_source_address(s: &str) -> Option<IpAddr> {
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    s.parse().ok()
}

#[derive(Debug, Default)]
pub struct Matcher {
    pub path: PathMatch,
    /// Upper case; empty matches every method.
    pub methods: Vec<String>,
    pub host: Option<HostMatch>,
}

#[derive(Debug, Default)]
pub enum PathMatch {
    #[default]
    Any,
    Exact(String),
    /// Segment-aware: `/health` matches `/health` and `/health/x`, not `/healthz`, so a
    /// public prefix never opens a neighbouring route by accident.
    Prefix(String),
    /// `/workflows/{id}/steps`: `{name}` and `*` match one segment, a final `**` the rest.
    Template(Vec<Segment>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    One,
    Rest,
}

impl PathMatch {
    pub fn prefix(p: String) -> PathMatch {
        if p == "/" {
            PathMatch::Any
        } else {
            PathMatch::Prefix(p)
        }
    }

    pub fn template(t: &str) -> Result<PathMatch, String> {
        let parts: Vec<&str> = t.trim_start_matches('/').split('/').collect();
        let mut segs = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let seg = if *part == "**" {
                if i + 1 != parts.len() {
                    return Err("\"**\" may only end a template".into());
                }
                Segment::Rest
            } else if *part == "*"
                || (part.starts_with('{') && part.ends_with('}') && part.len() > 2)
            {
                Segment::One
            } else if part.contains(['{', '}', '*']) {
                return Err(format!("segment {part:?}: use {{name}}, * or a final **"));
            } else {
                Segment::Literal((*part).to_string())
            };
            segs.push(seg);
        }
        Ok(PathMatch::Template(segs))
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Any => true,
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => match path.strip_prefix(p.as_str()) {
                Some(rest) => p.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
                None => false,
            },
            PathMatch::Template(segs) => {
                let Some(rest) = path.strip_prefix('/') else {
                    return false;
                };
                let mut parts = rest.split('/');
                for seg in segs {
                    match seg {
                        Segment::Rest => return true,
                        Segment::One => {
                            if parts.next().is_none_or(str::is_empty) {
                                return false;
                            }
                        }
                        Segment::Literal(l) => {
                            if parts.next() != Some(l.as_str()) {
                                return false;
                            }
                        }
                    }
                }
                parts.next().is_none()
            }
        }
    }
}

/// `api.example.com` exactly, or `*.example.com` for any subdomain. Case-insensitive; the
/// request's port is ignored.
#[derive(Debug, PartialEq, Eq)]
pub enum HostMatch {
    Exact(String),
    Suffix(String),
}

impl HostMatch {
    pub fn parse(h: &str) -> Result<HostMatch, String> {
        let h = h.to_ascii_lowercase();
        let h = h.trim_start_matches('[').trim_end_matches(']').to_string();
        if h.is_empty() || h.contains(['/', ' ', '@']) {
            return Err("must be a host name, optionally starting with \"*.\"".into());
        }
        match h.strip_prefix('*') {
            Some(rest) if rest.starts_with('.') && rest.len() > 1 => {
                Ok(HostMatch::Suffix(rest.to_string()))
            }
            Some(_) => Err("a wildcard must be \"*.\" followed by a domain".into()),
            None => Ok(HostMatch::Exact(h)),
        }
    }

    /// `host` is the request's host without its port.
    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
            HostMatch::Suffix(s) => {
                host.len() > s.len()
                    && host
                        .get(host.len() - s.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(s))
            }
        }
    }
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        // [v6]:port
        return authority
            .split_once(']')
            .map_or(authority, |(h, _)| h.trim_start_matches('['));
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

impl Matcher {
    /// `host` without its port, `path` without its query. The path goes first: it is the
    /// test that rules out most rules.
    pub fn matches(&self, method: &str, host: &str, path: &str) -> bool {
        self.path.matches(path)
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
            && self.host.as_ref().is_none_or(|h| h.matches(host))
    }
}

/// The path without query or fragment.
pub fn route_path(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    path.get(..end).unwrap_or(path)
}

/// The path rules are matched against: the route path with encoded slashes, backslashes and
/// dots decoded, empty and `.` segments dropped and `..` resolved. Whatever Envoy's own path
/// normalization is set to, `/public/..%2Fadmin` is matched as `/admin`, the path a backend
/// that decodes `%2F` would serve, so a public prefix cannot be used to reach another route.
pub fn canonical_path(path: &str) -> Cow<'_, str> {
    let path = route_path(path);
    let suspicious = path.contains(['%', '\\']) || path.contains("//") || path.contains("/.");
    if !suspicious {
        return Cow::Borrowed(path);
    }
    let decoded = decode_path_specials(path);
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split(['/', '\\']) {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let trailing = decoded.ends_with(['/', '\\']) && !segments.is_empty();
    let mut out = format!("/{}", segments.join("/"));
    if trailing {
        out.push('/');
    }
    Cow::Owned(out)
}

/// Decodes `%2F`, `%5C` and `%2E` (any case); other escapes stay as they are.
fn decode_path_specials(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(i) = rest.find('%') {
        out.push_str(rest.get(..i).unwrap_or_default());
        let code = rest.get(i + 1..i + 3).map(str::to_ascii_uppercase);
        match code.as_deref() {
            Some("2F") => out.push('/'),
            Some("5C") => out.push('\\'),
            Some("2E") => out.push('.'),
            _ => {
                out.push('%');
                rest = rest.get(i + 1..).unwrap_or_default();
                continue;
            }
        }
        rest = rest.get(i + 3..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

/// The first rule matching the request, by index, or `None` (the default applies).
pub fn find_rule(rules: &[Rule], method: &str, authority: &str, path: &str) -> Option<usize> {
    let path = canonical_path(path);
    let path = path.as_ref();
    let host = strip_port(authority);
    rules
        .iter()
        .position(|r| r.matcher.matches(method, host, path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(path: PathMatch, methods: &[&str], host: Option<&str>) -> Rule {
        Rule {
            name: "r".into(),
            matcher: Matcher {
                path,
                methods: methods.iter().map(|m| m.to_string()).collect(),
                host: host.map(|h| HostMatch::parse(h).unwrap()),
            },
            action: Action::Anonymous,
            dry_run: false,
        }
    }

    fn subject(claims: &Value) -> Subject<'_> {
        Subject {
            provider: 0,
            claims: claims.as_object().unwrap(),
            role_claims: &[],
        }
    }

    #[test]
    fn prefix_is_segment_aware() {
        let p = PathMatch::prefix("/health".into());
        assert!(p.matches("/health"));
        assert!(p.matches("/health/live"));
        assert!(!p.matches("/healthz"));
        assert!(!p.matches("/heal"));
        let p = PathMatch::prefix("/api/".into());
        assert!(p.matches("/api/x"));
        assert!(!p.matches("/api"));
        assert!(PathMatch::prefix("/".into()).matches("/anything"));
    }

    #[test]
    fn rules_see_the_canonical_path() {
        let cases = [
            ("/workflows/active?x=1", "/workflows/active"),
            ("/public/..%2Fadmin", "/admin"),
            ("/public/%2e%2E/admin", "/admin"),
            ("/public/..%5Cadmin", "/admin"),
            ("/public\\..\\admin", "/admin"),
            ("//admin", "/admin"),
            ("/a/./b/", "/a/b/"),
            ("/../../x", "/x"),
            ("/a/%2", "/a/%2"),
            ("/a%20b/%zz", "/a%20b/%zz"),
            ("/%", "/%"),
            ("/ü/%2F", "/ü/"),
        ];
        for (raw, want) in cases {
            assert_eq!(canonical_path(raw), want, "{raw}");
        }
        assert!(matches!(canonical_path("/plain/path"), Cow::Borrowed(_)));
        let rules = vec![
            rule(PathMatch::prefix("/public".into()), &[], None),
            rule(PathMatch::prefix("/admin".into()), &[], None),
        ];
        assert_eq!(find_rule(&rules, "GET", "x", "/public/..%2Fadmin"), Some(1));
    }

    #[test]
    fn templates_match_whole_segments() {
        let t = PathMatch::template("/workflows/{id}/steps").unwrap();
        assert!(t.matches("/workflows/wf_123/steps"));
        assert!(!t.matches("/workflows//steps"));
        assert!(!t.matches("/workflows/a/b/steps"));
        assert!(!t.matches("/workflows/a/steps/x"));
        let t = PathMatch::template("/files/*/**").unwrap();
        assert!(t.matches("/files/a/b/c"));
        assert!(t.matches("/files/a/"));
        assert!(!t.matches("/files"));
        assert!(PathMatch::template("/a/**/b").is_err());
        assert!(PathMatch::template("/a/x{id}").is_err());
    }

    #[test]
    fn first_match_wins_and_query_is_ignored() {
        let rules = vec![
            rule(PathMatch::Exact("/a".into()), &["GET"], None),
            rule(PathMatch::prefix("/a".into()), &[], None),
            rule(PathMatch::Any, &[], Some("*.example.com")),
        ];
        assert_eq!(find_rule(&rules, "GET", "x", "/a?x=1"), Some(0));
        assert_eq!(find_rule(&rules, "POST", "x", "/a"), Some(1));
        assert_eq!(find_rule(&rules, "GET", "x", "/a/b#f"), Some(1));
        assert_eq!(
            find_rule(&rules, "GET", "api.Example.com:8443", "/b"),
            Some(2)
        );
        assert_eq!(find_rule(&rules, "GET", "example.com", "/b"), None);
        assert_eq!(find_rule(&rules, "GET", "evil-example.com", "/b"), None);
    }

    #[test]
    fn host_match_ignores_port_and_case() {
        let h = HostMatch::parse("API.example.com").unwrap();
        assert!(h.matches(strip_port("api.example.com:443")));
        assert!(h.matches("Api.Example.Com"));
        assert!(!h.matches("api.example.com.evil"));
        assert!(HostMatch::parse("[::1]")
            .unwrap()
            .matches(strip_port("[::1]:8080")));
        assert!(HostMatch::parse("*").is_err());
        assert!(HostMatch::parse("*.").is_err());
        assert!(HostMatch::parse("").is_err());
    }

    #[test]
    fn scopes_all_and_any() {
        let all = Check::Scopes {
            names: vec!["workflow:read".into(), "validation:write".into()],
            any: false,
        };
        let any = Check::Scopes {
            names: vec!["admin".into(), "validation:write".into()],
            any: true,
        };
        let c = json!({"scope": "workflow:read  validation:write"});
        assert_eq!(all.eval(&subject(&c)), Ok(()));
        let c = json!({"scp": ["workflow:read"]});
        assert_eq!(
            all.eval(&subject(&c)),
            Err(Unmet::Scope(vec![
                "workflow:read".into(),
                "validation:write".into()
            ]))
        );
        assert!(any.eval(&subject(&c)).is_err());
        let c = json!({"scp": "validation:write"});
        assert_eq!(any.eval(&subject(&c)), Ok(()));
        // A scope that is a prefix of a granted one is not granted.
        let c = json!({"scope": "workflow:readers validation:write"});
        assert!(all.eval(&subject(&c)).is_err());
    }

    #[test]
    fn keycloak_realm_and_client_roles() {
        let c = json!({
            "realm_access": {"roles": ["offline_access", "admin"]},
            "resource_access": {"my-api": {"roles": ["reader"]}, "account": {"roles": ["view-profile"]}}
        });
        let claims = c.as_object().unwrap();
        let paths = default_role_claims();
        let roles = granted_roles(claims, &paths);
        assert!(roles.contains(&"admin".to_string()));
        assert!(roles.contains(&"my-api:reader".to_string()));
        assert!(roles.contains(&"account:view-profile".to_string()));
        assert!(!roles.contains(&"reader".to_string()));
        let s = Subject {
            provider: 0,
            claims,
            role_claims: &paths,
        };
        let need = |names: &[&str], any| Check::Roles {
            names: names.iter().map(|n| n.to_string()).collect(),
            any,
        };
        assert_eq!(need(&["admin", "my-api:reader"], false).eval(&s), Ok(()));
        assert_eq!(need(&["my-api:writer"], false).eval(&s), Err(Unmet::Denied));
        assert_eq!(need(&["my-api:writer", "admin"], true).eval(&s), Ok(()));
        let custom = vec![ClaimPath::parse("groups").unwrap()];
        let c = json!({"groups": "ops dev"});
        assert_eq!(
            granted_roles(c.as_object().unwrap(), &custom),
            vec!["ops", "dev"]
        );
    }

    #[test]
    fn principals_match_sub_email_azp_client_id() {
        let sa = Pattern::parse("emp-api-client@proj.iam.gserviceaccount.com").unwrap();
        let any_sa = Pattern::parse("*@proj.iam.gserviceaccount.com").unwrap();
        let c = json!({"sub": "1234", "email": "emp-api-client@proj.iam.gserviceaccount.com"});
        assert_eq!(
            Check::Principals(vec![sa.clone()]).eval(&subject(&c)),
            Ok(())
        );
        let other = json!({"sub": "1", "email": "other@proj.iam.gserviceaccount.com"});
        assert_eq!(
            Check::Principals(vec![sa]).eval(&subject(&other)),
            Err(Unmet::Denied)
        );
        assert_eq!(
            Check::Principals(vec![any_sa]).eval(&subject(&other)),
            Ok(())
        );
        let c = json!({"client_id": "val_svc_client_a1b2c3"});
        assert_eq!(
            Check::Principals(vec![Pattern::parse("val_svc_*").unwrap()]).eval(&subject(&c)),
            Ok(())
        );
        for bad in ["", "a*b", "**", "*a*"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn claims_and_trees() {
        let c = json!({"email_verified": true, "tenant": "acme", "groups": ["a", "b"], "scope": "read",
                       "realm_access": {"roles": ["x"]}});
        let claim = |p: &str, v: Value| Check::Claim {
            path: ClaimPath::parse(p).unwrap(),
            values: vec![v],
        };
        assert_eq!(
            claim("email_verified", json!(true)).eval(&subject(&c)),
            Ok(())
        );
        assert_eq!(claim("groups", json!("b")).eval(&subject(&c)), Ok(()));
        assert_eq!(
            claim("realm_access.roles", json!("x")).eval(&subject(&c)),
            Ok(())
        );
        assert_eq!(
            claim("tenant", json!("other")).eval(&subject(&c)),
            Err(Unmet::Denied)
        );
        assert_eq!(
            claim("missing.path", json!("x")).eval(&subject(&c)),
            Err(Unmet::Denied)
        );
        let scope = |s: &str| Check::Scopes {
            names: vec![s.into()],
            any: false,
        };
        let tree = Check::Any(vec![
            Check::All(vec![claim("tenant", json!("other")), scope("read")]),
            Check::All(vec![claim("tenant", json!("acme")), scope("read")]),
        ]);
        assert_eq!(tree.eval(&subject(&c)), Ok(()));
        // The scope failure is reported over a claim failure, whatever the order.
        let tree = Check::Any(vec![claim("tenant", json!("other")), scope("write")]);
        assert_eq!(
            tree.eval(&subject(&c)),
            Err(Unmet::Scope(vec!["write".into()]))
        );
        assert_eq!(
            Check::Providers(vec![1]).eval(&subject(&c)),
            Err(Unmet::Denied)
        );
        assert_eq!(Check::All(vec![]).eval(&subject(&c)), Ok(()));
    }

    #[test]
    fn ip_bindings_limit_only_the_bound_callers() {
        let b = vec![IpBinding {
            principals: vec![Pattern::parse("val_svc_client_a1b2c3").unwrap()],
            cidrs: vec![
                "10.0.1.0/24".parse().unwrap(),
                "10.0.2.0/24".parse().unwrap(),
            ],
        }];
        let bound = json!({"client_id": "val_svc_client_a1b2c3"});
        let free = json!({"client_id": "other"});
        let ip = |s: &str| parse_source_address(s);
        assert!(source_allowed(
            &b,
            bound.as_object().unwrap(),
            ip("10.0.2.7:5000")
        ));
        assert!(source_allowed(
            &b,
            bound.as_object().unwrap(),
            ip("[::ffff:10.0.1.9]:5000")
        ));
        assert!(!source_allowed(
            &b,
            bound.as_object().unwrap(),
            ip("10.0.3.1:5000")
        ));
        assert!(!source_allowed(&b, bound.as_object().unwrap(), None));
        assert!(source_allowed(
            &b,
            free.as_object().unwrap(),
            ip("192.0.2.1:1")
        ));
        assert_eq!(parse_source_address("[::1]:80"), "::1".parse().ok());
        assert_eq!(parse_source_address("127.0.0.1"), "127.0.0.1".parse().ok());
        assert_eq!(parse_source_address("garbage"), None);
    }
}
