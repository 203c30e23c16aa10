//! What an allowed request carries upstream: identity headers from verified claims.

use serde_json::Value;

use crate::config::Provider;
use crate::flow::Identity;

/// The headers to set for a verified identity. A claim that is absent, or whose text
/// could not be a header value, sets nothing (and is named in `skipped`).
pub fn identity_headers(
    provider: &Provider,
    id: &Identity,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut set = Vec::new();
    let mut skipped = Vec::new();
    for ch in &provider.claims_to_headers {
        match ch.claim.lookup(&id.token.claims).and_then(header_text) {
            Some(v) => set.push((ch.header.clone(), v)),
            None => skipped.push(ch.header.clone()),
        }
    }
    if let (Some(h), Some(payload)) = (&provider.payload_header, &id.payload) {
        set.push((h.clone(), payload.clone()));
    }
    (set, skipped)
}

/// A claim as header text: strings as they are, arrays joined with `,`, other JSON as
/// JSON. `None` for control characters (header injection) and for empty values.
fn header_text(v: &Value) -> Option<String> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Null => return None,
        other => other.to_string(),
    };
    let clean = !text.is_empty() && !text.chars().any(|c| c.is_control());
    clean.then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClaimHeader;
    use crate::extract::TokenSource;
    use crate::policy::ClaimPath;
    use crate::testkit::*;
    use crate::verify::{Alg, Verified};
    use serde_json::json;

    fn identity(claims: Value) -> Identity {
        Identity {
            provider: 0,
            token: std::sync::Arc::new(Verified {
                claims: claims.as_object().unwrap().clone(),
                expires_at: NOW + 60,
                not_before: None,
                issued_at: None,
                kid: None,
                alg: Alg::Es256,
            }),
            source: TokenSource::Query("t".into()),
            payload: Some("eyJzdWIiOiJ4In0".into()),
        }
    }

    #[test]
    fn claims_become_headers() {
        let mut p = provider();
        let map = |c: &str, h: &str| ClaimHeader {
            claim: ClaimPath::parse(c).unwrap(),
            header: h.into(),
        };
        p.claims_to_headers = vec![
            map("sub", "x-jwt-sub"),
            map("realm_access.roles", "x-jwt-roles"),
            map("email_verified", "x-jwt-verified"),
            map("missing", "x-jwt-missing"),
            map("evil", "x-jwt-evil"),
        ];
        p.payload_header = Some("x-jwt-payload".into());
        let id = identity(
            json!({"sub": "svc-a", "realm_access": {"roles": ["a", "b"]},
                                 "email_verified": true, "evil": "x\r\nset-cookie: y"}),
        );
        let (set, skipped) = identity_headers(&p, &id);
        assert_eq!(
            set,
            vec![
                ("x-jwt-sub".to_string(), "svc-a".to_string()),
                ("x-jwt-roles".into(), "a,b".into()),
                ("x-jwt-verified".into(), "true".into()),
                ("x-jwt-payload".into(), "eyJzdWIiOiJ4In0".into()),
            ]
        );
        assert_eq!(skipped, vec!["x-jwt-missing", "x-jwt-evil"]);
    }
}
