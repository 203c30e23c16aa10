"""The configurations shipped in envoy/ work as written: every Envoy bootstrap passes
`envoy --mode validate` (which loads the filter and runs its config check), the clusters its
plugin config names exist and verify the IdP's certificate, and each example's plugin config
decides requests against a loopback IdP shaped like the real one. The Istio WasmPlugin files
set the fields a platform team relies on, and their pluginConfig runs in Envoy."""

import copy
import glob
import json
import os
import re
import subprocess
from urllib.parse import urlsplit

import pytest
import yaml

import harness

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ENVOY_DIR = os.path.join(REPO, "envoy")
WASM_FILTER = "envoy.filters.http.wasm"
SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt"


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def bootstraps():
    """envoy/*.yaml files that are Envoy bootstraps (the Istio files are Kubernetes objects)."""
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(ENVOY_DIR, "*.yaml"))
                  if "static_resources" in load_all(p)[0])


def wasm_configs(bootstrap):
    """The jwt-guard filter configs (the `config` of each wasm HTTP filter) in a bootstrap."""
    found = []
    for listener in bootstrap["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                for http_filter in network_filter["typed_config"].get("http_filters", []):
                    if http_filter["name"] == WASM_FILTER:
                        found.append(http_filter["typed_config"]["config"])
    return found


def plugin_of(name):
    (config,) = wasm_configs(load_all(os.path.join(ENVOY_DIR, name))[0])
    return json.loads(config["configuration"]["value"])


def clusters_named(plugin):
    """Every Envoy cluster a plugin config sends callouts through."""
    names = set()
    for provider in plugin["providers"]:
        for source in ("remote_jwks", "discovery"):
            if source in provider:
                names.add(provider[source]["cluster"])
                names.add(provider[source].get("jwks_cluster", provider[source]["cluster"]))
    return names


def validate(bootstrap, tmp_path):
    """`envoy --mode validate` on the bootstrap with the filter under test: (exit code, output)."""
    bootstrap = copy.deepcopy(bootstrap)
    for config in wasm_configs(bootstrap):
        config["vm_config"]["code"]["local"]["filename"] = harness.WASM
    path = tmp_path / "bootstrap.yaml"
    path.write_text(yaml.safe_dump(bootstrap, sort_keys=False))
    r = subprocess.run([harness.ENVOY, "--mode", "validate", "-c", str(path), "-l", "info"],
                       capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


def test_the_examples_are_found():
    assert {"envoy.yaml", "idp-google.yaml", "idp-keycloak.yaml"} <= set(bootstraps())


@pytest.mark.parametrize("name", bootstraps())
def test_every_bootstrap_validates_and_its_plugin_config_loads(name, tmp_path):
    (bootstrap,) = load_all(os.path.join(ENVOY_DIR, name))
    code, output = validate(bootstrap, tmp_path)
    assert code == 0, output[-3000:]
    plugin = plugin_of(name)
    # Validation mode runs the filter's on_configure: its start-up line proves it took it.
    line = f"configured {len(plugin['providers'])} providers, {len(plugin.get('rules', []))} rules"
    assert line in output, output[-3000:]


def test_validation_catches_a_plugin_config_the_filter_refuses(tmp_path):
    """The check above can fail: a typo in the embedded JSON stops validation."""
    (bootstrap,) = load_all(os.path.join(ENVOY_DIR, "idp-google.yaml"))
    (config,) = wasm_configs(bootstrap)
    plugin = json.loads(config["configuration"]["value"])
    plugin["providers"][0]["audience"] = plugin["providers"][0].pop("audiences")
    config["configuration"]["value"] = json.dumps(plugin)
    code, output = validate(bootstrap, tmp_path)
    assert code != 0
    assert "jwt-guard: invalid configuration: providers[0]" in output, output[-3000:]


@pytest.mark.parametrize("name", bootstraps())
def test_every_cluster_a_plugin_config_names_is_in_its_bootstrap(name):
    """Envoy does not check this: a misspelled cluster only shows when keys are fetched."""
    (bootstrap,) = load_all(os.path.join(ENVOY_DIR, name))
    defined = {c["name"] for c in bootstrap["static_resources"]["clusters"]}
    assert clusters_named(plugin_of(name)) <= defined


@pytest.mark.parametrize("name", ["idp-google.yaml", "idp-keycloak.yaml"])
def test_idp_clusters_speak_tls_to_the_idp_and_check_its_certificate(name):
    (bootstrap,) = load_all(os.path.join(ENVOY_DIR, name))
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    plugin = plugin_of(name)
    for provider in plugin["providers"]:
        source = provider.get("remote_jwks") or provider["discovery"]
        host = urlsplit(source["uri"]).hostname
        cluster = clusters[source["cluster"]]
        assert cluster["type"] in ("STRICT_DNS", "LOGICAL_DNS")
        assert cluster["dns_lookup_family"] == "V4_PREFERRED"
        (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        assert endpoint["endpoint"]["address"]["socket_address"] == {"address": host, "port_value": 443}
        tls = cluster["transport_socket"]["typed_config"]
        assert tls["@type"].endswith("UpstreamTlsContext")
        assert tls["sni"] == host
        validation = tls["common_tls_context"]["validation_context"]
        assert validation["trusted_ca"] == {"filename": SYSTEM_CAS}
        assert validation["match_typed_subject_alt_names"] == [{"san_type": "DNS", "matcher": {"exact": host}}]


# ---- the examples' plugin configs against a loopback IdP shaped like the real one

def started(envoy_factory, plugin, idp):
    """Envoy with `plugin`, every cluster it names pointing at the loopback `idp`."""
    return envoy_factory(plugin, {name: idp.port for name in clusters_named(plugin)})


def test_google_example_lets_only_its_service_account_through(envoy_factory, idp, rs):
    plugin = plugin_of("idp-google.yaml")
    provider = plugin["providers"][0]
    idp.set_json(urlsplit(provider["remote_jwks"]["uri"]).path, harness.jwks(rs))
    (account,) = plugin["rules"][1]["require"]["principals"]["email"]
    envoy = started(envoy_factory, plugin, idp)

    def id_token(email):
        return rs.sign(harness.claims(provider["issuer"], provider["audiences"][0], email=email,
                                      email_verified=True), typ="JWT")

    allowed = envoy.wait_for_reply(lambda r: r.status == 200, "/orders", id_token(account))
    assert allowed.json["headers"]["x-caller-email"] == account
    assert envoy.get("/orders", id_token("other@my-project.iam.gserviceaccount.com")).code == "AUTH_121"
    assert envoy.get("/orders").code == "AUTH_100"
    assert envoy.get("/health").status == 200


def test_keycloak_example_follows_discovery_and_checks_client_roles(envoy_factory, idp, rs):
    plugin = plugin_of("idp-keycloak.yaml")
    provider = plugin["providers"][0]
    issuer = provider["issuer"]
    jwks_uri = issuer + "/protocol/openid-connect/certs"
    idp.set_json(urlsplit(provider["discovery"]["uri"]).path, {"issuer": issuer, "jwks_uri": jwks_uri})
    idp.set_json(urlsplit(jwks_uri).path, harness.jwks(rs))
    envoy = started(envoy_factory, plugin, idp)

    def access_token(*roles):
        return rs.sign(harness.claims(issuer, provider["audiences"], preferred_username="alice",
                                      resource_access={"workflow-api": {"roles": list(roles)}}), typ="JWT")

    reader = access_token("reader")
    allowed = envoy.wait_for_reply(lambda r: r.status == 200, "/workflows", reader)
    assert allowed.json["headers"]["x-user"] == "alice"
    assert envoy.get("/workflows", reader, method="POST").status == 403
    assert envoy.get("/workflows", access_token("writer"), method="POST").status == 200
    assert envoy.get("/admin", reader).status == 403
    assert envoy.get("/workflows").code == "AUTH_100"


# ---- Istio

ISTIO_FILES = {"oci": "istio-wasmplugin.yaml", "https": "istio-wasmplugin-https.yaml"}


def wasm_plugin(name):
    (spec,) = [d["spec"] for d in load_all(os.path.join(ENVOY_DIR, name)) if d["kind"] == "WasmPlugin"]
    return spec


@pytest.mark.parametrize("scheme", ISTIO_FILES)
def test_istio_wasmplugin_sets_what_a_platform_team_relies_on(scheme):
    spec = wasm_plugin(ISTIO_FILES[scheme])
    assert urlsplit(spec["url"]).scheme == scheme
    # Istio's own pattern for the field: 64 lower-case hex digits.
    assert re.fullmatch(r"[a-f0-9]{64}", spec["sha256"])
    assert spec["phase"] == "AUTHN"
    assert isinstance(spec["priority"], int)
    assert spec["match"] == [{"mode": "SERVER"}]
    assert spec["failStrategy"] == "FAIL_CLOSE"
    assert spec["imagePullPolicy"] in ("IfNotPresent", "Always")


def test_istio_oci_url_names_the_tag_make_release_builds():
    version = re.search(r'^version = "([^"]+)"', open(os.path.join(REPO, "Cargo.toml")).read(), re.M).group(1)
    assert wasm_plugin(ISTIO_FILES["oci"])["url"].endswith(f"/jwt-guard:{version}")


def test_istio_files_carry_one_plugin_config():
    assert wasm_plugin(ISTIO_FILES["oci"])["pluginConfig"] == wasm_plugin(ISTIO_FILES["https"])["pluginConfig"]


def test_istio_idp_cluster_is_the_one_the_service_entry_creates():
    docs = load_all(os.path.join(ENVOY_DIR, ISTIO_FILES["oci"]))
    (entry,) = [d["spec"] for d in docs if d["kind"] == "ServiceEntry"]
    (port,) = entry["ports"]
    source = wasm_plugin(ISTIO_FILES["oci"])["pluginConfig"]["providers"][0]["remote_jwks"]
    assert urlsplit(source["uri"]).hostname in entry["hosts"]
    assert source["cluster"] == f"outbound|{port['number']}||{urlsplit(source['uri']).hostname}"


def test_istio_plugin_config_runs_in_envoy(envoy_factory, idp, es):
    plugin = wasm_plugin(ISTIO_FILES["oci"])["pluginConfig"]
    provider = plugin["providers"][0]
    idp.set_json(urlsplit(provider["remote_jwks"]["uri"]).path, harness.jwks(es))
    envoy = started(envoy_factory, plugin, idp)
    harness.wait_for(lambda: "configured 1 providers, 3 rules" in envoy.log_text(), timeout=5,
                     what="the start-up line")

    def token(scope):
        return es.sign(harness.claims(provider["issuer"], provider["audiences"][0], scope=scope,
                                      client_id="svc-a"), typ="at+jwt")

    allowed = envoy.wait_for_reply(lambda r: r.status == 200, "/workflows", token("workflow:read"))
    assert allowed.json["headers"]["x-client-id"] == "svc-a"
    assert envoy.get("/workflows", token("workflow:read"), method="POST").code == "AUTH_102"
    assert envoy.get("/workflows").code == "AUTH_100"
    assert envoy.get("/health").status == 200
