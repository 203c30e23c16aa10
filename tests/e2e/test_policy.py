"""Policy depth and identity forwarding through a real Envoy."""

import base64
import json
import time

import pytest

import harness

GOOGLE = "https://accounts.google.com"
SERVICE = "https://employee-api-oy6beuif2a-uc.a.run.app"
INVOKER = "emp-api-client@proj.iam.gserviceaccount.com"
KEYCLOAK = "https://sso.e2e.test/auth/realms/apigw"
AUTH = "auth-service"


@pytest.fixture(scope="module")
def keys():
    return {"google": harness.Key("RS256", "g-1"), "keycloak": harness.Key("RS256", "kc-1"),
            "auth": harness.Key("ES256", "as-1")}


def provider(name, issuer, key, **extra):
    p = {"name": name, "issuer": issuer, "local_jwks": {"inline": harness.jwks(key)},
         "algorithms": [key.alg]}
    p.update(extra)
    return p


@pytest.fixture(scope="module")
def envoy(upstream, keys):
    config = {
        "audit_log": {"allowed": True},
        "providers": [
            provider("google", GOOGLE, keys["google"], audiences=[SERVICE],
                     claims_to_headers=[{"claim": "email", "header": "x-caller-email"}]),
            provider("keycloak", KEYCLOAK, keys["keycloak"], audiences=["my-api"],
                     claims_to_headers=[{"claim": "realm_access.roles", "header": "x-jwt-roles"},
                                        {"claim": "azp", "header": "x-jwt-client"}],
                     payload_header="x-jwt-payload"),
            provider("auth", AUTH, keys["auth"], audiences=["api"],
                     claims_to_headers=[{"claim": "sub", "header": "x-jwt-sub"}],
                     from_params=["access_token"], from_cookies=["session"], keep_token=False,
                     ip_bindings=[{"principals": {"client_id": ["bound-client"]}, "cidrs": ["10.0.1.0/24"]}]),
        ],
        "rules": [
            {"name": "health", "match": {"path": "/health"}, "allow": "anonymous"},
            {"name": "invoker", "match": {"path_prefix": "/employees"},
             "require": {"providers": ["google"], "principals": {"email": [INVOKER]},
                         "claims": {"email_verified": [True]}}},
            {"name": "admin", "match": {"path_prefix": "/admin"},
             "require": {"providers": ["keycloak"], "roles": ["admin"]}},
            {"name": "reports", "match": {"path_prefix": "/reports"}, "require": {"any": [
                {"providers": ["keycloak"], "roles": {"any_of": ["my-api:reader", "my-api:writer"]}},
                {"providers": ["auth"], "all": [{"scopes": ["report:read"]}, {"principals": {"sub": ["svc-*"]}}]}]}},
            {"name": "steps", "match": {"methods": ["PUT"], "path_template": "/workflows/{id}/steps/*"},
             "require": {"providers": ["auth"], "scopes": ["workflow:write"]}},
            {"name": "workflows", "match": {"methods": ["GET"], "path_prefix": "/workflows"},
             "require": {"providers": ["auth"], "scopes": ["workflow:read"]}},
            {"name": "fenced", "match": {"path_prefix": "/fenced"}, "require": {
                "providers": ["auth"], "ip_bindings": [{"principals": {"sub": ["*"]}, "cidrs": ["192.0.2.0/24"]}]}},
            {"name": "optional", "match": {"path_prefix": "/maybe"},
             "require": {"providers": ["auth"], "allow_missing": True}},
            {"name": "trial", "match": {"path_prefix": "/trial"}, "mode": "dry_run",
             "require": {"providers": ["auth"], "scopes": ["beta"]}},
        ],
    }
    e = harness.Envoy(config, upstream.port, concurrency=2)
    try:
        yield e.start()
    finally:
        e.stop()


def google_token(keys, email=INVOKER, aud=SERVICE, **extra):
    now = int(time.time())
    c = {"iss": GOOGLE, "aud": aud, "sub": "10769150350006150715", "azp": "10769150350006150715",
         "email": email, "email_verified": True, "iat": now, "exp": now + 3600}
    c.update(extra)
    return keys["google"].sign(c)


def keycloak_token(keys, realm_roles=(), client_roles=(), **extra):
    now = int(time.time())
    c = {"iss": KEYCLOAK, "aud": "my-api", "sub": "svc-user", "azp": "val_svc_client_a1b2c3",
         "typ": "Bearer", "iat": now, "exp": now + 300,
         "realm_access": {"roles": list(realm_roles)},
         "resource_access": {"my-api": {"roles": list(client_roles)}, "account": {"roles": ["view-profile"]}}}
    c.update(extra)
    return keys["keycloak"].sign(c)


def auth_token(keys, scope="", **extra):
    claims = {"scope": scope, "client_id": "val_svc_client_a1b2c3"}
    claims.update(extra)
    return keys["auth"].sign(harness.claims(AUTH, "api", **claims))


def test_cloud_run_invoker_only_one_service_account(envoy, keys):
    r = envoy.get("/employees/help", google_token(keys))
    assert r.status == 200, r
    assert r.json["headers"]["x-caller-email"] == INVOKER
    r = envoy.get("/employees/help", google_token(keys, email="other@proj.iam.gserviceaccount.com"))
    assert (r.status, r.code) == (403, "AUTH_121"), r
    r = envoy.get("/employees/help", google_token(keys, email_verified=False))
    assert (r.status, r.code) == (403, "AUTH_121"), r
    r = envoy.get("/employees/help", google_token(keys, aud="https://other-service.a.run.app"))
    assert (r.status, r.code) == (401, "AUTH_107"), r


def test_keycloak_realm_and_client_roles(envoy, keys):
    assert envoy.get("/admin", keycloak_token(keys, realm_roles=["admin"])).status == 200
    r = envoy.get("/admin", keycloak_token(keys, realm_roles=["offline_access"], client_roles=["admin"]))
    assert (r.status, r.code) == (403, "AUTH_121"), "a client role is not the realm role"
    r = envoy.get("/reports", keycloak_token(keys, client_roles=["reader"]))
    assert r.status == 200, r
    assert r.json["headers"]["x-jwt-client"] == "val_svc_client_a1b2c3"
    assert envoy.get("/reports", keycloak_token(keys, client_roles=["guest"])).code == "AUTH_121"


def test_any_of_all_of_across_providers(envoy, keys):
    # Second branch: auth-service token with report:read AND a principal matching svc-*.
    ok = auth_token(keys, scope="report:read", sub="svc-reporting")
    assert envoy.get("/reports", ok).status == 200
    r = envoy.get("/reports", auth_token(keys, scope="report:read", sub="human-1"))
    assert (r.status, r.code) == (403, "AUTH_121"), r
    # Missing scope in an otherwise matching branch: reported as a scope problem.
    r = envoy.get("/reports", auth_token(keys, scope="", sub="svc-reporting"))
    assert (r.status, r.code) == (403, "AUTH_102"), r
    assert 'scope="report:read"' in r.headers["www-authenticate"]


def test_ip_binding_allows_matching_networks_and_denies_others(envoy, keys):
    # Envoy sees the test client as 127.0.0.1.
    r = envoy.get("/fenced", auth_token(keys))
    assert (r.status, r.code) == (403, "AUTH_104"), r
    assert r.json["error"] == "access_denied"
    # The provider binds only bound-client (to 10.0.1.0/24); others are not limited.
    assert envoy.get("/workflows", auth_token(keys, scope="workflow:read")).status == 200
    r = envoy.get("/workflows", auth_token(keys, scope="workflow:read", client_id="bound-client"))
    assert (r.status, r.code) == (403, "AUTH_104"), r


def test_ip_binding_allows_the_loopback_network(upstream, envoy_factory, keys):
    p = {"providers": [provider("auth", AUTH, keys["auth"], audiences=["api"], ip_bindings=[
            {"principals": {"client_id": ["val_svc_client_*"]}, "cidrs": ["127.0.0.0/8", "::1"]}])],
         "rules": [{"match": {"path_prefix": "/"}, "require": {}}]}
    assert envoy_factory(p).get("/x", auth_token(keys)).status == 200


SPOOFED = {"x-jwt-sub": "admin", "x-caller-email": INVOKER, "x-jwt-roles": "admin",
           "x-jwt-payload": "e30", "x-jwt-client": "root", "x-jwt-guard-dry-run": "none"}


def test_spoofed_identity_headers_never_reach_the_upstream(envoy, keys):
    public = envoy.request("/health", SPOOFED)
    assert public.status == 200
    assert not set(SPOOFED) & set(public.json["headers"])
    headers = dict(SPOOFED, authorization=f"Bearer {keycloak_token(keys, realm_roles=['admin'])}")
    protected = envoy.request("/admin", headers)
    assert protected.status == 200
    seen = protected.json["headers"]
    assert seen["x-jwt-roles"] == "admin"  # the filter's own value, not the client's
    assert "x-jwt-sub" not in seen and "x-caller-email" not in seen and "x-jwt-guard-dry-run" not in seen
    payload = json.loads(base64.urlsafe_b64decode(seen["x-jwt-payload"] + "=="))
    assert payload["iss"] == KEYCLOAK


def test_a_spoofed_header_sent_twice_is_removed_entirely(envoy):
    import socket

    with socket.create_connection(("127.0.0.1", envoy.port), timeout=5) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nx-jwt-sub: admin\r\nX-JWT-Sub: root\r\n"
                  b"x-caller-email: a@b\r\nx-caller-email: c@d\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    assert "x-jwt-sub" not in body["headers"] and "x-caller-email" not in body["headers"], body


def test_keep_token_false_strips_it_from_header_query_and_cookie(envoy, keys):
    token = auth_token(keys, scope="workflow:read")
    r = envoy.get("/workflows", token)
    assert r.status == 200 and "authorization" not in r.json["headers"]
    assert r.json["headers"]["x-jwt-sub"] == "svc-a"
    r = envoy.get(f"/workflows?a=1&access_token={token}&b=2")
    assert r.status == 200 and r.json["path"] == "/workflows?a=1&b=2"
    r = envoy.request("/workflows", {"cookie": f"theme=dark; session={token}"})
    assert r.status == 200 and r.json["headers"]["cookie"] == "theme=dark"


def test_templates_and_methods(envoy, keys):
    write = auth_token(keys, scope="workflow:write")
    assert envoy.get("/workflows/wf_123/steps/4", write, method="PUT").status == 200
    assert envoy.get("/workflows/wf_123/steps", write, method="PUT").code == "AUTH_120"
    assert envoy.get("/workflows/wf_123/steps/4/x", write, method="PUT").code == "AUTH_120"
    assert envoy.get("/workflows/wf_123/steps/4", write, method="DELETE").code == "AUTH_120"
    # GET /workflows/... falls through to the read rule, which wants workflow:read.
    assert envoy.get("/workflows/wf_123/steps/4", write).code == "AUTH_102"


def test_allow_missing(envoy, keys):
    assert envoy.get("/maybe").status == 200
    assert envoy.get("/maybe", auth_token(keys)).status == 200
    assert envoy.get("/maybe", "garbage").code == "AUTH_110"


def test_dry_run_lets_through_reports_and_counts(envoy, keys):
    before = envoy.stat("rule.trial.dry_run_denied")
    r = envoy.get("/trial", auth_token(keys, scope="workflow:read"))
    assert r.status == 200
    assert r.json["headers"]["x-jwt-guard-dry-run"] == "would-deny AUTH_102 403"
    assert envoy.get("/trial", auth_token(keys, scope="beta")).json["headers"].get("x-jwt-guard-dry-run") is None
    harness.wait_for(lambda: envoy.stat("rule.trial.dry_run_denied") == before + 1, timeout=5)
    assert '"decision":"dry_run_deny"' in envoy.log_text()


def audit_lines(envoy):
    out = []
    for line in envoy.log_text().splitlines():
        if "jwt-guard audit " in line:
            out.append(json.loads(line.split("jwt-guard audit ", 1)[1]))
    return out


def test_audit_log_one_line_per_decision_never_the_token(envoy, keys):
    token = keycloak_token(keys, client_roles=["guest"])
    assert envoy.get("/admin", token).status == 403
    entries = harness.wait_for(
        lambda: [a for a in audit_lines(envoy) if a["rule"] == "admin" and a["decision"] == "deny"],
        timeout=5, what="the audit line")
    entry = dict(entries[-1])
    # Envoy's request id (to find the request in its access log) and the client address.
    request_id, source = entry.pop("request_id"), entry.pop("source")
    assert len(request_id) >= 32 and source.startswith("127.0.0.1:"), (request_id, source)
    assert entry == {"decision": "deny", "code": "AUTH_121", "status": 403, "rule": "admin",
                     "provider": "keycloak", "sub": "svc-user", "client_id": "val_svc_client_a1b2c3",
                     "method": "GET", "path": "/admin"}
    sent = envoy.get("/admin", token, headers={"x-request-id": "trace-42"})
    assert sent.status == 403
    harness.wait_for(lambda: any(a.get("request_id") == "trace-42" for a in audit_lines(envoy)),
                     timeout=5, what="the audit line with the client's request id")
    assert envoy.get("/health").status == 200
    harness.wait_for(lambda: any(a["decision"] == "allow" for a in audit_lines(envoy)), timeout=5,
                     what="an allowed request's line (audited when asked)")
    assert token not in envoy.log_text()


def test_audit_of_denials_can_be_turned_off_stats_still_count(upstream, envoy_factory, keys):
    """Under a flood of bad requests a platform team may keep the log quiet."""
    p = {"audit_log": {"allowed": True, "denied": False},
         "providers": [provider("auth", AUTH, keys["auth"], audiences=["api"])],
         "rules": [{"name": "api", "match": {"path_prefix": "/"}, "require": {}}]}
    e = envoy_factory(p)
    assert e.get("/x").code == "AUTH_100"
    assert e.get("/x", auth_token(keys)).status == 200
    # The allowed line comes after the denial: once it is in the log, the denial would be.
    lines = harness.wait_for(lambda: audit_lines(e), timeout=5, what="the allowed request's line")
    assert [a["decision"] for a in lines] == ["allow"]
    harness.wait_for(lambda: e.stat("denied.AUTH_100") == 1, timeout=5, what="the denial counted")


def test_stats_per_rule_and_per_code(envoy, keys):
    before = envoy.stats()
    envoy.get("/health")
    envoy.get("/admin")  # no token: AUTH_100
    after = harness.wait_for(
        lambda: (lambda s: s if s.get("wasmcustom.jwt_guard.jwt_guard.denied.AUTH_100", 0) > before.get(
            "wasmcustom.jwt_guard.jwt_guard.denied.AUTH_100", 0) else None)(envoy.stats()), timeout=5)
    assert after["wasmcustom.jwt_guard.jwt_guard.rule.health.allowed"] > before.get("wasmcustom.jwt_guard.jwt_guard.rule.health.allowed", 0)
    assert after["wasmcustom.jwt_guard.jwt_guard.rule.admin.denied"] > before.get("wasmcustom.jwt_guard.jwt_guard.rule.admin.denied", 0)
