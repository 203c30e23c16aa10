//! One structured log line per decision: who, which rule, what was decided and why.
//! Never the token.

use serde_json::{json, Value};

use crate::config::Config;
use crate::flow::{Identity, Outcome};

/// The audit record of `outcome`, or `None` when the config does not log it (allowed
/// requests are logged only with `audit_log.allowed`).
pub fn record(cfg: &Config, outcome: &Outcome, method: &str, path: &str) -> Option<Value> {
    let (decision, rule, code, identity) = match outcome {
        Outcome::Allow(a) => match &a.dry_run_denial {
            Some(d) => ("dry_run_deny", a.rule, Some(d.code), a.identity.as_ref()),
            None if cfg.audit_allowed => ("allow", a.rule, None, a.identity.as_ref()),
            None => return None,
        },
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
    Some(json!({
        "decision": decision,
        "code": code.map(|c| c.code()),
        "status": code.map_or(200, |c| if decision == "dry_run_deny" { 200 } else { c.status() }),
        "rule": rule_name,
        "provider": identity.and_then(|id| cfg.providers.get(id.provider)).map(|p| p.name.as_str()),
        "sub": claim(identity, &["sub"]),
        "client_id": claim(identity, &["client_id", "azp"]),
        "method": method,
        "path": crate::policy::route_path(path),
    }))
}
