"""The demo's protected service: answers every request with what it received, so you can
see what jwt-guard forwarded (identity headers, the token or not)."""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        length = int(self.headers.get("content-length") or 0)
        received = self.rfile.read(length) if length else b""
        # A chunked body is not read, so the connection cannot be reused.
        unread = "chunked" in (self.headers.get("transfer-encoding") or "").lower()
        body = json.dumps({
            "service": "demo-upstream",
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": received.decode(errors="replace"),
        }, indent=2).encode() + b"\n"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("x-upstream", "echo")
        self.send_header("content-length", str(len(body)))
        if unread:
            self.send_header("connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    # Every method, whatever its name (the server looks up do_<METHOD>).
    def __getattr__(self, name):
        if name.startswith("do_"):
            return self.answer
        raise AttributeError(name)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(os.environ.get("UPSTREAM_PORT", "8081"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Echo)
    print(f"UPSTREAM READY http://127.0.0.1:{port}", flush=True)
    server.serve_forever()
