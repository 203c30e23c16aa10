"""The JWKS lifecycle through a real Envoy, against an IdP whose answers the tests control."""

import http.client
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import harness
from conftest import AUD, ISS


def plugin(jwks_url, **remote):
    r = {"uri": jwks_url, "cluster": "jwks", "timeout_ms": 1000}
    r.update(remote)
    return {
        "providers": [{"name": "corp", "issuer": ISS, "audiences": [AUD], "remote_jwks": r}],
        "rules": [{"match": {"path_prefix": "/"}, "require": {}}],
    }


def token(key, **extra):
    return key.sign(harness.claims(ISS, AUD, **extra))


def status(envoy, tok):
    return envoy.get("/api", tok).status


def test_cold_start_four_workers_fifty_requests_one_fetch(envoy_factory, idp, es):
    idp.set_json("/jwks", harness.jwks(es))
    idp.hang(0.8)  # requests arrive while the first fetch is in flight
    envoy = envoy_factory(plugin(idp.url("/jwks")), {"jwks": idp.port}, concurrency=4)
    tok = token(es)
    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(lambda _: status(envoy, tok), range(50)))
    assert statuses == [200] * 50
    assert idp.count("/jwks") == 1
    idp.normal()
    # Every worker serves from the one copy.
    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(lambda _: status(envoy, tok), range(200))) == {200}
    assert idp.count("/jwks") == 1


def test_cold_requests_get_503_after_the_fetch_timeout_never_hang(envoy_factory, idp, es):
    idp.set_json("/jwks", harness.jwks(es))
    idp.hang(10)
    envoy = envoy_factory(plugin(idp.url("/jwks"), timeout_ms=500), {"jwks": idp.port})
    start = time.monotonic()
    r = envoy.get("/api", token(es), timeout=10)
    assert (r.status, r.code) == (503, "AUTH_130"), r
    assert time.monotonic() - start < 4


def post_in_parts(envoy, tok, first, while_held, after_release=b""):
    """POSTs `first + while_held + after_release` as the body: `first` with the headers,
    `while_held` once Envoy holds the request (headers in, nothing sent upstream), and
    `after_release` (if any) once the request has gone upstream."""
    body = first + while_held + after_release
    s = socket.create_connection(("127.0.0.1", envoy.port), timeout=15)
    try:
        s.sendall(f"POST /api HTTP/1.1\r\nhost: api\r\nauthorization: Bearer {tok}\r\n"
                  f"content-type: text/plain\r\ncontent-length: {len(body)}\r\n\r\n".encode() + first)
        harness.wait_for(lambda: envoy.stats().get("http.ingress.downstream_rq_active") == 1,
                         what="Envoy to hold the request")
        assert envoy.stats().get("cluster.upstream.upstream_rq_total", 0) == 0
        s.sendall(while_held)
        if after_release:
            harness.wait_for(lambda: envoy.stats().get("cluster.upstream.upstream_rq_total") == 1,
                             what="the request to go upstream once keys came")
            s.sendall(after_release)
        r = http.client.HTTPResponse(s)
        r.begin()
        text = r.read().decode()
        return harness.Response(r.status, {k.lower(): v for k, v in r.getheaders()}, text)
    finally:
        s.close()


def test_a_request_body_waits_with_its_request_and_goes_on_whole(envoy_factory, idp, es):
    idp.set_json("/jwks", harness.jwks(es))
    idp.hang(1.5)  # the request and part of its body arrive while the fetch is in flight
    envoy = envoy_factory(plugin(idp.url("/jwks"), timeout_ms=5000), {"jwks": idp.port})
    r = post_in_parts(envoy, token(es), b"hello ", b"wide ", b"world")
    assert r.status == 200 and r.headers["x-upstream"] == "echo", r
    assert r.json["body"] == "hello wide world"


def test_a_request_body_never_carries_a_waiting_request_upstream(envoy_factory, idp, es):
    idp.set_json("/jwks", harness.jwks(es))
    idp.hang(30)  # keys never come in time
    envoy = envoy_factory(plugin(idp.url("/jwks"), timeout_ms=1500), {"jwks": idp.port})
    r = post_in_parts(envoy, token(es), b"hello ", b"world")
    assert (r.status, r.code) == (503, "AUTH_130"), r
    assert envoy.stats().get("cluster.upstream.upstream_rq_total", 0) == 0


def test_rotation_new_key_accepted_after_one_refetch_old_key_refused(envoy_factory, idp, es):
    old, new = es, harness.Key("ES256", "es-2")
    idp.set_json("/jwks", harness.jwks(old))
    envoy = envoy_factory(plugin(idp.url("/jwks")), {"jwks": idp.port}, concurrency=2)
    old_token = token(old)
    assert status(envoy, old_token) == 200  # now cached too
    assert idp.count("/jwks") == 1
    idp.set_json("/jwks", harness.jwks(new))  # the IdP rotates
    assert status(envoy, token(new)) == 200
    assert idp.count("/jwks") == 2
    assert envoy.stat("provider.corp.unknown_kid_refetch") == 1
    # The old key is gone: once every worker has picked up the new keys (their next tick),
    # its tokens are refused, cached or not, without another fetch.
    harness.wait_for(lambda: all(envoy.get("/api", old_token).code == "AUTH_115" for _ in range(8)),
                     timeout=2, what="every worker to refuse the removed key")
    assert idp.count("/jwks") == 2


def test_random_kids_cannot_make_the_filter_hammer_the_idp(envoy_factory, idp, es):
    idp.set_json("/jwks", harness.jwks(es))
    envoy = envoy_factory(plugin(idp.url("/jwks")), {"jwks": idp.port}, concurrency=2)
    assert status(envoy, token(es)) == 200
    start = time.monotonic()
    forger = harness.Key("ES256", "x")
    tokens = [forger.sign(harness.claims(ISS, AUD), kid=f"random-{i}") for i in range(1000)]
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda t: envoy.get("/api", t).code, tokens))
    elapsed = time.monotonic() - start
    assert set(codes) == {"AUTH_115"}
    allowed = 1 + 1 + int(elapsed // 10)  # the first fetch, then one refetch per 10 s
    assert idp.count("/jwks") <= allowed, (idp.count("/jwks"), elapsed)
    assert status(envoy, token(es)) == 200


def test_idp_down_keys_serve_until_max_stale_then_503(envoy_factory, idp, es):
    idp.set_json("/jwks", harness.jwks(es))
    p = plugin(idp.url("/jwks"), refresh_s=1, refresh_min_s=1, max_stale_s=4)
    envoy = envoy_factory(p, {"jwks": idp.port})
    tok = token(es)
    assert status(envoy, tok) == 200
    fetched = time.monotonic()
    idp.stop()
    harness.wait_for(lambda: envoy.stat("provider.corp.jwks_fetch_failure.unreachable") >= 1,
                     timeout=10, what="a failed refresh (nothing listening: unreachable)")
    assert status(envoy, tok) == 200, "stale keys keep serving"
    # The gauge is refreshed on the filter's tick, not with the failure counter.
    harness.wait_for(lambda: envoy.stat("provider.corp.stale") == 1, timeout=3,
                     what="the stale gauge")
    r = envoy.wait_for_reply(lambda r: r.status == 503, "/api", tok, what="503 after max_stale_s")
    assert r.code == "AUTH_131"
    assert time.monotonic() - fetched >= 3.5
    assert "keeping the last good keys" in envoy.log_text()
    assert "failed (unreachable): the IdP was not reached" in envoy.log_text()


def test_bad_jwks_answers_keep_the_last_good_keys(envoy_factory, idp, es):
    idp.set_json("/jwks", harness.jwks(es))
    p = plugin(idp.url("/jwks"), refresh_s=1, refresh_min_s=1, timeout_ms=500)
    envoy = envoy_factory(p, {"jwks": idp.port})
    tok = token(es)
    assert status(envoy, tok) == 200
    # Each bad answer, and the reason it is counted under.
    bad_answers = {
        "500": ("status", lambda: idp.set_error("/jwks", 500)),
        "garbage": ("bad_jwks", lambda: idp.set_garbage("/jwks")),
        "no usable keys": ("bad_jwks", lambda: idp.set_json("/jwks", {"keys": [{"kty": "oct", "k": "AA"}]})),
        "10 MiB body": ("too_large", lambda: idp.set_json("/jwks", b"{\"keys\": [" + b" " * (10 * 1024 * 1024) + b"]}")),
        "hangs past the timeout": ("unreachable", lambda: idp.hang(3)),
    }
    for name, (reason, make_bad) in bad_answers.items():
        counter = f"provider.corp.jwks_fetch_failure.{reason}"
        failures, by_reason = envoy.stat("provider.corp.jwks_fetch_failure"), envoy.stat(counter)
        make_bad()
        harness.wait_for(lambda: envoy.stat("provider.corp.jwks_fetch_failure") > failures,
                         timeout=40, interval=0.2, what=f"a failed fetch ({name})")
        assert envoy.stat(counter) > by_reason, (name, reason)
        assert status(envoy, tok) == 200, name
        idp.normal()
        idp.set_json("/jwks", harness.jwks(es))
    assert envoy.proc.poll() is None
    assert envoy.stats().get("wasm.jwt_guard.vm_reload", 0) == 0


def test_cache_control_max_age_drives_refresh(envoy_factory, idp, es):
    idp.set_json("/jwks", harness.jwks(es), headers={"cache-control": "public, max-age=1"})
    envoy = envoy_factory(plugin(idp.url("/jwks"), refresh_min_s=1), {"jwks": idp.port})
    assert status(envoy, token(es)) == 200
    harness.wait_for(lambda: idp.count("/jwks") >= 3, timeout=10, what="refreshes every max-age")
    assert envoy.stat("provider.corp.jwks_fetch_success") >= 3


def discovery_plugin(idp, **extra):
    d = {"uri": idp.url("/.well-known/openid-configuration"), "cluster": "idp", "jwks_cluster": "keys"}
    d.update(extra)
    return {
        "providers": [{"name": "corp", "issuer": ISS, "audiences": [AUD], "discovery": d}],
        "rules": [{"match": {"path_prefix": "/"}, "require": {}}],
    }


def test_discovery_follows_jwks_uri_through_its_own_cluster(envoy_factory, idp, es, upstream):
    keys = harness.ControlledServer().start()
    try:
        keys.set_json("/certs", harness.jwks(es))
        idp.set_json("/.well-known/openid-configuration", {"issuer": ISS, "jwks_uri": keys.url("/certs")})
        envoy = envoy_factory(discovery_plugin(idp), {"idp": idp.port, "keys": keys.port})
        assert status(envoy, token(es)) == 200
        assert idp.count("/.well-known/openid-configuration") == 1
        assert keys.count("/certs") == 1
    finally:
        keys.stop()


def test_discovery_is_remembered_across_refreshes_and_redone_after_a_failure(envoy_factory, idp, es):
    keys = harness.ControlledServer().start()
    try:
        keys.set_json("/certs", harness.jwks(es))
        idp.set_json("/.well-known/openid-configuration", {"issuer": ISS, "jwks_uri": keys.url("/certs")})
        plugin = discovery_plugin(idp, refresh_s=1, refresh_min_s=1)
        envoy = envoy_factory(plugin, {"idp": idp.port, "keys": keys.port})
        assert status(envoy, token(es)) == 200
        harness.wait_for(lambda: keys.count("/certs") >= 3, timeout=10, what="refreshes")
        assert idp.count("/.well-known/openid-configuration") == 1
        # The keys move: the JWKS fetch fails, and the next attempt discovers again.
        keys.set_json("/certs", {"error": "gone"}, status=404)
        harness.wait_for(lambda: idp.count("/.well-known/openid-configuration") >= 2, timeout=15,
                         what="a new discovery after a failed JWKS fetch")
        assert status(envoy, token(es)) == 200
    finally:
        keys.stop()


def test_discovery_with_another_issuer_is_refused(envoy_factory, idp, es):
    idp.set_json("/.well-known/openid-configuration", {"issuer": "https://impostor.test", "jwks_uri": idp.url("/jwks")})
    idp.set_json("/jwks", harness.jwks(es))
    envoy = envoy_factory(discovery_plugin(idp), {"idp": idp.port, "keys": idp.port})
    r = envoy.wait_for_reply(lambda r: r.status == 503, "/api", token(es), what="503 while discovery is refused")
    assert r.code == "AUTH_130"
    assert idp.count("/jwks") == 0
    assert "discovery fetch" in envoy.log_text() and "names another issuer" in envoy.log_text()
    assert envoy.stat("provider.corp.jwks_fetch_failure.issuer_mismatch") >= 1
