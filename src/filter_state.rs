//! The decision as properties of the request, for what runs after jwt-guard. Envoy keeps a
//! property a filter sets as filter state named `wasm.<name>` (a byte string), which later
//! filters read, RBAC and CEL match (`filter_state['wasm.jwt_guard.sub']`), and access logs
//! print (`%FILTER_STATE(wasm.jwt_guard.sub:PLAIN)%`).
//!
//! Only what is known is set: the decision always; the rule when one decided; the deny code
//! of a refusal; the identity only from a token that was verified (a denied request's too,
//! for the access log): `sub`, `iss`, `client_id` (or else `azp`), `scope` (or else `scp`,
//! a list joined with spaces). A claim that is not a string, or that holds control characters
//! (it could forge a line of a plain-text access log), or that is longer than
//! [`MAX_VALUE_BYTES`], is left out rather than changed: a value there is always the
//! verified claim as the token carries it.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::audit::Verdict;

/// Every property name starts with this (Envoy adds `wasm.` in front).
pub const PREFIX: &str = "jwt_guard.";

pub const DECISION: &str = "jwt_guard.decision";
pub const RULE: &str = "jwt_guard.rule";
pub const CODE: &str = "jwt_guard.code";
pub const SUB: &str = "jwt_guard.sub";
pub const ISS: &str = "jwt_guard.iss";
pub const CLIENT_ID: &str = "jwt_guard.client_id";
pub const SCOPE: &str = "jwt_guard.scope";

/// Longer claims are not copied into filter state.
pub const MAX_VALUE_BYTES: usize = 4096;

/// The properties of `v`, as (name, value); `None` where nothing is known. Borrowed from
/// the verdict: a decision allocates nothing to publish them (but a `scp` list, joined).
pub fn entries<'a>(v: &Verdict<'a>) -> [(&'static str, Option<Cow<'a, str>>); 7] {
    let claims = v.identity.map(|id| &id.token.claims);
    let text = |name: &str| {
        claims
            .and_then(|c| c.get(name))
            .and_then(Value::as_str)
            .filter(|s| safe(s))
            .map(Cow::Borrowed)
    };
    [
        (DECISION, Some(Cow::Borrowed(v.decision.as_str()))),
        (RULE, v.rule.map(Cow::Borrowed)),
        (CODE, v.code.map(|c| Cow::Borrowed(c.code()))),
        (SUB, text("sub")),
        (ISS, text("iss")),
        (CLIENT_ID, text("client_id").or_else(|| text("azp"))),
        (SCOPE, text("scope").or_else(|| scp(claims?))),
    ]
}

/// `scp` as a space-separated list, as `scope` has it.
fn scp(claims: &Map<String, Value>) -> Option<Cow<'_, str>> {
    let joined = match claims.get("scp")? {
        Value::String(s) => Cow::Borrowed(s.as_str()),
        Value::Array(list) => {
            let names: Option<Vec<&str>> = list.iter().map(Value::as_str).collect();
            Cow::Owned(names?.join(" "))
        }
        _ => return None,
    };
    safe(&joined).then_some(joined)
}

/// A value that can go into a plain-text log line as it is.
fn safe(s: &str) -> bool {
    s.len() <= MAX_VALUE_BYTES && !s.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::audit::Decision;
    use crate::deny::DenyCode;
    use crate::extract::TokenSource;
    use crate::flow::Identity;
    use crate::verify::{Alg, Verified};

    fn identity(claims: Value) -> Identity {
        let Value::Object(claims) = claims else {
            unreachable!()
        };
        Identity {
            provider: 0,
            token: Arc::new(Verified {
                claims,
                expires_at: 0,
                not_before: None,
                issued_at: None,
                kid: None,
                alg: Alg::Es256,
            }),
            source: TokenSource::Cookie("t".into()),
            payload: None,
        }
    }

    fn verdict<'a>(decision: Decision, id: Option<&'a Identity>) -> Verdict<'a> {
        Verdict {
            decision,
            rule: Some("workflows-write"),
            code: None,
            identity: id,
        }
    }

    /// The properties that are set.
    fn set(v: &Verdict<'_>) -> Vec<(&'static str, String)> {
        entries(v)
            .into_iter()
            .filter_map(|(n, v)| Some((n, v?.into_owned())))
            .collect()
    }

    fn get(entries: &[(&str, String)], name: &str) -> Option<String> {
        entries
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }

    #[test]
    fn an_allowed_token_gives_its_verified_identity() {
        let id = identity(json!({
            "sub": "svc-a", "iss": "https://idp", "azp": "client-7",
            "scope": "workflow:read workflow:write", "email": "a@b"
        }));
        let e = set(&verdict(Decision::Allow, Some(&id)));
        let names: Vec<&str> = e.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, [DECISION, RULE, SUB, ISS, CLIENT_ID, SCOPE]);
        assert_eq!(get(&e, DECISION).as_deref(), Some("allow"));
        assert_eq!(get(&e, RULE).as_deref(), Some("workflows-write"));
        assert_eq!(get(&e, CLIENT_ID).as_deref(), Some("client-7"), "azp");
        assert_eq!(
            get(&e, SCOPE).as_deref(),
            Some("workflow:read workflow:write")
        );
        assert!(e.iter().all(|(n, _)| n.starts_with(PREFIX)));
        // client_id wins over azp, and `scp` lists count.
        let id = identity(json!({"client_id": "c", "azp": "a", "scp": ["x", "y"]}));
        let e = set(&verdict(Decision::Allow, Some(&id)));
        assert_eq!(get(&e, CLIENT_ID).as_deref(), Some("c"));
        assert_eq!(get(&e, SCOPE).as_deref(), Some("x y"));
        assert_eq!(get(&e, SUB), None);
    }

    #[test]
    fn without_a_token_only_the_decision_and_rule() {
        let e = set(&verdict(Decision::Allow, None));
        assert_eq!(
            e,
            [
                (DECISION, "allow".to_string()),
                (RULE, "workflows-write".to_string())
            ]
        );
        let preflight = Verdict {
            decision: Decision::CorsPreflight,
            rule: None,
            code: None,
            identity: None,
        };
        assert_eq!(set(&preflight), [(DECISION, "cors_preflight".into())]);
    }

    #[test]
    fn a_refusal_carries_its_code_and_the_identity_it_verified() {
        let id = identity(json!({"sub": "svc-a", "scope": "workflow:read"}));
        let v = Verdict {
            code: Some(DenyCode::InsufficientScope),
            ..verdict(Decision::Deny, Some(&id))
        };
        let e = set(&v);
        assert_eq!(get(&e, DECISION).as_deref(), Some("deny"));
        assert_eq!(get(&e, CODE).as_deref(), Some("AUTH_102"));
        assert_eq!(get(&e, SUB).as_deref(), Some("svc-a"));
    }

    #[test]
    fn claims_that_could_forge_a_log_line_are_left_out_not_changed() {
        let long = "x".repeat(MAX_VALUE_BYTES + 1);
        let id = identity(json!({
            "sub": "a\nGET /admin 200", "iss": long, "client_id": 7, "scope": "read\twrite"
        }));
        let e = set(&verdict(Decision::Allow, Some(&id)));
        assert_eq!(e.len(), 2, "{e:?}");
        let id = identity(json!({"scp": ["read", 7]}));
        assert_eq!(set(&verdict(Decision::Allow, Some(&id))).len(), 2);
    }
}
