"""jwt-guard side by side with Envoy's native jwt_authn + RBAC, the reference: the same
tokens through both must get the same answer, except where jwt-guard differs on purpose
(each difference is asserted, and listed in the README)."""

import json
import time

import pytest

import harness
from conftest import AUD, ISS

SCOPE = "workflow:read"


def native_filters(jwks):
    """jwt_authn checking iss, aud, exp/nbf (60 s skew) against inline keys, and RBAC
    requiring the scope, as platform teams configure them today."""
    provider = {
        "issuer": ISS,
        "audiences": [AUD],
        "local_jwks": {"inline_string": json.dumps(jwks)},
        "from_headers": [{"name": "Authorization", "value_prefix": "Bearer "}],
        "forward": True,
        "clock_skew_seconds": 60,
        "payload_in_metadata": "jwt_payload",
        "normalize_payload_in_metadata": {"space_delimited_claims": ["scope"]},
    }
    jwt_authn = {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"corp": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "corp"}}],
        },
    }
    rbac = {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": {"scope": {
                "permissions": [{"any": True}],
                "principals": [{"sourced_metadata": {"metadata_matcher": {
                    "filter": "envoy.filters.http.jwt_authn",
                    "path": [{"key": "jwt_payload"}, {"key": "scope"}],
                    "value": {"list_match": {"one_of": {"string_match": {"exact": SCOPE}}}},
                }}}],
            }}},
        },
    }
    return [jwt_authn, rbac]


def guard_plugin(jwks):
    return {
        "providers": [{"name": "corp", "issuer": ISS, "audiences": [AUD],
                       "local_jwks": {"inline": jwks}, "algorithms": ["ES256", "RS256"]}],
        "rules": [{"match": {"path_prefix": "/"}, "require": {"scopes": [SCOPE]}}],
    }


@pytest.fixture(scope="module")
def pair(upstream, es, rs):
    jwks = harness.jwks(es, rs)
    native = harness.Envoy(None, upstream.port, filters=native_filters(jwks))
    guard = harness.Envoy(guard_plugin(jwks), upstream.port)
    try:
        yield native.start(), guard.start()
    finally:
        native.stop()
        guard.stop()


def good(**extra):
    c = harness.claims(ISS, AUD, scope=f"openid {SCOPE}")
    c.update(extra)
    return c


def without(claim):
    return {k: v for k, v in good().items() if k != claim}


# name -> token maker (es, rs) -> token or None (no Authorization header)
AGREE = {
    "valid ES256": lambda es, rs: es.sign(good()),
    "valid RS256": lambda es, rs: rs.sign(good()),
    "aud as a list": lambda es, rs: es.sign(good(aud=["https://other.test", AUD])),
    "expired within the skew": lambda es, rs: es.sign(good(exp=int(time.time()) - 30)),
    "no token": lambda es, rs: None,
    "expired": lambda es, rs: es.sign(good(exp=int(time.time()) - 300)),
    "not yet valid": lambda es, rs: es.sign(good(nbf=int(time.time()) + 300)),
    "wrong issuer": lambda es, rs: es.sign(good(iss="https://evil.test")),
    "bad signature": lambda es, rs: harness.Key("ES256", es.kid).sign(good()),
    "alg none": lambda es, rs: harness.forge({"alg": "none", "kid": es.kid}, good(), b""),
    "HS256 keyed with the RSA public key": lambda es, rs: harness.hs256_keyed_with_public_key(rs, good()),
    "unknown kid": lambda es, rs: harness.Key("ES256", "nobody").sign(good()),
    "garbage": lambda es, rs: "not-a-jwt",
    "valid but without the scope": lambda es, rs: es.sign(good(scope="openid")),
}


@pytest.mark.parametrize("case", AGREE)
def test_same_answer_as_native_jwt_authn_and_rbac(pair, es, rs, case):
    native, guard = pair
    token = AGREE[case](es, rs)
    n, g = native.get("/api", token), guard.get("/api", token)
    assert n.status == g.status, (case, n, g)
    if g.status == 200:
        assert g.headers["x-upstream"] == n.headers["x-upstream"] == "echo"


def test_where_jwt_guard_differs_on_purpose(pair, es):
    native, guard = pair
    # A wrong audience: native answers 403; RFC 6750 makes it an invalid token (401).
    token = es.sign(good(aud="https://other.test"))
    assert native.get("/api", token).status == 403
    r = guard.get("/api", token)
    assert (r.status, r.code) == (401, "AUTH_107"), r
    # No exp: native accepts a token that never expires; jwt-guard requires exp.
    token = es.sign(without("exp"))
    assert native.get("/api", token).status == 200
    r = guard.get("/api", token)
    assert (r.status, r.code) == (401, "AUTH_116"), r


def test_denials_explain_themselves_where_native_does_not(pair, es):
    native, guard = pair
    token = es.sign(good(scope="openid"))
    n, g = native.get("/api", token), guard.get("/api", token)
    assert n.status == g.status == 403
    assert "www-authenticate" not in n.headers  # RBAC: "RBAC: access denied"
    assert 'error="insufficient_scope"' in g.headers["www-authenticate"]
    assert f'scope="{SCOPE}"' in g.headers["www-authenticate"] and g.code == "AUTH_102"
