"""The real upstreams on their own, without Envoy: which handler each runs for an ambiguous
raw path, and what each makes of a header spelled `x_client_id`. Tests that put them behind
Envoy rely on these facts; if a version bump changes one, it fails here first."""

import pytest

import harness

SERVERS = {
    "flask-werkzeug": harness.FlaskUpstream,
    "flask-wsgiref": lambda: harness.FlaskUpstream(wsgi="wsgiref"),
    "express": harness.ExpressUpstream,
    "tomcat": harness.ServletUpstream,
}

# Raw path -> what (Flask, Express, Tomcat) did: the handler that answered (status 200),
# None for the app's own 404, or a status the server answered before any handler.
# Flask routes the same on both WSGI servers.
ROUTING = {
    "/admin/users":                       ("admin",      "admin",      "admin"),
    "/admin;x/users":                     (None,         None,         "admin"),
    "/;x/admin/users":                    (None,         None,         "admin"),
    "/health/..;/admin/users":            ("health",     "health",     "admin"),
    "/health/%2e%2e;/admin/users":        ("health",     "health",     "admin"),
    "/admin/../health":                   ("admin",      "admin",      "health"),
    "/admin/%2e%2e/health":               ("admin",      "admin",      "health"),
    "/admin/..%2Fhealth":                 ("admin",      "admin",      400),
    "/admin/users;x=%2F..%2F..%2Fhealth": ("admin",      "admin",      "admin"),
    "/ADMIN/users":                       (None,         "admin",      None),
    "/Admin/users":                       (None,         "admin",      None),
    "/validation/1":                      ("validation", "validation", "validation"),
    "/validation/1/":                     (None,         "validation", "validation"),
    "/validation/1/2":                    (None,         None,         "validation"),
    "/%61dmin/users":                     ("admin",      None,         "admin"),
    "//admin/users":                      ("admin",      None,         "admin"),
    "/admin//users":                      (308,          "admin",      "admin"),
    "/health/./../admin/users":           ("health",     "health",     "admin"),
    "/admin":                             ("admin",      "admin",      "admin"),
    "/admin/":                            (None,         "admin",      "admin"),
    "/workflows/run":                     ("workflows",  "workflows",  "workflows"),
    "/elsewhere":                         (None,         None,         None),
}
COLUMN = {"flask-werkzeug": 0, "flask-wsgiref": 0, "express": 1, "tomcat": 2}


@pytest.fixture(scope="module", params=list(SERVERS))
def server(request):
    u = SERVERS[request.param]().start()
    yield request.param, u
    u.stop()


@pytest.mark.parametrize("path", list(ROUTING))
def test_which_handler_answers_a_raw_path(server, path):
    name, u = server
    expected = ROUTING[path][COLUMN[name]]
    r = u.request(path)
    if expected == 308:  # Werkzeug merges slashes by redirecting
        assert r.status == 308 and r.headers["location"].endswith("/admin/users"), r
    elif isinstance(expected, int):
        assert r.status == expected, r
    elif expected is None:
        assert r.status == 404 and r.json["handler"] is None, r
    else:
        assert r.status == 200 and r.json["handler"] == expected, r


def test_the_path_each_app_routes_on(server):
    """Tomcat routes on the decoded path with `;params` dropped and dot segments resolved;
    Express on the raw path; Flask on the decoded path, dot segments left in."""
    name, u = server
    seen = {p: u.request(p).json["path"] for p in
            ("/health/..;/admin/users", "/admin/%2e%2e/health", "/ADMIN/users")}
    assert seen == {
        "flask-werkzeug": {"/health/..;/admin/users": "/health/..;/admin/users",
                           "/admin/%2e%2e/health": "/admin/../health", "/ADMIN/users": "/ADMIN/users"},
        "express": {"/health/..;/admin/users": "/health/..;/admin/users",
                    "/admin/%2e%2e/health": "/admin/%2e%2e/health", "/ADMIN/users": "/ADMIN/users"},
        "tomcat": {"/health/..;/admin/users": "/admin/users",
                   "/admin/%2e%2e/health": "/health", "/ADMIN/users": "/ADMIN/users"},
    }[name.replace("flask-wsgiref", "flask-werkzeug")]


# Header `x_client_id: spoofed` -> (X-Client-Id as the app reads it, the `x_client_id`
# header as the app exposes it), alone and next to a real X-Client-Id.
UNDERSCORE = {
    "flask-werkzeug": ((None, None), ("real", "real")),                        # dropped by the server
    "flask-wsgiref": (("spoofed", "spoofed"), ("real,spoofed", "real,spoofed")),  # merged into X-Client-Id
    "express": ((None, "spoofed"), ("real", "spoofed")),                        # a header of its own
    "tomcat": ((None, "spoofed"), ("real", "spoofed")),                         # a header of its own
}


def test_what_a_header_spelled_with_underscores_becomes(server):
    name, u = server
    alone, beside_real = UNDERSCORE[name]
    for headers, expected in (({"x_client_id": "spoofed"}, alone),
                              ({"X-Client-Id": "real", "x_client_id": "spoofed"}, beside_real)):
        body = u.request("/admin/users", headers).json
        assert (body["client_id"], body["client_id_underscore"]) == expected, body
