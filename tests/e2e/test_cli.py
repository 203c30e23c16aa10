"""`jwt-guard explain` against the filter in a real Envoy: the same requests, the same
config and keys, through both; the status, code, challenge, body and the identity headers
the upstream receives must be the same. Also `jwt-guard check` on a config Envoy refuses."""

import json
import time

import pytest

import harness
from conftest import AUD, ISS

# The filter sees 127.0.0.1 as the TCP peer of the test client; the CLI is told so.
PEER = "127.0.0.1"


def plugin(jwks_url):
    return {
        "realm": "e2e-cli",
        "providers": [{
            "name": "corp", "issuer": ISS, "audiences": [AUD],
            "remote_jwks": {"uri": jwks_url, "cluster": "idp", "timeout_ms": 2000},
            "claims_to_headers": [{"claim": "sub", "header": "x-jwt-sub"},
                                  {"claim": "client_id", "header": "x-client-id"}],
            "ip_bindings": [
                {"principals": {"client_id": ["near-client"]}, "cidrs": ["127.0.0.0/8"]},
                {"principals": {"client_id": ["far-client"]}, "cidrs": ["192.0.2.0/24"]},
            ],
        }],
        "rules": [
            {"name": "no-legacy", "match": {"path_prefix": "/"},
             "deny": {"principals": {"client_id": ["legacy-*"]}}},
            {"name": "canary", "match": {"path_prefix": "/workflows",
                                         "headers": [{"name": "x-canary", "exact": "on"}]},
             "require": {"scopes": ["canary"]}},
            {"name": "health", "match": {"path_prefix": "/health"}, "allow": "anonymous"},
            {"name": "read", "match": {"methods": ["GET"], "path_prefix": "/workflows"},
             "require": {"scopes": ["workflow:read"]}},
            {"name": "write", "match": {"methods": ["POST"], "path_prefix": "/workflows"},
             "require": {"scopes": ["workflow:write"]}},
        ],
    }


@pytest.fixture(scope="module")
def setup(upstream, es, tmp_path_factory):
    idp = harness.ControlledServer().start()
    idp.set_json("/jwks", harness.jwks(es))
    config = plugin(idp.url("/jwks"))
    files = tmp_path_factory.mktemp("cli")
    (files / "config.json").write_text(json.dumps(config, indent=2))
    (files / "jwks.json").write_text(json.dumps(harness.jwks(es)))
    envoy = harness.Envoy(config, upstream.port, {"idp": idp.port})
    try:
        envoy.start()
        yield envoy, files
    finally:
        envoy.stop()
        idp.stop()


def token(es, **overrides):
    claims = harness.claims(ISS, AUD)
    claims.update(overrides)
    return es.sign(claims)


# (case, method, path, claims of the token or None for no token, extra headers,
#  what both must answer: status and code).
CASES = [
    ("allowed", "GET", "/workflows/7", {"scope": "workflow:read"}, {}, (200, None)),
    ("missing token", "GET", "/workflows", None, {}, (401, "AUTH_100")),
    ("wrong scope", "POST", "/workflows", {"scope": "workflow:read"}, {}, (403, "AUTH_102")),
    ("expired", "GET", "/workflows", {"scope": "workflow:read", "exp": int(time.time()) - 3600},
     {}, (401, "AUTH_111")),
    ("wrong audience", "GET", "/workflows", {"scope": "workflow:read", "aud": "https://other.test"},
     {}, (401, "AUTH_107")),
    ("public route", "GET", "/health/live", None, {}, (200, None)),
    ("bound caller from its network", "GET", "/workflows",
     {"scope": "workflow:read", "client_id": "near-client"}, {}, (200, None)),
    ("bound caller from elsewhere", "GET", "/workflows",
     {"scope": "workflow:read", "client_id": "far-client"}, {}, (403, "AUTH_104")),
    ("identity forwarded", "POST", "/workflows",
     {"scope": "workflow:write", "sub": "svc-writer", "client_id": "c-1"}, {}, (200, None)),
    ("a client's own identity header", "GET", "/health", None, {"x-jwt-sub": "admin"}, (200, None)),
    ("a path read two ways", "GET", "/health/..;/workflows", None, {}, (401, "AUTH_100")),
    ("default deny", "DELETE", "/workflows", {"scope": "workflow:write"}, {}, (403, "AUTH_120")),
    ("a deny rule", "GET", "/health", {"client_id": "legacy-batch"}, {}, (403, "AUTH_122")),
    ("a header matcher", "GET", "/workflows", {"scope": "workflow:read"}, {"x-canary": "on"},
     (403, "AUTH_102")),
]

IDENTITY = ["x-jwt-sub", "x-client-id"]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_explain_decides_as_envoy_does(setup, es, case):
    envoy, files = setup
    name, method, path, claims, headers, (status, code) = case
    jwt = token(es, **claims) if claims is not None else None

    sent = dict(headers)
    if jwt:
        sent["authorization"] = f"Bearer {jwt}"
    r = envoy.request(path, sent, method=method)
    assert (r.status, r.code) == (status, code), r

    args = ["--config", files / "config.json", "--jwks", files / "jwks.json",
            "--method", method, "--path", path, "--source-ip", PEER, "--now", int(time.time())]
    for k, v in headers.items():
        args += ["--header", f"{k}: {v}"]
    if jwt:
        args += ["--token", jwt]
    exit_code, e = harness.explain_json(*args)

    if status == 200:
        assert (exit_code, e["decision"], e["status"], e["code"]) == (0, "allow", None, None), e
        received = r.json["headers"]
        upstream = dict(e["upstream"]["headers"])
        for h in IDENTITY:
            assert upstream.get(h) == received.get(h), (h, upstream, received)
        # A client's copy never gets through (so the comparison is not None == None by luck).
        for h in headers:
            assert h not in received and h not in upstream, (h, upstream, received)
    else:
        assert (exit_code, e["decision"], e["status"], e["code"]) == (1, "deny", status, code), e
        assert e["www_authenticate"] == r.headers.get("www-authenticate")
        assert json.loads(e["body"]) == r.json


def test_identity_headers_are_the_tokens(setup, es):
    """The comparison above is not vacuous: the forwarded case carries both headers."""
    envoy, files = setup
    jwt = token(es, scope="workflow:write", sub="svc-writer", client_id="c-1")
    exit_code, e = harness.explain_json(
        "--config", files / "config.json", "--jwks", files / "jwks.json", "--method", "POST",
        "--path", "/workflows", "--token", jwt, "--source-ip", PEER)
    assert exit_code == 0
    assert e["upstream"]["set"] == {"x-jwt-sub": "svc-writer", "x-client-id": "c-1"}
    r = envoy.request("/workflows", {"authorization": f"Bearer {jwt}"}, method="POST")
    assert {h: r.json["headers"].get(h) for h in IDENTITY} == e["upstream"]["set"]


def test_explain_lists_every_rule_a_reading_selects(setup):
    _, files = setup
    _, e = harness.explain_json("--config", files / "config.json", "--jwks", files / "jwks.json",
                                "--path", "/health/..;/workflows")
    # The route rules both readings select, then the deny rule that matches every path.
    assert [s["rule"]["name"] for s in e["selected_rules"]] == ["health", "read", "no-legacy"]
    assert e["decided_by"]["name"] == "read"


def test_check_places_the_error_envoy_refuses(setup, upstream, tmp_path):
    """A config Envoy will not load: `check` exits 1 and points at the line."""
    _, files = setup
    config = json.loads((files / "config.json").read_text())
    config["providers"][0]["remote_jwks"]["cluster"] = ""
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config, indent=2))
    p = harness.run_cli("check", path)
    assert p.returncode == 1, p.stdout
    line_no = next(i for i, line in enumerate(path.read_text().splitlines(), 1)
                   if '"cluster": ""' in line)
    assert p.stdout.startswith(f"{path}:{line_no}:"), p.stdout
    assert "providers[0].remote_jwks.cluster: must name an Envoy cluster" in p.stdout
    code, log = harness.run_envoy_expecting_failure(config, upstream.port, {"idp": 1})
    assert code != 0 and "must name an Envoy cluster" in log


def test_exit_codes_for_usage_errors(setup, tmp_path):
    """2: a file that cannot be read, a missing argument, a config explain cannot run."""
    _, files = setup
    assert harness.run_cli("check", tmp_path / "absent.json").returncode == 2
    assert harness.run_cli("explain", "--path", "/").returncode == 2
    bad = tmp_path / "bad.json"
    bad.write_text('{"providers": []}')
    p = harness.run_cli("explain", "--config", bad, "--path", "/")
    assert p.returncode == 2
    assert "providers: at least one provider is required" in p.stderr
    strict = harness.run_cli("check", "--strict", files / "config.json")
    assert strict.returncode == 0, strict.stdout
