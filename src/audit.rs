//! One structured log line per decision: who, which rule, what was decided and why.
//! Never the token.

use serde_json::{json, Value};

use crate::config::Config;
use crate::flow::{Identity, Outcome};

/// What the audit line says of the request itself.
pub struct RequestLine {
    pub method: String,
    /// `:path`; logged without its query, which may carry a token.
    pub path: String,
    /// `x-request-id`, to find the request in Envoy's access log.
    pub request_id: Option<String>,
}

impl RequestLine {
    pub fn of(headers: &crate::headers::HeaderSnapshot) -> RequestLine {
        RequestLine {
            method: headers.get(":method").unwrap_or_default(),
            path: headers.get(":path").unwrap_or_default(),
            request_id: headers.get("x-request-id"),
        }
    }
}

/// The audit record of `outcome`, or `None` when the config does not log it (allowed
/// requests only with `audit_log.allowed`, denials unless `audit_log.denied` is false;
/// dry-run denials and tokens `allow_failed` ignored always, since reporting them is what
/// those modes are for). `line` and `source` give
/// the client address as the host reports it, asked for only when a line is logged.
pub fn record(
    cfg: &Config,
    outcome: &Outcome,
    line: impl FnOnce() -> RequestLine,
    source: impl FnOnce() -> Option<String>,
) -> Option<Value> {
    let (decision, rule, code, identity) = match outcome {
        Outcome::Allow(a) => match (&a.dry_run_denial, a.ignored_failure) {
            (Some(d), _) => ("dry_run_deny", a.rule, Some(d.code), a.identity.as_ref()),
            // `allow_failed` is for migrations: what it lets through is always reported.
            (None, Some(code)) => ("allow_failed_token", a.rule, Some(code), None),
            (None, None) if cfg.audit_allowed => ("allow", a.rule, None, a.identity.as_ref()),
            (None, None) => return None,
        },
        Outcome::Deny(_) if !cfg.audit_denied => return None,
        Outcome::Deny(d) => ("deny", d.rule, Some(d.denial.code), d.identity.as_ref()),
        Outcome::WaitForKeys { .. } => return None,
    };
    let rule_name = rule
        .and_then(|i| cfg.rules.get(i))
        .map_or("default", |r| r.name.as_str());
    let claim = |id: Option<&Identity>, names: &[&str]| {
        id.and_then(|id| {
            names
                .iter()
                .find_map(|n| id.token.claims.get(*n).and_then(Value::as_str))
                .map(|s| s.chars().take(256).collect::<String>())
        })
    };
    let line = line();
    Some(json!({
        "decision": decision,
        "code": code.map(|c| c.code()),
        "status": code.map_or(200, |c| if decision == "deny" { c.status() } else { 200 }),
        "rule": rule_name,
        "provider": identity.and_then(|id| cfg.providers.get(id.provider)).map(|p| p.name.as_str()),
        "sub": claim(identity, &["sub"]),
        "client_id": claim(identity, &["client_id", "azp"]),
        "method": line.method,
        "path": crate::routing::route_path(&line.path),
        "request_id": line.request_id.as_deref().map(printable),
        "source": source().as_deref().map(printable),
    }))
}

/// Text from the request, safe in a log line: printable ASCII, at most 128 characters.
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(128)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deny::{Denial, DenyCode};
    use crate::flow::{Allowed, Denied};

    fn request(path: &str) -> RequestLine {
        RequestLine {
            method: "GET".into(),
            path: path.into(),
            request_id: Some("7f1c\n0a52".into()),
        }
    }

    fn peer() -> Option<String> {
        Some("10.0.1.5:40000".into())
    }

    fn config(audit: &str) -> Config {
        let jwks = crate::testkit::jwks_json();
        let json = format!(
            r#"{{"providers": [{{"name": "p", "issuer": "https://i", "audiences": "any", "local_jwks": {{"inline": {jwks}}}}}],
                "rules": [{{"name": "api", "match": {{"path_prefix": "/"}}, "allow": "anonymous"}}]{audit}}}"#
        );
        Config::from_json(json.as_bytes()).unwrap()
    }

    fn deny() -> Outcome {
        Outcome::Deny(Denied {
            rule: Some(0),
            denial: Denial::new(DenyCode::TokenExpired),
            identity: None,
        })
    }

    fn allow(dry_run: Option<DenyCode>) -> Outcome {
        Outcome::Allow(Allowed {
            rule: Some(0),
            identity: None,
            dry_run_denial: dry_run.map(Denial::new),
            ignored_failure: None,
        })
    }

    #[test]
    fn denials_by_default_allowed_requests_when_asked() {
        let cfg = config("");
        let line = record(&cfg, &deny(), || request("/a?token=secret"), peer).unwrap();
        assert_eq!(line["code"], "AUTH_111");
        assert_eq!(
            (&line["decision"], &line["rule"]),
            (&"deny".into(), &"api".into())
        );
        assert_eq!(line["path"], "/a", "no query string: it may carry a token");
        assert_eq!(line["request_id"], "7f1c0a52", "no control characters");
        assert_eq!(line["source"], "10.0.1.5:40000");
        assert!(record(&cfg, &allow(None), || request("/a"), peer).is_none());
        let cfg = config(r#", "audit_log": {"allowed": true}"#);
        assert_eq!(
            record(&cfg, &allow(None), || request("/a"), peer).unwrap()["status"],
            200
        );
        assert!(record(&cfg, &deny(), || request("/a"), peer).is_some());
    }

    #[test]
    fn denials_can_be_left_out_but_not_dry_run_reports() {
        let cfg = config(r#", "audit_log": {"denied": false}"#);
        assert!(record(&cfg, &deny(), || request("/a"), peer).is_none());
        let dry = record(
            &cfg,
            &allow(Some(DenyCode::TokenMissing)),
            || request("/a"),
            peer,
        )
        .unwrap();
        assert_eq!(
            (&dry["decision"], &dry["status"]),
            (&"dry_run_deny".into(), &200.into())
        );
    }
}
