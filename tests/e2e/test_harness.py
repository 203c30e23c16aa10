"""The harness itself, without the filter: if these fail, the other failures say nothing
about jwt-guard."""

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest

import harness
from conftest import AUD, ISS


def get(server, path, timeout=5):
    return harness.request(server.port, path, timeout=timeout)


def test_jwks_server_answers_counts_and_changes_at_run_time(idp, es, rs):
    idp.set_json("/jwks", harness.jwks(es, rs))
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: get(idp, "/jwks"), range(40)))
    assert {r.status for r in replies} == {200}
    assert [k["kid"] for k in replies[0].json["keys"]] == ["es-1", "rs-1"]
    assert idp.count("/jwks") == 40  # counted under a lock
    assert get(idp, "/other").status == 404 and idp.count("/other") == 1

    idp.set_error("/jwks", 500)
    assert get(idp, "/jwks").status == 500
    idp.set_garbage("/jwks")
    r = get(idp, "/jwks")
    assert r.status == 200 and r.code is None
    with pytest.raises(ValueError):
        r.json


def test_jwks_server_hangs_and_is_released(idp, es):
    idp.set_json("/jwks", harness.jwks(es))
    idp.hang(30)
    with pytest.raises(socket.timeout):
        get(idp, "/jwks", timeout=0.5)
    idp.normal()
    start = time.monotonic()
    assert get(idp, "/jwks").status == 200
    assert time.monotonic() - start < 2


def test_jwks_server_can_be_down_then_up_on_the_same_port(es):
    server = harness.ControlledServer()  # not listening yet
    server.set_json("/jwks", harness.jwks(es))
    with pytest.raises(ConnectionRefusedError):
        get(server, "/jwks")
    server.start()
    try:
        assert get(server, "/jwks").status == 200
        server.stop()
        with pytest.raises(ConnectionRefusedError):
            get(server, "/jwks")
        server.start()
        assert get(server, "/jwks").status == 200
    finally:
        server.stop()


def test_minted_tokens_verify_with_the_published_jwk(es, rs):
    for key in (es, rs):
        token = key.sign(harness.claims(ISS, AUD, scope="a b"))
        header = jwt.get_unverified_header(token)
        assert header == {"alg": key.alg, "typ": "JWT", "kid": key.kid}
        jwk = jwt.PyJWK(key.jwk)
        assert jwt.decode(token, jwk.key, algorithms=[key.alg], audience=AUD, issuer=ISS)["scope"] == "a b"
    assert {es.jwk["kty"], es.jwk["crv"], rs.jwk["kty"]} == {"EC", "P-256", "RSA"}
    assert es.jwk["use"] == rs.jwk["use"] == "sig"
    assert len(jwt.utils.base64url_decode(rs.jwk["n"])) == 256  # RSA 2048


def test_forged_tokens_are_what_they_claim(rs):
    none = harness.forge({"alg": "none"}, {"iss": ISS}, b"")
    assert none.endswith(".") and jwt.get_unverified_header(none)["alg"] == "none"
    hs = harness.hs256_keyed_with_public_key(rs, harness.claims(ISS, AUD))
    # PyJWT refuses a PEM as HMAC secret; check the MAC with the primitive it would use.
    jwt_hs = jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256)
    signing_input, _, sig = hs.rpartition(".")
    assert jwt_hs.verify(signing_input.encode(), rs.public_pem(), jwt.utils.base64url_decode(sig))


def test_envoy_launcher_without_the_filter(upstream):
    envoy = harness.Envoy(None, upstream.port, concurrency=2).start()
    try:
        r = envoy.get("/anything?x=1", "tok")
        assert r.status == 200 and r.headers["x-upstream"] == "echo"
        assert r.json["path"] == "/anything?x=1"
        assert r.json["headers"]["authorization"] == "Bearer tok"
        with open(envoy.config_path) as f:
            assert "envoy.filters.http.wasm" not in f.read()
        assert envoy.stats()["server.concurrency"] == 2
        assert envoy.port != envoy.admin_port
    finally:
        envoy.stop()
    assert not envoy.alive and envoy not in harness.RUNNING
    with pytest.raises(ConnectionRefusedError):
        envoy.get("/")


def test_envoy_launcher_writes_the_filter_as_the_contract_says(upstream):
    config = harness.bootstrap({"providers": []}, upstream.port, {"jwks": 1234}, 1, 2)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    wasm, router = hcm["http_filters"]
    c = wasm["typed_config"]["config"]
    assert (c["name"], c["root_id"], c["vm_config"]["vm_id"]) == ("jwt_guard",) * 3
    assert c["vm_config"]["runtime"] == "envoy.wasm.runtime.v8" and c["fail_open"] is False
    assert json.loads(c["configuration"]["value"]) == {"providers": []}
    assert router["name"] == "envoy.filters.http.router"
    jwks = config["static_resources"]["clusters"][1]
    assert (jwks["name"], jwks["connect_timeout"]) == ("jwks", "1s")


def test_free_port_never_hands_out_a_port_twice():
    # The OS may return a just-closed port again; two such ports once became Envoy's admin
    # and listener port and Envoy refused to start (CI, 2026-11-23).
    ports = [harness.free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)


def test_two_envoys_at_once_get_their_own_ports(upstream):
    first = harness.Envoy(None, upstream.port).start()
    second = harness.Envoy(None, upstream.port).start()
    try:
        ports = {first.port, first.admin_port, second.port, second.admin_port}
        assert len(ports) == 4 and None not in ports
        assert first.get("/").status == second.get("/").status == 200
    finally:
        first.stop()
        second.stop()
