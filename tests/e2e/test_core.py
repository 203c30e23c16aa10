"""The core filter through a real Envoy, as a client sees it: status, `code` in the JSON
body, the `WWW-Authenticate` challenge. Tokens are minted with PyJWT."""

import json
import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import harness
from conftest import AUD, ISS

HOST = "api.example.com"


def plugin(jwks_url, **provider):
    p = {
        "name": "corp",
        "issuer": ISS,
        "audiences": [AUD],
        "remote_jwks": {"uri": jwks_url, "cluster": "jwks", "timeout_ms": 1000},
        "algorithms": ["ES256", "RS256"],
        "from_params": ["access_token"],
        "from_cookies": ["session"],
    }
    p.update(provider)
    return {
        "realm": "e2e",
        "providers": [p],
        "rules": [
            {"match": {"path_prefix": "/public"}, "allow": "anonymous"},
            {"match": {"path_prefix": "/read"}, "require": {"scopes": ["workflow:read"]}},
            {"match": {"path_prefix": "/write"}, "require": {"scopes": ["workflow:write"]}},
            {"match": {"methods": ["GET"], "path_prefix": "/hosted", "host": HOST},
             "require": {"providers": ["corp"]}},
            {"match": {"path_prefix": "/any-port", "host": f"{HOST}:*"},
             "require": {"providers": ["corp"]}},
        ],
    }


@pytest.fixture(scope="module")
def core(upstream, es, rs):
    """One Envoy (two workers) shared by the checks that do not change anything."""
    idp = harness.ControlledServer().start()
    idp.set_json("/jwks", harness.jwks(es, rs))
    envoy = harness.Envoy(plugin(idp.url("/jwks")), upstream.port, {"jwks": idp.port}, concurrency=2)
    try:
        yield envoy.start()
    finally:
        envoy.stop()
        idp.stop()


def good(**extra):
    c = harness.claims(ISS, AUD, scope="workflow:read other")
    c.update(extra)
    return c


def assert_not_echoed(r, token):
    """Neither the token nor any sizeable part of it is in the reply's body or headers."""
    for part in [token] + [p for p in token.split(".") if len(p) >= 16]:
        assert part not in r.raw, r
        assert all(part not in v for v in r.headers.values()), r


def assert_denied(r, status, code, error):
    assert (r.status, r.code) == (status, code), r
    assert r.headers["content-type"] == "application/json", r
    assert r.json["error"] == error and r.json["message"], r


# ---- valid tokens --------------------------------------------------------------------------


def test_es256_and_rs256_tokens_minted_by_pyjwt_pass(core, es, rs):
    for key in (es, rs):
        r = core.get("/read/items", key.sign(good()))
        assert r.status == 200, (key.alg, r)
        assert r.headers["x-upstream"] == "echo"
        # keep_token defaults to true: the upstream gets the token.
        assert r.json["headers"]["authorization"].startswith("Bearer ey")


def test_scheme_is_case_insensitive_and_query_and_cookie_work(core, es):
    token = es.sign(good())
    assert core.request("/read", {"authorization": f"bearer {token}"}).status == 200
    assert core.request("/read", {"authorization": f"BEARER {token}"}).status == 200
    assert core.get(f"/read?x=1&access_token={token}").status == 200
    assert core.request("/read", {"cookie": f"a=b; session={token}"}).status == 200


def test_times_within_the_clock_skew_are_accepted(core, es):
    now = int(time.time())
    assert core.get("/read", es.sign(good(nbf=now + 30))).status == 200
    assert core.get("/read", es.sign(good(exp=now - 30))).status == 200


def test_audience_list_and_scp_claim(core, es, rs):
    assert core.get("/read", es.sign(good(aud=["https://other.test", AUD]))).status == 200
    # Scopes also come from `scp`, as an array or a string.
    no_scope = {k: v for k, v in good().items() if k != "scope"}
    assert core.get("/write", rs.sign(dict(no_scope, scp=["workflow:write"]))).status == 200
    assert core.get("/write", rs.sign(dict(no_scope, scp="x workflow:write"))).status == 200


# ---- invalid tokens: 401 with their code ----------------------------------------------------


def other_key_same_kid(key):
    return harness.Key(key.alg, key.kid)


INVALID = {
    "expired": ("AUTH_111", lambda es, rs: es.sign(good(exp=int(time.time()) - 120))),
    "not yet valid": ("AUTH_112", lambda es, rs: es.sign(good(nbf=int(time.time()) + 300))),
    "wrong issuer": ("AUTH_113", lambda es, rs: es.sign(good(iss="https://evil.test"))),
    "wrong audience": ("AUTH_107", lambda es, rs: es.sign(good(aud="https://other.test"))),
    "bad ES256 signature": ("AUTH_105", lambda es, rs: other_key_same_kid(es).sign(good())),
    "bad RS256 signature": ("AUTH_105", lambda es, rs: other_key_same_kid(rs).sign(good())),
    "alg none": ("AUTH_114", lambda es, rs: harness.forge({"alg": "none", "kid": es.kid}, good(), b"")),
    "HS256 keyed with the RSA public key": (
        "AUTH_114", lambda es, rs: harness.hs256_keyed_with_public_key(rs, good())),
    "PS256, not in the provider's algorithms": ("AUTH_114", lambda es, rs: rs.sign(good(), alg="PS256")),
    "unknown kid": ("AUTH_115", lambda es, rs: harness.Key("ES256", "nobody").sign(good())),
    "RS256 naming the EC key's kid": ("AUTH_115", lambda es, rs: rs.sign(good(), kid=es.kid)),
    "garbage": ("AUTH_110", lambda es, rs: "not-a-jwt"),
    "bad base64 in a JWS shape": ("AUTH_110", lambda es, rs: "eyJ!!!.eyJ***.c2ln"),
    "no exp": ("AUTH_116", lambda es, rs: es.sign({k: v for k, v in good().items() if k != "exp"})),
}


@pytest.mark.parametrize("case", INVALID)
def test_invalid_tokens_get_401_with_their_code(core, es, rs, case):
    code, make = INVALID[case]
    token = make(es, rs)
    r = core.get("/read", token)
    assert_denied(r, 401, code, "invalid_token")
    assert r.headers["www-authenticate"].startswith(
        'Bearer realm="e2e", error="invalid_token", error_description="'), r
    assert_not_echoed(r, token)


def test_empty_bearer_is_malformed(core):
    for value in ["Bearer ", "Bearer"]:
        r = core.request("/read", {"authorization": value})
        assert_denied(r, 401, "AUTH_110", "invalid_token")


# ---- missing token, scopes, rules ---------------------------------------------------------------


def test_missing_token_gets_a_plain_challenge(core):
    for headers in [{}, {"authorization": "Basic dXNlcjpwdw=="}]:
        r = core.request("/read", headers)
        assert_denied(r, 401, "AUTH_100", "unauthorized")
        # No error attribute (RFC 6750 3.1: the client sent no credentials).
        assert r.headers["www-authenticate"] == 'Bearer realm="e2e"'
        assert r.json == {"error": "unauthorized", "code": "AUTH_100", "message": "a bearer token is required"}


def test_missing_scope_is_403_insufficient_scope(core, es):
    token = es.sign(good())
    r = core.get("/write", token)
    assert_denied(r, 403, "AUTH_102", "insufficient_scope")
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="e2e", error="insufficient_scope", error_description="'), r
    assert challenge.endswith('scope="workflow:write"'), r
    assert_not_echoed(r, token)


def test_a_public_prefix_cannot_reach_another_route(core):
    """Envoy here keeps %2F as is (its default); the filter matches rules on the path a
    backend that decodes it would serve, so these are the /read route, not /public."""
    for path in ["/public/..%2Fread", "/public/%2e%2e%2Fread", "/public/..%5Cread"]:
        r = core.get(path)
        assert (r.status, r.code) == (401, "AUTH_100"), (path, r)


def test_public_route_needs_no_token_and_unmatched_routes_are_denied(core, es):
    assert core.get("/public/x").status == 200
    token = es.sign(good())
    for path, tok in [("/elsewhere", None), ("/elsewhere", token), ("/publicity", None)]:
        r = core.get(path, tok)
        # Segment-aware prefix: /publicity is not /public.
        assert_denied(r, 403, "AUTH_120", "access_denied")
        assert "www-authenticate" not in r.headers, r
        if tok:
            assert_not_echoed(r, tok)


def test_host_and_method_match(core, es):
    token = es.sign(good())
    # Host is matched case-insensitively; a port only where the pattern says `:*`, as
    # Envoy picks virtual hosts (port-sensitive by default).
    assert core.get("/hosted", token, headers={"host": "API.Example.com"}).status == 200
    assert core.get("/hosted", token, headers={"host": "api.example.com:8443"}).code == "AUTH_120"
    assert core.get("/any-port", token, headers={"host": "API.Example.com:8443"}).status == 200
    assert core.get("/hosted", headers={"host": HOST}).code == "AUTH_100"
    assert core.get("/hosted", token, headers={"host": "other.example.com"}).code == "AUTH_120"
    assert core.get("/hosted", token, headers={"host": HOST}, method="POST").code == "AUTH_120"


def test_more_than_one_token_is_a_400_never_a_pick(core, es):
    """RFC 6750 §2: one method per request. Verifying one token and forwarding another
    would let an upstream that re-reads the header trust an unverified token."""
    good_token, forged = es.sign(good()), harness.Key("ES256", es.kid).sign(good(sub="admin"))
    # Envoy joins a repeated Authorization header into one value ("Bearer a,Bearer b"),
    # which is no JWT: refused as malformed before jwt-guard could see two.
    twice = [("authorization", f"Bearer {good_token}"), ("authorization", f"Bearer {forged}")]
    r = core.request("/read", twice)
    assert (r.status, r.code) == (401, "AUTH_110"), r
    for headers, path in [
        ({"authorization": f"Bearer {good_token}"}, f"/read?access_token={forged}"),
        ({"authorization": f"Bearer {good_token}"}, f"/read?access_token={good_token}"),
        ([("cookie", f"session={good_token}"), ("cookie", f"session={forged}")], "/read"),
        ({"cookie": f"session={good_token}; session={forged}"}, "/read"),
        ({}, f"/public?access_token={good_token}&access_token={forged}"),
    ]:
        r = core.request(path, headers)
        if path.startswith("/public"):
            assert r.status == 200, r  # a public route reads no token
            continue
        assert (r.status, r.code) == (400, "AUTH_117"), (headers, path, r)
        assert 'error="invalid_request"' in r.headers["www-authenticate"], r
        assert_not_echoed(r, good_token)
    # Decisions reach the counters on the filter's 100 ms tick.
    harness.wait_for(lambda: core.stat("denied.AUTH_117") >= 4, timeout=5, what="AUTH_117 counted")


GRPC = {"content-type": "application/grpc", "te": "trailers"}


def test_grpc_callers_get_grpc_statuses_with_the_code(core, es):
    """Service-to-service calls are often gRPC: Envoy turns the filter's 401/403 into a
    trailers-only gRPC reply (UNAUTHENTICATED 16, PERMISSION_DENIED 7) that gRPC clients
    understand, and the stable code travels in grpc-message."""
    def call(token=None):
        return core.get("/read/pkg.Service/Method", token, headers=GRPC, method="POST")

    missing = call()
    assert (missing.status, missing.headers["grpc-status"]) == (200, "16"), missing
    assert json.loads(missing.headers["grpc-message"])["code"] == "AUTH_100"
    assert missing.headers["www-authenticate"] == 'Bearer realm="e2e"'

    token = es.sign(good(scope="other"))
    lacking = call(token)
    assert lacking.headers["grpc-status"] == "7", lacking
    assert json.loads(lacking.headers["grpc-message"])["code"] == "AUTH_102"
    assert_not_echoed(lacking, token)

    invalid = call("not-a-jwt")
    assert invalid.headers["grpc-status"] == "16", invalid
    assert json.loads(invalid.headers["grpc-message"])["code"] == "AUTH_110"

    allowed = call(es.sign(good()))
    assert allowed.headers["x-upstream"] == "echo", allowed
    assert allowed.json["headers"]["content-type"] == "application/grpc"


def test_non_utf8_header_bytes_do_not_crash_the_worker(core, es):
    """The SDK's string getter panics on such bytes; a panic would take down the worker."""
    for _ in range(4):  # reach both workers
        with socket.create_connection(("127.0.0.1", core.port), timeout=5) as s:
            s.sendall(b"GET /read HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe.\xc3(.x\r\n"
                      b"Connection: close\r\n\r\n")
            reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 401"), reply
    for _ in range(8):
        assert core.get("/read", es.sign(good())).status == 200


def mutants(token, rng):
    """Tokens a careless or hostile client might send: the valid token with bytes flipped,
    parts dropped, duplicated or swapped, JSON that is valid but of the wrong shape, and
    huge or empty parts. Seeded, so a failure reproduces."""
    header, payload, sig = token.split(".")
    odd_json = [[], 1, "x", None, {"alg": ["ES256"]}, {"alg": "ES256", "kid": {"a": 1}},
                {"alg": "ES256", "crit": ["exp"]}, {"alg": "ES256", "kid": "es-1", "jku": "http://evil"}]
    enc = [harness.b64url(json.dumps(j).encode()) for j in odd_json]
    out = [".".join([j, payload, sig]) for j in enc] + [".".join([header, j, sig]) for j in enc]
    out += [header, f"{header}.{payload}", f"{header}.{payload}.{sig}.{sig}", f"{payload}.{header}.{sig}",
            "..", ".", f"{header}..{sig}", "A" * 20000, f"{header}.{'A' * 9000}.{sig}",
            f"{header}.{payload}.{sig[:-4]}", f"{header}.{payload}.", token.replace(".", "%2E")]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ "
    for _ in range(150):
        chars = list(token)
        for _ in range(rng.randint(1, 4)):
            chars[rng.randrange(len(chars))] = rng.choice(alphabet)
        out.append("".join(chars).strip())
    return [t for t in out if t != token]


def test_mangled_tokens_get_401_and_never_hurt_the_workers(core, es):
    token = es.sign(good())
    for t in mutants(token, random.Random(20261123)):
        r = core.get("/read", t)
        # (Non-canonical base64, such as set padding bits, is refused too: never 200.) A
        # mutated `iss` is refused as an unknown issuer before any key is looked up.
        assert r.status == 401 and r.code in ("AUTH_105", "AUTH_110", "AUTH_113", "AUTH_114"), (t, r)
        assert 'error="invalid_token"' in r.headers["www-authenticate"], (t, r)
    # Both workers still serve.
    for _ in range(8):
        assert core.get("/read", token).status == 200


# ---- keys: one fetch for all workers, JWKS trouble at start, inline keys -----------------------


@pytest.mark.parametrize("workers", [2, 4])
def test_one_jwks_fetch_serves_every_worker(envoy_factory, idp, es, rs, workers):
    idp.set_json("/jwks", harness.jwks(es, rs))
    envoy = envoy_factory(plugin(idp.url("/jwks")), {"jwks": idp.port}, concurrency=workers)
    tokens = [es.sign(good()), rs.sign(good())]
    sequential = [envoy.get("/read", tokens[i % 2]).status for i in range(40)]
    with ThreadPoolExecutor(16) as pool:
        concurrent = list(pool.map(lambda i: envoy.get("/read", tokens[i % 2]).status, range(300)))
    assert sequential == [200] * 40
    assert concurrent == [200] * 300
    assert idp.count("/jwks") == 1


def test_jwks_down_at_start_gives_503_then_recovers_without_restart(envoy_factory, es):
    idp = harness.ControlledServer()  # its port is known but nothing listens yet
    envoy = envoy_factory(plugin(idp.url("/jwks")), {"jwks": idp.port})
    token = es.sign(good())
    r = envoy.wait_for_reply(lambda r: r.status == 503, "/read", token,
                             what="a 503 while the JWKS server is down")
    assert_denied(r, 503, "AUTH_130", "temporarily_unavailable")
    assert "www-authenticate" not in r.headers, r
    assert "retry-after" in r.headers, r
    assert_not_echoed(r, token)
    grpc = envoy.get("/read/pkg.Service/Method", token, headers=GRPC, method="POST")
    assert grpc.headers["grpc-status"] == "14", grpc  # UNAVAILABLE: callers retry
    assert json.loads(grpc.headers["grpc-message"])["code"] == "AUTH_130"
    idp.set_json("/jwks", harness.jwks(es))
    idp.start()
    try:
        envoy.wait_for_reply(lambda r: r.status == 200, "/read", token, timeout=45, interval=0.5,
                             what="recovery once the JWKS server is up")
        assert envoy.alive
    finally:
        idp.stop()


def test_jwks_errors_at_start_give_503_until_the_server_is_fixed(envoy_factory, idp, es):
    idp.set_error("/jwks", 500)
    envoy = envoy_factory(plugin(idp.url("/jwks")), {"jwks": idp.port})
    token = es.sign(good())
    r = envoy.wait_for_reply(lambda r: r.status == 503, "/read", token, what="a 503 while the JWKS is a 500")
    assert r.code == "AUTH_130", r
    idp.set_garbage("/jwks")
    fetches = idp.count("/jwks")
    harness.wait_for(lambda: idp.count("/jwks") > fetches, timeout=10, what="a retry after the 500")
    r = envoy.get("/read", token)
    assert (r.status, r.code) == (503, "AUTH_130"), "garbage keys are not keys"
    idp.set_json("/jwks", harness.jwks(es))
    envoy.wait_for_reply(lambda r: r.status == 200, "/read", token, timeout=45, interval=0.5,
                         what="recovery once the JWKS is valid")


def test_local_jwks_needs_no_fetch(envoy_factory, idp, es):
    p = plugin(idp.url("/jwks"))
    del p["providers"][0]["remote_jwks"]
    p["providers"][0]["local_jwks"] = {"inline": json.dumps(harness.jwks(es))}
    p["default"] = "allow"
    # The JWKS server is a cluster Envoy knows, so a fetch would reach it and be counted.
    envoy = envoy_factory(p, {"jwks": idp.port})
    assert envoy.get("/read", es.sign(good())).status == 200
    assert envoy.get("/read").code == "AUTH_100"
    assert envoy.get("/elsewhere").status == 200  # default allow
    assert idp.count("/jwks") == 0


# ---- configuration Envoy must refuse -------------------------------------------------------------


def both_jwks(p):
    p["providers"][0]["local_jwks"] = {"inline": json.dumps(harness.jwks())}


INVALID_CONFIGS = {
    "unknown field": (lambda p: p["providers"][0].update(issuerr="x"), "providers[0].issuerr", "unknown"),
    "unknown nested field": (
        lambda p: p["providers"][0]["remote_jwks"].update(clustr="x"), "providers[0].remote_jwks.clustr", "unknown"),
    "provider without issuer": (lambda p: p["providers"][0].pop("issuer"), "providers[0]", "issuer"),
    "rule naming an unknown provider": (
        lambda p: p["rules"][1]["require"].update(providers=["nobody"]), "rules[1].require.providers[0]", "nobody"),
    "HS256 allowed": (
        lambda p: p["providers"][0].update(algorithms=["HS256"]), "providers[0].algorithms[0]", "HS256"),
    "remote and local keys": (both_jwks, "providers[0]", "remote_jwks"),
    "bad default": (lambda p: p.update(default="maybe"), "default", "maybe"),
    "not JSON": (None, "", ""),
}


@pytest.mark.parametrize("case", INVALID_CONFIGS)
def test_invalid_config_is_refused_and_names_the_field(upstream, case):
    change, path, mention = INVALID_CONFIGS[case]
    if change is None:
        p = "{not json"
    else:
        p = plugin("http://127.0.0.1:9/jwks")
        change(p)
    code, log = harness.run_envoy_expecting_failure(p, upstream.port, {"jwks": 9})
    assert code != 0
    lines = [line for line in log.splitlines() if f"jwt-guard: invalid configuration: {path}" in line]
    assert lines, log[-3000:]
    assert mention in lines[0], lines[0]


def test_the_start_up_line_names_the_version(core):
    """Operators tell which build a proxy runs from its log."""
    import os
    import re

    cargo = open(os.path.join(os.path.dirname(__file__), "..", "..", "Cargo.toml")).read()
    version = re.search(r'^version = "([^"]+)"', cargo, re.M).group(1)
    harness.wait_for(lambda: f"jwt-guard {version}: configured 1 providers" in core.log_text(),
                     timeout=5, what="the start-up line")
