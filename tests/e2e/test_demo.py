"""What a new user runs: the demo, the shipped configs, and the real identity provider."""

import json
import os
import subprocess
import tempfile

import pytest
import yaml

import harness

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_make_run_demo_answers_as_printed():
    """`make run`'s demo, with its own curl lines checked (DEMO_SMOKE=1), on free ports so
    it never collides with a demo someone is running."""
    ports = {name: str(harness.free_port()) for name in
             ["DEMO_PORT", "DEMO_ADMIN_PORT", "DEMO_IDP_PORT", "DEMO_UPSTREAM_PORT"]}
    env = dict(os.environ, DEMO_SMOKE="1", ENVOY_BIN=harness.ENVOY, PYTHON=os.environ.get("PYTHON", "python3"),
               **ports)
    done = subprocess.run(["bash", "demo/run.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "demo smoke: all answers as expected" in done.stdout


def test_every_envoy_config_in_the_repo_validates():
    configs = [f for f in os.listdir(os.path.join(ROOT, "envoy")) if f.endswith(".yaml") and "istio" not in f]
    assert configs
    for name in configs:
        done = subprocess.run([harness.ENVOY, "--mode", "validate", "-c", f"envoy/{name}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_istio_example_carries_a_plugin_config_the_filter_accepts(upstream, envoy_factory):
    with open(os.path.join(ROOT, "envoy", "istio-wasmplugin.yaml")) as f:
        plugin = next(d for d in yaml.safe_load_all(f) if d["kind"] == "WasmPlugin")["spec"]["pluginConfig"]
    # The cluster name is Istio's; give Envoy one of that name so the config loads as is.
    envoy = envoy_factory(plugin, {"outbound|443||auth.example.com": 9})
    assert envoy.get("/health").status == 200
    assert envoy.get("/workflows").code == "AUTH_100"


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_tokens_from_the_real_oidc_provider(upstream, envoy_factory, alg):
    port = harness.free_port()
    log = tempfile.NamedTemporaryFile(prefix="idp-", suffix=".log", delete=False)
    idp = subprocess.Popen(["node", "demo/idp/idp.mjs"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                           env=dict(os.environ, IDP_PORT=str(port), IDP_ALG=alg))
    try:
        harness.wait_for(lambda: "IDP READY" in open(log.name).read(), timeout=30, what="the IdP")
        issuer = f"http://127.0.0.1:{port}"
        plugin = {
            # RFC 9068 access tokens carry typ at+jwt: the real IdP's must pass the check.
            "providers": [{"name": "idp", "issuer": issuer, "audiences": ["https://api.demo.local"],
                           "token_types": ["at+jwt"],
                           "discovery": {"uri": f"{issuer}/.well-known/openid-configuration", "cluster": "idp"},
                           "algorithms": [alg]}],
            "rules": [{"match": {"methods": ["GET"], "path_prefix": "/"}, "require": {"scopes": ["workflow:read"]}},
                      {"match": {"methods": ["POST"], "path_prefix": "/"}, "require": {"scopes": ["workflow:write"]}}],
        }
        envoy = envoy_factory(plugin, {"idp": port})

        def token(client, secret, scope):
            import base64
            import http.client
            import urllib.parse

            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            auth = base64.b64encode(f"{client}:{secret}".encode()).decode()
            body = urllib.parse.urlencode({"grant_type": "client_credentials", "scope": scope})
            conn.request("POST", "/token", body, {"authorization": f"Basic {auth}",
                                                  "content-type": "application/x-www-form-urlencoded"})
            reply = json.loads(conn.getresponse().read())
            conn.close()
            return reply["access_token"]

        reader = token("demo-client", "demo-secret", "workflow:read")
        assert envoy.get("/workflows", reader).status == 200
        assert envoy.get("/workflows", reader, method="POST").code == "AUTH_102"
        writer = token("admin-client", "admin-secret", "workflow:read workflow:write")
        assert envoy.get("/workflows", writer, method="POST").status == 200
    finally:
        idp.terminate()
        idp.wait(timeout=10)
