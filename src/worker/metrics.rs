//! Envoy stats of decisions and of each provider's keys.
//!
//! Every name is `jwt_guard.<instance>.<stat>` (Envoy shows it under `wasmcustom.`), the
//! instance being the plugin's name, so two filter instances in one Envoy never share a
//! counter. No part of a name but the last may contain a `.` (rule and provider names are
//! refused at load if they do; the instance is made safe here), so `stats_tags` regexes can
//! turn the instance, rule, provider and deny code into labels unambiguously.

use std::cell::Cell;
use std::rc::Rc;

use crate::config::Config;
use crate::deny::DenyCode;
use crate::fetch_lease::{self, Record};
use crate::host::{Host, MetricKind};

use super::fetch::FetchFailure;

/// The instance name when the host does not say (Envoy's `plugin_name` property).
pub const DEFAULT_INSTANCE: &str = "jwt_guard";

/// `jwt_guard.<instance>`: what every stat name of one filter instance starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatPrefix(String);

impl StatPrefix {
    /// The prefix for the instance the host calls `plugin_name`: every character but ASCII
    /// letters, digits, `-` and `_` becomes `_` (Istio names plugins `<namespace>.<name>`:
    /// a `.` would split the instance over two parts of the name).
    pub fn of(plugin_name: Option<&[u8]>) -> StatPrefix {
        let name = plugin_name.map(String::from_utf8_lossy).unwrap_or_default();
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let instance = if safe.is_empty() {
            DEFAULT_INSTANCE
        } else {
            &safe
        };
        StatPrefix(format!("jwt_guard.{instance}"))
    }

    /// The full name of `stat`.
    pub fn name(&self, stat: &str) -> String {
        format!("{}.{stat}", self.0)
    }
}

/// Per-decision stats: per deny code and per rule; CORS preflights let through; the
/// verified-token cache; the time a decision takes. Decisions are counted in the VM and
/// added to Envoy's counters on the tick ([`Metrics::flush`]): a request makes no stat
/// host call but, one in [`super::DECISION_SAMPLE`], a histogram sample (the total of
/// decisions is the sum over rules).
pub struct Metrics {
    host: Rc<dyn Host>,
    denied: Vec<(DenyCode, Counter)>,
    rules: Vec<RuleCounters>,
    cors_preflight: Counter,
    cache_hit: Option<u32>,
    cache_miss: Option<u32>,
    cache_shared_hit: Option<u32>,
    /// `decision_duration_us`: microseconds from a request's headers to its decision
    /// carried out.
    decision_duration: Option<u32>,
}

/// A rule's counters (the last entry of [`Metrics::rules`] is the default's).
struct RuleCounters {
    allowed: Counter,
    denied: Counter,
    dry_run_denied: Counter,
}

/// A host counter and what was counted in the VM since it was last added to it.
struct Counter {
    id: Option<u32>,
    pending: Cell<u64>,
}

impl Counter {
    fn new(id: Option<u32>) -> Counter {
        Counter {
            id,
            pending: Cell::new(0),
        }
    }

    fn add(&self) {
        self.pending.set(self.pending.get().saturating_add(1));
    }

    /// One host call, if anything was counted.
    fn flush(&self, host: &dyn Host) {
        let n = self.pending.take();
        if let (Some(id), true) = (self.id, n > 0) {
            host.increment_metric(id, n);
        }
    }
}

impl Metrics {
    pub fn define(host: Rc<dyn Host>, config: &Config, prefix: &StatPrefix) -> Metrics {
        let counter = |stat: &str| host.define_metric(MetricKind::Counter, &prefix.name(stat));
        let batched = |stat: &str| Counter::new(counter(stat));
        let names = config
            .rules
            .iter()
            .map(|r| r.name.as_str())
            .chain(std::iter::once("default"));
        let rules = names
            .map(|n| RuleCounters {
                allowed: batched(&format!("rule.{n}.allowed")),
                denied: batched(&format!("rule.{n}.denied")),
                dry_run_denied: batched(&format!("rule.{n}.dry_run_denied")),
            })
            .collect();
        let denied = DenyCode::ALL
            .iter()
            .map(|c| (*c, batched(&format!("denied.{}", c.code()))))
            .collect();
        let cors_preflight = batched("cors_preflight");
        let cache_hit = counter("cache_hit");
        let cache_miss = counter("cache_miss");
        let cache_shared_hit = counter("cache_shared_hit");
        let decision_duration =
            host.define_metric(MetricKind::Histogram, &prefix.name("decision_duration_us"));
        Metrics {
            host,
            denied,
            rules,
            cors_preflight,
            cache_hit,
            cache_miss,
            cache_shared_hit,
            decision_duration,
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
            match dry_run_denied {
                Some(_) => r.dry_run_denied.add(),
                None => r.allowed.add(),
            }
        }
    }

    pub fn denied(&self, rule: Option<usize>, code: DenyCode) {
        if let Some((_, counter)) = self.denied.iter().find(|(c, _)| *c == code) {
            counter.add();
        }
        if let Some(r) = self.rule(rule) {
            r.denied.add();
        }
    }

    pub fn cors_preflight(&self) {
        self.cors_preflight.add();
    }

    /// Adds the decisions counted since the last call to the host's counters: one host
    /// call per counter that moved, from the tick rather than per request. (A VM torn
    /// down by a config change loses at most one tick's counts.)
    pub fn flush(&self) {
        let host = &*self.host;
        for r in &self.rules {
            r.allowed.flush(host);
            r.denied.flush(host);
            r.dry_run_denied.flush(host);
        }
        for (_, c) in &self.denied {
            c.flush(host);
        }
        self.cors_preflight.flush(host);
    }

    /// Adds the cache lookups counted since the last call (one host call per counter that
    /// moved, made from the tick rather than per request).
    pub fn cache_lookups(&self, hits: u64, misses: u64, shared_hits: u64) {
        let moved = [
            (self.cache_hit, hits),
            (self.cache_miss, misses),
            (self.cache_shared_hit, shared_hits),
        ];
        for (id, n) in moved {
            if let (Some(id), true) = (id, n > 0) {
                self.host.increment_metric(id, n);
            }
        }
    }

    /// Records how long a decision took, from two clock readings in nanoseconds.
    pub fn decision_took(&self, started_ns: u64, ended_ns: u64) {
        if let Some(id) = self.decision_duration {
            self.host
                .record_metric(id, ended_ns.saturating_sub(started_ns) / 1_000);
        }
    }
}

/// One provider's key stats (`jwt_guard.<instance>.provider.<name>.*`).
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
    pub fn define(host: &dyn Host, prefix: &StatPrefix, provider: &str) -> ProviderStats {
        let name = |s: &str| prefix.name(&format!("provider.{provider}.{s}"));
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
        host.increment_metric(id, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instance_is_one_part_of_every_stat_name() {
        let of = |n: Option<&str>| StatPrefix::of(n.map(str::as_bytes)).name("cache_hit");
        assert_eq!(of(Some("edge-auth")), "jwt_guard.edge-auth.cache_hit");
        assert_eq!(of(None), "jwt_guard.jwt_guard.cache_hit");
        assert_eq!(of(Some("")), "jwt_guard.jwt_guard.cache_hit");
        // Istio's `<namespace>.<plugin>`, and what a label could not hold.
        assert_eq!(
            of(Some("istio-system.jwt-guard")),
            "jwt_guard.istio-system_jwt-guard.cache_hit"
        );
        assert_eq!(of(Some("a b:c/é")), "jwt_guard.a_b_c__.cache_hit");
    }

    #[test]
    fn rule_and_provider_names_that_would_split_a_stat_name_are_refused_at_load() {
        let jwks = crate::testkit::jwks_json();
        let load = |provider: &str, rule: &str| {
            Config::from_json(
                format!(
                    r#"{{"providers": [{{"name": "{provider}", "issuer": "https://i",
                         "audiences": "any", "local_jwks": {{"inline": {jwks}}}}}],
                        "rules": [{{"name": "{rule}", "allow": "anonymous"}}]}}"#
                )
                .as_bytes(),
            )
        };
        assert!(load("corp-1_a~", "read_v2-x~").is_ok());
        for (provider, rule, field) in [
            ("corp", "api.v1", "rules[0].name"),
            ("corp", "a b", "rules[0].name"),
            ("corp", "a*", "rules[0].name"),
            ("accounts.google.com", "r", "providers[0].name"),
            ("Google Accounts", "r", "providers[0].name"),
            ("", "r", "providers[0].name"),
        ] {
            let e = load(provider, rule).unwrap_err();
            assert_eq!(e.path, field, "{provider} {rule}");
            assert!(e.message.contains("stats"), "{e}");
        }
    }
}
