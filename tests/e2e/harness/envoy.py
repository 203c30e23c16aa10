"""A real Envoy with the filter: bootstrap, start, readiness, requests, stats, logs, stop."""

import ctypes
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile

import yaml

from . import client
from .logfile import LogFile
from .waiting import wait_for

WASM = os.environ.get("JWT_GUARD_WASM", os.path.abspath("target/wasm32-wasip1/release/jwt_guard.wasm"))
ENVOY = os.environ.get("ENVOY_BIN", os.path.abspath(".venv/bin/envoy"))
# More filter detail in the logs when debugging a failure, e.g. E2E_WASM_LOG_LEVEL=debug.
WASM_LOG_LEVEL = os.environ.get("E2E_WASM_LOG_LEVEL")
# Bootstrap and log are deleted on stop (failures already carry the log tail) unless set.
KEEP_FILES = bool(os.environ.get("E2E_KEEP_ENVOY_FILES"))

# Envoys started and not yet stopped: the failure hook in conftest.py prints their logs.
RUNNING = set()


def _die_with_parent():
    """Linux: Envoy gets SIGTERM when the test run dies, even by SIGKILL, so no Envoy
    outlives an interrupted run (pytest's own cleanup does not run then)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def static_cluster(name, port):
    return {
        "name": name,
        "connect_timeout": "1s",
        "type": "STATIC",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}],
        },
    }


def wasm_filter(plugin, wasm=None, name="jwt_guard"):
    """The filter as CONTRACT.md loads it; `plugin` is a dict (sent as JSON) or raw text;
    `wasm` another module file than the one under test (the release image's, say); `name`
    is the plugin's name, which names its stats."""
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": "jwt_guard",
                "vm_config": {
                    "vm_id": "jwt_guard",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm or WASM}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": plugin if isinstance(plugin, str) else json.dumps(plugin),
                },
                "fail_open": False,
            },
        },
    }


# The HTTP connection manager as Envoy ships it: no path normalization, `source.address`
# from X-Forwarded-For, headers with `_` let through. Tests pass it to prove a guarantee
# holds without any of the settings the README recommends.
ENVOY_DEFAULT_HCM = {"normalize_path": None, "merge_slashes": None}

# The settings the README recommends (envoy/envoy.yaml has them too).
RECOMMENDED_HCM = {
    "normalize_path": True,
    "merge_slashes": True,
    "path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT",
    "use_remote_address": True,
    "strip_trailing_host_dot": True,
    "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
}


def bootstrap(plugin, upstream_port, clusters, listener_port, admin_port, filters=None,
              hcm=None, virtual_hosts=None, extra=None):
    """Listener -> HCM -> [filter] -> router -> the echo upstream; `clusters` (name -> port)
    are the JWKS/IdP clusters the plugin names. `plugin=None` leaves the filter out (used to
    check the harness itself); `filters` replaces it with other HTTP filters (Envoy's
    native ones, to compare with). `hcm` overrides connection manager fields (None removes
    one); `virtual_hosts` replaces the one catch-all virtual host; `extra` adds top-level
    bootstrap fields (`stats_config`, say)."""
    if filters is not None:
        filters = list(filters)
    else:
        filters = [] if plugin is None else [wasm_filter(plugin)]
    filters.append({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
    hcm_config = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "normalize_path": True,
        "merge_slashes": True,
        "route_config": {"virtual_hosts": virtual_hosts or [{
            "name": "all", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}],
        }]},
        "http_filters": filters,
    }
    for key, value in (hcm or {}).items():
        if value is None:
            hcm_config.pop(key, None)
        else:
            hcm_config[key] = value
    return {
        **(extra or {}),
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "main",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager", "typed_config": hcm_config}]}],
            }],
            "clusters": [static_cluster("upstream", upstream_port)]
            + [static_cluster(name, port) for name, port in clusters.items()],
        },
    }


class Envoy(LogFile):
    """One Envoy process on free ports, its bootstrap and log in a temp dir."""

    def __init__(self, plugin, upstream_port, clusters=None, concurrency=1, filters=None, hcm=None,
                 virtual_hosts=None, bootstrap_extra=None):
        # Envoy binds port 0 for both and reports what it got (wait_ready reads them), so
        # no port is chosen here that another process could take before Envoy binds it.
        self.port = self.admin_port = None
        self.dir = tempfile.mkdtemp(prefix="jwt-guard-e2e-")
        self.config_path = os.path.join(self.dir, "envoy.yaml")
        self.log_path = os.path.join(self.dir, "envoy.log")
        self.admin_address_path = os.path.join(self.dir, "admin-address")
        config = bootstrap(plugin, upstream_port, clusters or {}, 0, 0, filters, hcm, virtual_hosts,
                           bootstrap_extra)
        with open(self.config_path, "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)
        self.concurrency = concurrency
        self.proc = None
        self._log = None

    def start(self, wait=True):
        args = [ENVOY, "-c", self.config_path, "--disable-hot-restart",
                "--admin-address-path", self.admin_address_path,
                "--concurrency", str(self.concurrency), "-l", "info",
                # Access logs reach their files within 0.1 s (Envoy's default is 10 s).
                "--file-flush-interval-msec", "100"]
        if WASM_LOG_LEVEL:
            args += ["--component-log-level", f"wasm:{WASM_LOG_LEVEL}"]
        # stdout too: why Envoy refuses a config is printed there, not only in the log.
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent)
        RUNNING.add(self)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=30):
        """Admin /ready answers 200, then the listener accepts connections."""
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"Envoy exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                return (self._read_admin_port() and self.admin("/ready")[0] == 200
                        and self._read_listener_port() and self.listener_up())
            except OSError:
                return False

        wait_for(ready, timeout, what="Envoy to be ready")

    def _read_admin_port(self):
        """Envoy writes `127.0.0.1:<port>` to --admin-address-path once admin listens."""
        if self.admin_port is None:
            try:
                with open(self.admin_address_path) as f:
                    address = f.read().strip()
            except FileNotFoundError:
                return None
            if address:
                self.admin_port = int(address.rpartition(":")[2])
        return self.admin_port

    def _read_listener_port(self):
        """The port the kernel gave the `main` listener (bound with port 0)."""
        if self.port is None:
            listeners = json.loads(self.admin("/listeners?format=json")[1])
            for status in listeners.get("listener_statuses", []):
                if status.get("name") == "main":
                    port = status["local_address"]["socket_address"].get("port_value", 0)
                    self.port = port or None
        return self.port

    def listener_up(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def admin(self, path):
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=5)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read().decode()
        finally:
            conn.close()

    def stats(self):
        """Envoy counters and gauges by name."""
        out = {}
        for line in self.admin("/stats")[1].splitlines():
            name, _, value = line.partition(": ")
            if value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out

    def stat(self, name, instance="jwt_guard"):
        """One of the filter's own stats, by its name within the filter instance (the
        plugin's name): `rule.api.allowed` is `wasmcustom.jwt_guard.<instance>.rule.api.allowed`."""
        return self.stats().get(f"wasmcustom.jwt_guard.{instance}.{name}", 0)

    def prometheus(self):
        """`/stats/prometheus`, as Prometheus scrapes it."""
        status, body = self.admin("/stats/prometheus")
        assert status == 200, body
        return body

    def request(self, path, headers=None, method="GET", timeout=10):
        return client.request(self.port, path, headers, method, timeout=timeout)

    def get(self, path, token=None, headers=None, **kw):
        """A request with `Authorization: Bearer <token>` when a token is given."""
        h = dict(headers or {})
        if token is not None:
            h["authorization"] = f"Bearer {token}"
        return self.request(path, h, **kw)

    def wait_for_reply(self, until, path, token=None, timeout=15, interval=0.2, what=None, **kw):
        """Repeats a request until `until(response)` holds; returns that response."""
        def attempt():
            r = self.get(path, token, **kw)
            return r if until(r) else None

        return wait_for(attempt, timeout, interval, what=what or f"a matching reply from {path}")

    def stop(self):
        RUNNING.discard(self)
        self.stop_process()
        if not KEEP_FILES:
            shutil.rmtree(self.dir, ignore_errors=True)


def run_envoy_expecting_failure(plugin, upstream_port, clusters=None, timeout=30):
    """Starts Envoy with a config it must refuse; returns (exit code, log)."""
    e = Envoy(plugin, upstream_port, clusters)
    e.start(wait=False)
    try:
        code = e.proc.wait(timeout=timeout)
        return code, e.log_text()
    except subprocess.TimeoutExpired:
        raise AssertionError("Envoy kept running with an invalid filter config:\n" + e.log_tail())
    finally:
        e.stop()
