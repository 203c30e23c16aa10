"""The filter decides on the request the upstream serves: paths, hosts, client address,
headers, tokens and identities that an upstream (or Envoy) could read differently from a
naive filter. Each class of issue 8, tried as an attacker would, through Envoy with a real
upstream behind it where the upstream's reading is the point (Tomcat, Express, Flask).

Most checks run under Envoy's default HTTP connection manager (no normalization at all) and
under the settings the README recommends: the guarantees must not depend on them."""

import time

import pytest

import harness

ISS = "https://auth.e2e.test"
AUD = "https://api.e2e.test"
HCMS = {"envoy-default": harness.ENVOY_DEFAULT_HCM, "recommended": harness.RECOMMENDED_HCM}

# A public /health and /public, a protected /admin, a POST template, and a weaker catch-all
# that any valid token passes: the rule an ambiguous request used to fall to.
RULES = [
    {"name": "health", "match": {"path_prefix": "/health"}, "allow": "anonymous"},
    {"name": "public", "match": {"path_prefix": "/public"}, "allow": "anonymous"},
    {"name": "admin", "match": {"path_prefix": "/admin"}, "require": {"scopes": ["admin"]}},
    {"name": "validation", "match": {"methods": ["POST"], "path_template": "/validation/{id}"},
     "require": {"scopes": ["validation:write"]}},
    {"name": "maybe", "match": {"path_prefix": "/maybe"}, "require": {"allow_missing": True}},
    {"name": "api", "match": {"path_prefix": "/"}, "require": {}},
]


@pytest.fixture(scope="module")
def es():
    return harness.Key("ES256", "rd-1")


def plugin(es, rules=RULES, **provider):
    p = {"name": "corp", "issuer": ISS, "audiences": [AUD], "local_jwks": {"inline": harness.jwks(es)},
         "algorithms": ["ES256"], "from_params": ["access_token"], "from_cookies": ["session"],
         "claims_to_headers": [{"claim": "client_id", "header": "x-client-id"}]}
    p.update(provider)
    return {"providers": [p], "rules": rules}


def token(es, scope="", **claims):
    c = {"client_id": "svc-client", "scope": scope}
    c.update(claims)
    return es.sign(harness.claims(ISS, AUD, **c))


def served(r, handler):
    """The real upstream answered from `handler`."""
    try:
        return r.status == 200 and r.json.get("handler") == handler
    except ValueError:
        return False


def _serve(make):
    """A started upstream for the module's tests, stopped after them."""
    u = make()
    u.start()
    yield u
    u.stop()


@pytest.fixture(scope="module")
def tomcat():
    yield from _serve(harness.ServletUpstream)


@pytest.fixture(scope="module")
def express():
    yield from _serve(harness.ExpressUpstream)


@pytest.fixture(scope="module")
def flask():
    yield from _serve(harness.FlaskUpstream)


@pytest.fixture(scope="module")
def flask_wsgiref():
    """The one upstream that reads a header `x_client_id` as X-Client-Id (CGI-style)."""
    yield from _serve(lambda: harness.FlaskUpstream(wsgi="wsgiref"))


# ---- 1. path parameters and dot segments (Tomcat strips `;...` from every segment) -------

SERVLET_TRICKS = ["/admin;x/users", "/;x/admin/users", "/health/..;/admin/users",
                  "/health/%2e%2e;/admin/users", "/public/..;/admin/users"]


@pytest.mark.parametrize("hcm", HCMS)
def test_servlet_path_parameters_never_open_admin(envoy_factory, tomcat, es, hcm):
    e = envoy_factory(plugin(es), upstream_port=tomcat.port, hcm=HCMS[hcm])
    plain, admin = token(es), token(es, scope="admin")
    for path in SERVLET_TRICKS:
        # Tomcat serves every one of these from the admin servlet (test_upstreams.py).
        r = e.get(path)
        assert (r.status, r.code) == (401, "AUTH_100"), (path, r)
        r = e.get(path, plain)
        assert (r.status, r.code) == (403, "AUTH_102"), (path, r)
        assert served(e.get(path, admin), "admin"), path


# ---- 2. decided on a decoding the upstream never does --------------------------------------

@pytest.mark.parametrize("upstream_name", ["flask", "express"])
def test_dot_segments_that_envoy_passes_as_sent_keep_the_admin_rule(envoy_factory, request, es,
                                                                      upstream_name):
    u = request.getfixturevalue(upstream_name)
    e = envoy_factory(plugin(es), upstream_port=u.port, hcm=harness.ENVOY_DEFAULT_HCM)
    for path in ["/admin/../health", "/admin/%2e%2e/health", "/admin/..%2Fhealth"]:
        # Both upstreams serve these from the admin handler; the filter once read /health.
        r = e.get(path)
        assert (r.status, r.code) == (401, "AUTH_100"), (path, r)
        assert (e.get(path, token(es)).code) == "AUTH_102", path
        assert served(e.get(path, token(es, scope="admin")), "admin"), path


def test_encoded_dots_inside_a_parameter_keep_the_admin_rule(envoy_factory, flask, es):
    hcm = {"normalize_path": True, "merge_slashes": True}  # no escaped-slash action
    e = envoy_factory(plugin(es), upstream_port=flask.port, hcm=hcm)
    path = "/admin/users;x=%2F..%2F..%2Fhealth"
    assert e.get(path).code == "AUTH_100"
    assert served(e.get(path, token(es, scope="admin")), "admin")


def test_a_plain_path_still_costs_nothing_and_works(envoy_factory, tomcat, es):
    e = envoy_factory(plugin(es), upstream_port=tomcat.port, hcm=harness.ENVOY_DEFAULT_HCM)
    assert served(e.get("/health"), "health")
    assert served(e.get("/admin/users", token(es, scope="admin")), "admin")
    assert e.get("/admin/users", token(es)).code == "AUTH_102"


# ---- 3. trailing slash and case ---------------------------------------------------------------

@pytest.mark.parametrize("hcm", HCMS)
def test_trailing_slash_and_case_keep_the_stricter_rule(envoy_factory, express, es, hcm):
    e = envoy_factory(plugin(es), upstream_port=express.port, hcm=HCMS[hcm])
    plain = token(es)
    # Express routes /validation/1/ to /validation/:id, and /ADMIN to /admin.
    r = e.get("/validation/1/", plain, method="POST")
    assert (r.status, r.code) == (403, "AUTH_102"), r
    assert served(e.get("/validation/1/", token(es, scope="validation:write"), method="POST"),
                  "validation")
    for path in ["/ADMIN/users", "/Admin/users", "/aDmIn"]:
        r = e.get(path, plain)
        assert (r.status, r.code) == (403, "AUTH_102"), (path, r)
        assert served(e.get(path, token(es, scope="admin")), "admin"), path


def test_ignore_case_lets_a_case_insensitive_upstream_serve_mixed_case(envoy_factory, express, es):
    rules = [{"name": "admin", "match": {"path_prefix": "/admin", "ignore_case": True},
              "require": {"scopes": ["admin"]}}]
    strict = [{"name": "admin", "match": {"path_prefix": "/admin"}, "require": {"scopes": ["admin"]}}]
    admin = token(es, scope="admin")
    e = envoy_factory(plugin(es, rules), upstream_port=express.port)
    assert served(e.get("/ADMIN/users", admin), "admin")
    assert e.get("/ADMIN/users", token(es)).code == "AUTH_102"
    # Without it, the path as sent matches no rule: the default (deny) is one reading.
    e = envoy_factory(plugin(es, strict), upstream_port=express.port)
    assert e.get("/ADMIN/users", admin).code == "AUTH_120"


# ---- headers some upstreams take as the real path, method or host ---------------------------

@pytest.mark.parametrize("hcm", HCMS)
def test_override_headers_keep_the_rule_of_what_they_name(envoy_factory, es, hcm):
    rules = [{"name": "delete", "match": {"methods": ["DELETE"], "path_prefix": "/"},
              "require": {"scopes": ["admin"]}}] + RULES
    e = envoy_factory(plugin(es, rules), hcm=HCMS[hcm])
    # Symfony and IIS route on X-Original-URL / X-Rewrite-URL.
    for name in ["x-original-url", "X-Rewrite-URL"]:
        r = e.request("/health", {name: "/admin/users"})
        assert (r.status, r.code) == (401, "AUTH_100"), (name, r)
    # Express's method-override, Rails' and Laravel's _method.
    for headers, path in [({"x-http-method-override": "DELETE"}, "/public"),
                          ({}, "/public?_method=DELETE"), ({}, "/public?%5Fmethod=DELETE")]:
        r = e.get(path, token(es), headers=headers, method="POST")
        assert (r.status, r.code) == (403, "AUTH_102"), (headers, path, r)
    assert e.get("/health").status == 200


# ---- 4. hosts as Envoy picks virtual hosts -------------------------------------------------

def vhost(name, domains):
    return {"name": name, "domains": domains, "routes": [{
        "match": {"prefix": "/"}, "route": {"cluster": "upstream"},
        "request_headers_to_add": [{"header": {"key": "x-vhost", "value": name}}]}]}


VHOSTS = [vhost("public", ["public.example.com"]), vhost("admin", ["admin.example.com"]),
          vhost("api", ["*"])]
HOST_RULES = [
    {"name": "public-host", "match": {"host": "public.example.com"}, "allow": "anonymous"},
    {"name": "admin-host", "match": {"host": "admin.example.com"}, "require": {"scopes": ["admin"]}},
    {"name": "api", "match": {"path_prefix": "/"}, "require": {}},
]


def test_a_host_with_a_port_is_not_the_public_host(envoy_factory, es):
    e = envoy_factory(plugin(es, HOST_RULES), virtual_hosts=VHOSTS)
    assert e.get("/x", headers={"host": "public.example.com"}).json["headers"]["x-vhost"] == "public"
    # Envoy routes `public.example.com:1` to the `*` (API) virtual host.
    r = e.get("/x", headers={"host": "public.example.com:1"})
    assert (r.status, r.code) == (401, "AUTH_100"), r
    assert e.get("/x", token(es), headers={"host": "public.example.com:1"}).json["headers"]["x-vhost"] == "api"


def test_trailing_dot_and_user_info_do_not_escape_the_admin_host(envoy_factory, es):
    e = envoy_factory(plugin(es, HOST_RULES), virtual_hosts=VHOSTS)
    for host in ["admin.example.com.", "x@admin.example.com", "ADMIN.example.com"]:
        r = e.get("/x", token(es), headers={"host": host})
        assert (r.status, r.code) == (403, "AUTH_102"), (host, r)
        assert e.get("/x", token(es, scope="admin"), headers={"host": host}).status == 200, host


def test_when_envoy_strips_the_port_both_agree(envoy_factory, es):
    e = envoy_factory(plugin(es, HOST_RULES), virtual_hosts=VHOSTS, hcm={"strip_any_host_port": True})
    r = e.get("/x", headers={"host": "public.example.com:8443"})
    assert r.status == 200 and r.json["headers"]["x-vhost"] == "public", r


# ---- 5. the client address a binding checks -----------------------------------------------

@pytest.fixture
def bound_plugin(es):
    def make(cidrs, **top):
        p = plugin(es, [{"name": "api", "match": {"path_prefix": "/"}, "require": {}}],
                   ip_bindings=[{"principals": {"client_id": ["bound-client"]}, "cidrs": cidrs}])
        p.update(top)
        return p
    return make


@pytest.mark.parametrize("hcm", HCMS)
def test_x_forwarded_for_cannot_satisfy_an_ip_binding(envoy_factory, es, bound_plugin, hcm):
    e = envoy_factory(bound_plugin(["10.0.1.0/24"]), hcm=HCMS[hcm])
    t = token(es, client_id="bound-client")
    for xff in ["10.0.1.5", "192.0.2.1, 10.0.1.5", "10.0.1.5:4444"]:
        r = e.get("/x", t, headers={"x-forwarded-for": xff})
        assert (r.status, r.code) == (403, "AUTH_104"), (xff, r)
    # Callers no binding names are not limited.
    assert e.get("/x", token(es), headers={"x-forwarded-for": "10.0.1.5"}).status == 200


@pytest.mark.parametrize("hcm", HCMS)
def test_the_peer_address_satisfies_a_binding(envoy_factory, es, bound_plugin, hcm):
    e = envoy_factory(bound_plugin(["127.0.0.0/8", "::1"]), hcm=HCMS[hcm])
    t = token(es, client_id="bound-client")
    assert e.get("/x", t).status == 200
    r = e.get("/x", t, headers={"x-forwarded-for": "127.0.0.1"})
    if hcm == "recommended":
        # use_remote_address: Envoy reports the peer whatever the header says.
        assert r.status == 200, r
    else:
        # Envoy took the address from the header: it cannot be trusted, so bound callers
        # are refused (the README says to set use_remote_address, or trust X-Forwarded-For
        # explicitly).
        assert (r.status, r.code) == (403, "AUTH_104"), r


def test_x_forwarded_for_only_when_chosen_with_trusted_hops(envoy_factory, es, bound_plugin):
    p = bound_plugin(["10.0.1.0/24"], client_address={"from": "x-forwarded-for", "trusted_hops": 1})
    e = envoy_factory(p, hcm=harness.ENVOY_DEFAULT_HCM)
    t = token(es, client_id="bound-client")
    # The test plays the one trusted proxy in front of Envoy: the rightmost entry is its.
    assert e.get("/x", t, headers={"x-forwarded-for": "192.0.2.1, 10.0.1.5"}).status == 200
    r = e.get("/x", t, headers={"x-forwarded-for": "10.0.1.5, 192.0.2.1"})
    assert (r.status, r.code) == (403, "AUTH_104"), r
    assert e.get("/x", t).code == "AUTH_104", "no header: the address is unknown"


def test_trusted_hops_without_x_forwarded_for_is_refused_at_load(upstream, es, bound_plugin):
    p = bound_plugin(["10.0.1.0/24"], client_address={"from": "x-forwarded-for"})
    code, log = harness.run_envoy_expecting_failure(p, upstream.port)
    assert code != 0 and "client_address.trusted_hops" in log, log[-2000:]


# ---- 6. identity headers under another spelling -------------------------------------------

def test_an_underscore_spelling_of_an_identity_header_never_reaches_the_upstream(
        envoy_factory, flask_wsgiref, es):
    e = envoy_factory(plugin(es), upstream_port=flask_wsgiref.port, hcm=harness.ENVOY_DEFAULT_HCM)
    for spelling in ["x_client_id", "X_Client-Id", "x-client_id"]:
        r = e.get("/health", headers={spelling: "spoofed"})
        # wsgiref would hand `x_client_id: spoofed` to Flask as X-Client-Id.
        assert served(r, "health") and r.json["client_id"] is None, (spelling, r)
        r = e.get("/admin", token(es, scope="admin"), headers={spelling: "spoofed"})
        assert served(r, "admin") and r.json["client_id"] == "svc-client", (spelling, r)


def test_with_the_recommended_settings_envoy_refuses_underscore_headers(envoy_factory, es):
    e = envoy_factory(plugin(es), hcm=harness.RECOMMENDED_HCM)
    assert e.get("/health", headers={"x_client_id": "spoofed"}).status == 400


# ---- 7. a second token under another spelling of its name ---------------------------------

@pytest.mark.parametrize("second", [
    "?access%5Ftoken={t}", "?%61ccess_token={t}", "?access_token[]={t}", "?access.token={t}",
    "?x=1&access_token%5B0%5D={t}",
])
def test_an_encoded_second_token_in_the_query_is_a_400(envoy_factory, es, second):
    e = envoy_factory(plugin(es), hcm=harness.ENVOY_DEFAULT_HCM)
    forged = harness.Key("ES256", es.kid).sign(harness.claims(ISS, AUD, sub="admin", scope="admin"))
    r = e.get("/x" + second.format(t=forged), token(es))
    assert (r.status, r.code) == (400, "AUTH_117"), r


def test_an_encoded_second_cookie_or_header_spelling_is_a_400(envoy_factory, es):
    e = envoy_factory(plugin(es, from_headers=[{"name": "authorization", "value_prefix": "Bearer "},
                                               {"name": "x-jwt"}]), hcm=harness.ENVOY_DEFAULT_HCM)
    good = token(es)
    for headers in [{"cookie": f"sess%69on={good}"}, {"x_jwt": good}]:
        r = e.get("/x", good, headers=headers)
        assert (r.status, r.code) == (400, "AUTH_117"), (headers, r)


# ---- 8. a malformed credential is never "no token" ----------------------------------------

@pytest.mark.parametrize("shape", ["Bearer\t{t}", "Bearer{t}", "Bearer:{t}", "Basic x,Bearer {t}",
                                   "Basic x, bearer {t}"])
def test_a_malformed_credential_is_401_even_where_a_token_is_optional(envoy_factory, es, shape):
    e = envoy_factory(plugin(es), hcm=harness.ENVOY_DEFAULT_HCM)
    r = e.request("/maybe", {"authorization": shape.format(t=token(es))})
    assert (r.status, r.code) == (401, "AUTH_110"), r
    # No token at all is still fine there, and a well-formed one passes.
    assert e.get("/maybe").status == 200
    assert e.get("/maybe", token(es)).status == 200


# ---- 9. scopes are separated by spaces only ------------------------------------------------

def test_a_tab_does_not_separate_scopes(envoy_factory, es):
    e = envoy_factory(plugin(es))
    for scope in ["workflow:read\tadmin", "workflow:read\nadmin", "workflow:read\u00a0admin"]:
        r = e.get("/admin", token(es, scope=scope))
        assert (r.status, r.code) == (403, "AUTH_102"), (scope, r)
    assert e.get("/admin", token(es, scope="workflow:read admin")).status == 200


# ---- 10. identity confusion in policy -------------------------------------------------------

INVOKER = "emp-api-client@proj.iam.gserviceaccount.com"


def test_principals_compare_each_claim_with_its_own_patterns(envoy_factory, es):
    rules = [{"name": "invoker", "match": {"path_prefix": "/"},
              "require": {"principals": {"email": [INVOKER]}}}]
    e = envoy_factory(plugin(es, rules))
    assert e.get("/x", token(es, email=INVOKER)).status == 200
    # A token whose sub (or azp, or client_id) is the allowed e-mail is another caller.
    r = e.get("/x", token(es, sub=INVOKER, azp=INVOKER, client_id=INVOKER, email="x@evil.test"))
    assert (r.status, r.code) == (403, "AUTH_121"), r


def test_a_bare_principals_list_is_refused_at_load(upstream, es):
    rules = [{"match": {"path_prefix": "/"}, "require": {"principals": [INVOKER]}}]
    code, log = harness.run_envoy_expecting_failure(plugin(es, rules), upstream.port)
    assert code != 0 and "rules[0].require.principals: name the claim" in log, log[-2000:]


def test_a_token_of_a_provider_the_rule_does_not_name_is_113_and_fetches_nothing(envoy_factory, idp, es):
    other = harness.Key("ES256", "other-1")
    idp.set_json("/jwks", harness.jwks(es))
    p = plugin(es, [{"name": "corp-only", "match": {"path_prefix": "/"}, "require": {"providers": ["corp"]}}])
    p["providers"][0].pop("local_jwks")
    p["providers"][0]["remote_jwks"] = {"uri": idp.url("/jwks"), "cluster": "jwks", "unknown_kid_refetch_s": 1}
    p["providers"].append({"name": "google", "issuer": "https://accounts.google.com", "audiences": [AUD],
                           "local_jwks": {"inline": harness.jwks(other)}, "algorithms": ["ES256"]})
    e = envoy_factory(p, {"jwks": idp.port})
    assert e.wait_for_reply(lambda r: r.status == 200, "/x", token(es)).status == 200
    fetched = idp.count("/jwks")
    google = other.sign(harness.claims("https://accounts.google.com", AUD))
    for _ in range(3):
        r = e.get("/x", google)
        assert (r.status, r.code) == (401, "AUTH_113"), r
        time.sleep(1.1)  # past unknown_kid_refetch_s, so a refetch would be allowed
    assert idp.count("/jwks") == fetched, "another provider's kid made corp refetch its keys"


def test_a_realm_role_named_like_a_client_role_is_not_that_client_role(envoy_factory, es):
    rules = [{"name": "writers", "match": {"path_prefix": "/"}, "require": {"roles": ["my-api:writer"]}}]
    e = envoy_factory(plugin(es, rules))
    realm = token(es, realm_access={"roles": ["my-api:writer"]})
    r = e.get("/x", realm)
    assert (r.status, r.code) == (403, "AUTH_121"), r
    client = token(es, resource_access={"my-api": {"roles": ["writer"]}})
    assert e.get("/x", client).status == 200


# ---- 11. defaults that surprise --------------------------------------------------------------

def test_a_provider_without_audiences_is_refused_at_load_and_any_is_explicit(upstream, envoy_factory, es):
    p = plugin(es)
    p["providers"][0].pop("audiences")
    code, log = harness.run_envoy_expecting_failure(p, upstream.port)
    assert code != 0 and "providers[0].audiences: required" in log, log[-2000:]
    p["providers"][0]["audiences"] = "any"
    e = envoy_factory(p)
    assert e.get("/x", es.sign(harness.claims(ISS, "https://some-other-api.test"))).status == 200


def test_token_types_refuse_an_id_token_where_an_access_token_is_wanted(envoy_factory, es):
    e = envoy_factory(plugin(es, token_types=["at+jwt"]))
    claims = harness.claims(ISS, AUD)
    assert e.get("/x", es.sign(claims, typ="at+jwt")).status == 200
    assert e.get("/x", es.sign(claims, typ="application/at+jwt")).status == 200
    r = e.get("/x", es.sign(claims, typ="JWT"))
    assert (r.status, r.code) == (401, "AUTH_118"), r
