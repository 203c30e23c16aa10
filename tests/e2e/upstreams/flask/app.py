"""Flask with idiomatic routes, every request answered with what Flask made of it.

Usage: app.py [werkzeug|wsgiref]: binds 127.0.0.1:0, prints `LISTENING <port>`. The WSGI
server decides what a header spelled with `_` becomes: Werkzeug's drops it, the standard
library's wsgiref turns `x_client_id` into the same WSGI key as `X-Client-Id`."""

import sys
from socketserver import ThreadingMixIn
from wsgiref import simple_server

from flask import Flask, jsonify, request
from werkzeug.serving import make_server

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

app = Flask(__name__)


def answer(handler):
    body = {
        "handler": handler,
        "method": request.method,
        "path": request.path,
        "raw_path": request.environ.get("RAW_URI"),  # Werkzeug's; wsgiref keeps none
        "headers": {k.lower(): v for k, v in request.headers.items()},
        "client_id": request.headers.get("X-Client-Id"),
        # Both spellings are looked up as one WSGI key (HTTP_X_CLIENT_ID): always client_id.
        "client_id_underscore": request.headers.get("x_client_id"),
    }
    return jsonify(body), 200 if handler else 404


def route(rule, handler):
    app.add_url_rule(rule, f"{handler}:{rule}", lambda **_: answer(handler), methods=METHODS)


for name in ("health", "public", "admin", "workflows"):
    route(f"/{name}", name)
    route(f"/{name}/<path:rest>", name)
route("/validation/<id>", "validation")


@app.errorhandler(404)
@app.errorhandler(405)
def unmatched(_):
    return answer(None)


class ThreadingWSGIServer(ThreadingMixIn, simple_server.WSGIServer):
    daemon_threads = True


if __name__ == "__main__":
    if sys.argv[1:] == ["wsgiref"]:
        server = simple_server.make_server("127.0.0.1", 0, app, ThreadingWSGIServer)
    else:
        server = make_server("127.0.0.1", 0, app, threaded=True)
    print(f"LISTENING {server.server_port}", flush=True)
    server.serve_forever()
