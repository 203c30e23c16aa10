//! One structured log line per decision: who, which rule, what was decided and why.
//! Never the token.

use serde_json::{json, Value};

use crate::config::Config;
use crate::deny::DenyCode;
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

/// What was decided for a request, in the words of the audit line and of the filter state
/// ([`crate::filter_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    /// A dry-run rule would have refused it.
    DryRunDeny,
    /// An `allow_failed` rule took the token that failed as none.
    AllowFailedToken,
    /// A CORS preflight let through without a token (`bypass_cors_preflight`).
    CorsPreflight,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::DryRunDeny => "dry_run_deny",
            Decision::AllowFailedToken => "allow_failed_token",
            Decision::CorsPreflight => "cors_preflight",
        }
    }
}

/// A decision carried out: which rule made it (by name, `default` for the default; none
/// when no rule did), the deny code, and the identity the token verified, if any.
#[derive(Debug, Clone, Copy)]
pub struct Verdict<'a> {
    pub decision: Decision,
    pub rule: Option<&'a str>,
    pub code: Option<DenyCode>,
    pub identity: Option<&'a Identity>,
}

impl<'a> Verdict<'a> {
    /// The verdict `outcome` stands for; none while it waits for keys.
    pub fn of(cfg: &'a Config, outcome: &'a Outcome) -> Option<Verdict<'a>> {
        let named = |rule: Option<usize>| Some(rule_name(cfg, rule));
        let (decision, rule, code, identity) = match outcome {
            Outcome::Allow(a) => match (&a.dry_run_denial, a.ignored_failure) {
                (Some(d), _) => (
                    Decision::DryRunDeny,
                    named(a.rule),
                    Some(d.code),
                    a.identity.as_ref(),
                ),
                (None, Some(code)) => (Decision::AllowFailedToken, named(a.rule), Some(code), None),
                (None, None) => (Decision::Allow, named(a.rule), None, a.identity.as_ref()),
            },
            Outcome::Deny(d) => (
                Decision::Deny,
                named(d.rule),
                Some(d.denial.code),
                d.identity.as_ref(),
            ),
            Outcome::CorsPreflight => (Decision::CorsPreflight, None, None, None),
            Outcome::WaitForKeys { .. } => return None,
        };
        Some(Verdict {
            decision,
            rule,
            code,
            identity,
        })
    }

    /// A refusal the filter made itself, outside the rules (`rule` is the one that had let
    /// the request through, if any).
    pub fn refused(code: DenyCode, rule: Option<&'a str>) -> Verdict<'a> {
        Verdict {
            decision: Decision::Deny,
            rule,
            code: Some(code),
            identity: None,
        }
    }
}

/// The name of rule `rule` (`None`: the default).
pub fn rule_name(cfg: &Config, rule: Option<usize>) -> &str {
    rule.and_then(|i| cfg.rules.get(i))
        .map_or("default", |r| r.name.as_str())
}

/// The audit record of `outcome`, or `None` when the config does not log it (allowed
/// requests and CORS preflights only with `audit_log.allowed`, denials unless
/// `audit_log.denied` is false; dry-run denials and tokens `allow_failed` ignored always,
/// since reporting them is what those modes are for). `line` and `source` give the request
/// line and the client address as the host reports it, asked for only when a line is logged.
pub fn record(
    cfg: &Config,
    outcome: &Outcome,
    line: impl FnOnce() -> RequestLine,
    source: impl FnOnce() -> Option<String>,
) -> Option<Value> {
    let v = Verdict::of(cfg, outcome)?;
    let logged = match v.decision {
        Decision::Allow | Decision::CorsPreflight => cfg.audit_allowed,
        Decision::Deny => cfg.audit_denied,
        Decision::DryRunDeny | Decision::AllowFailedToken => true,
    };
    if !logged {
        return None;
    }
    let identity = v.identity;
    let claim = |id: Option<&Identity>, names: &[&str]| {
        id.and_then(|id| {
            names
                .iter()
                .find_map(|n| id.token.claims.get(*n).and_then(Value::as_str))
                .map(|s| s.chars().take(256).collect::<String>())
        })
    };
    let line = line();
    let status = match (v.decision, v.code) {
        (Decision::Deny, Some(c)) => c.status(),
        _ => 200,
    };
    Some(json!({
        "decision": v.decision.as_str(),
        "code": v.code.map(|c| c.code()),
        "status": status,
        "rule": v.rule,
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
    use crate::deny::Denial;
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

    #[test]
    fn a_cors_preflight_is_logged_like_an_allowed_request_with_no_rule() {
        let preflight = Outcome::CorsPreflight;
        assert!(record(&config(""), &preflight, || request("/a"), peer).is_none());
        let cfg = config(r#", "audit_log": {"allowed": true}"#);
        let line = record(&cfg, &preflight, || request("/a"), peer).unwrap();
        assert_eq!(
            (&line["decision"], &line["status"], &line["rule"]),
            (&"cors_preflight".into(), &200.into(), &Value::Null)
        );
        assert_eq!(line["source"], "10.0.1.5:40000");
    }
}
