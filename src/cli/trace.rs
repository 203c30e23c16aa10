//! A rule's requirement tree ([`Check`]) evaluated node by node, for `jwt-guard explain`.
//!
//! The walk mirrors [`Check::eval`]: a leaf's verdict is the leaf's own `eval` (the
//! filter's code), and `all` / `any` combine their children's verdicts exactly as `eval`
//! does (`all`: the first failure; `any`: the first success, else the first failure, a
//! scope failure preferred). Every child is evaluated so that all of them can be shown;
//! the checks are pure, so that changes nothing. A test holds the trace's verdict equal
//! to `eval` over many trees and tokens.

use serde_json::{json, Value};

use crate::policy::{granted_roles, granted_scopes, Check, Pattern, Subject, Unmet};

/// One node of the tree: what it asks, whether the token meets it, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub requirement: String,
    pub verdict: Result<(), Unmet>,
    /// What the token has that the node looked at.
    pub found: Option<String>,
    pub children: Vec<Trace>,
}

/// Evaluates `check` for `subject`; `providers` are the config's provider names.
pub fn trace(check: &Check, subject: &Subject<'_>, providers: &[String]) -> Trace {
    match check {
        Check::All(list) => {
            let children: Vec<Trace> = list.iter().map(|c| trace(c, subject, providers)).collect();
            let verdict = children
                .iter()
                .map(|c| c.verdict.clone())
                .find(Result::is_err)
                .unwrap_or(Ok(()));
            Trace {
                requirement: "all of".into(),
                verdict,
                found: None,
                children,
            }
        }
        Check::Any(list) => {
            let children: Vec<Trace> = list.iter().map(|c| trace(c, subject, providers)).collect();
            Trace {
                requirement: "any of".into(),
                verdict: any_verdict(&children),
                found: None,
                children,
            }
        }
        Check::Not(inner) => {
            let child = trace(inner, subject, providers);
            let verdict = match child.verdict {
                Ok(()) => Err(Unmet::Denied),
                Err(_) => Ok(()),
            };
            Trace {
                requirement: "not".into(),
                verdict,
                found: None,
                children: vec![child],
            }
        }
        leaf => Trace {
            requirement: describe(leaf, providers),
            verdict: leaf.eval(subject),
            found: Some(found(leaf, subject, providers)),
            children: Vec::new(),
        },
    }
}

/// `Check::Any`'s verdict from its children's: the first success; else the first
/// failure, replaced by the first scope failure if there is one after it.
fn any_verdict(children: &[Trace]) -> Result<(), Unmet> {
    let mut first_failure = None;
    for c in children {
        match &c.verdict {
            Ok(()) => return Ok(()),
            Err(u) => match (&first_failure, u) {
                (None, u) | (Some(Unmet::Denied), u @ Unmet::Scope(_)) => {
                    first_failure = Some(u.clone())
                }
                _ => {}
            },
        }
    }
    Err(first_failure.unwrap_or(Unmet::Denied))
}

fn provider_names(list: &[usize], providers: &[String]) -> String {
    list.iter()
        .map(|i| providers.get(*i).map_or("?", String::as_str))
        .collect::<Vec<_>>()
        .join(", ")
}

fn names(list: &[String], any: bool) -> String {
    format!(
        "{} [{}]",
        if any { "any of" } else { "all of" },
        list.join(", ")
    )
}

fn pattern_text(p: &Pattern) -> String {
    match p {
        Pattern::Exact(s) => s.clone(),
        Pattern::Prefix(s) => format!("{s}*"),
        Pattern::Suffix(s) => format!("*{s}"),
        Pattern::Any => "*".into(),
    }
}

/// What a leaf asks, in the config's terms.
fn describe(leaf: &Check, providers: &[String]) -> String {
    match leaf {
        Check::Providers(list) => format!("provider: one of [{}]", provider_names(list, providers)),
        Check::Scopes { names: n, any } => format!("scopes: {}", names(n, *any)),
        Check::Roles { names: n, any } => format!("roles: {}", names(n, *any)),
        Check::Principals(p) => {
            let each: Vec<String> =
                p.0.iter()
                    .map(|(claim, patterns)| {
                        let pats: Vec<String> = patterns.iter().map(pattern_text).collect();
                        format!("{} one of [{}]", claim.0.join("."), pats.join(", "))
                    })
                    .collect();
            format!("principals: {}", each.join(" or "))
        }
        Check::Claim { path, values } => {
            let vals: Vec<String> = values.iter().map(Value::to_string).collect();
            format!(
                "claim {} equals one of [{}]",
                path.0.join("."),
                vals.join(", ")
            )
        }
        Check::All(_) | Check::Any(_) | Check::Not(_) => String::new(),
    }
}

/// What the token has that a leaf looks at.
fn found(leaf: &Check, s: &Subject<'_>, providers: &[String]) -> String {
    match leaf {
        Check::Providers(_) => format!(
            "the token's provider is {}",
            providers.get(s.provider).map_or("?", String::as_str)
        ),
        Check::Scopes { .. } => {
            format!("granted scopes: [{}]", granted_scopes(s.claims).join(", "))
        }
        Check::Roles { .. } => {
            let roles: Vec<String> = granted_roles(s.claims, s.role_claims)
                .into_iter()
                .map(|r| r.name)
                .collect();
            format!("granted roles: [{}]", roles.join(", "))
        }
        Check::Principals(p) => {
            let each: Vec<String> =
                p.0.iter()
                    .map(|(claim, _)| claim_text(&claim.0, claim.lookup(s.claims)))
                    .collect();
            each.join(", ")
        }
        Check::Claim { path, .. } => claim_text(&path.0, path.lookup(s.claims)),
        Check::All(_) | Check::Any(_) | Check::Not(_) => String::new(),
    }
}

fn claim_text(path: &[String], v: Option<&Value>) -> String {
    match v {
        Some(v) => format!("{} is {v}", path.join(".")),
        None => format!("{} is absent", path.join(".")),
    }
}

/// `met`, `missing scope` or `not met`.
pub fn verdict_word(v: &Result<(), Unmet>) -> &'static str {
    match v {
        Ok(()) => "met",
        Err(Unmet::Scope(_)) => "not met (scope)",
        Err(Unmet::Denied) => "not met",
    }
}

/// The tree as indented lines, two spaces a level below `indent`.
pub fn render_human(t: &Trace, indent: usize, out: &mut String) {
    let mark = if t.verdict.is_ok() { "[yes]" } else { "[no] " };
    out.push_str(&format!("{}{mark} {}", "  ".repeat(indent), t.requirement));
    if let Some(f) = &t.found {
        out.push_str(&format!("  ({f})"));
    }
    out.push('\n');
    for c in &t.children {
        render_human(c, indent + 1, out);
    }
}

pub fn render_json(t: &Trace) -> Value {
    json!({
        "requirement": t.requirement,
        "met": t.verdict.is_ok(),
        "verdict": verdict_word(&t.verdict),
        "found": t.found,
        "children": t.children.iter().map(render_json).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{ClaimPath, Principals};
    use serde_json::Map;

    fn providers() -> Vec<String> {
        vec!["corp".into(), "google".into()]
    }

    /// xorshift: the same trees and tokens on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> usize {
            (self.next() % n) as usize
        }

        fn pick<'a>(&mut self, from: &'a [&'a str]) -> Vec<String> {
            let mut out: Vec<String> = from
                .iter()
                .filter(|_| self.next().is_multiple_of(2))
                .map(|s| s.to_string())
                .collect();
            if out.is_empty() {
                out.push(from[self.below(from.len() as u64)].to_string());
            }
            out
        }
    }

    const NAMES: [&str; 3] = ["a", "b", "c"];

    fn leaf(r: &mut Rng) -> Check {
        match r.below(5) {
            0 => Check::Providers(if r.next().is_multiple_of(2) {
                vec![0]
            } else {
                vec![1, 0]
            }),
            1 => Check::Scopes {
                names: r.pick(&NAMES),
                any: r.next().is_multiple_of(2),
            },
            2 => Check::Roles {
                names: r.pick(&["admin", "api:reader", "x"]),
                any: r.next().is_multiple_of(2),
            },
            3 => Check::Principals(Principals(vec![(
                ClaimPath::parse("sub").unwrap(),
                vec![Pattern::parse(["svc-*", "svc-a", "*-b", "*"][r.below(4)]).unwrap()],
            )])),
            _ => Check::Claim {
                path: ClaimPath::parse("org.tier").unwrap(),
                values: vec![json!("gold"), json!(3)],
            },
        }
    }

    fn tree(r: &mut Rng, depth: u32) -> Check {
        if depth == 0 || r.next().is_multiple_of(3) {
            return leaf(r);
        }
        let n = 1 + r.below(3);
        let children = (0..n).map(|_| tree(r, depth - 1)).collect();
        if r.next().is_multiple_of(2) {
            Check::All(children)
        } else {
            Check::Any(children)
        }
    }

    fn claims(r: &mut Rng) -> Map<String, Value> {
        let mut c = Map::new();
        if !r.next().is_multiple_of(4) {
            c.insert("scope".into(), json!(r.pick(&NAMES).join(" ")));
        }
        if r.next().is_multiple_of(3) {
            c.insert("scp".into(), json!(r.pick(&NAMES)));
        }
        if r.next().is_multiple_of(2) {
            c.insert(
                "realm_access".into(),
                json!({"roles": r.pick(&["admin", "x", "y"])}),
            );
        }
        if r.next().is_multiple_of(2) {
            c.insert(
                "resource_access".into(),
                json!({"api": {"roles": r.pick(&["reader", "writer"])}}),
            );
        }
        c.insert("sub".into(), json!(["svc-a", "svc-b", "user"][r.below(3)]));
        match r.below(3) {
            0 => c.insert(
                "org".into(),
                json!({"tier": (["gold", "silver"][r.below(2)])}),
            ),
            1 => c.insert("org".into(), json!({"tier": [1, 3]})),
            _ => None,
        };
        c
    }

    #[test]
    fn the_trace_verdict_is_always_evals() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let roles = crate::policy::default_role_claims();
        let mut seen = [0usize; 3];
        for _ in 0..5_000 {
            let check = tree(&mut r, 3);
            let claims = claims(&mut r);
            let s = Subject {
                provider: r.below(2),
                claims: &claims,
                role_claims: &roles,
            };
            let t = trace(&check, &s, &providers());
            assert_eq!(t.verdict, check.eval(&s), "{check:?} {claims:?}");
            seen[match t.verdict {
                Ok(()) => 0,
                Err(Unmet::Scope(_)) => 1,
                Err(Unmet::Denied) => 2,
            }] += 1;
        }
        // The cases cover every verdict, not only the easy ones.
        assert!(seen.iter().all(|n| *n > 200), "{seen:?}");
    }

    #[test]
    fn nodes_say_what_they_ask_and_what_the_token_has() {
        let check = Check::Any(vec![
            Check::All(vec![
                Check::Providers(vec![0]),
                Check::Scopes {
                    names: vec!["w".into()],
                    any: false,
                },
            ]),
            Check::Principals(Principals(vec![(
                ClaimPath::parse("email").unwrap(),
                vec![Pattern::parse("*@corp.example").unwrap()],
            )])),
        ]);
        let claims = json!({"scope": "r", "email": "x@else.example"});
        let s = Subject {
            provider: 0,
            claims: claims.as_object().unwrap(),
            role_claims: &[],
        };
        let t = trace(&check, &s, &providers());
        assert_eq!(t.verdict, Err(Unmet::Scope(vec!["w".into()])));
        let mut text = String::new();
        render_human(&t, 1, &mut text);
        assert_eq!(
            text,
            "  [no]  any of\n\
             \x20   [no]  all of\n\
             \x20     [yes] provider: one of [corp]  (the token's provider is corp)\n\
             \x20     [no]  scopes: all of [w]  (granted scopes: [r])\n\
             \x20   [no]  principals: email one of [*@corp.example]  (email is \"x@else.example\")\n"
        );
        let j = render_json(&t);
        assert_eq!(j["verdict"], "not met (scope)");
        assert_eq!(j["children"][0]["children"][0]["met"], true);
    }
}
