"""What `make release` ships, read the way platform teams' tools read it: dist/'s .wasm and
its sha256, the OCI image (Wasm image spec, "compat" variant) through skopeo, pushed to a
registry on loopback and pulled back, and the plugin.wasm inside the image run by Envoy."""

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

import harness

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DIST = os.environ.get("JWT_GUARD_DIST", os.path.join(REPO, "dist"))
BUILDER = os.path.join(REPO, "tools", "oci_image.py")
sys.path.insert(0, os.path.dirname(BUILDER))
import oci_image  # noqa: E402

VERSION, LICENSE, _ = oci_image.package_metadata(os.path.join(REPO, "Cargo.toml"))
LAYOUT = os.path.join(DIST, "oci")
ARCHIVE = os.path.join(DIST, "jwt-guard-oci.tar")
IMAGE = f"oci:{LAYOUT}:{VERSION}"


@pytest.fixture(scope="module", autouse=True)
def dist():
    if not os.path.exists(os.path.join(DIST, "jwt_guard.wasm")):
        pytest.fail(f"{DIST} has no release: run `make release` (make test-e2e does)")


def skopeo(*args, raw=False):
    """skopeo's output (parsed JSON unless raw bytes are asked for); its stderr on failure."""
    r = subprocess.run(["skopeo", *args], capture_output=True, timeout=120)
    assert r.returncode == 0, f"skopeo {' '.join(args)} failed:\n{r.stderr.decode()}"
    return r.stdout if raw else json.loads(r.stdout)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob(layout, digest):
    """A blob of an image layout, checked against the digest that names it."""
    data = read(os.path.join(layout, "blobs", *digest.split(":")))
    assert sha256(data) == digest
    return data


def layout_manifest_digest(layout, tag=VERSION):
    index = json.loads(read(os.path.join(layout, "index.json")))
    named = [m for m in index["manifests"]
             if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
    assert len(named) == 1, index
    return named[0]["digest"]


def tar_members(gzipped):
    """[(TarInfo, bytes)] of a tar+gzip blob."""
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(gzipped))) as tar:
        return [(m, tar.extractfile(m).read() if m.isfile() else b"") for m in tar.getmembers()]


def build(tmp_path, name, wasm_path, *extra):
    """tools/oci_image.py as `make release` runs it, into tmp_path/name."""
    out = tmp_path / name
    out.mkdir()
    r = subprocess.run([sys.executable, BUILDER, "--wasm", str(wasm_path),
                        "--cargo-toml", os.path.join(REPO, "Cargo.toml"),
                        "--layout", str(out / "oci"), "--archive", str(out / "image.tar"), *extra],
                       capture_output=True, text=True, timeout=60)
    return r, out


# ---- dist/: the module and its checksum

def test_dist_holds_the_filter_under_test_and_a_checksum_sha256sum_accepts():
    assert read(os.path.join(DIST, "jwt_guard.wasm")) == read(harness.WASM)
    line = read(os.path.join(DIST, "jwt_guard.wasm.sha256")).decode()
    assert line == f"{hashlib.sha256(read(harness.WASM)).hexdigest()}  jwt_guard.wasm\n"
    check = subprocess.run(["sha256sum", "--check", "--strict", "jwt_guard.wasm.sha256"],
                           cwd=DIST, capture_output=True, text=True)
    assert check.returncode == 0 and "jwt_guard.wasm: OK" in check.stdout, check


# ---- the image, as skopeo reads it

def test_skopeo_reads_the_layout_by_its_version_tag():
    info = skopeo("inspect", IMAGE)
    assert info["Digest"] == layout_manifest_digest(LAYOUT)
    assert info["Labels"]["org.opencontainers.image.version"] == VERSION
    assert info["Labels"]["org.opencontainers.image.licenses"] == LICENSE == "Apache-2.0"
    assert (info["Architecture"], info["Os"]) == ("wasm", "wasip1")
    assert len(info["Layers"]) == 1


def test_the_manifest_is_the_compat_variant_istio_and_envoy_gateway_pull():
    """One tar+gzip layer in a standard OCI image manifest: Istio and Envoy Gateway take the
    last layer of that type and read `plugin.wasm` from it."""
    raw = skopeo("inspect", "--raw", IMAGE, raw=True)
    assert sha256(raw) == layout_manifest_digest(LAYOUT)
    manifest = json.loads(raw)
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert [layer["mediaType"] for layer in manifest["layers"]] == ["application/vnd.oci.image.layer.v1.tar+gzip"]
    annotations = manifest["annotations"]
    assert annotations["module.wasm.image/variant"] == "compat"
    assert annotations["org.opencontainers.image.version"] == VERSION
    assert annotations["org.opencontainers.image.licenses"] == LICENSE


def test_config_and_layer_match_their_descriptors_and_the_layer_is_plugin_wasm_alone():
    manifest = json.loads(skopeo("inspect", "--raw", IMAGE, raw=True))
    config_raw = skopeo("inspect", "--config", "--raw", IMAGE, raw=True)
    assert sha256(config_raw) == manifest["config"]["digest"]
    assert len(config_raw) == manifest["config"]["size"]

    (descriptor,) = manifest["layers"]
    layer = blob(LAYOUT, descriptor["digest"])
    assert len(layer) == descriptor["size"]
    assert json.loads(config_raw)["rootfs"] == {"type": "layers", "diff_ids": [sha256(gzip.decompress(layer))]}
    assert layer[4:8] == b"\0\0\0\0", "gzip header mtime must be 0 (reproducible)"

    members = tar_members(layer)
    assert [m.name for m, _ in members] == ["plugin.wasm"]
    (info, data), = members
    assert info.isfile() and info.mode == 0o644
    assert (info.uid, info.gid, info.uname, info.gname, info.mtime) == (0, 0, "", "", 0)
    assert data == read(harness.WASM)


def test_the_archive_is_the_same_image():
    assert skopeo("inspect", f"oci-archive:{ARCHIVE}:{VERSION}")["Digest"] == layout_manifest_digest(LAYOUT)
    with tarfile.open(ARCHIVE) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        assert {(m.mtime, m.uid, m.gid) for m in tar.getmembers()} == {(0, 0, 0)}
    on_disk = {os.path.relpath(os.path.join(d, f), LAYOUT): read(os.path.join(d, f))
               for d, _, names in os.walk(LAYOUT) for f in names}
    assert files == on_disk


# ---- the builder

def test_two_builds_of_one_module_are_byte_identical_and_equal_to_the_release(tmp_path):
    first, a = build(tmp_path, "a", harness.WASM)
    second, b = build(tmp_path, "b", harness.WASM)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert read(a / "image.tar") == read(b / "image.tar") == read(ARCHIVE)
    digest = layout_manifest_digest(a / "oci")
    assert digest == layout_manifest_digest(LAYOUT)
    # What `make release` prints for Istio's `sha256` fields.
    assert f"sha256: {digest.removeprefix('sha256:')}  (the image manifest)" in first.stdout
    assert f"sha256: {hashlib.sha256(read(harness.WASM)).hexdigest()}  (the .wasm itself)" in first.stdout


def test_another_module_gets_another_digest(tmp_path):
    changed = tmp_path / "changed.wasm"
    # A custom section (id 0, name "x", no payload) appended: still a valid module.
    changed.write_bytes(read(harness.WASM) + b"\x00\x02\x01x")
    r, out = build(tmp_path, "changed", changed)
    assert r.returncode == 0, r.stderr
    assert layout_manifest_digest(out / "oci") != layout_manifest_digest(LAYOUT)


def test_the_builder_refuses_a_file_that_is_not_wasm_and_a_used_layout(tmp_path):
    not_wasm = tmp_path / "plugin.wasm"
    not_wasm.write_bytes(b"<html>404</html>")
    r, _ = build(tmp_path, "bad", not_wasm)
    assert r.returncode == 1 and "not a WebAssembly module" in r.stderr

    used = tmp_path / "used"
    (used / "oci").mkdir(parents=True)
    (used / "oci" / "stale").write_text("x")
    r = subprocess.run([sys.executable, BUILDER, "--wasm", harness.WASM,
                        "--cargo-toml", os.path.join(REPO, "Cargo.toml"), "--layout", str(used / "oci")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "is not empty" in r.stderr


def test_the_source_label_names_where_the_code_is(tmp_path):
    r, out = build(tmp_path, "src", harness.WASM, "--source", "https://git.example.test/jwt-guard")
    assert r.returncode == 0, r.stderr
    info = skopeo("inspect", f"oci:{out / 'oci'}:{VERSION}")
    assert info["Labels"]["org.opencontainers.image.source"] == "https://git.example.test/jwt-guard"


# ---- through a registry

@pytest.fixture
def registry():
    r = harness.Registry().start()
    yield r
    r.stop()


def test_pushed_to_a_registry_and_pulled_back_unchanged(registry, tmp_path):
    remote = f"docker://{registry.host}/jwt-guard:{VERSION}"
    skopeo("copy", "--dest-tls-verify=false", IMAGE, remote, raw=True)

    # What Istio's fetcher asks the registry for, and the digest its `sha256` is checked
    # against: the manifest bytes exactly as built.
    status, headers, body = registry.get(
        f"/v2/jwt-guard/manifests/{VERSION}",
        {"accept": "application/vnd.oci.image.manifest.v1+json"})
    assert status == 200
    assert headers["content-type"] == "application/vnd.oci.image.manifest.v1+json"
    assert headers["docker-content-digest"] == sha256(body) == layout_manifest_digest(LAYOUT)
    assert skopeo("inspect", "--tls-verify=false", remote)["Digest"] == layout_manifest_digest(LAYOUT)

    pulled = tmp_path / "pulled"
    skopeo("copy", "--src-tls-verify=false", remote, f"oci:{pulled}:{VERSION}", raw=True)
    digest = layout_manifest_digest(pulled)
    assert digest == layout_manifest_digest(LAYOUT)
    (layer,) = json.loads(blob(pulled, digest))["layers"]
    assert blob(pulled, layer["digest"]) == blob(LAYOUT, layer["digest"])


# ---- the image's content is the filter

def test_envoy_runs_the_plugin_wasm_taken_from_the_image(envoy_factory, es, tmp_path):
    manifest = json.loads(blob(LAYOUT, layout_manifest_digest(LAYOUT)))
    ((_, wasm),) = tar_members(blob(LAYOUT, manifest["layers"][0]["digest"]))
    plugin_wasm = tmp_path / "plugin.wasm"
    plugin_wasm.write_bytes(wasm)

    iss, aud = "https://release.test", "https://api.release.test"
    plugin = {
        "providers": [{"name": "release", "issuer": iss, "audiences": [aud],
                       "local_jwks": {"inline": harness.jwks(es)}}],
        "rules": [{"match": {"path": "/health"}, "allow": "anonymous"},
                  {"match": {"path_prefix": "/"}, "require": {"providers": ["release"]}}],
    }
    envoy = envoy_factory(None, filters=[harness.wasm_filter(plugin, wasm=str(plugin_wasm))])

    refused = envoy.get("/orders")
    assert (refused.status, refused.code) == (401, "AUTH_100"), refused
    assert envoy.get("/health").status == 200
    assert envoy.get("/orders", es.sign(harness.claims(iss, aud))).status == 200
