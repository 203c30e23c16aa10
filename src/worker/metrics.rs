//! Envoy stats of decisions and of each provider's keys.

use std::rc::Rc;

use crate::config::Config;
use crate::deny::DenyCode;
use crate::fetch_lease::{self, Record};
use crate::host::{Host, MetricKind};

use super::fetch::FetchFailure;

/// Per-decision stats (`wasmcustom.jwt_guard.*`): per deny code and per rule. An allowed
/// request costs one counter update (the total is the sum over rules).
pub struct Metrics {
    host: Rc<dyn Host>,
    denied: Vec<(DenyCode, Option<u32>)>,
    rules: Vec<RuleCounters>,
}

/// A rule's counters (the last entry of [`Metrics::rules`] is the default's).
struct RuleCounters {
    allowed: Option<u32>,
    denied: Option<u32>,
    dry_run_denied: Option<u32>,
}

impl Metrics {
    pub fn define(host: Rc<dyn Host>, config: &Config) -> Metrics {
        let counter = |name: &str| host.define_metric(MetricKind::Counter, name);
        let names = config
            .rules
            .iter()
            .map(|r| r.name.as_str())
            .chain(std::iter::once("default"));
        let rules = names
            .map(|n| RuleCounters {
                allowed: counter(&format!("jwt_guard.rule.{n}.allowed")),
                denied: counter(&format!("jwt_guard.rule.{n}.denied")),
                dry_run_denied: counter(&format!("jwt_guard.rule.{n}.dry_run_denied")),
            })
            .collect();
        let denied = DenyCode::ALL
            .iter()
            .map(|c| (*c, counter(&format!("jwt_guard.denied.{}", c.code()))))
            .collect();
        Metrics {
            host,
            denied,
            rules,
        }
    }

    fn rule(&self, rule: Option<usize>) -> Option<&RuleCounters> {
        match rule {
            Some(i) => self.rules.get(i),
            None => self.rules.last(),
        }
    }

    pub fn allowed(&self, rule: Option<usize>, dry_run_denied: Option<DenyCode>) {
        if let Some(r) = self.rule(rule) {
            bump(
                &*self.host,
                match dry_run_denied {
                    Some(_) => r.dry_run_denied,
                    None => r.allowed,
                },
            );
        }
    }

    pub fn denied(&self, rule: Option<usize>, code: DenyCode) {
        if let Some((_, id)) = self.denied.iter().find(|(c, _)| *c == code) {
            bump(&*self.host, *id);
        }
        if let Some(r) = self.rule(rule) {
            bump(&*self.host, r.denied);
        }
    }
}

/// One provider's key stats (`wasmcustom.jwt_guard.provider.<name>.*`).
pub struct ProviderStats {
    pub fetch_attempt: Option<u32>,
    pub fetch_success: Option<u32>,
    pub fetch_failure: Option<u32>,
    pub unknown_kid_refetch: Option<u32>,
    /// `jwks_fetch_failure.<reason>`, one per [`FetchFailure::REASONS`].
    failure_reasons: Vec<(&'static str, Option<u32>)>,
    keys_age_s: Option<u32>,
    stale: Option<u32>,
}

impl ProviderStats {
    pub fn define(host: &dyn Host, provider: &str) -> ProviderStats {
        let name = |s: &str| format!("jwt_guard.provider.{provider}.{s}");
        let counter = |s: &str| host.define_metric(MetricKind::Counter, &name(s));
        let gauge = |s: &str| host.define_metric(MetricKind::Gauge, &name(s));
        ProviderStats {
            fetch_attempt: counter("jwks_fetch_attempt"),
            fetch_success: counter("jwks_fetch_success"),
            fetch_failure: counter("jwks_fetch_failure"),
            unknown_kid_refetch: counter("unknown_kid_refetch"),
            failure_reasons: FetchFailure::REASONS
                .iter()
                .map(|r| (*r, counter(&format!("jwks_fetch_failure.{r}"))))
                .collect(),
            keys_age_s: gauge("keys_age_s"),
            stale: gauge("stale"),
        }
    }

    /// The counter of failures for `reason`.
    pub fn failure_reason(&self, reason: &str) -> Option<u32> {
        self.failure_reasons
            .iter()
            .find(|(r, _)| *r == reason)
            .and_then(|(_, id)| *id)
    }

    /// Updates the age and staleness gauges from the shared record.
    pub fn observe(&self, host: &dyn Host, r: &Record, now_ms: u64) {
        if let (Some(id), true) = (self.keys_age_s, r.version > 0) {
            host.record_metric(id, now_ms.saturating_sub(r.fetched_at_ms) / 1000);
        }
        if let Some(id) = self.stale {
            host.record_metric(id, u64::from(fetch_lease::serving_stale(r, now_ms)));
        }
    }
}

pub fn bump(host: &dyn Host, id: Option<u32>) {
    if let Some(id) = id {
        host.increment_metric(id);
    }
}
