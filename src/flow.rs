//! The per-request decision: request + keys + time -> [`Outcome`]. Pure, so the whole
//! path from headers to reply is tested natively; the host layer only carries it out.

use std::net::IpAddr;
use std::sync::Arc;

use crate::cache::{Entry, VerifiedCache};
use crate::config::{Config, MAX_SKEW_S};
use crate::deny::{Denial, DenyCode};
use crate::extract::{find_candidate, Candidate, ExtractError, TokenSource};
use crate::headers::HeaderSnapshot;
use crate::jwks::KeySet;
use crate::policy::{source_allowed, Action, Requirement, Subject, Unmet};
use crate::routing::{select_rules, Selected};
use crate::shared_cache::{self, SharedTokens, Vouching};
use crate::verify::{self, Crypto, Verified, VerifyError};

/// What the filter sees of a request.
pub struct Request<'a> {
    pub method: &'a str,
    pub authority: &'a str,
    /// `:path`, query included.
    pub path: &'a str,
    /// The request's headers.
    pub headers: &'a HeaderSnapshot,
    /// The client's address, for source-IP bindings.
    pub source: Option<IpAddr>,
}

/// A provider's keys as this worker sees them right now.
pub enum Keys {
    Ready(Arc<KeySet>),
    /// Not here yet, but a fetch is under way or due.
    Pending,
    /// Not here, and the last fetch failed.
    Unavailable,
    /// The last good keys are older than the provider's `max_stale_s`.
    Stale,
}

/// What to do about a token whose `kid` the provider's keys lack.
pub enum Refetch {
    /// A refetch is (or will be) under way: wait for it.
    Wait,
    /// Newer keys were already here: verify again with them.
    Retry(Arc<KeySet>),
    /// Refetches are rate-limited (or this request already waited for one): refuse.
    Refused,
}

/// Where `evaluate` gets keys from.
pub trait Keyring {
    fn keys(&mut self, provider: usize) -> Keys;
    fn refetch_for_unknown_kid(&mut self, provider: usize) -> Refetch;
}

#[derive(Debug)]
pub enum Outcome {
    Allow(Allowed),
    Deny(Denied),
    /// A CORS preflight, let through without a token ([`crate::cors`]).
    CorsPreflight,
    /// Hold the request until the provider's keys arrive, then decide again.
    WaitForKeys {
        provider: usize,
    },
}

#[derive(Debug)]
pub struct Allowed {
    /// Index of the rule that matched; `None` when the default allowed it.
    pub rule: Option<usize>,
    /// Set when a token was verified.
    pub identity: Option<Identity>,
    /// In dry-run mode: the refusal that was not carried out.
    pub dry_run_denial: Option<Denial>,
    /// On an `allow_failed` rule: why the token that was sent was taken as none.
    pub ignored_failure: Option<DenyCode>,
}

#[derive(Debug)]
pub struct Denied {
    pub rule: Option<usize>,
    pub denial: Denial,
    /// Set when the token was valid but did not meet the rule.
    pub identity: Option<Identity>,
}

#[derive(Debug)]
pub struct Identity {
    pub provider: usize,
    pub token: Arc<Verified>,
    /// Where the token was, to strip it when the provider does not keep it.
    pub source: TokenSource,
    /// The token's payload segment (base64url JSON), kept only when the provider has a
    /// `payload_header` to forward it in.
    pub payload: Option<String>,
}

/// Why `authenticate` did not let a request through.
enum Stop {
    /// The identity, when the token was valid (boxed: it is large and this path is rare).
    Deny(Denial, Option<Box<Identity>>),
    Wait {
        provider: usize,
    },
}

impl Stop {
    fn deny(code: DenyCode) -> Stop {
        Stop::Deny(Denial::new(code), None)
    }
}

/// What a decision needs beside the config and the request: this worker's keys and
/// verified-token cache, the signature backend, and the time (Unix seconds).
pub struct Runtime<'a> {
    pub keys: &'a mut dyn Keyring,
    pub cache: &'a mut VerifiedCache,
    /// The cache shared with the other workers, consulted on a local miss.
    pub shared: &'a mut dyn SharedTokens,
    pub crypto: &'a dyn Crypto,
    pub now: i64,
}

/// Decides what to do with `req`. Every rule that some reading of the request selects
/// (see [`crate::routing`]) must let it through: an upstream serves one of those readings,
/// and the filter cannot know which, so the strictest decides. Then every deny rule that
/// some reading matches is checked.
pub fn evaluate(cfg: &Config, req: &Request<'_>, rt: &mut Runtime<'_>) -> Outcome {
    let selected = select(cfg, req.method, req.authority, req.path, req.headers);
    if cfg.bypass_cors_preflight
        && crate::cors::is_preflight(req)
        && !crate::cors::refused_whatever_the_token(cfg, &selected)
    {
        return Outcome::CorsPreflight;
    }
    let mut allowed: Option<Allowed> = None;
    for rule in selected.routes {
        match evaluate_rule(cfg, rule, req, rt) {
            Outcome::Allow(a) => match &mut allowed {
                None => allowed = Some(a),
                Some(first) => {
                    first.identity = first.identity.take().or(a.identity);
                    first.dry_run_denial = first.dry_run_denial.take().or(a.dry_run_denial);
                    first.ignored_failure = first.ignored_failure.or(a.ignored_failure);
                }
            },
            refused_or_waiting => return refused_or_waiting,
        }
    }
    let mut allowed = match allowed {
        Some(a) => a,
        None => match evaluate_rule(cfg, None, req, rt) {
            Outcome::Allow(a) => a,
            other => return other,
        },
    };
    for rule in selected.denies {
        match evaluate_deny_rule(cfg, rule, req, rt, allowed.identity.as_ref()) {
            Ok(()) => {}
            Err(Stop::Wait { provider }) => return Outcome::WaitForKeys { provider },
            Err(Stop::Deny(denial, own)) => {
                if cfg.rules.get(rule).is_some_and(|r| r.dry_run) {
                    allowed.dry_run_denial = allowed.dry_run_denial.or(Some(denial));
                } else {
                    return Outcome::Deny(Denied {
                        rule: Some(rule),
                        denial,
                        // The caller, for the audit line: the route's or the deny rule's.
                        identity: allowed.identity.or(own.map(|b| *b)),
                    });
                }
            }
        }
    }
    Outcome::Allow(allowed)
}

/// The rules `method`, `authority` and `path` (with `headers`) select, under every reading.
pub fn select(
    cfg: &Config,
    method: &str,
    authority: &str,
    path: &str,
    headers: &HeaderSnapshot,
) -> Selected {
    let t = cfg.matcher_traits;
    let rules = cfg.rules.iter().enumerate();
    if !cfg.has_deny_rules {
        // The common case: one plain scan.
        let routes = rules.map(|(i, r)| (i, &r.matcher));
        return select_rules(
            routes,
            std::iter::empty(),
            t,
            method,
            authority,
            path,
            headers,
        );
    }
    let kind = |deny: bool| {
        rules
            .clone()
            .filter(move |(_, r)| r.is_deny_rule() == deny)
            .map(|(i, r)| (i, &r.matcher))
    };
    select_rules(kind(false), kind(true), t, method, authority, path, headers)
}

/// The decision of one rule (`None`: the default).
fn evaluate_rule(
    cfg: &Config,
    rule: Option<usize>,
    req: &Request<'_>,
    rt: &mut Runtime<'_>,
) -> Outcome {
    let (action, dry_run) = match rule.and_then(|i| cfg.rules.get(i)) {
        Some(r) => (&r.action, r.dry_run),
        None => (&cfg.default_action, cfg.default_dry_run),
    };
    let mut ignored_failure = None;
    let result = match action {
        Action::Anonymous => Ok(None),
        // Deny rules are never a route's rule; refusing is the safe answer all the same.
        Action::Deny | Action::DenyWhen(_) => Err(Stop::deny(DenyCode::RouteDenied)),
        Action::Require(requirement) => {
            authenticate(cfg, requirement, req, rt).map(|(identity, failure)| {
                ignored_failure = failure;
                identity
            })
        }
    };
    match result {
        Ok(identity) => Outcome::Allow(Allowed {
            rule,
            identity,
            dry_run_denial: None,
            ignored_failure,
        }),
        Err(Stop::Wait { provider }) => Outcome::WaitForKeys { provider },
        Err(Stop::Deny(denial, identity)) if dry_run => Outcome::Allow(Allowed {
            rule,
            identity: identity.map(|b| *b),
            dry_run_denial: Some(denial),
            ignored_failure,
        }),
        Err(Stop::Deny(denial, identity)) => Outcome::Deny(Denied {
            rule,
            denial,
            identity: identity.map(|b| *b),
        }),
    }
}

/// A rule's requirement: the identity it verified (none on `allow_missing`), and, on
/// `allow_failed`, why a token that was sent did not count.
fn authenticate(
    cfg: &Config,
    requirement: &Requirement,
    req: &Request<'_>,
    rt: &mut Runtime<'_>,
) -> Result<(Option<Identity>, Option<DenyCode>), Stop> {
    let candidates = &requirement.providers;
    let Some(found) = find(cfg, candidates, req, rt)? else {
        return if requirement.allow_missing {
            Ok((None, None))
        } else {
            Err(Stop::deny(DenyCode::TokenMissing))
        };
    };
    let identity =
        match verified_identity(cfg, candidates, requirement.audiences.as_deref(), found, rt) {
            Ok(identity) => identity,
            // jwt_authn's allow_missing_or_failed: a token that fails is as good as none.
            Err(Stop::Deny(d, _)) if requirement.allow_failed => return Ok((None, Some(d.code))),
            Err(stop) => return Err(stop),
        };
    let Some(provider) = cfg.providers.get(identity.provider) else {
        return Err(Stop::deny(DenyCode::IssuerInvalid));
    };
    let claims = &identity.token.claims;
    let ip_ok = source_allowed(&provider.ip_bindings, claims, req.source)
        && source_allowed(&requirement.ip_bindings, claims, req.source);
    if !ip_ok {
        return Err(Stop::Deny(
            Denial::new(DenyCode::IpNotAllowed),
            Some(Box::new(identity)),
        ));
    }
    let subject = Subject {
        provider: identity.provider,
        claims,
        role_claims: &provider.role_claims,
    };
    match requirement.check.eval(&subject) {
        Ok(()) => Ok((Some(identity), None)),
        Err(Unmet::Scope(scopes)) => Err(Stop::Deny(
            Denial {
                code: DenyCode::InsufficientScope,
                required_scopes: scopes,
            },
            Some(Box::new(identity)),
        )),
        Err(Unmet::Denied) => Err(Stop::Deny(
            Denial::new(DenyCode::AccessDenied),
            Some(Box::new(identity)),
        )),
    }
}

/// Whether deny rule `rule` lets the request through. Its condition reads the token the
/// route's rule verified when that came from one of its providers, else the request's own
/// token, verified here. A token that fails verification counts as none (its claims say
/// nothing), but a token that cannot be checked because keys are missing refuses: a deny
/// rule must not lapse when the IdP is down.
fn evaluate_deny_rule(
    cfg: &Config,
    rule: usize,
    req: &Request<'_>,
    rt: &mut Runtime<'_>,
    known: Option<&Identity>,
) -> Result<(), Stop> {
    let Some(Action::DenyWhen(cond)) = cfg.rules.get(rule).map(|r| &r.action) else {
        return Ok(());
    };
    let Some(check) = &cond.check else {
        return Err(Stop::deny(DenyCode::DenyRule));
    };
    let mut own = None;
    if known
        .filter(|i| cond.providers.contains(&i.provider))
        .is_none()
    {
        if let Some(found) = find(cfg, &cond.providers, req, rt)? {
            match verified_identity(cfg, &cond.providers, None, found, rt) {
                Ok(i) => own = Some(i),
                Err(Stop::Deny(d, _))
                    if !matches!(d.code, DenyCode::KeysUnavailable | DenyCode::KeysStale) => {}
                Err(stop) => return Err(stop),
            }
        }
    }
    let identity = own
        .as_ref()
        .or(known.filter(|i| cond.providers.contains(&i.provider)));
    let subject = identity.and_then(|i| {
        cfg.providers.get(i.provider).map(|p| Subject {
            provider: i.provider,
            claims: &i.token.claims,
            role_claims: &p.role_claims,
        })
    });
    if check.holds(subject.as_ref()) {
        Err(Stop::Deny(
            Denial::new(DenyCode::DenyRule),
            own.map(Box::new),
        ))
    } else {
        Ok(())
    }
}

/// The one token the request carries for `candidates`, if any, with the cache's entry
/// for it. Its shape is checked only when the cache does not hold it: the check reads
/// every byte, and the cache holds only well-formed tokens, compared byte for byte.
fn find<'r>(
    cfg: &Config,
    candidates: &[usize],
    req: &Request<'r>,
    rt: &mut Runtime<'_>,
) -> Result<Option<Lookup<'r>>, Stop> {
    let sources = candidates
        .iter()
        .filter_map(|&i| cfg.providers.get(i))
        .flat_map(|p| &p.token_sources);
    let malformed = || Stop::deny(DenyCode::TokenMalformed);
    let found = find_candidate(sources, req.headers, req.path).map_err(|e| match e {
        ExtractError::Ambiguous => Stop::deny(DenyCode::TokenAmbiguous),
        ExtractError::Malformed => malformed(),
    })?;
    let Some(token) = found else {
        return Ok(None);
    };
    let cached = rt.cache.get(token.bytes(), rt.now, MAX_SKEW_S);
    if cached.is_none() && !token.well_formed() {
        return Err(malformed());
    }
    Ok(Some(Lookup { token, cached }))
}

/// A request's token and the verified-token cache's entry for it.
struct Lookup<'r> {
    token: Candidate<'r>,
    cached: Option<Entry>,
}

/// The looked-up token, verified by one of `candidates` (signature, then claims, with
/// `audiences` in place of the provider's when given).
fn verified_identity(
    cfg: &Config,
    candidates: &[usize],
    audiences: Option<&[String]>,
    lookup: Lookup<'_>,
    rt: &mut Runtime<'_>,
) -> Result<Identity, Stop> {
    let hit = cached(rt, lookup.cached, candidates)?;
    rt.cache.note_lookup(hit.is_some());
    let (index, token) = match hit {
        Some(hit) => hit,
        None => {
            let text = lookup
                .token
                .text()
                .ok_or_else(|| Stop::deny(DenyCode::TokenMalformed))?;
            verify_fresh(cfg, candidates, &text, rt)?
        }
    };
    let provider = cfg
        .providers
        .get(index)
        .ok_or_else(|| Stop::deny(DenyCode::IssuerInvalid))?;
    let audiences = audiences.unwrap_or(&provider.audiences);
    verify::check_claims(&token, &provider.accepts, audiences, rt.now)
        .map_err(|e| Stop::deny((&e).into()))?;
    Ok(Identity {
        provider: index,
        payload: provider
            .payload_header
            .as_ref()
            .and_then(|_| lookup.token.bytes().split(|&b| b == b'.').nth(1))
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        token,
        source: lookup.token.source,
    })
}

/// The cache's entry, if it is for one of `candidates` and still vouched for by its
/// provider's current keys. Stale keys refuse even cached tokens.
fn cached(
    rt: &mut Runtime<'_>,
    entry: Option<Entry>,
    candidates: &[usize],
) -> Result<Option<(usize, Arc<Verified>)>, Stop> {
    let Some(hit) = entry else {
        return Ok(None);
    };
    if !candidates.contains(&hit.provider) {
        return Ok(None);
    }
    match rt.keys.keys(hit.provider) {
        Keys::Ready(k) if hit.verified_by(&k) => Ok(Some((hit.provider, hit.verified))),
        Keys::Stale => Err(Stop::deny(DenyCode::KeysStale)),
        _ => Ok(None),
    }
}

/// Parses the token, picks its provider and checks its signature; caches a good one.
fn verify_fresh(
    cfg: &Config,
    candidates: &[usize],
    token: &str,
    rt: &mut Runtime<'_>,
) -> Result<(usize, Arc<Verified>), Stop> {
    let untrusted = verify::parse(token).map_err(|e| Stop::deny((&e).into()))?;
    // The token's own (unverified) issuer says which provider verifies it. A token from a
    // provider the rule does not name is refused here, before its `kid` could make a
    // named provider refetch its keys.
    let iss = verify::unverified_issuer(&untrusted).map_err(|e| Stop::deny((&e).into()))?;
    let index = candidates
        .iter()
        .copied()
        .find(|&i| cfg.providers.get(i).map(|p| &p.accepts.issuer) == iss.as_ref())
        .ok_or_else(|| Stop::deny(DenyCode::IssuerInvalid))?;
    let provider = cfg
        .providers
        .get(index)
        .ok_or_else(|| Stop::deny(DenyCode::IssuerInvalid))?;
    let mut key_set = match rt.keys.keys(index) {
        Keys::Ready(k) => k,
        Keys::Pending => return Err(Stop::Wait { provider: index }),
        Keys::Unavailable => return Err(Stop::deny(DenyCode::KeysUnavailable)),
        Keys::Stale => return Err(Stop::deny(DenyCode::KeysStale)),
    };
    // Another worker may have verified this very token: its record stands in for the
    // arithmetic only (see crate::shared_cache), every other check runs as usual.
    let shareable = shared_cache::shareable(token);
    let vouch = if shareable {
        rt.shared.vouch(token)
    } else {
        None
    };
    let crypto = Vouching::new(vouch.as_ref(), rt.crypto);
    let mut result = verify::verify_signature(&untrusted, &provider.accepts, &key_set, &crypto);
    if let Err(VerifyError::UnknownKid { .. }) = result {
        // Perhaps the IdP rotated its keys.
        match rt.keys.refetch_for_unknown_kid(index) {
            Refetch::Wait => return Err(Stop::Wait { provider: index }),
            Refetch::Retry(newer) => {
                result = verify::verify_signature(&untrusted, &provider.accepts, &newer, &crypto);
                key_set = newer;
            }
            Refetch::Refused => {}
        }
    }
    let verified = Arc::new(result.map_err(|e| Stop::deny((&e).into()))?);
    if crypto.vouched() {
        rt.cache.note_shared_hit();
    } else if let (true, Some(by)) = (shareable, crypto.verified_by()) {
        rt.shared.record(token, &by, rt.now);
    }
    rt.cache.insert(token, index, &key_set, verified.clone());
    Ok((index, verified))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use crate::verify::Alg;
    use serde_json::{json, Value};

    /// Provider 0 ("corp") is remote: its keys follow `state`; provider 1 ("google") has
    /// local keys, always ready.
    fn config(rules: Value) -> Config {
        let v = json!({
            "providers": [
                {"name": "corp", "issuer": ISS, "audiences": [AUD],
                 "remote_jwks": {"uri": "http://idp/jwks", "cluster": "idp"},
                 "ip_bindings": [{"principals": {"client_id": ["bound-client"]}, "cidrs": ["10.0.1.0/24"]}]},
                {"name": "google", "issuer": "https://accounts.google.com", "audiences": [AUD],
                 "local_jwks": {"inline": jwks_json()}, "from_params": ["access_token"]}
            ],
            "rules": rules
        });
        Config::from_json(v.to_string().as_bytes()).unwrap()
    }

    fn default_rules() -> Value {
        json!([
            {"match": {"path_prefix": "/health"}, "allow": "anonymous"},
            {"match": {"methods": ["GET"], "path_prefix": "/workflows"},
             "require": {"scopes": ["workflow:read"]}},
            {"match": {"methods": ["POST"], "path_prefix": "/workflows"},
             "require": {"providers": ["corp"], "scopes": ["workflow:write"]}}
        ])
    }

    struct FakeStore {
        keys: Arc<KeySet>,
        state: &'static str,
    }

    impl Keyring for FakeStore {
        fn keys(&mut self, i: usize) -> Keys {
            match (i, self.state) {
                (1, _) | (_, "ready" | "refetch") => Keys::Ready(self.keys.clone()),
                (_, "pending") => Keys::Pending,
                (_, "stale") => Keys::Stale,
                _ => Keys::Unavailable,
            }
        }

        fn refetch_for_unknown_kid(&mut self, _: usize) -> Refetch {
            if self.state == "refetch" {
                Refetch::Wait
            } else {
                Refetch::Refused
            }
        }
    }

    struct Call<'a> {
        method: &'a str,
        path: &'a str,
        auth: Option<String>,
        source: &'a str,
        keys: &'static str,
    }

    fn call(path: &str) -> Call<'_> {
        Call {
            method: "GET",
            path,
            auth: None,
            source: "127.0.0.1:5000",
            keys: "ready",
        }
    }

    impl Call<'_> {
        fn token(mut self, claims: &Value) -> Self {
            self.auth = Some(format!("Bearer {}", mint(Alg::Es256, Some("ec1"), claims)));
            self
        }

        fn run(&self, cfg: &Config) -> Outcome {
            self.run_with(cfg, &mut VerifiedCache::new(0), Arc::new(keys()), NOW)
        }

        fn run_with(
            &self,
            cfg: &Config,
            cache: &mut VerifiedCache,
            key_set: Arc<KeySet>,
            now: i64,
        ) -> Outcome {
            let pairs: Vec<(&str, &str)> = self
                .auth
                .iter()
                .map(|a| ("authorization", a.as_str()))
                .collect();
            let headers = HeaderSnapshot::from_pairs(&pairs);
            let req = Request {
                method: self.method,
                authority: "api.example.com",
                path: self.path,
                headers: &headers,
                source: self
                    .source
                    .parse::<std::net::SocketAddr>()
                    .ok()
                    .map(|a| a.ip()),
            };
            let mut store = FakeStore {
                keys: key_set,
                state: self.keys,
            };
            let mut rt = Runtime {
                keys: &mut store,
                cache,
                shared: &mut crate::shared_cache::NoSharedTokens,
                crypto: &crate::verify::RustCrypto,
                now,
            };
            evaluate(cfg, &req, &mut rt)
        }
    }

    fn code(o: &Outcome) -> Option<&'static str> {
        match o {
            Outcome::Deny(d) => Some(d.denial.code.code()),
            _ => None,
        }
    }

    fn allowed_provider(o: &Outcome) -> Option<usize> {
        match o {
            Outcome::Allow(Allowed {
                identity: Some(id),
                dry_run_denial: None,
                ..
            }) => Some(id.provider),
            _ => None,
        }
    }

    #[test]
    fn public_route_needs_no_token_and_unmatched_route_is_denied() {
        let cfg = config(default_rules());
        assert!(matches!(
            call("/health").run(&cfg),
            Outcome::Allow(Allowed {
                identity: None,
                rule: Some(0),
                ..
            })
        ));
        assert_eq!(code(&call("/other").run(&cfg)), Some("AUTH_120"));
        let delete = Call {
            method: "DELETE",
            ..call("/workflows")
        };
        assert_eq!(code(&delete.run(&cfg)), Some("AUTH_120"));
    }

    #[test]
    fn valid_token_with_scope_is_allowed() {
        let cfg = config(default_rules());
        match call("/workflows/active").token(&claims(NOW)).run(&cfg) {
            Outcome::Allow(Allowed {
                identity: Some(id),
                rule: Some(1),
                ..
            }) => {
                assert_eq!(id.provider, 0);
                assert_eq!(id.token.claims["sub"], "svc-a");
                assert_eq!(
                    id.payload, None,
                    "no payload_header: the payload is not copied"
                );
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn the_payload_is_kept_for_a_payload_header() {
        let v = json!({
            "providers": [{"name": "corp", "issuer": ISS, "audiences": [AUD],
                           "local_jwks": {"inline": jwks_json()}, "payload_header": "x-jwt-payload"}],
            "rules": [{"match": {"path_prefix": "/"}, "require": {}}]
        });
        let cfg = Config::from_json(v.to_string().as_bytes()).unwrap();
        let req = call("/x").token(&claims(NOW));
        let segment = req
            .auth
            .as_deref()
            .unwrap()
            .split('.')
            .nth(1)
            .unwrap()
            .to_string();
        match req.run(&cfg) {
            Outcome::Allow(Allowed {
                identity: Some(id), ..
            }) => assert_eq!(id.payload, Some(segment)),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn missing_bad_and_underscoped_tokens_are_denied() {
        let cfg = config(default_rules());
        assert_eq!(code(&call("/workflows").run(&cfg)), Some("AUTH_100"));
        let empty = Call {
            auth: Some("Bearer ".into()),
            ..call("/workflows")
        };
        assert_eq!(code(&empty.run(&cfg)), Some("AUTH_110"));
        let post = Call {
            method: "POST",
            ..call("/workflows")
        }
        .token(&claims(NOW));
        match post.run(&cfg) {
            Outcome::Deny(d) => {
                assert_eq!(d.denial.code, DenyCode::InsufficientScope);
                assert_eq!(d.denial.required_scopes, vec!["workflow:write"]);
                assert_eq!(d.rule, Some(2));
                assert!(
                    d.identity.is_some(),
                    "a valid token's identity is kept for the audit log"
                );
            }
            o => panic!("{o:?}"),
        }
        let mut c = claims(NOW);
        c["exp"] = (NOW - 3600).into();
        assert_eq!(
            code(&call("/workflows").token(&c).run(&cfg)),
            Some("AUTH_111")
        );
    }

    #[test]
    fn requests_wait_for_pending_keys_and_get_503_when_unavailable() {
        let cfg = config(default_rules());
        let c = claims(NOW);
        let with = |keys| {
            Call {
                keys,
                ..call("/workflows")
            }
            .token(&c)
            .run(&cfg)
        };
        assert!(matches!(
            with("pending"),
            Outcome::WaitForKeys { provider: 0 }
        ));
        assert_eq!(code(&with("down")), Some("AUTH_130"));
        assert_eq!(code(&with("stale")), Some("AUTH_131"));
        // No token: answered at once, keys or not.
        let no_token = Call {
            keys: "pending",
            ..call("/workflows")
        };
        assert_eq!(code(&no_token.run(&cfg)), Some("AUTH_100"));
    }

    #[test]
    fn unknown_kid_waits_for_a_refetch_unless_rate_limited() {
        let cfg = config(default_rules());
        let auth = Some(format!(
            "Bearer {}",
            mint(Alg::Es256, Some("rotated"), &claims(NOW))
        ));
        let refetch = Call {
            auth: auth.clone(),
            keys: "refetch",
            ..call("/workflows")
        };
        assert!(matches!(
            refetch.run(&cfg),
            Outcome::WaitForKeys { provider: 0 }
        ));
        let limited = Call {
            auth,
            ..call("/workflows")
        };
        assert_eq!(code(&limited.run(&cfg)), Some("AUTH_115"));
    }

    #[test]
    fn provider_is_chosen_by_issuer() {
        let cfg = config(default_rules());
        let mut c = claims(NOW);
        c["iss"] = "https://accounts.google.com".into();
        // corp's keys are down; google (local keys) still verifies its own tokens.
        let down = Call {
            keys: "down",
            ..call("/workflows")
        }
        .token(&c);
        assert_eq!(allowed_provider(&down.run(&cfg)), Some(1));
        c["iss"] = "https://unknown.example".into();
        assert_eq!(
            code(&call("/workflows").token(&c).run(&cfg)),
            Some("AUTH_113")
        );
        // The POST rule names corp only: a google token is checked against corp.
        c["iss"] = "https://accounts.google.com".into();
        c["scope"] = "workflow:write".into();
        let post = Call {
            method: "POST",
            ..call("/workflows")
        }
        .token(&c);
        assert_eq!(code(&post.run(&cfg)), Some("AUTH_113"));
    }

    #[test]
    fn every_rule_a_reading_selects_must_allow() {
        let cfg = config(default_rules());
        // Servlet containers serve `/health/..;/workflows` as `/workflows`: the public
        // /health rule alone must not decide it.
        for path in ["/health/..;/workflows", "/health/%2e%2e/workflows"] {
            assert_eq!(code(&call(path).run(&cfg)), Some("AUTH_100"), "{path}");
            let ok = call(path).token(&claims(NOW)).run(&cfg);
            assert!(allowed_provider(&ok).is_some(), "{path}: {ok:?}");
        }
        // As sent, `/workflows;x` is no rule's path (Express would read the segment
        // `workflows;x`), so the default (deny) is one of the readings and wins.
        for path in ["/health;x/../workflows", "/workflows;x"] {
            let r = call(path).token(&claims(NOW)).run(&cfg);
            assert_eq!(code(&r), Some("AUTH_120"), "{path}");
        }
        // A POST needs workflow:write whichever reading the upstream takes.
        let post = Call {
            method: "POST",
            ..call("/health/../workflows")
        }
        .token(&claims(NOW));
        assert_eq!(code(&post.run(&cfg)), Some("AUTH_102"));
        // HEAD is served by the GET handler: the GET rule applies, not a public fallback.
        let cfg = config(json!([
            {"match": {"methods": ["GET"], "path_prefix": "/workflows"},
             "require": {"scopes": ["workflow:read"]}},
            {"match": {"path_prefix": "/"}, "allow": "anonymous"}
        ]));
        let head = Call {
            method: "HEAD",
            ..call("/workflows")
        };
        assert_eq!(code(&head.run(&cfg)), Some("AUTH_100"));
        assert!(allowed_provider(&head.token(&claims(NOW)).run(&cfg)).is_some());
    }

    #[test]
    fn a_token_from_a_provider_the_rule_does_not_name_is_113_without_a_refetch() {
        let cfg = config(default_rules());
        let mut c = claims(NOW);
        c["iss"] = "https://accounts.google.com".into();
        c["scope"] = "workflow:write".into();
        // Unknown kid too: corp must not be asked to refetch for it.
        let post = Call {
            method: "POST",
            auth: Some(format!(
                "Bearer {}",
                mint(Alg::Es256, Some("google-kid"), &c)
            )),
            keys: "refetch",
            ..call("/workflows")
        };
        assert_eq!(code(&post.run(&cfg)), Some("AUTH_113"));
    }

    #[test]
    fn token_types_are_checked_when_configured() {
        let v = json!({
            "providers": [{"name": "corp", "issuer": ISS, "audiences": [AUD],
                           "local_jwks": {"inline": jwks_json()}, "token_types": ["at+jwt"]}],
            "rules": [{"match": {"path_prefix": "/"}, "require": {}}]
        });
        let cfg = Config::from_json(v.to_string().as_bytes()).unwrap();
        let with = |typ: Option<&str>| Call {
            auth: Some(format!(
                "Bearer {}",
                match typ {
                    Some(t) => mint_typed(t, &claims(NOW)),
                    None => mint(Alg::Es256, Some("ec1"), &claims(NOW)),
                }
            )),
            ..call("/x")
        };
        assert_eq!(allowed_provider(&with(Some("at+jwt")).run(&cfg)), Some(0));
        assert_eq!(
            allowed_provider(&with(Some("application/AT+JWT")).run(&cfg)),
            Some(0)
        );
        assert_eq!(code(&with(Some("JWT")).run(&cfg)), Some("AUTH_118"));
        assert_eq!(code(&with(None).run(&cfg)), Some("AUTH_118"));
    }

    #[test]
    fn a_malformed_credential_is_401_even_where_a_token_is_optional() {
        let cfg = config(json!([
            {"match": {"path_prefix": "/"}, "require": {"allow_missing": true}}
        ]));
        let token = mint(Alg::Es256, Some("ec1"), &claims(NOW));
        for auth in [
            format!("Bearer\t{token}"),
            format!("Bearer{token}"),
            format!("Bearer:{token}"),
            format!("Basic x,Bearer {token}"),
        ] {
            let c = Call {
                auth: Some(auth.clone()),
                ..call("/x")
            };
            assert_eq!(code(&c.run(&cfg)), Some("AUTH_110"), "{auth}");
        }
    }

    #[test]
    fn google_service_account_principal() {
        let cfg = config(json!([
            {"match": {"path_prefix": "/"}, "require": {
                "providers": ["google"], "audiences": ["https://employee-api.a.run.app"],
                "principals": {"email": ["emp-api-client@proj.iam.gserviceaccount.com"]}}}
        ]));
        let mut c = claims(NOW);
        c["iss"] = "https://accounts.google.com".into();
        c["aud"] = "https://employee-api.a.run.app".into();
        c["email"] = "emp-api-client@proj.iam.gserviceaccount.com".into();
        assert_eq!(
            allowed_provider(&call("/api/help").token(&c).run(&cfg)),
            Some(1)
        );
        c["email"] = "other@proj.iam.gserviceaccount.com".into();
        assert_eq!(
            code(&call("/api/help").token(&c).run(&cfg)),
            Some("AUTH_121")
        );
        // The rule's audience replaces the provider's.
        c["email"] = "emp-api-client@proj.iam.gserviceaccount.com".into();
        c["aud"] = AUD.into();
        assert_eq!(
            code(&call("/api/help").token(&c).run(&cfg)),
            Some("AUTH_107")
        );
    }

    #[test]
    fn keycloak_roles_and_any_of_providers() {
        let cfg = config(json!([
            {"match": {"path_prefix": "/"}, "require": {"any": [
                {"providers": ["corp"], "roles": ["my-api:reader"]},
                {"providers": ["google"], "scopes": {"any_of": ["admin", "ops"]}}
            ]}}
        ]));
        let mut c = claims(NOW);
        c["resource_access"] = json!({"my-api": {"roles": ["reader"]}});
        assert_eq!(allowed_provider(&call("/x").token(&c).run(&cfg)), Some(0));
        c["resource_access"] = json!({"other-api": {"roles": ["reader"]}});
        assert_eq!(code(&call("/x").token(&c).run(&cfg)), Some("AUTH_121"));
        let mut g = claims(NOW);
        g["iss"] = "https://accounts.google.com".into();
        g["scope"] = "ops".into();
        assert_eq!(allowed_provider(&call("/x").token(&g).run(&cfg)), Some(1));
        g["scope"] = "read".into();
        assert_eq!(code(&call("/x").token(&g).run(&cfg)), Some("AUTH_102"));
    }

    #[test]
    fn allow_missing_accepts_no_token_but_checks_a_sent_one() {
        let cfg = config(json!([
            {"match": {"path_prefix": "/"}, "require": {"allow_missing": true, "scopes": ["workflow:read"]}}
        ]));
        assert!(matches!(
            call("/x").run(&cfg),
            Outcome::Allow(Allowed { identity: None, .. })
        ));
        assert_eq!(
            allowed_provider(&call("/x").token(&claims(NOW)).run(&cfg)),
            Some(0)
        );
        let garbage = Call {
            auth: Some("Bearer x.y.z".into()),
            ..call("/x")
        };
        assert_eq!(code(&garbage.run(&cfg)), Some("AUTH_110"));
    }

    #[test]
    fn ip_bindings_from_provider_and_rule() {
        let cfg = config(json!([
            {"match": {"path_prefix": "/rule"}, "require": {"ip_bindings": [
                {"principals": {"sub": ["svc-*"]}, "cidrs": ["192.168.0.0/16"]}]}},
            {"match": {"path_prefix": "/"}, "require": {}}
        ]));
        let mut c = claims(NOW);
        c["client_id"] = "bound-client".into();
        let from = |source| {
            Call {
                source,
                ..call("/x")
            }
            .token(&c)
            .run(&cfg)
        };
        assert_eq!(allowed_provider(&from("10.0.1.5:40000")), Some(0));
        assert_eq!(code(&from("127.0.0.1:40000")), Some("AUTH_104"));
        // sub "svc-a" is bound to 192.168/16 on /rule only.
        let rule = |source| {
            Call {
                source,
                ..call("/rule")
            }
            .token(&claims(NOW))
            .run(&cfg)
        };
        assert_eq!(code(&rule("127.0.0.1:1")), Some("AUTH_104"));
        assert_eq!(allowed_provider(&rule("192.168.3.4:1")), Some(0));
        assert_eq!(
            allowed_provider(&call("/x").token(&claims(NOW)).run(&cfg)),
            Some(0)
        );
    }

    #[test]
    fn dry_run_lets_through_and_reports() {
        let cfg = config(json!([
            {"match": {"path_prefix": "/try"}, "mode": "dry_run", "require": {"scopes": ["admin"]}},
            {"match": {"path_prefix": "/"}, "require": {"scopes": ["admin"]}}
        ]));
        match call("/try").run(&cfg) {
            Outcome::Allow(Allowed {
                dry_run_denial: Some(d),
                ..
            }) => assert_eq!(d.code, DenyCode::TokenMissing),
            o => panic!("{o:?}"),
        }
        match call("/try").token(&claims(NOW)).run(&cfg) {
            Outcome::Allow(Allowed {
                dry_run_denial: Some(d),
                identity: Some(_),
                ..
            }) => {
                assert_eq!(d.code, DenyCode::InsufficientScope)
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(code(&call("/enforced").run(&cfg)), Some("AUTH_100"));
    }

    #[test]
    fn cached_tokens_skip_the_signature_but_not_the_claims() {
        let cfg = config(default_rules());
        let key_set = Arc::new(keys());
        let mut cache = VerifiedCache::new(16);
        let req = call("/workflows").token(&claims(NOW));
        assert_eq!(
            allowed_provider(&req.run_with(&cfg, &mut cache, key_set.clone(), NOW)),
            Some(0)
        );
        assert_eq!(cache.len(), 1);
        // A hit does not even parse the token: an entry planted under a garbage token is
        // taken as verified. (Entries match the whole token: only that token finds it.)
        let token = req.auth.as_deref().unwrap().trim_start_matches("Bearer ");
        let entry = cache.get(token.as_bytes(), NOW, 0).unwrap();
        cache.insert("not-a-jwt", 0, &key_set, entry.verified);
        let garbage = Call {
            auth: Some("Bearer not-a-jwt".into()),
            ..call("/workflows")
        };
        assert_eq!(
            allowed_provider(&garbage.run_with(&cfg, &mut cache, key_set.clone(), NOW)),
            Some(0)
        );
        // Time claims and the rule are still checked on a hit.
        assert_eq!(
            code(&req.run_with(&cfg, &mut cache, key_set.clone(), NOW + 361)),
            Some("AUTH_111")
        );
        let post = Call {
            method: "POST",
            ..call("/workflows")
        }
        .token(&claims(NOW));
        assert_eq!(
            code(&post.run_with(&cfg, &mut cache, key_set, NOW)),
            Some("AUTH_102")
        );
    }

    #[test]
    fn a_new_key_set_revokes_cached_tokens() {
        let cfg = config(default_rules());
        let mut cache = VerifiedCache::new(16);
        let req = call("/workflows").token(&claims(NOW));
        assert!(allowed_provider(&req.run_with(&cfg, &mut cache, Arc::new(keys()), NOW)).is_some());
        // The IdP dropped ec1: the cached token must not pass on the old verdict.
        let without_ec1 = KeySet::from_json(
            serde_json::to_string(
                &json!({"keys": [serde_json::from_str::<Value>(&jwks_json()).unwrap()["keys"][1]]}),
            )
            .unwrap()
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            code(&req.run_with(&cfg, &mut cache, Arc::new(without_ec1), NOW)),
            Some("AUTH_115")
        );
    }

    /// The corp provider's token for `sub`, with the default claims.
    fn token_of(sub: &str) -> Value {
        let mut c = claims(NOW);
        c["sub"] = sub.into();
        c
    }

    fn deny_rules() -> Value {
        json!([
            {"name": "no-legacy", "match": {"path_prefix": "/"},
             "deny": {"principals": {"sub": ["legacy-*"]}}},
            {"match": {"path_prefix": "/public"}, "allow": "anonymous"},
            {"match": {"path_prefix": "/workflows"}, "require": {"scopes": ["workflow:read"]}},
            {"name": "admin-needs-admin", "match": {"path_prefix": "/admin"},
             "deny": {"not": {"scopes": ["admin"]}}}
        ])
    }

    #[test]
    fn a_deny_rule_refuses_matching_tokens_wherever_it_stands() {
        let cfg = config(deny_rules());
        // First in the list, yet later route rules still decide the rest.
        let legacy = call("/workflows/1")
            .token(&token_of("legacy-batch"))
            .run(&cfg);
        match &legacy {
            Outcome::Deny(d) => {
                assert_eq!(d.denial.code, DenyCode::DenyRule);
                assert_eq!(d.rule, Some(0));
                assert!(d.identity.is_some(), "kept for the audit line");
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(legacy_status(&legacy), 403);
        assert!(
            allowed_provider(&call("/workflows/1").token(&token_of("svc-a")).run(&cfg)).is_some()
        );
        // A public route verifies a token only for the deny rule, whose caller is kept.
        match call("/public/x").token(&token_of("legacy-x")).run(&cfg) {
            Outcome::Deny(d) => {
                assert_eq!(d.denial.code, DenyCode::DenyRule);
                assert_eq!(
                    d.identity.map(|i| i.token.claims["sub"].clone()),
                    Some("legacy-x".into())
                );
            }
            o => panic!("{o:?}"),
        }
        assert!(matches!(call("/public/x").run(&cfg), Outcome::Allow(_)));
        // A token that fails verification says nothing: it is taken as none.
        let mut expired = token_of("legacy-x");
        expired["exp"] = (NOW - 3600).into();
        assert!(matches!(
            call("/public/x").token(&expired).run(&cfg),
            Outcome::Allow(_)
        ));
    }

    fn legacy_status(o: &Outcome) -> u32 {
        match o {
            Outcome::Deny(d) => d.denial.code.status(),
            _ => 200,
        }
    }

    #[test]
    fn a_deny_rule_placed_after_a_catch_all_still_applies() {
        let cfg = config(json!([
            {"match": {"path_prefix": "/"}, "allow": "anonymous"},
            {"match": {"path_prefix": "/admin"}, "deny": "always"}
        ]));
        assert_eq!(code(&call("/admin/x").run(&cfg)), Some("AUTH_122"));
        // Every reading is checked: a decoded or dot-segment path reaches it too.
        assert_eq!(
            code(&call("/public/..%2Fadmin").run(&cfg)),
            Some("AUTH_122")
        );
        assert_eq!(code(&call("/ADMIN").run(&cfg)), Some("AUTH_122"));
        assert!(matches!(
            call("/administrator").run(&cfg),
            Outcome::Allow(_)
        ));
    }

    #[test]
    fn not_in_a_deny_condition_holds_without_a_token() {
        let cfg = config(json!([
            {"match": {"path_prefix": "/"}, "allow": "anonymous"},
            {"match": {"path_prefix": "/admin"}, "deny": {"not": {"scopes": ["admin"]}}}
        ]));
        assert_eq!(code(&call("/admin").run(&cfg)), Some("AUTH_122"));
        assert_eq!(
            code(&call("/admin").token(&claims(NOW)).run(&cfg)),
            Some("AUTH_122")
        );
        let mut admin = claims(NOW);
        admin["scope"] = "admin".into();
        assert!(matches!(
            call("/admin").token(&admin).run(&cfg),
            Outcome::Allow(_)
        ));
    }

    #[test]
    fn a_deny_rule_fails_closed_when_keys_are_missing() {
        let cfg = config(deny_rules());
        let with = |keys| {
            Call {
                keys,
                ..call("/public/x")
            }
            .token(&token_of("svc-a"))
            .run(&cfg)
        };
        assert_eq!(code(&with("down")), Some("AUTH_130"));
        assert!(matches!(
            with("pending"),
            Outcome::WaitForKeys { provider: 0 }
        ));
        // No token: nothing to check, nothing to wait for.
        let no_token = Call {
            keys: "down",
            ..call("/public/x")
        };
        assert!(matches!(no_token.run(&cfg), Outcome::Allow(_)));
    }

    #[test]
    fn a_dry_run_deny_rule_only_reports() {
        let mut rules = deny_rules();
        rules[0]["mode"] = "dry_run".into();
        let cfg = config(rules);
        match call("/workflows/1").token(&token_of("legacy-x")).run(&cfg) {
            Outcome::Allow(a) => {
                assert_eq!(a.dry_run_denial.map(|d| d.code), Some(DenyCode::DenyRule));
                assert!(a.identity.is_some());
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn not_in_a_requirement_inverts_its_condition() {
        let cfg = config(json!([
            {"match": {"path_prefix": "/"},
             "require": {"scopes": ["workflow:read"], "not": {"principals": {"sub": ["blocked"]}}}}
        ]));
        assert!(allowed_provider(&call("/x").token(&token_of("svc-a")).run(&cfg)).is_some());
        assert_eq!(
            code(&call("/x").token(&token_of("blocked")).run(&cfg)),
            Some("AUTH_121")
        );
    }

    #[test]
    fn allow_failed_takes_a_failing_token_as_none() {
        let cfg = config(json!([
            {"match": {"path_prefix": "/"},
             "require": {"scopes": ["workflow:read"], "allow_failed": true}}
        ]));
        let mut expired = claims(NOW);
        expired["exp"] = (NOW - 3600).into();
        match call("/x").token(&expired).run(&cfg) {
            Outcome::Allow(a) => {
                assert!(a.identity.is_none());
                assert_eq!(a.ignored_failure, Some(DenyCode::TokenExpired));
            }
            o => panic!("{o:?}"),
        }
        let mut unscoped = claims(NOW);
        unscoped["scope"] = "other".into();
        assert_eq!(
            code(&call("/x").token(&unscoped).run(&cfg)),
            Some("AUTH_102"),
            "a valid token is still held to the rule"
        );
        assert!(
            matches!(call("/x").run(&cfg), Outcome::Allow(_)),
            "no token"
        );
        assert!(allowed_provider(&call("/x").token(&claims(NOW)).run(&cfg)).is_some());
        // Its shape is checked outside the verification (only on a cache miss): an
        // upstream may read a token there, so it is refused, not taken as none.
        let token = mint(Alg::Es256, Some("ec1"), &claims(NOW));
        let odd = Call {
            auth: Some(format!("Bearer {token} x")),
            ..call("/x")
        };
        assert_eq!(code(&odd.run(&cfg)), Some("AUTH_110"));
        let down = Call {
            keys: "down",
            ..call("/x")
        }
        .token(&claims(NOW));
        assert!(
            matches!(
                down.run(&cfg),
                Outcome::Allow(Allowed { identity: None, .. })
            ),
            "keys down: a token that cannot be checked does not count"
        );
    }

    #[test]
    fn max_lifetime_bounds_exp_minus_iat() {
        let v = json!({
            "providers": [{"name": "corp", "issuer": ISS, "audiences": [AUD],
                           "local_jwks": {"inline": jwks_json()}, "max_lifetime_s": 600}],
            "rules": [{"match": {"path_prefix": "/"}, "require": {}}]
        });
        let cfg = Config::from_json(v.to_string().as_bytes()).unwrap();
        assert!(allowed_provider(&call("/x").token(&claims(NOW)).run(&cfg)).is_some());
        let mut long = claims(NOW);
        long["exp"] = (NOW + 601).into();
        assert_eq!(code(&call("/x").token(&long).run(&cfg)), Some("AUTH_119"));
        let mut no_iat = claims(NOW);
        no_iat.as_object_mut().unwrap().remove("iat");
        assert_eq!(code(&call("/x").token(&no_iat).run(&cfg)), Some("AUTH_116"));
    }
}
