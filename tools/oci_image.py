"""The filter as an OCI image that Istio's WasmPlugin and Envoy Gateway pull, built without a
container engine (Python standard library only).

The image follows the Wasm image specification's "compat" variant: a standard OCI image
manifest, an OCI image config, and exactly one `application/vnd.oci.image.layer.v1.tar+gzip`
layer whose tar holds `plugin.wasm` at its root. Istio and Envoy Gateway read the last layer of
that media type and take the file named `plugin.wasm` from it; any OCI registry stores it, and
standard tools (skopeo, crane, oras) copy it.

Written as an OCI image layout directory (oci-layout, index.json, blobs/sha256/...) and as a
tar of that layout. Reproducible: the same .wasm always gives the same bytes, so the same
manifest digest (the value Istio's `sha256` field checks for an oci:// URL): every tar entry
has a fixed mtime, owner and mode, gzip's header has mtime 0, JSON is written with sorted keys.

    python tools/oci_image.py --wasm dist/jwt_guard.wasm --cargo-toml Cargo.toml \\
        --layout dist/oci --archive dist/jwt-guard-oci.tar [--source URL]
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import tomllib
from dataclasses import dataclass

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
# The name Istio and Envoy Gateway look for in the layer (compat variant).
PLUGIN_FILE = "plugin.wasm"
# The compat variant asks for this manifest annotation when the layer has the OCI media type.
VARIANT_ANNOTATION = ("module.wasm.image/variant", "compat")
REF_NAME = "org.opencontainers.image.ref.name"
WASM_MAGIC = b"\0asm"
# The target the module was built for, named as Go names it (GOOS=wasip1 GOARCH=wasm), which
# is what the OCI image spec refers to for `os` and `architecture`.
PLATFORM = {"architecture": "wasm", "os": "wasip1"}
# Every entry of every tar this tool writes: no build machine's clock or user leaks in.
FIXED_MTIME = 0


class ImageError(Exception):
    """An input the image cannot be built from; the message says which and why."""


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self):
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self, annotations=None):
        d = {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}
        if annotations:
            d["annotations"] = annotations
        return d


@dataclass(frozen=True)
class Image:
    """Every blob of the image, and the index that names its manifest by `tag`."""

    tag: str
    config: Blob
    layer: Blob
    manifest: Blob

    @property
    def index(self):
        return {
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": [self.manifest.descriptor({REF_NAME: self.tag})],
        }

    def files(self):
        """The image layout's files, (relative path, bytes), in a fixed order."""
        blobs = sorted({b.digest: b for b in (self.config, self.layer, self.manifest)}.values(),
                       key=lambda b: b.digest)
        return ([("oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"})),
                 ("index.json", canonical_json(self.index))]
                + [("blobs/sha256/" + b.digest.removeprefix("sha256:"), b.data) for b in blobs])


def canonical_json(obj):
    """One byte sequence per document: a digest names the content, not the serializer."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _tar_info(name, size, directory=False):
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def deterministic_tar(entries):
    """A ustar archive of `entries` ((path, bytes), in the given order); the directories a
    path needs are added before it, once."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        seen = set()
        for path, data in entries:
            parts = path.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                directory = "/".join(parts[:depth])
                if directory not in seen:
                    seen.add(directory)
                    tar.addfile(_tar_info(directory + "/", 0, directory=True))
            tar.addfile(_tar_info(path, len(data)), io.BytesIO(data))
    return out.getvalue()


def gzip_fixed(data):
    """gzip with mtime 0 in its header (and no file name), so equal input gives equal output."""
    return gzip.compress(data, compresslevel=9, mtime=0)


def build_image(wasm, version, licenses, source=None):
    """The compat-variant image of `wasm`, tagged `version`, labelled with the OCI
    annotations (version, licenses, and the source URL when there is one)."""
    if not wasm.startswith(WASM_MAGIC):
        raise ImageError("not a WebAssembly module (no \\0asm header): Istio would refuse it")
    if not version:
        raise ImageError("no version to tag the image with")
    labels = {
        "org.opencontainers.image.title": "jwt-guard",
        "org.opencontainers.image.description": "JWT authorization proxy-wasm filter",
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.licenses": licenses,
    }
    if source:
        labels["org.opencontainers.image.source"] = source

    layer_tar = deterministic_tar([(PLUGIN_FILE, wasm)])
    layer = Blob(LAYER_MEDIA_TYPE, gzip_fixed(layer_tar))
    config = Blob(CONFIG_MEDIA_TYPE, canonical_json({
        **PLATFORM,
        "config": {"Labels": labels},
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]},
    }))
    manifest = Blob(MANIFEST_MEDIA_TYPE, canonical_json({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
        "annotations": {**labels, VARIANT_ANNOTATION[0]: VARIANT_ANNOTATION[1]},
    }))
    return Image(tag=version, config=config, layer=layer, manifest=manifest)


def write_layout(image, directory):
    """The OCI image layout in `directory`, which must not exist yet or be empty (a blob
    left from another image would sit in the layout unnamed)."""
    if os.path.isdir(directory) and os.listdir(directory):
        raise ImageError(f"{directory} is not empty: remove it first")
    for path, data in image.files():
        target = os.path.join(directory, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(data)


def write_archive(image, path):
    """The layout as one tar (what `skopeo copy oci-archive:...` and `oras` read)."""
    with open(path, "wb") as f:
        f.write(deterministic_tar(image.files()))


def package_metadata(cargo_toml):
    """(version, license, repository or None) from Cargo.toml's [package]."""
    with open(cargo_toml, "rb") as f:
        package = tomllib.load(f).get("package", {})
    return package.get("version"), package.get("license"), package.get("repository")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wasm", required=True, help="the filter's .wasm")
    parser.add_argument("--cargo-toml", required=True, help="version and license come from here")
    parser.add_argument("--layout", required=True, help="OCI image layout directory to write")
    parser.add_argument("--archive", help="also write the layout as this tar")
    parser.add_argument("--source", help="org.opencontainers.image.source (default: Cargo.toml's repository)")
    args = parser.parse_args(argv)

    version, licenses, repository = package_metadata(args.cargo_toml)
    with open(args.wasm, "rb") as f:
        wasm = f.read()
    try:
        if not licenses:
            raise ImageError(f"{args.cargo_toml} has no package.license")
        image = build_image(wasm, version, licenses, args.source or repository)
        write_layout(image, args.layout)
        if args.archive:
            write_archive(image, args.archive)
    except ImageError as e:
        print(f"oci_image: {e}", file=sys.stderr)
        return 1

    wasm_sha = hashlib.sha256(wasm).hexdigest()
    manifest_sha = image.manifest.digest.removeprefix("sha256:")
    print(f"{args.layout}: jwt-guard {version}, manifest {image.manifest.digest}")
    if args.archive:
        print(f"{args.archive}: the same layout as one tar")
    print("Istio WasmPlugin `sha256`:")
    print(f"  url: oci://<registry>/jwt-guard:{version}  ->  sha256: {manifest_sha}  (the image manifest)")
    print(f"  url: https://<host>/jwt_guard.wasm        ->  sha256: {wasm_sha}  (the .wasm itself)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
