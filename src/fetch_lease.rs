//! The shared-data protocol for one provider's JWKS, as pure state and time inputs.
//!
//! Every worker VM reads one small [`Record`] per provider from proxy-wasm shared data; the
//! JWKS body lives under a second key. A worker fetches only after taking the record's lease
//! with a CAS write, so N workers and M waiting requests make one JWKS request. The worker
//! that fetched writes the body, then bumps `version`; the others see the new version on
//! their next tick and prepare keys once.

/// A provider's shared state. Times are Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Record {
    /// 0: no JWKS yet. Bumped by every successful fetch.
    pub version: u64,
    pub fetched_at_ms: u64,
    /// 0: nobody is fetching.
    pub lease_owner: u64,
    pub lease_until_ms: u64,
    /// Failed fetches since the last success.
    pub failures: u32,
    /// No fetch before this time (backoff after failures).
    pub next_attempt_ms: u64,
    pub last_failure_ms: u64,
    /// When the keys are due for a background refresh.
    pub refresh_at_ms: u64,
    /// Last refetch caused by an unknown `kid` (they are rate-limited).
    pub last_refetch_ms: u64,
}

const RECORD_TAG: &str = "jg2";

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        format!(
            "{RECORD_TAG} {} {} {} {} {} {} {} {} {}",
            self.version,
            self.fetched_at_ms,
            self.lease_owner,
            self.lease_until_ms,
            self.failures,
            self.next_attempt_ms,
            self.last_failure_ms,
            self.refresh_at_ms,
            self.last_refetch_ms
        )
        .into_bytes()
    }

    /// `None` for anything that is not a record of this format.
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.split(' ');
        if parts.next()? != RECORD_TAG {
            return None;
        }
        let mut num = || parts.next()?.parse::<u64>().ok();
        let r = Record {
            version: num()?,
            fetched_at_ms: num()?,
            lease_owner: num()?,
            lease_until_ms: num()?,
            failures: u32::try_from(num()?).ok()?,
            next_attempt_ms: num()?,
            last_failure_ms: num()?,
            refresh_at_ms: num()?,
            last_refetch_ms: num()?,
        };
        parts.next().is_none().then_some(r)
    }

    pub fn lease_active(&self, now_ms: u64) -> bool {
        self.lease_owner != 0 && now_ms < self.lease_until_ms
    }
}

/// A provider's fetch timing, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub timeout_ms: u64,
    pub refresh_ms: u64,
    pub refresh_min_ms: u64,
    pub refresh_max_ms: u64,
    pub refetch_interval_ms: u64,
    pub max_stale_ms: u64,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
}

/// How long past its callout timeout a lease is honoured, so a worker whose reply never
/// arrives does not block the others for ever. Discovery makes two callouts in a lease.
pub const LEASE_MARGIN_MS: u64 = 1_000;

impl Timing {
    pub fn new(r: &crate::config::RemoteJwks) -> Timing {
        let ms = |s: u64| s.saturating_mul(1000);
        let calls = if r.discovery { 2 } else { 1 };
        Timing {
            timeout_ms: r.timeout_ms * calls,
            refresh_ms: ms(r.refresh_s),
            refresh_min_ms: ms(r.refresh_min_s),
            refresh_max_ms: ms(r.refresh_max_s),
            refetch_interval_ms: ms(r.unknown_kid_refetch_s),
            max_stale_ms: ms(r.max_stale_s),
            backoff_base_ms: 1_000,
            backoff_max_ms: 30_000,
        }
    }

    /// Delay before retry number `failures` (1-based): exponential, capped, with "equal
    /// jitter" (half fixed, half random) so workers and proxies do not retry in step.
    pub fn backoff_ms(&self, failures: u32, jitter: u64) -> u64 {
        let exp = failures.saturating_sub(1).min(20);
        let full = self
            .backoff_base_ms
            .saturating_mul(1u64 << exp)
            .min(self.backoff_max_ms);
        let half = full / 2;
        half + jitter % (half + 1)
    }

    /// When to refresh keys fetched now: the IdP's `max-age` within bounds, else the
    /// configured period.
    pub fn refresh_after_ms(&self, max_age_s: Option<u64>) -> u64 {
        match max_age_s {
            Some(s) => s
                .saturating_mul(1000)
                .clamp(self.refresh_min_ms, self.refresh_max_ms),
            None => self.refresh_ms,
        }
    }
}

/// `max-age` of a `Cache-Control` header; `no-store`/`no-cache` count as 0 (then the
/// lower bound applies).
pub fn max_age_s(cache_control: &str) -> Option<u64> {
    let mut out = None;
    for directive in cache_control.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(0);
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            out = v.trim_matches('"').parse().ok();
        }
    }
    out
}

/// Whether a worker should take the lease and fetch now: first keys, or a refresh due.
pub fn should_fetch(r: &Record, now_ms: u64) -> bool {
    if r.lease_active(now_ms) || now_ms < r.next_attempt_ms {
        return false;
    }
    r.version == 0 || now_ms >= r.refresh_at_ms
}

/// Whether a token with an unknown `kid` may cause a refetch now. At most one per
/// interval, whatever the number of such tokens: random kids must not hammer the IdP.
pub fn refetch_allowed(r: &Record, now_ms: u64, t: &Timing) -> bool {
    !r.lease_active(now_ms)
        && now_ms >= r.next_attempt_ms
        && (r.last_refetch_ms == 0
            || now_ms >= r.last_refetch_ms.saturating_add(t.refetch_interval_ms))
}

pub fn acquire(r: &Record, owner: u64, now_ms: u64, t: &Timing) -> Record {
    Record {
        lease_owner: owner.max(1),
        lease_until_ms: now_ms + t.timeout_ms + LEASE_MARGIN_MS,
        ..*r
    }
}

pub fn acquire_refetch(r: &Record, owner: u64, now_ms: u64, t: &Timing) -> Record {
    Record {
        last_refetch_ms: now_ms,
        ..acquire(r, owner, now_ms, t)
    }
}

pub fn succeeded(r: &Record, now_ms: u64, max_age_s: Option<u64>, t: &Timing) -> Record {
    Record {
        version: r.version + 1,
        fetched_at_ms: now_ms,
        lease_owner: 0,
        lease_until_ms: 0,
        failures: 0,
        next_attempt_ms: 0,
        refresh_at_ms: now_ms + t.refresh_after_ms(max_age_s),
        ..*r
    }
}

pub fn failed(r: &Record, now_ms: u64, t: &Timing, jitter: u64) -> Record {
    let failures = r.failures.saturating_add(1);
    Record {
        lease_owner: 0,
        lease_until_ms: 0,
        failures,
        next_attempt_ms: now_ms + t.backoff_ms(failures, jitter),
        last_failure_ms: now_ms,
        ..*r
    }
}

/// Keys older than `max_stale` (the IdP unreachable all that time) are no longer used.
pub fn too_stale(r: &Record, now_ms: u64, t: &Timing) -> bool {
    r.version > 0 && now_ms > r.fetched_at_ms.saturating_add(t.max_stale_ms)
}

/// Serving keys whose refresh is overdue because fetches fail.
pub fn serving_stale(r: &Record, now_ms: u64) -> bool {
    r.version > 0 && r.failures > 0 && now_ms >= r.refresh_at_ms
}

/// What a request should do when its worker has no keys for the provider yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cold {
    /// A fetch is under way or due: wait for it.
    Wait,
    /// The last fetch failed and the next is not due: answer 503 now rather than hold the
    /// request for a retry that may be 30 s away.
    Unavailable,
}

pub fn cold_status(r: &Record, now_ms: u64) -> Cold {
    if r.lease_active(now_ms) || r.failures == 0 || now_ms >= r.next_attempt_ms {
        Cold::Wait
    } else {
        Cold::Unavailable
    }
}

/// Whether a request that started waiting at `since_ms` should stop waiting and be
/// answered 503: a fetch failed after it arrived, or it has waited longer than one fetch
/// may take.
pub fn waiter_gives_up(r: &Record, since_ms: u64, now_ms: u64, t: &Timing) -> bool {
    let failed_since = r.failures > 0 && r.last_failure_ms >= since_ms && !r.lease_active(now_ms);
    failed_since || now_ms >= since_ms + t.timeout_ms + LEASE_MARGIN_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing {
        timeout_ms: 2_000,
        refresh_ms: 300_000,
        refresh_min_ms: 30_000,
        refresh_max_ms: 3_600_000,
        refetch_interval_ms: 10_000,
        max_stale_ms: 86_400_000,
        backoff_base_ms: 1_000,
        backoff_max_ms: 30_000,
    };

    #[test]
    fn record_round_trips_and_rejects_garbage() {
        let r = Record {
            version: 3,
            fetched_at_ms: 10,
            lease_owner: 7,
            lease_until_ms: 11,
            failures: 2,
            next_attempt_ms: 12,
            last_failure_ms: 9,
            refresh_at_ms: 13,
            last_refetch_ms: 14,
        };
        assert_eq!(Record::decode(&r.encode()), Some(r));
        let bad: [&[u8]; 8] = [
            b"",
            b"jg2",
            b"jg2 1 2 3",
            b"xx 1 2 3 4 5 6 7 8 9",
            b"jg2 a 2 3 4 5 6 7 8 9",
            b"jg2 1 2 3 4 5 6 7 8 9 10",
            b"jg1 1 2 3 4 5 6 7",
            &[0xff, 0xfe],
        ];
        for b in bad {
            assert_eq!(Record::decode(b), None, "{b:?}");
        }
    }

    #[test]
    fn first_fetch_then_refresh_when_due() {
        let r = Record::default();
        assert!(should_fetch(&r, 1_000));
        let leased = acquire(&r, 42, 1_000, &T);
        assert!(!should_fetch(&leased, 1_500), "a held lease blocks others");
        assert!(
            should_fetch(&leased, 1_000 + 2_000 + LEASE_MARGIN_MS),
            "an expired lease does not"
        );
        let ok = succeeded(&leased, 2_000, None, &T);
        assert_eq!(ok.version, 1);
        assert_eq!(ok.lease_owner, 0);
        assert!(!should_fetch(&ok, 2_000 + 299_999));
        assert!(should_fetch(&ok, 2_000 + 300_000));
    }

    #[test]
    fn failures_back_off_exponentially_with_cap_and_jitter() {
        let cases = [
            (1, 500, 1_000),
            (2, 1_000, 2_000),
            (3, 2_000, 4_000),
            (10, 15_000, 30_000),
            (u32::MAX, 15_000, 30_000),
        ];
        for (n, lo, hi) in cases {
            for jitter in [0, 1, 777, u64::MAX] {
                let d = T.backoff_ms(n, jitter);
                assert!(
                    (lo..=hi).contains(&d),
                    "failures={n} jitter={jitter} -> {d}"
                );
            }
        }
        let f = failed(&acquire(&Record::default(), 1, 0, &T), 100, &T, 0);
        assert_eq!(f.failures, 1);
        assert!(!should_fetch(&f, 100 + 499));
        assert!(should_fetch(&f, 100 + 500));
    }

    #[test]
    fn a_failed_fetch_keeps_the_last_good_version_until_too_stale() {
        let ok = succeeded(&Record::default(), 0, None, &T);
        let f = failed(&ok, 400_000, &T, 0);
        assert_eq!(f.version, 1);
        assert_eq!(f.fetched_at_ms, 0);
        assert!(serving_stale(&f, 400_000));
        assert!(!too_stale(&f, 86_400_000, &T));
        assert!(too_stale(&f, 86_400_001, &T));
        assert!(!serving_stale(&succeeded(&f, 400_100, None, &T), 400_100));
    }

    #[test]
    fn max_age_is_honoured_within_bounds() {
        assert_eq!(max_age_s("public, max-age=600"), Some(600));
        assert_eq!(max_age_s("Max-Age=\"60\""), Some(60));
        assert_eq!(max_age_s("no-store"), Some(0));
        assert_eq!(max_age_s("public"), None);
        assert_eq!(max_age_s("max-age=abc"), None);
        assert_eq!(T.refresh_after_ms(Some(600)), 600_000);
        assert_eq!(T.refresh_after_ms(Some(0)), 30_000);
        assert_eq!(T.refresh_after_ms(Some(u64::MAX)), 3_600_000);
        assert_eq!(T.refresh_after_ms(None), 300_000);
        let ok = succeeded(&Record::default(), 1_000, Some(600), &T);
        assert!(!should_fetch(&ok, 600_999));
        assert!(should_fetch(&ok, 601_000));
    }

    #[test]
    fn unknown_kid_refetches_are_rate_limited() {
        let ok = succeeded(&Record::default(), 0, None, &T);
        assert!(refetch_allowed(&ok, 1_000, &T));
        let leased = acquire_refetch(&ok, 1, 1_000, &T);
        assert!(
            !refetch_allowed(&leased, 1_100, &T),
            "not while one is in flight"
        );
        let done = succeeded(&leased, 1_200, None, &T);
        assert!(!refetch_allowed(&done, 10_999, &T));
        assert!(refetch_allowed(&done, 11_000, &T));
        // Nor while a failed IdP is backing off.
        let down = failed(&leased, 1_200, &T, 0);
        assert!(!refetch_allowed(&down, 1_500, &T));
    }

    #[test]
    fn cold_requests_wait_unless_a_failure_is_backing_off() {
        assert_eq!(cold_status(&Record::default(), 0), Cold::Wait);
        let leased = acquire(&Record::default(), 1, 0, &T);
        assert_eq!(cold_status(&leased, 10), Cold::Wait);
        let f = failed(&leased, 100, &T, 0); // next attempt at 600
        assert_eq!(cold_status(&f, 200), Cold::Unavailable);
        assert_eq!(cold_status(&f, 600), Cold::Wait);
    }

    #[test]
    fn waiters_give_up_on_failure_after_arrival_or_timeout() {
        let leased = acquire(&Record::default(), 1, 0, &T);
        assert!(!waiter_gives_up(&leased, 50, 100, &T));
        let f = failed(&leased, 200, &T, 0);
        assert!(waiter_gives_up(&f, 50, 210, &T));
        // A failure from before the request arrived does not end its wait...
        let retry = acquire(&f, 2, 1_000, &T);
        assert!(!waiter_gives_up(&retry, 900, 1_100, &T));
        // ...but the timeout does.
        assert!(waiter_gives_up(
            &retry,
            900,
            900 + 2_000 + LEASE_MARGIN_MS,
            &T
        ));
    }
}
