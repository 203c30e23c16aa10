//! Rules: a request's (method, host, path) -> the first matching rule's [`Action`]; and
//! whether a verified token meets a rule's [`Requirement`] tree.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::routing::Matcher;
use crate::schema::{
    err, is_quotable, is_stat_name, ConfigError, RawDeny, RawIpBinding, RawMode, RawNameSpec,
    RawNames, RawRequire, RawRule, SyntaxError, STAT_NAME_RULE,
};

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
    /// A deny rule: every request it matches is refused when the condition holds, whatever
    /// rule the request's route selects.
    DenyWhen(DenyCondition),
}

/// A deny rule's condition, on the request's verified token (if any).
#[derive(Debug)]
pub struct DenyCondition {
    /// Providers whose tokens the condition reads: those the tree names, or all of them.
    pub providers: Vec<usize>,
    /// `None`: always.
    pub check: Option<Check>,
}

impl Rule {
    pub fn is_deny_rule(&self) -> bool {
        matches!(self.action, Action::DenyWhen(_))
    }
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
    /// A token that fails verification is taken as no token (implies `allow_missing`).
    pub allow_failed: bool,
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
    /// A named claim matches one of its patterns.
    Principals(Principals),
    /// The claim at `path` equals one of `values` (for an array claim: any element does).
    Claim {
        path: ClaimPath,
        values: Vec<Value>,
    },
    /// The inner check fails.
    Not(Box<Check>),
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
    /// Whether a deny condition holds for `s`, the verified token, or for a request without
    /// one (`None`): then every leaf is false, so `not` of a leaf is true.
    pub fn holds(&self, s: Option<&Subject<'_>>) -> bool {
        match self {
            Check::All(list) => list.iter().all(|c| c.holds(s)),
            Check::Any(list) => list.iter().any(|c| c.holds(s)),
            Check::Not(inner) => !inner.holds(s),
            leaf => s.is_some_and(|s| leaf.eval(s).is_ok()),
        }
    }

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
                let namespaced = s.role_claims.iter().any(ClaimPath::has_wildcard);
                let has = |n: &String| granted.iter().any(|g| g.satisfies(n, namespaced));
                let ok = if *any {
                    names.iter().any(has)
                } else {
                    names.iter().all(has)
                };
                ok.then_some(()).ok_or(Unmet::Denied)
            }
            Check::Principals(p) => p.matches(s.claims).then_some(()).ok_or(Unmet::Denied),
            Check::Not(inner) => match inner.eval(s) {
                Ok(()) => Err(Unmet::Denied),
                Err(_) => Ok(()),
            },
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

/// Callers named by claim, `{"email": ["a@b"], "client_id": ["svc-*"]}`: a token is one
/// of them when a listed claim (a string) matches one of that claim's patterns. A pattern
/// is only ever compared with its own claim, so a `sub` that happens to equal an allowed
/// e-mail address does not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principals(pub Vec<(ClaimPath, Vec<Pattern>)>);

impl Principals {
    pub fn matches(&self, claims: &Map<String, Value>) -> bool {
        self.0.iter().any(|(claim, patterns)| {
            claim
                .lookup(claims)
                .and_then(Value::as_str)
                .is_some_and(|id| patterns.iter().any(|p| p.matches(id)))
        })
    }
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
    pub fn parse(p: &str) -> Result<Pattern, SyntaxError> {
        let inner = p.trim_start_matches('*').trim_end_matches('*');
        if p.is_empty()
            || inner.contains('*')
            || (p.starts_with('*') && p.ends_with('*') && p.len() > 1)
        {
            return Err(SyntaxError::Pattern);
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
    pub fn parse(p: &str) -> Result<ClaimPath, SyntaxError> {
        let segs: Vec<String> = p.split('.').map(str::to_string).collect();
        if segs.iter().any(String::is_empty) {
            return Err(SyntaxError::ClaimPath);
        }
        Ok(ClaimPath(segs))
    }

    /// The value at a path without wildcards.
    pub fn lookup<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        let (first, rest) = self.0.split_first()?;
        rest.iter()
            .try_fold(claims.get(first)?, |v, seg| v.as_object()?.get(seg))
    }

    pub fn has_wildcard(&self) -> bool {
        self.0.iter().any(|s| s == "*")
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

/// A role a token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantedRole {
    /// `client:role` for a role reached through `*` segments (`resource_access.*.roles`
    /// gives `my-api:reader`); the role itself otherwise.
    pub name: String,
    /// Reached through a `*` segment: a client role, in Keycloak's terms.
    pub scoped: bool,
}

impl GrantedRole {
    /// Whether this role meets the required `name`. When the provider reads scoped roles
    /// (`namespaced`), a required name with a `:` is a scoped role only: a realm role
    /// literally named `my-api:writer` is not the client role `writer` of `my-api`.
    pub fn satisfies(&self, name: &str, namespaced: bool) -> bool {
        self.name == name && (self.scoped || !(namespaced && name.contains(':')))
    }
}

/// Roles the token grants under `paths`.
pub fn granted_roles(claims: &Map<String, Value>, paths: &[ClaimPath]) -> Vec<GrantedRole> {
    let mut found = Vec::new();
    for p in paths {
        p.collect(claims, &mut found);
    }
    let mut roles = Vec::new();
    for (keys, v) in found {
        let prefix: String = keys.iter().map(|k| format!("{k}:")).collect();
        let mut push = |r: &str| {
            roles.push(GrantedRole {
                name: format!("{prefix}{r}"),
                scoped: !keys.is_empty(),
            })
        };
        match v {
            Value::Array(items) => items.iter().filter_map(Value::as_str).for_each(&mut push),
            Value::String(s) => space_separated(s).for_each(&mut push),
            _ => {}
        }
    }
    roles
}

/// RFC 6749 §3.3: scopes are separated by spaces (%x20), and only by spaces. A tab or
/// a no-break space is part of a scope name, so `"read\twrite"` grants neither.
fn space_separated(s: &str) -> impl Iterator<Item = &str> {
    s.split(' ').filter(|p| !p.is_empty())
}

/// Scopes the token grants: `scope` (space-delimited, RFC 8693/9068) and `scp` (array or
/// string, as Azure AD and Okta send it).
pub fn granted_scopes(claims: &Map<String, Value>) -> smallvec::SmallVec<[&str; 8]> {
    let mut out = smallvec::SmallVec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(s)) => out.extend(space_separated(s)),
            Some(Value::Array(a)) => out.extend(a.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    out
}

/// Binds callers to the networks they may call from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpBinding {
    pub principals: Principals,
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
        .filter(|b| b.principals.matches(claims))
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

// ---- built from the configuration, next to their types --------------------------------

impl Rule {
    /// Rule number `index`; `providers` are the provider names, `global_dry_run` and
    /// `ignore_case` the config's defaults.
    pub(crate) fn compile(
        rr: RawRule,
        index: usize,
        providers: &[&str],
        global_dry_run: bool,
        ignore_case: bool,
    ) -> Result<Rule, ConfigError> {
        let at = format!("rules[{index}]");
        let matcher = Matcher::compile(rr.matcher, &format!("{at}.match"), ignore_case)?;
        let action = match (rr.allow, rr.require, rr.deny) {
            (Some(a), None, None) if a == "anonymous" => Action::Anonymous,
            (Some(_), None, None) => {
                return Err(err(
                    format!("{at}.allow"),
                    "the only value is \"anonymous\"",
                ))
            }
            (None, Some(req), None) => Action::Require(Requirement::compile(
                req,
                &format!("{at}.require"),
                providers,
            )?),
            (None, None, Some(deny)) => Action::DenyWhen(DenyCondition::compile(
                deny,
                &format!("{at}.deny"),
                providers,
            )?),
            (None, None, None) => {
                return Err(err(at, "one of allow, require and deny is required"))
            }
            _ => return Err(err(at, "give one of allow, require and deny")),
        };
        let name = match rr.name {
            Some(n) if is_stat_name(&n) => n,
            Some(_) => return Err(err(format!("{at}.name"), STAT_NAME_RULE)),
            None => format!("rule-{index}"),
        };
        let dry_run = match rr.mode {
            Some(mode) => mode == RawMode::DryRun,
            None => global_dry_run,
        };
        Ok(Rule {
            name,
            matcher,
            action,
            dry_run,
        })
    }
}

impl DenyCondition {
    fn compile(raw: RawDeny, at: &str, providers: &[&str]) -> Result<DenyCondition, ConfigError> {
        let req = match raw {
            RawDeny::Always(a) if a == "always" => {
                return Ok(DenyCondition {
                    providers: (0..providers.len()).collect(),
                    check: None,
                })
            }
            RawDeny::Always(_) => {
                return Err(err(
                    at,
                    "\"always\", or a condition on the token like {\"principals\": ...}",
                ))
            }
            RawDeny::When(req) => *req,
        };
        let mut named = Vec::new();
        let check = Check::compile(req, at, providers, &mut named, false)?;
        if check.is_empty() {
            return Err(err(
                at,
                "name a condition (or \"always\"): an empty one would hold for every valid token",
            ));
        }
        Ok(DenyCondition {
            providers: all_if_none(named, providers.len()),
            check: Some(check),
        })
    }
}

/// The providers a tree names, each once; all of them when it names none.
fn all_if_none(mut named: Vec<usize>, count: usize) -> Vec<usize> {
    named.sort_unstable();
    named.dedup();
    if named.is_empty() {
        (0..count).collect()
    } else {
        named
    }
}

impl Requirement {
    /// A rule's `require`: the tree, plus what only the rule level may say.
    fn compile(req: RawRequire, at: &str, providers: &[&str]) -> Result<Requirement, ConfigError> {
        let audiences = match &req.audiences {
            Some(list) if list.is_empty() || list.iter().any(String::is_empty) => {
                return Err(err(format!("{at}.audiences"), "must be non-empty strings"))
            }
            other => other.clone(),
        };
        let allow_failed = req.allow_failed.unwrap_or(false);
        let allow_missing =
            match req.allow_missing {
                Some(false) if allow_failed => return Err(err(
                    format!("{at}.allow_missing"),
                    "allow_failed takes a failed token as a missing one, so it needs allow_missing",
                )),
                Some(m) => m,
                None => allow_failed,
            };
        let ip_bindings = IpBinding::compile_list(&req.ip_bindings, &format!("{at}.ip_bindings"))?;
        let mut named = Vec::new();
        let check = Check::compile(req, at, providers, &mut named, true)?;
        Ok(Requirement {
            providers: all_if_none(named, providers.len()),
            audiences,
            allow_missing,
            allow_failed,
            ip_bindings,
            check,
        })
    }
}

impl Check {
    /// One node of the requirement tree: all its leaves and sub-lists must hold.
    fn compile(
        req: RawRequire,
        at: &str,
        providers: &[&str],
        named: &mut Vec<usize>,
        top: bool,
    ) -> Result<Check, ConfigError> {
        if !top {
            let rule_level = [
                ("audiences", req.audiences.is_some()),
                ("allow_missing", req.allow_missing.is_some()),
                ("allow_failed", req.allow_failed.is_some()),
                ("ip_bindings", !req.ip_bindings.is_empty()),
            ];
            if let Some((field, _)) = rule_level.iter().find(|(_, set)| *set) {
                return Err(err(
                    format!("{at}.{field}"),
                    "only allowed at the top of a rule's require",
                ));
            }
        }
        let mut checks = Vec::new();
        if !req.providers.is_empty() {
            let mut indices = Vec::with_capacity(req.providers.len());
            for (j, name) in req.providers.iter().enumerate() {
                let idx = providers.iter().position(|p| p == name).ok_or_else(|| {
                    err(
                        format!("{at}.providers[{j}]"),
                        format!("unknown provider {name:?}"),
                    )
                })?;
                indices.push(idx);
            }
            named.extend(&indices);
            checks.push(Check::Providers(indices));
        }
        if let Some(scopes) = req.scopes {
            let (names, any) = compile_names(scopes, &format!("{at}.scopes"))?;
            checks.push(Check::Scopes { names, any });
        }
        if let Some(roles) = req.roles {
            let (names, any) = compile_names(roles, &format!("{at}.roles"))?;
            checks.push(Check::Roles { names, any });
        }
        if let Some(p) = &req.principals {
            checks.push(Check::Principals(Principals::compile(
                p,
                &format!("{at}.principals"),
            )?));
        }
        for (path, values) in req.claims.unwrap_or_default() {
            let here = format!("{at}.claims.{path}");
            let path = ClaimPath::parse(&path).map_err(|m| err(&here, m))?;
            let values = match values {
                serde_json::Value::Array(list) if !list.is_empty() => list,
                serde_json::Value::Array(_) => {
                    return Err(err(here, "must list at least one value"))
                }
                v => vec![v],
            };
            checks.push(Check::Claim { path, values });
        }
        for (key, list) in [("all", req.all), ("any", req.any)] {
            let Some(list) = list else { continue };
            if list.is_empty() {
                return Err(err(format!("{at}.{key}"), "must not be empty"));
            }
            let mut children = Vec::with_capacity(list.len());
            for (j, child) in list.into_iter().enumerate() {
                children.push(Check::compile(
                    child,
                    &format!("{at}.{key}[{j}]"),
                    providers,
                    named,
                    false,
                )?);
            }
            checks.push(if key == "all" {
                Check::All(children)
            } else {
                Check::Any(children)
            });
        }
        if let Some(inner) = req.not {
            let here = format!("{at}.not");
            // Providers named under `not` are ones the token must NOT come from: they do
            // not narrow which providers may verify it.
            let inner = Check::compile(*inner, &here, providers, &mut Vec::new(), false)?;
            if inner.is_empty() {
                return Err(err(here, "must name a condition"));
            }
            checks.push(Check::Not(Box::new(inner)));
        }
        Ok(match checks.len() {
            1 => checks.remove(0),
            _ => Check::All(checks),
        })
    }
}

impl Check {
    /// No condition at all (`{}`): holds for every valid token.
    fn is_empty(&self) -> bool {
        matches!(self, Check::All(list) if list.is_empty())
    }
}

fn compile_names(raw: RawNames, at: &str) -> Result<(Vec<String>, bool), ConfigError> {
    let (names, any, at) = match raw {
        RawNames::List(l) => (l, false, at.to_string()),
        RawNames::Spec(RawNameSpec {
            all_of: Some(l),
            any_of: None,
        }) => (l, false, format!("{at}.all_of")),
        RawNames::Spec(RawNameSpec {
            all_of: None,
            any_of: Some(l),
        }) => (l, true, format!("{at}.any_of")),
        RawNames::Spec(_) => {
            return Err(err(
                at,
                "give a list, {\"all_of\": [...]} or {\"any_of\": [...]}",
            ))
        }
    };
    if names.is_empty() {
        return Err(err(at, "must not be empty"));
    }
    for (j, s) in names.iter().enumerate() {
        if s.is_empty() || !is_quotable(s) || s.contains(' ') {
            return Err(err(
                format!("{at}[{j}]"),
                "must be a non-empty name without spaces or quotes",
            ));
        }
    }
    Ok((names, any))
}

impl Principals {
    /// `{"email": ["a@b"], "client_id": ["svc-*"]}`: each claim with its own patterns.
    fn compile(v: &serde_json::Value, at: &str) -> Result<Principals, ConfigError> {
        let by_claim =
            match v {
                serde_json::Value::Object(map) if !map.is_empty() => map,
                serde_json::Value::Array(_) => return Err(err(
                    at,
                    "name the claim each principal is compared with, e.g. {\"email\": [...]} or \
                 {\"client_id\": [...]}: a bare list would match sub, email, azp and \
                 client_id alike, so a token whose sub equals an allowed e-mail would pass",
                )),
                _ => return Err(err(at, "an object of claim name -> list of patterns")),
            };
        let mut out = Vec::with_capacity(by_claim.len());
        for (claim, patterns) in by_claim {
            let here = format!("{at}.{claim}");
            let path = ClaimPath::parse(claim).map_err(|m| err(&here, m))?;
            let list: Vec<String> = match patterns {
                serde_json::Value::Array(items) if !items.is_empty() => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| err(&here, "patterns are strings"))?,
                _ => return Err(err(&here, "a non-empty list of patterns")),
            };
            out.push((path, compile_patterns(&list, &here)?));
        }
        Ok(Principals(out))
    }
}

fn compile_patterns(list: &[String], at: &str) -> Result<Vec<Pattern>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(j, p)| Pattern::parse(p).map_err(|m| err(format!("{at}[{j}]"), m)))
        .collect()
}

impl IpBinding {
    pub(crate) fn compile_list(
        list: &[RawIpBinding],
        at: &str,
    ) -> Result<Vec<IpBinding>, ConfigError> {
        let mut out = Vec::with_capacity(list.len());
        for (j, b) in list.iter().enumerate() {
            let here = format!("{at}[{j}]");
            if b.cidrs.is_empty() {
                return Err(err(format!("{here}.cidrs"), "must not be empty"));
            }
            let mut cidrs = Vec::with_capacity(b.cidrs.len());
            for (k, c) in b.cidrs.iter().enumerate() {
                let net = c
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        err(
                            format!("{here}.cidrs[{k}]"),
                            "must be an IP address or CIDR like 10.0.1.0/24",
                        )
                    })?;
                cidrs.push(net.trunc());
            }
            out.push(IpBinding {
                principals: Principals::compile(&b.principals, &format!("{here}.principals"))?,
                cidrs,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn subject(claims: &Value) -> Subject<'_> {
        Subject {
            provider: 0,
            claims: claims.as_object().unwrap(),
            role_claims: &[],
        }
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
        // RFC 6749 §3.3: only %x20 separates scopes. A tab, newline or no-break space is
        // part of one (odd) scope name, never a separator.
        for sep in ["\t", "\n", "\u{a0}", "\u{2003}"] {
            let c = json!({"scope": format!("workflow:read{sep}validation:write")});
            assert!(all.eval(&subject(&c)).is_err(), "{sep:?}");
        }
    }

    fn role_names(claims: &Value, paths: &[ClaimPath]) -> Vec<String> {
        granted_roles(claims.as_object().unwrap(), paths)
            .into_iter()
            .map(|r| r.name)
            .collect()
    }

    #[test]
    fn keycloak_realm_and_client_roles() {
        let c = json!({
            "realm_access": {"roles": ["offline_access", "admin"]},
            "resource_access": {"my-api": {"roles": ["reader"]}, "account": {"roles": ["view-profile"]}}
        });
        let claims = c.as_object().unwrap();
        let paths = default_role_claims();
        let roles = role_names(&c, &paths);
        for r in ["admin", "my-api:reader", "account:view-profile"] {
            assert!(roles.contains(&r.to_string()), "{r}");
        }
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
        // Space-separated, and only by spaces (a tab is part of a name).
        let c = json!({"groups": "ops dev\tqa"});
        assert_eq!(role_names(&c, &custom), vec!["ops", "dev\tqa"]);
    }

    #[test]
    fn a_realm_role_named_like_a_client_role_is_not_that_client_role() {
        let c = json!({
            "realm_access": {"roles": ["my-api:writer"]},
            "resource_access": {"my-api": {"roles": ["reader"]}}
        });
        let paths = default_role_claims();
        let s = Subject {
            provider: 0,
            claims: c.as_object().unwrap(),
            role_claims: &paths,
        };
        let need = |n: &str| Check::Roles {
            names: vec![n.into()],
            any: false,
        };
        assert_eq!(need("my-api:writer").eval(&s), Err(Unmet::Denied));
        assert_eq!(need("my-api:reader").eval(&s), Ok(()));
        // Without scoped role claims there is one namespace, and a `:` is just a character.
        let groups = vec![ClaimPath::parse("groups").unwrap()];
        let c = json!({"groups": ["team:ops"]});
        let s = Subject {
            provider: 0,
            claims: c.as_object().unwrap(),
            role_claims: &groups,
        };
        assert_eq!(need("team:ops").eval(&s), Ok(()));
    }

    fn principals(by_claim: &[(&str, &[&str])]) -> Check {
        Check::Principals(Principals(
            by_claim
                .iter()
                .map(|(c, ps)| {
                    (
                        ClaimPath::parse(c).unwrap(),
                        ps.iter().map(|p| Pattern::parse(p).unwrap()).collect(),
                    )
                })
                .collect(),
        ))
    }

    #[test]
    fn principals_match_only_the_claim_they_name() {
        let sa = "emp-api-client@proj.iam.gserviceaccount.com";
        let by_email = principals(&[("email", &[sa])]);
        let c = json!({"sub": "1234", "email": sa});
        assert_eq!(by_email.eval(&subject(&c)), Ok(()));
        let other = json!({"sub": "1", "email": "other@proj.iam.gserviceaccount.com"});
        assert_eq!(by_email.eval(&subject(&other)), Err(Unmet::Denied));
        // A token whose `sub` (or `azp`) is the allowed e-mail is not that caller.
        let forged = json!({"sub": sa, "azp": sa, "email": "x@evil.example"});
        assert_eq!(by_email.eval(&subject(&forged)), Err(Unmet::Denied));
        let any_sa = principals(&[("email", &["*@proj.iam.gserviceaccount.com"])]);
        assert_eq!(any_sa.eval(&subject(&other)), Ok(()));
        let c = json!({"client_id": "val_svc_client_a1b2c3", "sub": "x"});
        let two = principals(&[("sub", &["svc-*"]), ("client_id", &["val_svc_*"])]);
        assert_eq!(two.eval(&subject(&c)), Ok(()));
        let not_string = json!({"client_id": ["val_svc_client_a1b2c3"]});
        assert_eq!(two.eval(&subject(&not_string)), Err(Unmet::Denied));
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
            principals: Principals(vec![(
                ClaimPath::parse("client_id").unwrap(),
                vec![Pattern::parse("val_svc_client_a1b2c3").unwrap()],
            )]),
            cidrs: vec![
                "10.0.1.0/24".parse().unwrap(),
                "10.0.2.0/24".parse().unwrap(),
            ],
        }];
        let bound = json!({"client_id": "val_svc_client_a1b2c3"});
        let free = json!({"client_id": "other"});
        let ip = |s: &str| s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip());
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
    }
}
