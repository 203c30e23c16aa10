"""HTTP servers the tests control: the JWKS/OIDC server and the protected upstream."""

import importlib.util
import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _reserve(port):
    """A socket bound to `port` on loopback but not listening: holds the port."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    return s


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 refuses bursts of resumed requests (Envoy then answers 503).
    request_queue_size = 256
    allow_reuse_address = True  # restart on the same port right after a stop
    daemon_threads = True


class ControlledServer:
    """A JWKS (or discovery) server whose answers tests change at run time.

    Per path it serves a JSON document, any status, or raw garbage; `hang(s)` delays every
    answer; `stop()` makes it unreachable and `start()` brings it back on the same port
    (so a server can also be "down at Envoy start": create it, start it later).
    Requests are counted per path."""

    def __init__(self, port=None):
        # While down, the port stays bound (not listening): connections are refused, and
        # no other socket in this run (an Envoy binding port 0, say) can be given it.
        self._reservation = _reserve(port or 0)
        self.port = self._reservation.getsockname()[1]
        self._lock = threading.Lock()
        self._routes = {}  # path -> (status, headers, body bytes)
        self._counts = {}
        self._hang_s = 0.0
        self._release = threading.Event()  # cuts hangs short on stop()/normal()
        self._httpd = None

    # ---- what it answers
    def set_json(self, path, doc, status=200, headers=None):
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        h = {"content-type": "application/json"}
        h.update(headers or {})
        with self._lock:
            self._routes[path] = (status, h, body)

    def set_error(self, path, status=500):
        self.set_json(path, {"error": "boom"}, status=status)

    def set_garbage(self, path):
        self.set_json(path, b"<html>this is not a JWKS</html>", headers={"content-type": "text/html"})

    def hang(self, seconds):
        """Every answer waits `seconds` first (Envoy's fetch timeout should fire)."""
        with self._lock:
            self._hang_s = seconds
            self._release.clear()

    def normal(self):
        with self._lock:
            self._hang_s = 0.0
            self._release.set()

    # ---- what it saw
    def count(self, path):
        with self._lock:
            return self._counts.get(path, 0)

    def reset_counts(self):
        with self._lock:
            self._counts.clear()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    # ---- up / down
    @property
    def running(self):
        return self._httpd is not None

    def start(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                path = self.path.split("?")[0]
                with server._lock:
                    server._counts[path] = server._counts.get(path, 0) + 1
                    hang_s = server._hang_s
                    status, headers, body = server._routes.get(path, (404, {}, b"not found"))
                if hang_s:
                    server._release.wait(hang_s)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(body)))
                # No keep-alive: once stopped, the server must be unreachable, not still
                # answering on a connection Envoy pooled.
                self.send_header("connection", "close")
                self.close_connection = True
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self._reservation.close()
        self._httpd = _Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self._httpd:
            self._release.set()
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
            self._reservation = _reserve(self.port)


def _demo_echo_handler():
    """The demo's echo service (demo/upstream.py), so tests see what the demo shows."""
    path = os.path.join(os.path.dirname(__file__), "..", "..", "..", "demo", "upstream.py")
    spec = importlib.util.spec_from_file_location("demo_upstream", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Echo


class EchoUpstream:
    """The protected service: answers 200 with the request it got (JSON), so tests see what
    the filter forwarded."""

    def __init__(self):
        self._httpd = _Server(("127.0.0.1", 0), _demo_echo_handler())
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def stop(self):
        self._httpd.shutdown()
        self._httpd.server_close()
