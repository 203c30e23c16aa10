"""An OCI registry on loopback (Debian's docker-registry, the CNCF distribution registry):
where the release test pushes the filter's image and pulls it back, as a platform team's
registry would serve it to Istio."""

import http.client
import os
import shutil
import subprocess
import tempfile

import yaml

from .envoy import _die_with_parent
from .logfile import LogFile
from .waiting import free_port, wait_for

REGISTRY = os.environ.get("DOCKER_REGISTRY_BIN", "/usr/bin/docker-registry")


class Registry(LogFile):
    """One registry process, plain HTTP on 127.0.0.1, its storage in a temp dir."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="jwt-guard-registry-")
        self.log_path = os.path.join(self.dir, "registry.log")
        self.config_path = os.path.join(self.dir, "config.yml")
        config = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": os.path.join(self.dir, "data")}},
            "http": {"addr": f"127.0.0.1:{self.port}", "secret": "test-only"},
        }
        with open(self.config_path, "w") as f:
            yaml.safe_dump(config, f)
        self.proc = None
        self._log = None

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    def start(self, timeout=20):
        if not os.path.exists(REGISTRY):
            raise AssertionError(f"{REGISTRY} is missing: `make test-e2e` installs docker-registry")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([REGISTRY, "serve", self.config_path],
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"docker-registry exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                return self.get("/v2/")[0] == 200
            except OSError:
                return False

        wait_for(ready, timeout, what="the registry to answer /v2/")
        return self

    def get(self, path, headers=None):
        """(status, headers with lower-cased names, body bytes) of a GET to the registry API."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path, headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def stop(self):
        self.stop_process()
        shutil.rmtree(self.dir, ignore_errors=True)
