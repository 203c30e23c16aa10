"""The verified-token cache that all workers share, through a real Envoy with four workers:
a token is verified once, whichever worker sees it first, not once per worker."""

import pytest

import harness
from conftest import AUD, ISS

WORKERS = 4
# Each request goes on a new connection, and the kernel spreads connections over the
# workers (SO_REUSEPORT): 40 of them all landing on one of 4 workers has odds of 4^-39.
REQUESTS = 40


def plugin(es, rs, cache=None):
    """Inline keys: no request waits for a fetch, so every request makes one cache lookup."""
    p = {
        "providers": [{"name": "corp", "issuer": ISS, "audiences": [AUD],
                       "local_jwks": {"inline": harness.jwks(es, rs)},
                       "algorithms": ["ES256", "RS256"]}],
        "rules": [{"match": {"path_prefix": "/"}, "require": {}}],
    }
    if cache is not None:
        p["cache"] = cache
    return p


def lookups(envoy):
    """(hits, misses, shared hits) once every worker's tick has added its share."""
    def settled():
        hit, miss, shared = (envoy.stat(s) for s in ("cache_hit", "cache_miss", "cache_shared_hit"))
        return (hit, miss, shared) if hit + miss == REQUESTS else None

    return harness.wait_for(settled, timeout=10, what=f"{REQUESTS} cache lookups counted")


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_a_token_is_verified_once_for_every_worker(envoy_factory, es, rs, alg):
    envoy = envoy_factory(plugin(es, rs), concurrency=WORKERS)
    key = es if alg == "ES256" else rs
    token = key.sign(harness.claims(ISS, AUD))
    assert [envoy.get("/api", token).status for _ in range(REQUESTS)] == [200] * REQUESTS
    # One signature check in all of Envoy; each other worker took it from the shared cache.
    assert envoy.stat("signature_checks.host") == 1
    hit, miss, shared = lookups(envoy)
    assert 1 <= shared <= WORKERS - 1, (hit, miss, shared)
    assert miss == 1 + shared, (hit, miss, shared)


def test_without_the_shared_cache_each_worker_verifies_for_itself(envoy_factory, es, rs):
    envoy = envoy_factory(plugin(es, rs, {"shared_entries": 0}), concurrency=WORKERS)
    token = es.sign(harness.claims(ISS, AUD))
    assert [envoy.get("/api", token).status for _ in range(REQUESTS)] == [200] * REQUESTS
    hit, miss, shared = lookups(envoy)
    assert shared == 0
    assert 2 <= miss == envoy.stat("signature_checks.host") <= WORKERS, (hit, miss)


def test_a_shared_hit_still_checks_the_claims_and_the_rule(envoy_factory, es, rs):
    cfg = plugin(es, rs)
    cfg["rules"] = [{"match": {"path_prefix": "/admin"}, "require": {"scopes": ["admin"]}},
                    {"match": {"path_prefix": "/"}, "require": {}}]
    envoy = envoy_factory(cfg, concurrency=WORKERS)
    token = es.sign(harness.claims(ISS, AUD, scope="read"))
    statuses = [envoy.get(path, token).status for path in ["/api", "/admin"] * (REQUESTS // 2)]
    assert statuses == [200, 403] * (REQUESTS // 2)
    assert envoy.stat("signature_checks.host") == 1
    # A token for another audience, verified once, is refused by every worker.
    other = es.sign(harness.claims(ISS, "https://other.example"))
    replies = [envoy.get("/api", other) for _ in range(REQUESTS // 2)]
    assert {(r.status, r.code) for r in replies} == {(401, "AUTH_107")}
    assert envoy.stat("signature_checks.host") == 2
