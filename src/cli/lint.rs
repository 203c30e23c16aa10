//! Warnings about a configuration the filter loads but that is probably not what its
//! author meant: checks too slow or too opinionated for the filter's start-up, run by
//! `jwt-guard check`. Each names the JSON path it is about. Pure: a compiled [`Config`]
//! and the JSON it came from in, warnings out.
//!
//! A warning must be certain: a rule is called shadowed only when every request it
//! matches, under every reading the filter gives a request, is matched by an earlier rule.

use std::fmt;

use ipnet::IpNet;
use serde_json::Value;

use crate::config::{Config, KeySource};
use crate::policy::Action;
use crate::routing::{HostMatch, HostName, Matcher, PathMatch, Segment};

/// What a warning is about; its code is stable, for `--format json` readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarningKind {
    ShadowedRule,
    DuplicateRuleName,
    RuleWithoutMatch,
    HostNeverMatches,
    CidrHostBits,
    NoAudienceCheck,
}

impl WarningKind {
    pub fn code(self) -> &'static str {
        match self {
            WarningKind::ShadowedRule => "shadowed-rule",
            WarningKind::DuplicateRuleName => "duplicate-rule-name",
            WarningKind::RuleWithoutMatch => "rule-without-match",
            WarningKind::HostNeverMatches => "host-never-matches",
            WarningKind::CidrHostBits => "cidr-host-bits",
            WarningKind::NoAudienceCheck => "no-audience-check",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub kind: WarningKind,
    /// The JSON path of the field (or object) the warning is about.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

fn warn(kind: WarningKind, path: impl Into<String>, message: impl Into<String>) -> Warning {
    Warning {
        kind,
        path: path.into(),
        message: message.into(),
    }
}

/// An Envoy cluster the configuration sends callouts to: it must exist in Envoy's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterUse {
    pub cluster: String,
    pub provider: String,
    /// The JSON path that names it.
    pub path: String,
    /// What is fetched through it.
    pub fetches: &'static str,
    /// The URI the callout's authority and path come from.
    pub uri: String,
}

/// Every warning for `config`, which was loaded from `raw`.
pub fn lint(config: &Config, raw: &Value) -> Vec<Warning> {
    let mut out = Vec::new();
    rules_without_match(config, raw, &mut out);
    shadowed_rules(config, raw, &mut out);
    duplicate_rule_names(config, raw, &mut out);
    hosts_that_never_match(config, &mut out);
    cidrs_with_host_bits(raw, &mut out);
    providers_without_audience_check(config, &mut out);
    out
}

/// The clusters the config names, in the order of its providers.
pub fn clusters(config: &Config) -> Vec<ClusterUse> {
    let mut out = Vec::new();
    for (i, p) in config.providers.iter().enumerate() {
        let KeySource::Remote(r) = &p.keys else {
            continue;
        };
        let mut push = |cluster: &str, path: String, fetches| {
            out.push(ClusterUse {
                cluster: cluster.to_string(),
                provider: p.name.clone(),
                path,
                fetches,
                uri: r.uri.clone(),
            })
        };
        if !r.discovery {
            push(
                &r.cluster,
                format!("providers[{i}].remote_jwks.cluster"),
                "JWKS",
            );
        } else if r.jwks_cluster == r.cluster {
            push(
                &r.cluster,
                format!("providers[{i}].discovery.cluster"),
                "discovery document and JWKS",
            );
        } else {
            push(
                &r.cluster,
                format!("providers[{i}].discovery.cluster"),
                "discovery document",
            );
            push(
                &r.jwks_cluster,
                format!("providers[{i}].discovery.jwks_cluster"),
                "JWKS",
            );
        }
    }
    out
}

/// `rules[3] "name"`, as messages refer to a rule.
fn rule_ref(config: &Config, i: usize) -> String {
    match config.rules.get(i) {
        Some(r) if r.name != format!("rule-{i}") => format!("rules[{i}] ({:?})", r.name),
        _ => format!("rules[{i}]"),
    }
}

/// `v[key]`, `null` when absent (indexing is not allowed here, even where it cannot panic).
fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&Value::Null)
}

/// Raw rule `i`'s field `key`, if written.
fn rule_field<'a>(raw: &'a Value, i: usize, key: &str) -> Option<&'a Value> {
    field(raw, "rules").get(i)?.get(key)
}

fn has_match(raw: &Value, i: usize) -> bool {
    rule_field(raw, i, "match").is_some()
}

/// A rule with no `match`, or an empty one (`ignore_case` alone selects nothing): it
/// matches every request. An explicit catch-all (`"path_prefix": "/"`) is not warned about.
fn rules_without_match(config: &Config, raw: &Value, out: &mut Vec<Warning>) {
    let last = config.rules.len().saturating_sub(1);
    for i in 0..config.rules.len() {
        // A deny rule without `match` is a condition on every request, which is its point.
        if config.rules.get(i).is_some_and(|r| r.is_deny_rule()) {
            continue;
        }
        let (path, what) = match rule_field(raw, i, "match") {
            None => (format!("rules[{i}]"), "has no `match`"),
            Some(Value::Object(m)) if m.keys().all(|k| k == "ignore_case") => {
                (format!("rules[{i}].match"), "has an empty `match`")
            }
            Some(_) => continue,
        };
        let consequence = if i < last {
            "the rules after it never apply, nor does `default`"
        } else {
            "`default` never applies"
        };
        out.push(warn(
            WarningKind::RuleWithoutMatch,
            path,
            format!(
                "{what}, so it matches every request: {consequence} (write \
                 \"match\": {{\"path_prefix\": \"/\"}} if that is meant)"
            ),
        ));
    }
}

fn shadowed_rules(config: &Config, raw: &Value, out: &mut Vec<Warning>) {
    for (j, later) in config.rules.iter().enumerate() {
        // Deny rules apply wherever they stand, and route rules never hide them.
        if later.is_deny_rule() {
            continue;
        }
        let earlier = config.rules.get(..j).unwrap_or_default();
        let Some(i) = earlier
            .iter()
            .position(|e| !e.is_deny_rule() && covers(&e.matcher, &later.matcher))
        else {
            continue;
        };
        let path = if has_match(raw, j) {
            format!("rules[{j}].match")
        } else {
            format!("rules[{j}]")
        };
        out.push(warn(
            WarningKind::ShadowedRule,
            path,
            format!(
                "{} never decides: {} matches every request it matches, and comes first",
                rule_ref(config, j),
                rule_ref(config, i)
            ),
        ));
    }
}

fn duplicate_rule_names(config: &Config, raw: &Value, out: &mut Vec<Warning>) {
    for (j, rule) in config.rules.iter().enumerate() {
        let first = config
            .rules
            .iter()
            .take(j)
            .position(|r| r.name == rule.name);
        let Some(i) = first else { continue };
        let path = if rule_field(raw, j, "name").is_some() {
            format!("rules[{j}].name")
        } else {
            format!("rules[{j}]")
        };
        out.push(warn(
            WarningKind::DuplicateRuleName,
            path,
            format!(
                "rules[{i}] is also named {:?}: their stats are counted together and audit \
                 lines cannot tell them apart",
                rule.name
            ),
        ));
    }
}

/// Whether every request `later` matches, under every reading of it, `earlier` matches:
/// then `later` never decides (the filter takes the first rule a reading selects).
pub fn covers(earlier: &Matcher, later: &Matcher) -> bool {
    // Every field, so that a new kind of matcher cannot be forgotten here.
    let Matcher {
        path,
        methods,
        host,
        ignore_case,
        headers,
        not,
    } = earlier;
    // A header condition or a `not` narrows what `earlier` matches in ways not compared here.
    if !headers.is_empty() || not.is_some() {
        return false;
    }
    let methods_covered = methods.is_empty()
        || (!later.methods.is_empty() && later.methods.iter().all(|m| methods.contains(m)));
    let host_covered = match (host, &later.host) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(l)) => host_covers(e, l),
    };
    // A rule that ignores case matches more readings than one that does not.
    let case_covered = *ignore_case || !later.ignore_case;
    methods_covered && host_covered && case_covered && path_covers(path, &later.path)
}

fn host_covers(earlier: &HostMatch, later: &HostMatch) -> bool {
    let ports = earlier.any_port || !later.any_port;
    let names = match (&earlier.name, &later.name) {
        (HostName::Exact(a), HostName::Exact(b)) => a.eq_ignore_ascii_case(b),
        (HostName::Suffix(s), HostName::Exact(b)) => {
            b.len() > s.len() && ends_with_ignore_case(b, s)
        }
        (HostName::Suffix(s), HostName::Suffix(t)) => ends_with_ignore_case(t, s),
        (HostName::Exact(_), HostName::Suffix(_)) => false,
    };
    ports && names
}

fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.get(s.len() - suffix.len()..)
            .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
}

/// Whether every path `later` matches, `earlier` matches. Case folding compares character
/// by character and never changes a `/`, so relations shown on the rules' own text hold
/// for folded readings too.
fn path_covers(earlier: &PathMatch, later: &PathMatch) -> bool {
    match (earlier, later) {
        (PathMatch::Any, _) => true,
        (_, PathMatch::Any) => false,
        // One path: does the earlier rule match it?
        (e, PathMatch::Exact(p)) => e.matches(p, false),
        // Every path below `p` (and `p` itself) starts with it at a segment boundary.
        (e @ PathMatch::Prefix(_), PathMatch::Prefix(p)) => e.matches(p, false),
        (e @ PathMatch::Prefix(_), PathMatch::Template(segs)) => {
            literal_head(segs).is_some_and(|head| e.matches(&head, false))
        }
        (PathMatch::Template(es), PathMatch::Template(ls)) => template_covers(es, ls),
        (PathMatch::Template(es), PathMatch::Prefix(p)) => template_covers_prefix(es, p),
        (PathMatch::Exact(_), PathMatch::Prefix(_) | PathMatch::Template(_)) => false,
    }
}

/// `/a/b` for a template `/a/b/{id}/**`: the literal segments before any wildcard. Every
/// path the template matches is that, or that followed by `/`. `None` without one.
fn literal_head(segs: &[Segment]) -> Option<String> {
    let literals: Vec<&str> = segs
        .iter()
        .map_while(|s| match s {
            Segment::Literal(l) => Some(l.as_str()),
            _ => None,
        })
        .collect();
    (!literals.is_empty()).then(|| format!("/{}", literals.join("/")))
}

fn template_covers(earlier: &[Segment], later: &[Segment]) -> bool {
    for (i, e) in earlier.iter().enumerate() {
        match (e, later.get(i)) {
            (Segment::Rest, _) => return true,
            (_, None | Some(Segment::Rest)) => return false,
            (Segment::One, Some(Segment::One)) => {}
            (Segment::One, Some(Segment::Literal(l))) if !l.is_empty() => {}
            (Segment::Literal(a), Some(Segment::Literal(b))) if a == b => {}
            _ => return false,
        }
    }
    earlier.len() == later.len()
}

/// A prefix matches paths of any depth below it: only a template that reaches a final
/// `**` by the prefix's segments covers it.
fn template_covers_prefix(earlier: &[Segment], prefix: &str) -> bool {
    if prefix.ends_with('/') {
        return false;
    }
    let mut parts = prefix.trim_start_matches('/').split('/');
    for e in earlier {
        match (e, parts.next()) {
            (Segment::Rest, _) => return true,
            (_, None) => return false,
            (Segment::One, Some(p)) if !p.is_empty() => {}
            (Segment::Literal(a), Some(p)) if a == p => {}
            _ => return false,
        }
    }
    false
}

fn hosts_that_never_match(config: &Config, out: &mut Vec<Warning>) {
    for (i, rule) in config.rules.iter().enumerate() {
        let Some(host) = &rule.matcher.host else {
            continue;
        };
        if let Some(why) = host_problem(host) {
            out.push(warn(
                WarningKind::HostNeverMatches,
                format!("rules[{i}].match.host"),
                format!("can never match a request from a client that resolved it: {why}"),
            ));
        }
    }
}

/// Why no real host name fits the pattern, if none does. (Wildcards anywhere but at the
/// start, such as `api.*.com`, are already refused when the config loads.)
pub fn host_problem(h: &HostMatch) -> Option<String> {
    let name = match &h.name {
        HostName::Exact(n) if n.contains(':') => {
            return n
                .parse::<std::net::Ipv6Addr>()
                .is_err()
                .then(|| format!("[{n}] is not an IPv6 address"));
        }
        HostName::Exact(n) => n.as_str(),
        HostName::Suffix(s) => s.strip_prefix('.').unwrap_or(s),
    };
    if name.split('.').any(str::is_empty) {
        return Some(format!(
            "{name:?} has an empty label (\"..\" or a leading dot)"
        ));
    }
    if let Some(label) = name.split('.').find(|l| l.len() > 63) {
        return Some(format!(
            "the label {label:?} is longer than DNS allows (63 characters)"
        ));
    }
    if name.len() > 253 {
        return Some("the name is longer than DNS allows (253 characters)".into());
    }
    None
}

/// `10.0.0.1/8`: the filter reads it as `10.0.0.0/8`, which is rarely what was meant.
fn cidrs_with_host_bits(raw: &Value, out: &mut Vec<Warning>) {
    let mut places = Vec::new();
    for (i, p) in array(field(raw, "providers")).iter().enumerate() {
        places.push((
            format!("providers[{i}].ip_bindings"),
            field(p, "ip_bindings"),
        ));
    }
    for (i, r) in array(field(raw, "rules")).iter().enumerate() {
        places.push((
            format!("rules[{i}].require.ip_bindings"),
            field(field(r, "require"), "ip_bindings"),
        ));
    }
    for (at, bindings) in places {
        for (j, b) in array(bindings).iter().enumerate() {
            for (k, c) in array(field(b, "cidrs")).iter().enumerate() {
                let Some(net) = c.as_str().and_then(|s| s.parse::<IpNet>().ok()) else {
                    continue;
                };
                if net.addr() != net.network() {
                    let single = IpNet::from(net.addr());
                    out.push(warn(
                        WarningKind::CidrHostBits,
                        format!("{at}[{j}].cidrs[{k}]"),
                        format!(
                            "{net} has host bits set: it is read as {} (the whole network); \
                             write {} for that network or {single} for the one address",
                            net.trunc(),
                            net.trunc()
                        ),
                    ));
                }
            }
        }
    }
}

fn array(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// `"audiences": "any"`, unless every rule that takes the provider's tokens sets its own.
fn providers_without_audience_check(config: &Config, out: &mut Vec<Warning>) {
    for (i, p) in config.providers.iter().enumerate() {
        if !p.audiences.is_empty() {
            continue;
        }
        let mut unchecked = Vec::new();
        let mut checked = 0;
        for (j, rule) in config.rules.iter().enumerate() {
            if let Action::Require(req) = &rule.action {
                if req.providers.contains(&i) {
                    match req.audiences {
                        Some(_) => checked += 1,
                        None => unchecked.push(rule_ref(config, j)),
                    }
                }
            }
        }
        if checked > 0 && unchecked.is_empty() {
            continue;
        }
        let which = if unchecked.is_empty() {
            String::new()
        } else {
            format!(
                " (rules that take its tokens without audiences of their own: {})",
                unchecked.join(", ")
            )
        };
        out.push(warn(
            WarningKind::NoAudienceCheck,
            format!("providers[{i}].audiences"),
            format!(
                "\"any\": the audience is not checked, so a token its issuer ({:?}) minted \
                 for any other service passes too{which}",
                p.accepts.issuer
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn provider() -> Value {
        json!({"name": "corp", "issuer": "https://idp", "audiences": ["api"],
               "remote_jwks": {"uri": "https://idp/jwks", "cluster": "idp"}})
    }

    fn load(v: &Value) -> Config {
        Config::from_json(v.to_string().as_bytes()).unwrap()
    }

    fn lint_rules(rules: Value) -> Vec<Warning> {
        let v = json!({"providers": [provider()], "rules": rules});
        lint(&load(&v), &v)
    }

    fn kinds(ws: &[Warning]) -> Vec<(WarningKind, &str)> {
        ws.iter().map(|w| (w.kind, w.path.as_str())).collect()
    }

    fn anon(m: Value) -> Value {
        json!({"match": m, "allow": "anonymous"})
    }

    /// Whether the second rule is reported as shadowed by the first.
    fn shadows(first: Value, second: Value) -> bool {
        let ws = lint_rules(json!([anon(first), anon(second)]));
        ws.iter().any(|w| w.kind == WarningKind::ShadowedRule)
    }

    #[test]
    fn a_clean_config_has_no_warnings() {
        let ws = lint_rules(json!([
            anon(json!({"path": "/health"})),
            {"name": "read", "match": {"methods": ["GET"], "path_prefix": "/workflows"},
             "require": {"scopes": ["workflow:read"]}},
            {"name": "write", "match": {"methods": ["POST"], "path_prefix": "/workflows"},
             "require": {"scopes": ["workflow:write"]}},
        ]));
        assert_eq!(ws, vec![]);
    }

    #[test]
    fn paths_that_cover_later_ones() {
        let covered = [
            (json!({"path_prefix": "/api"}), json!({"path": "/api/x"})),
            (json!({"path_prefix": "/api"}), json!({"path": "/api"})),
            (
                json!({"path_prefix": "/api"}),
                json!({"path_prefix": "/api/v1"}),
            ),
            (
                json!({"path_prefix": "/api/"}),
                json!({"path_prefix": "/api/v1"}),
            ),
            (json!({"path_prefix": "/"}), json!({"path": "/x"})),
            (json!({"path": "/a"}), json!({"path": "/a"})),
            (
                json!({"path_prefix": "/w"}),
                json!({"path_template": "/w/{id}/steps"}),
            ),
            (
                json!({"path_template": "/w/*"}),
                json!({"path_template": "/w/{id}"}),
            ),
            (json!({"path_template": "/w/{id}"}), json!({"path": "/w/7"})),
            (
                json!({"path_template": "/w/**"}),
                json!({"path_template": "/w/{id}/x/**"}),
            ),
            (
                json!({"path_template": "/w/**"}),
                json!({"path_prefix": "/w/a"}),
            ),
            (
                json!({"path_template": "/**"}),
                json!({"path_prefix": "/w"}),
            ),
            (
                json!({}),
                json!({"path": "/x", "methods": ["GET"], "host": "a.example.com"}),
            ),
        ];
        for (first, second) in covered {
            assert!(shadows(first.clone(), second.clone()), "{first} {second}");
        }
        let not_covered = [
            (json!({"path_prefix": "/api"}), json!({"path": "/apix"})),
            (
                json!({"path_prefix": "/api/"}),
                json!({"path_prefix": "/api"}),
            ),
            (
                json!({"path_prefix": "/api/v1"}),
                json!({"path_prefix": "/api"}),
            ),
            (json!({"path": "/a"}), json!({"path_prefix": "/a"})),
            (json!({"path": "/a"}), json!({"path_template": "/a"})),
            (
                json!({"path_prefix": "/w"}),
                json!({"path_template": "/{id}/w"}),
            ),
            (
                json!({"path_template": "/w/{id}"}),
                json!({"path_template": "/w/**"}),
            ),
            (
                json!({"path_template": "/w/{id}"}),
                json!({"path_template": "/w/{id}/x"}),
            ),
            (
                json!({"path_template": "/w/x"}),
                json!({"path_template": "/w/*"}),
            ),
            (
                json!({"path_template": "/w/*/**"}),
                json!({"path_prefix": "/w"}),
            ),
            (
                json!({"path_template": "/w/**"}),
                json!({"path_prefix": "/w/a/"}),
            ),
            (json!({"path": "/x"}), json!({})),
        ];
        for (first, second) in not_covered {
            assert!(!shadows(first.clone(), second.clone()), "{first} {second}");
        }
    }

    #[test]
    fn methods_hosts_and_case_must_be_covered_too() {
        let p = |extra: Value| {
            let mut m = json!({"path_prefix": "/a"});
            m.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            m
        };
        let covered = [
            (json!({}), json!({"methods": ["GET"]})),
            (
                json!({"methods": ["GET", "POST"]}),
                json!({"methods": ["post"]}),
            ),
            (
                json!({"host": "*.example.com"}),
                json!({"host": "api.example.com"}),
            ),
            (
                json!({"host": "*.example.com"}),
                json!({"host": "*.api.example.com"}),
            ),
            (
                json!({"host": "API.example.com:*"}),
                json!({"host": "api.example.com"}),
            ),
            (json!({"ignore_case": true}), json!({})),
        ];
        for (first, second) in covered {
            assert!(
                shadows(p(first.clone()), p(second.clone())),
                "{first} {second}"
            );
        }
        let not_covered = [
            (json!({"methods": ["GET"]}), json!({})),
            (
                json!({"methods": ["GET"]}),
                json!({"methods": ["GET", "HEAD"]}),
            ),
            (json!({"host": "api.example.com"}), json!({})),
            (
                json!({"host": "*.example.com"}),
                json!({"host": "example.com"}),
            ),
            (
                json!({"host": "api.example.com"}),
                json!({"host": "*.example.com"}),
            ),
            (
                json!({"host": "api.example.com"}),
                json!({"host": "api.example.com:*"}),
            ),
            (
                json!({"host": "*.example.com"}),
                json!({"host": "*.xexample.com"}),
            ),
            (json!({}), json!({"ignore_case": true})),
        ];
        for (first, second) in not_covered {
            assert!(
                !shadows(p(first.clone()), p(second.clone())),
                "{first} {second}"
            );
        }
    }

    /// What `covers` claims, checked against the filter's own matcher on many requests:
    /// whenever the later rule matches a request under some reading, the earlier must too.
    #[test]
    fn covers_never_claims_what_the_matcher_denies() {
        use crate::routing::HostReading;
        let matchers = [
            json!({}),
            json!({"path": "/a"}),
            json!({"path": "/a/b"}),
            json!({"path_prefix": "/a"}),
            json!({"path_prefix": "/a/"}),
            json!({"path_prefix": "/a/b"}),
            json!({"path_template": "/a/*"}),
            json!({"path_template": "/a/{x}/c"}),
            json!({"path_template": "/a/**"}),
            json!({"path_template": "/*/b"}),
            json!({"path_prefix": "/A", "ignore_case": true}),
            json!({"path_prefix": "/a", "methods": ["GET"]}),
            json!({"path_prefix": "/a", "host": "*.x.com"}),
            json!({"path_prefix": "/a", "host": "a.x.com:*"}),
        ];
        let rules: Vec<Value> = matchers.iter().map(|m| anon(m.clone())).collect();
        let v = json!({"providers": [provider()], "rules": rules});
        let c = load(&v);
        let paths = [
            "/", "/a", "/A", "/a/", "/a/b", "/a/B", "/a/b/c", "/a/x/c", "/ab", "/b", "/x/b",
            "/a//b", "/ſ",
        ];
        let hosts = [
            HostReading {
                host: "a.x.com",
                port: None,
            },
            HostReading {
                host: "a.x.com",
                port: Some("8080"),
            },
            HostReading {
                host: "b.a.x.com",
                port: None,
            },
            HostReading {
                host: "y.com",
                port: None,
            },
        ];
        for e in &c.rules {
            for l in &c.rules {
                if !covers(&e.matcher, &l.matcher) {
                    continue;
                }
                for p in paths {
                    for h in hosts {
                        for m in ["GET", "POST", "get"] {
                            for fold in [false, true] {
                                let none = crate::headers::HeaderSnapshot::default();
                                let fit = |r: &crate::policy::Rule| {
                                    r.matcher.matches(m, h, p, fold, &none)
                                        != crate::routing::Fit::No
                                };
                                if fit(l) {
                                    assert!(
                                        fit(e),
                                        "{} covers {} but not {m} {h:?} {p} {fold}",
                                        e.name,
                                        l.name
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_rule_without_match_and_what_it_shadows() {
        let ws = lint_rules(json!([
            {"require": {"scopes": ["a"]}},
            anon(json!({"path": "/health"})),
        ]));
        assert_eq!(
            kinds(&ws),
            vec![
                (WarningKind::RuleWithoutMatch, "rules[0]"),
                (WarningKind::ShadowedRule, "rules[1].match"),
            ]
        );
        assert!(
            ws[0].message.contains("rules after it never apply"),
            "{}",
            ws[0]
        );
        assert!(ws[1].message.contains("rules[0]"), "{}", ws[1]);
        // Last: only the default is lost. An explicit catch-all is not warned about.
        let ws = lint_rules(json!([anon(json!({"path": "/h"})), {"allow": "anonymous"}]));
        assert_eq!(
            kinds(&ws),
            vec![(WarningKind::RuleWithoutMatch, "rules[1]")]
        );
        assert!(ws[0].message.contains("`default` never applies"));
        assert_eq!(
            lint_rules(json!([
                anon(json!({"path": "/h"})),
                anon(json!({"path_prefix": "/"}))
            ])),
            vec![]
        );
        let ws = lint_rules(json!([
            anon(json!({"ignore_case": true})),
            anon(json!({"path": "/h"}))
        ]));
        assert_eq!(
            kinds(&ws),
            vec![
                (WarningKind::RuleWithoutMatch, "rules[0].match"),
                (WarningKind::ShadowedRule, "rules[1].match"),
            ]
        );
        assert!(
            ws[0].message.starts_with("has an empty `match`"),
            "{}",
            ws[0]
        );
    }

    #[test]
    fn duplicate_names_including_a_default_name() {
        let ws = lint_rules(json!([
            {"name": "a", "match": {"path": "/1"}, "allow": "anonymous"},
            {"name": "a", "match": {"path": "/2"}, "allow": "anonymous"},
            {"match": {"path": "/3"}, "allow": "anonymous"},
            {"name": "rule-2", "match": {"path": "/4"}, "allow": "anonymous"},
        ]));
        assert_eq!(
            kinds(&ws),
            vec![
                (WarningKind::DuplicateRuleName, "rules[1].name"),
                (WarningKind::DuplicateRuleName, "rules[3].name"),
            ]
        );
        assert!(ws[0].message.contains("rules[0]"));
    }

    #[test]
    fn hosts_no_client_can_send() {
        let ws = lint_rules(json!([
            anon(json!({"host": "api..example.com"})),
            anon(json!({"host": "*..example.com"})),
            anon(json!({"host": "[fe80::zz]"})),
            anon(json!({"host": format!("{}.com", "a".repeat(64))})),
            anon(json!({"host": "[::1]:*"})),
            anon(json!({"host": "*.example.com"})),
            anon(json!({"host": "api_1.example.com"})),
        ]));
        let hosts: Vec<_> = ws
            .iter()
            .filter(|w| w.kind == WarningKind::HostNeverMatches)
            .map(|w| w.path.as_str())
            .collect();
        assert_eq!(
            hosts,
            vec![
                "rules[0].match.host",
                "rules[1].match.host",
                "rules[2].match.host",
                "rules[3].match.host"
            ]
        );
        // A wildcard in the middle never gets this far: the filter refuses it at load.
        let v = json!({"providers": [provider()], "rules": [anon(json!({"host": "api.*.com"}))]});
        let e = Config::from_json(v.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.path, "rules[0].match.host");
    }

    #[test]
    fn cidrs_with_host_bits_in_providers_and_rules() {
        let mut p = provider();
        p["ip_bindings"] = json!([{"principals": {"sub": ["a"]},
                                   "cidrs": ["10.0.0.0/8", "10.0.0.1/8", "10.0.0.7", "fd00::1/64"]}]);
        let v = json!({"providers": [p], "rules": [
            {"match": {"path": "/x"}, "require": {"ip_bindings": [
                {"principals": {"sub": ["a"]}, "cidrs": ["192.168.1.0/24", "192.168.1.9/24"]}]}}]});
        let ws = lint(&load(&v), &v);
        assert_eq!(
            kinds(&ws),
            vec![
                (
                    WarningKind::CidrHostBits,
                    "providers[0].ip_bindings[0].cidrs[1]"
                ),
                (
                    WarningKind::CidrHostBits,
                    "providers[0].ip_bindings[0].cidrs[3]"
                ),
                (
                    WarningKind::CidrHostBits,
                    "rules[0].require.ip_bindings[0].cidrs[1]"
                ),
            ]
        );
        assert!(ws[0].message.contains("10.0.0.0/8"), "{}", ws[0]);
        assert!(ws[0].message.contains("10.0.0.1/32"), "{}", ws[0]);
    }

    #[test]
    fn audience_any_unless_every_rule_sets_its_own() {
        let mut p = provider();
        p["audiences"] = "any".into();
        let with_rules = |rules: Value| {
            let v = json!({"providers": [p.clone()], "rules": rules});
            kinds(&lint(&load(&v), &v))
                .into_iter()
                .map(|(k, path)| (k, path.to_string()))
                .collect::<Vec<_>>()
        };
        let warned = vec![(
            WarningKind::NoAudienceCheck,
            "providers[0].audiences".to_string(),
        )];
        assert_eq!(with_rules(json!([])), warned);
        assert_eq!(
            with_rules(json!([{"match": {"path": "/a"}, "require": {}}])),
            warned
        );
        assert_eq!(
            with_rules(json!([{"match": {"path": "/a"}, "require": {"audiences": ["api"]}}])),
            vec![]
        );
    }

    #[test]
    fn clusters_of_remote_and_discovery_providers() {
        let v = json!({"providers": [
            provider(),
            {"name": "g", "issuer": "https://g", "audiences": ["x"],
             "discovery": {"uri": "https://g/.well-known/openid-configuration",
                           "cluster": "g_idp", "jwks_cluster": "g_keys"}},
            {"name": "k", "issuer": "https://k", "audiences": ["x"],
             "discovery": {"uri": "https://k/.well-known/openid-configuration", "cluster": "k"}},
        ]});
        let c = clusters(&load(&v));
        let got: Vec<(&str, &str, &str)> = c
            .iter()
            .map(|u| (u.cluster.as_str(), u.path.as_str(), u.fetches))
            .collect();
        assert_eq!(
            got,
            vec![
                ("idp", "providers[0].remote_jwks.cluster", "JWKS"),
                (
                    "g_idp",
                    "providers[1].discovery.cluster",
                    "discovery document"
                ),
                ("g_keys", "providers[1].discovery.jwks_cluster", "JWKS"),
                (
                    "k",
                    "providers[2].discovery.cluster",
                    "discovery document and JWKS"
                ),
            ]
        );
    }
}
