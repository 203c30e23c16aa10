import os

import pytest

import harness

ISS = "https://auth.e2e.test"
AUD = "https://api.e2e.test"


def pytest_sessionstart(session):
    for path, what in [(harness.WASM, "the filter (make build)"), (harness.ENVOY, "Envoy (make venv)")]:
        if not os.path.exists(path):
            raise pytest.UsageError(f"{path} is missing: build {what} first, or run `make test`")


def pytest_sessionfinish(session):
    """Safety net (e.g. after Ctrl-C): no Envoy outlives the run."""
    for envoy in list(harness.RUNNING):
        envoy.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, attach the tail of every Envoy still running (the module's and the
    test's own) to the report: runs before fixture teardown stops them."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for envoy in list(harness.RUNNING):
            state = "running" if envoy.alive else f"exited with {envoy.proc.returncode}"
            report.sections.append((f"envoy log {envoy.log_path} ({state})", envoy.log_tail(80)))


@pytest.fixture(scope="session")
def upstream():
    u = harness.EchoUpstream()
    yield u
    u.stop()


@pytest.fixture(scope="session")
def es():
    return harness.Key("ES256", "es-1")


@pytest.fixture(scope="session")
def rs():
    return harness.Key("RS256", "rs-1")


@pytest.fixture
def envoy_factory(upstream):
    """Starts Envoys for one test and always stops them."""
    started = []

    def start(plugin, clusters=None, concurrency=1, wait=True, upstream_port=None, **envoy_options):
        e = harness.Envoy(plugin, upstream_port or upstream.port, clusters, concurrency, **envoy_options)
        started.append(e)
        e.start(wait=wait)
        return e

    yield start
    for e in started:
        e.stop()


@pytest.fixture
def idp():
    """A JWKS/discovery server this test controls, already listening."""
    s = harness.ControlledServer().start()
    yield s
    s.stop()
