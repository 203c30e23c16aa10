"""The JSON Schema of the plugin config (`jwt-guard.schema.json`, what `jwt-guard schema`
prints) against real configs, with an independent validator (Python `jsonschema`): every
example plugin config in the README and in envoy/ is accepted, by the schema and by the
filter's own loading (`jwt-guard check`); broken ones are refused by both."""

import copy
import json
import os
import re

import jsonschema
import pytest
import yaml

import harness

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
with open(os.path.join(ROOT, "jwt-guard.schema.json")) as f:
    SCHEMA = json.load(f)
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)


def readme_configs():
    """The ```json blocks of README.md that are plugin configs (not reply bodies)."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    out = []
    for n, block in enumerate(re.findall(r"```json\n(.*?)```", text, re.S)):
        try:
            doc = json.loads(block)
        except ValueError:
            continue
        if isinstance(doc, dict) and "providers" in doc:
            out.append((f"README.md#{n}", doc))
    return out


def envoy_configs():
    """The filter's configuration in each envoy/*.yaml: the wasm filter's `configuration`
    value (a JSON string) and Istio's `pluginConfig` (YAML)."""
    out = []

    def walk(node, name):
        if isinstance(node, dict):
            value = node.get("configuration", {})
            if isinstance(value, dict) and isinstance(value.get("value"), str):
                out.append((name, json.loads(value["value"])))
            if isinstance(node.get("pluginConfig"), dict):
                out.append((name, node["pluginConfig"]))
            for v in node.values():
                walk(v, name)
        elif isinstance(node, list):
            for v in node:
                walk(v, name)

    folder = os.path.join(ROOT, "envoy")
    for file in sorted(os.listdir(folder)):
        if file.endswith((".yaml", ".yml")):
            with open(os.path.join(folder, file)) as f:
                for doc in yaml.safe_load_all(f):
                    walk(doc, f"envoy/{file}")
    return out


EXAMPLES = readme_configs() + envoy_configs()


def test_the_schema_is_draft7_and_what_the_cli_prints():
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    p = harness.run_cli("schema")
    assert p.returncode == 0
    assert json.loads(p.stdout) == SCHEMA, "jwt-guard.schema.json is not what `jwt-guard schema` prints"


def test_the_examples_are_found():
    names = [n for n, _ in EXAMPLES]
    assert sum(n.startswith("README") for n in names) >= 4, names
    assert "envoy/envoy.yaml" in names and "envoy/istio-wasmplugin.yaml" in names, names


@pytest.mark.parametrize("name,config", EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_every_example_config_is_accepted(name, config):
    errors = [e.message for e in VALIDATOR.iter_errors(config)]
    assert errors == [], f"{name}: {errors}"
    p = harness.run_cli("check", "-", stdin=json.dumps(config))
    assert p.returncode == 0, f"{name}: {p.stdout}{p.stderr}"


def broken(change):
    config = copy.deepcopy(readme_configs()[0][1])
    change(config)
    return config


BROKEN = {
    "unknown top-level field": lambda c: c.update(rule=[]),
    "unknown provider field": lambda c: c["providers"][0].update(audience=["x"]),
    "unknown field in a rule's match": lambda c: c["rules"][0]["match"].update(prefix="/x"),
    "wrong type": lambda c: c["providers"][0].update(clock_skew_s="sixty"),
    "wrong type in a list": lambda c: c["rules"][1]["match"].update(methods="GET"),
    "missing providers": lambda c: c.pop("providers"),
    "missing issuer": lambda c: c["providers"][0].pop("issuer"),
    "missing audiences": lambda c: c["providers"][0].pop("audiences"),
    "an unknown default": lambda c: c.update(default="maybe"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_configs_are_refused_by_schema_and_filter(case):
    config = broken(BROKEN[case])
    assert not VALIDATOR.is_valid(config), case
    p = harness.run_cli("check", "-", stdin=json.dumps(config))
    assert p.returncode == 1, f"{case}: {p.stdout}"
