"""What the rest of Envoy sees of jwt-guard: its filter state (in the access log of
envoy/envoy.yaml, and to an RBAC filter after it), its stats as Prometheus labels (with the
stats_tags of envoy/envoy.yaml) for two filter instances in one Envoy, and CORS preflights."""

import json
import os
import re

import yaml

import harness
from conftest import AUD, ISS

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def shipped():
    with open(os.path.join(ROOT, "envoy", "envoy.yaml")) as f:
        return yaml.safe_load(f)


def shipped_hcm():
    listener = shipped()["static_resources"]["listeners"][0]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def file_access_log(path):
    """The access log of envoy/envoy.yaml, its format as shipped, written to `path`."""
    log_format = shipped_hcm()["access_log"][0]["typed_config"]["log_format"]
    return [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": str(path), "log_format": log_format}}]


def plugin(key, rules=None, **top):
    p = {"filter_state": True,
         "providers": [{"name": "corp", "issuer": ISS, "audiences": [AUD],
                        "local_jwks": {"inline": harness.jwks(key)}}],
         "rules": rules or [
             {"name": "public", "match": {"path_prefix": "/public"}, "allow": "anonymous"},
             {"name": "reports", "match": {"path_prefix": "/reports"},
              "require": {"scopes": ["reports:read"]}}]}
    p.update(top)
    return p


def token(key, **claims):
    return key.sign(harness.claims(ISS, AUD, **claims))


def test_the_access_log_of_envoy_yaml_shows_the_decision_and_the_verified_identity(
        envoy_factory, es, rs, tmp_path):
    log = tmp_path / "access.log"
    envoy = envoy_factory(plugin(es), hcm={"access_log": file_access_log(log)})
    sent = {
        "allowed": envoy.get("/reports/q1?access_token=x", token(
            es, sub="svc-reports", azp="reports-client", scope="reports:read audit:read"),
            headers={"x-request-id": "allowed"}),
        "no-token": envoy.get("/reports/q1", headers={"x-request-id": "no-token"}),
        "no-scope": envoy.get("/reports/q1", token(es, sub="svc-other", client_id="other"),
                              headers={"x-request-id": "no-scope"}),
        # Signed by a key the provider does not have: anonymous there, and not an identity.
        "public": envoy.get("/public/x", token(rs, sub="admin"), headers={"x-request-id": "public"}),
    }
    assert [r.status for r in sent.values()] == [200, 401, 403, 200]

    def lines():
        if not log.exists():
            return None
        by_id = {e["request_id"]: e for e in map(json.loads, log.read_text().splitlines())}
        return by_id if set(sent) <= set(by_id) else None

    logged = harness.wait_for(lines, timeout=10, what="an access log line for every request")
    identity = ("sub", "iss", "client_id", "scope")
    allowed = logged["allowed"]
    assert (allowed["status"], allowed["path"]) == (200, "/reports/q1"), "no query: it may carry a token"
    assert {k: allowed[k] for k in ("decision", "rule", "code") + identity} == {
        "decision": "allow", "rule": "reports", "code": None, "sub": "svc-reports", "iss": ISS,
        "client_id": "reports-client", "scope": "reports:read audit:read"}
    no_token = logged["no-token"]
    assert {k: no_token[k] for k in ("status", "decision", "rule", "code") + identity} == {
        "status": 401, "decision": "deny", "rule": "reports", "code": "AUTH_100",
        "sub": None, "iss": None, "client_id": None, "scope": None}
    # A valid token that does not meet the rule: refused, and who was refused is known.
    no_scope = logged["no-scope"]
    assert (no_scope["decision"], no_scope["code"], no_scope["sub"], no_scope["client_id"]) == (
        "deny", "AUTH_102", "svc-other", "other")
    public = logged["public"]
    assert (public["decision"], public["rule"], public["sub"]) == ("allow", "public", None)


def test_rbac_and_cel_after_jwt_guard_read_its_filter_state(envoy_factory, es, tmp_path):
    """Envoy's RBAC, after jwt-guard, lets only one verified client through (what a header
    a client could send cannot do); a CEL expression reads the same value, as bytes."""
    rbac = {"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "rules": {"action": "ALLOW", "policies": {"reports-client-only": {
            "permissions": [{"any": True}],
            "principals": [{"filter_state": {"key": "wasm.jwt_guard.client_id",
                                             "string_match": {"exact": "reports-client"}}}]}}}}}
    log = tmp_path / "cel.log"
    cel_log = [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": str(log), "log_format": {
            "text_format_source": {"inline_string":
                                   "%RESPONSE_CODE% %CEL(filter_state['wasm.jwt_guard.client_id'] == b'reports-client')%\n"},
            "formatters": [{"name": "envoy.formatter.cel", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.formatter.cel.v3.Cel"}}]}}}]
    p = plugin(es, rules=[{"name": "api", "match": {"path_prefix": "/"}, "require": {}}])
    envoy = envoy_factory(None, filters=[harness.wasm_filter(p), rbac], hcm={"access_log": cel_log})
    assert envoy.get("/x", token(es, client_id="reports-client")).status == 200
    other = envoy.get("/x", token(es, client_id="other"))
    assert other.status == 403 and other.code is None, other  # RBAC's own refusal
    lines = harness.wait_for(lambda: log.exists() and len(log.read_text().splitlines()) == 2
                             and log.read_text().splitlines(), timeout=10, what="two access log lines")
    assert lines == ["200 true", "403 false"]


PROMETHEUS_LINE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")


def prometheus_values(text):
    """{(metric, frozenset of (label, value)): value} from Prometheus text output."""
    out = {}
    for line in text.splitlines():
        m = PROMETHEUS_LINE.match(line)
        if m:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def test_two_filter_instances_have_their_own_prometheus_labels(envoy_factory, idp, es):
    """Two jwt-guard instances in one Envoy, with the stats_tags of envoy/envoy.yaml: each
    instance's counters are its own, labelled by instance, rule, deny code and provider."""
    idp.set_json("/jwks", harness.jwks(es))
    edge = plugin(es)
    edge["providers"].append({"name": "idp", "issuer": "https://idp.e2e.test", "audiences": [AUD],
                              "remote_jwks": {"uri": idp.url("/jwks"), "cluster": "idp"}})
    # Istio names a plugin `<namespace>.<name>`: still one label value.
    inner = plugin(es, rules=[{"name": "all", "match": {"path_prefix": "/"}, "allow": "anonymous"}])
    filters = [harness.wasm_filter(edge, name="edge"), harness.wasm_filter(inner, name="istio-system.inner")]
    stats_config = shipped()["stats_config"]
    # Histograms reach the admin endpoints when they are flushed: on each admin request here.
    envoy = envoy_factory(None, {"idp": idp.port}, filters=filters,
                          bootstrap_extra={"stats_config": stats_config, "stats_flush_on_admin": True})
    tok = token(es, scope="reports:read")
    assert [envoy.get("/public/a").status for _ in range(2)] == [200, 200]
    assert envoy.get("/reports/x").status == 401
    assert [envoy.get("/reports/x", tok).status for _ in range(2)] == [200, 200]
    wanted = {
        ("jwt_guard_rule_allowed", (("jwt_guard_instance", "edge"), ("rule", "public"))): 2,
        ("jwt_guard_rule_allowed", (("jwt_guard_instance", "edge"), ("rule", "reports"))): 2,
        ("jwt_guard_rule_denied", (("jwt_guard_instance", "edge"), ("rule", "reports"))): 1,
        ("jwt_guard_denied", (("jwt_guard_instance", "edge"), ("code", "AUTH_100"))): 1,
        # The inner instance saw only what the edge let through.
        ("jwt_guard_rule_allowed", (("jwt_guard_instance", "istio-system_inner"), ("rule", "all"))): 4,
        ("jwt_guard_denied", (("jwt_guard_instance", "istio-system_inner"), ("code", "AUTH_100"))): 0,
        # The second token was the cached first one (counted on the 100 ms tick).
        ("jwt_guard_cache_miss", (("jwt_guard_instance", "edge"),)): 1,
        ("jwt_guard_cache_hit", (("jwt_guard_instance", "edge"),)): 1,
        ("jwt_guard_provider_jwks_fetch_success", (("jwt_guard_instance", "edge"), ("provider", "idp"))): 1,
        # One decision in 8 is timed (each worker's first included), in microseconds: the
        # one worker's 5 and 4 decisions give one sample each.
        ("jwt_guard_decision_duration_us_count", (("jwt_guard_instance", "edge"),)): 1,
        ("jwt_guard_decision_duration_us_count", (("jwt_guard_instance", "istio-system_inner"),)): 1,
    }

    seen = {}

    def scraped():
        """The values, once every wanted one is there (histograms come with a flush)."""
        values = prometheus_values(envoy.prometheus())
        seen.update({k: values.get((k[0], frozenset(k[1]))) for k in wanted})
        return values if seen == wanted else None

    try:
        values = harness.wait_for(scraped, timeout=10, what="the Prometheus values")
    except AssertionError:
        assert seen == wanted  # shows which differ
        raise
    names = {metric for metric, _ in values}
    assert not any("wasmcustom" in n or n.startswith("envoy_jwt_guard") for n in names), names
    edge_sum = values[("jwt_guard_decision_duration_us_sum", frozenset({("jwt_guard_instance", "edge")}))]
    assert 0 < edge_sum < 50_000, "a decision takes microseconds, not seconds"


ORIGIN = {"origin": "https://app.example.com", "access-control-request-method": "POST"}


def test_cors_preflights_pass_without_a_token_only_when_switched_on(envoy_factory, es, tmp_path):
    off = envoy_factory(plugin(es))
    assert off.request("/reports/q1", ORIGIN, method="OPTIONS").code == "AUTH_100"

    log = tmp_path / "access.log"
    on = envoy_factory(plugin(es, bypass_cors_preflight=True), hcm={"access_log": file_access_log(log)})
    r = on.request("/reports/q1", dict(ORIGIN, **{"x-request-id": "preflight"}), method="OPTIONS")
    assert r.status == 200 and r.json["method"] == "OPTIONS", r
    # A token on a preflight is not verified: no identity goes upstream, a spoofed one is removed.
    spoofed = dict(ORIGIN, authorization="Bearer garbage", **{"x-jwt-guard-dry-run": "forged"})
    r = on.request("/reports/q1", spoofed, method="OPTIONS")
    assert r.status == 200 and "x-jwt-guard-dry-run" not in r.json["headers"], r
    harness.wait_for(lambda: on.stat("cors_preflight") == 2, timeout=5, what="the preflight counter")

    def logged():
        if log.exists():
            for entry in map(json.loads, log.read_text().splitlines()):
                if entry["request_id"] == "preflight":
                    return entry
        return None

    entry = harness.wait_for(logged, timeout=10, what="the preflight's access log line")
    assert (entry["decision"], entry["rule"], entry["sub"]) == ("cors_preflight", None, None)


def test_what_is_not_a_real_preflight_meets_the_rules_even_when_switched_on(envoy_factory, es):
    envoy = envoy_factory(plugin(es, bypass_cors_preflight=True))
    # A method override: an upstream may serve it as a DELETE, whatever the method line says.
    for headers, path in [
        (dict(ORIGIN, **{"x-http-method-override": "DELETE"}), "/reports/q1"),
        (ORIGIN, "/reports/q1?_method=DELETE"),
        # Not a CORS request.
        ({"access-control-request-method": "POST"}, "/reports/q1"),
        ({"origin": "https://app.example.com"}, "/reports/q1"),
    ]:
        assert envoy.request(path, headers, method="OPTIONS").code == "AUTH_100", (headers, path)
    # Where the default refuses everyone, it refuses a preflight too.
    assert envoy.request("/internal", ORIGIN, method="OPTIONS").code == "AUTH_120"
    # Counted on the tick: once the refusals are in, a preflight would be too.
    harness.wait_for(lambda: envoy.stat("denied.AUTH_120") == 1, timeout=5, what="AUTH_120 counted")
    assert envoy.stat("denied.AUTH_100") == 4
    assert envoy.stat("cors_preflight") == 0
