"""Real web servers to put behind Envoy: Flask, Express and a servlet under Tomcat (the apps
are in tests/e2e/upstreams/). Each routes on the path itself, so tests can show which
handler a real upstream runs for a request Envoy forwarded (`;params`, `..`, `%2e`, case,
trailing slashes, `_` in header names), not only what the echo server received.

Each is a child process in its own process group on a loopback port, its log in a temp
dir; `make upstream-deps` installs what they need."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

from . import client
from .logfile import LogFile
from .envoy import _die_with_parent
from .waiting import free_port, wait_for

APPS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "upstreams"))
CATALINA_HOME = os.environ.get("CATALINA_HOME", "/usr/share/tomcat10")  # Debian's tomcat10-common


def _missing(what, path):
    return AssertionError(f"{path} is missing: install {what} with `make upstream-deps`")


class _Upstream(LogFile):
    """One server process. Ready once GET /health is answered by the app's health handler,
    so a test never reaches a server that listens but has not loaded the app."""

    name = None

    def __init__(self):
        self.port = None
        self.dir = tempfile.mkdtemp(prefix=f"jwt-guard-{self.name}-")
        self.log_path = os.path.join(self.dir, "server.log")
        self.proc = None
        self._log = None

    def _command(self):
        """(argv, cwd) of the server; may set self.port or leave it to `_read_port`."""
        raise NotImplementedError

    def _read_port(self):
        """The apps bind port 0 and print `LISTENING <port>`: no port is chosen here that
        another process could take first."""
        match = re.search(r"^LISTENING (\d+)$", self.log_text(), re.M)
        return int(match.group(1)) if match else None

    def start(self, timeout=30):
        try:
            args, cwd = self._command()
            self._log = open(self.log_path, "w")
            self.proc = subprocess.Popen(args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=self._log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_die_with_parent)
            wait_for(self._ready, timeout, what=f"{self.name} to be ready")
        except Exception as e:
            tail = self.log_tail()
            self.stop()  # no fixture teardown runs when start() fails
            raise AssertionError(f"{self.name} did not start: {e}\nlog:\n{tail}") from e
        return self

    def _ready(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}")
        if self.port is None:
            self.port = self._read_port()
            if self.port is None:
                return False
        try:
            r = self.request("/health", timeout=2)
        except OSError:
            return False
        return r.status == 200 and r.json["handler"] == "health"

    def request(self, path, headers=None, method="GET", timeout=10):
        """`path` is sent as is (no normalisation): the raw request target."""
        return client.request(self.port, path, headers, method, timeout=timeout)

    def stop(self):
        """SIGTERM to the whole process group, SIGKILL to whatever is left of it."""
        if self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
            self.proc = None
        if self._log:
            self._log.close()
            self._log = None
        shutil.rmtree(self.dir, ignore_errors=True)


class FlaskUpstream(_Upstream):
    """Flask run with the suite's Python (the venv), on Werkzeug's threaded WSGI server or,
    with `wsgi="wsgiref"`, the standard library's: the WSGI server, not Flask, decides what
    a header spelled `x_client_id` becomes (Werkzeug drops it, wsgiref reads it as
    X-Client-Id)."""

    def __init__(self, wsgi="werkzeug"):
        self.wsgi = wsgi
        self.name = f"flask-{wsgi}"
        super().__init__()

    def _command(self):
        return [sys.executable, os.path.join(APPS, "flask", "app.py"), self.wsgi], self.dir


class ExpressUpstream(_Upstream):
    """Express with its default routing: case-insensitive, non-strict trailing slash."""

    name = "express"

    def _command(self):
        app_dir = os.path.join(APPS, "express")
        if not os.path.isdir(os.path.join(app_dir, "node_modules", "express")):
            raise _missing("Express", os.path.join(app_dir, "node_modules"))
        return ["node", os.path.join(app_dir, "app.js")], app_dir


class ServletUpstream(_Upstream):
    """A servlet under Debian's Tomcat, with plain servlet mappings (web.xml). The servlet
    is compiled into the temp dir, which is also Tomcat's CATALINA_BASE: the system
    service (package tomcat10) is neither needed nor used."""

    name = "tomcat"

    def _command(self):
        src = os.path.join(APPS, "servlet")
        servlet_api = os.path.join(CATALINA_HOME, "lib", "servlet-api.jar")
        if not os.path.exists(servlet_api):
            raise _missing("Tomcat (tomcat10-common)", servlet_api)
        webapp = os.path.join(self.dir, "webapp")
        classes = os.path.join(webapp, "WEB-INF", "classes")
        os.makedirs(classes)
        shutil.copy(os.path.join(src, "web.xml"), os.path.join(webapp, "WEB-INF"))
        javac = subprocess.run(["javac", "-cp", servlet_api, "-d", classes,
                                os.path.join(src, "EchoServlet.java")], capture_output=True, text=True)
        if javac.returncode:
            raise AssertionError(f"javac failed:\n{javac.stdout}{javac.stderr}")
        for d in ("logs", "temp", "work"):
            os.makedirs(os.path.join(self.dir, d))
        # Tomcat reports no port it bound for port 0, so this one is chosen for it.
        self.port = free_port()
        home = CATALINA_HOME
        return [
            "java", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",  # starts faster
            f"-Dcatalina.home={home}", f"-Dcatalina.base={self.dir}",
            f"-Djava.io.tmpdir={os.path.join(self.dir, 'temp')}",
            f"-Djwtguard.port={self.port}", f"-Djwtguard.webapp={webapp}",
            "-cp", f"{home}/bin/bootstrap.jar:{home}/bin/tomcat-juli.jar",
            "org.apache.catalina.startup.Bootstrap", "-config", os.path.join(src, "server.xml"), "start",
        ], self.dir
