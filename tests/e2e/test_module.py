"""The built module: what it exports (tools/trim_exports.py), checked on the real file."""

import importlib.util
import os

import harness

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def trim_exports():
    spec = importlib.util.spec_from_file_location("trim_exports", os.path.join(ROOT, "tools", "trim_exports.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def exports(module: bytes) -> list[str]:
    t = trim_exports()
    names, pos = [], 8
    while pos < len(module):
        size, body = t.read_leb(module, pos + 1)
        if module[pos] == t.EXPORT_SECTION:
            count, p = t.read_leb(module, body)
            for _ in range(count):
                n, p = t.read_leb(module, p)
                names.append(module[p:p + n].decode())
                p += n + 1
                _, p = t.read_leb(module, p)
        pos = body + size
    return names


def test_the_filter_exports_only_the_callbacks_it_implements():
    with open(harness.WASM, "rb") as f:
        module = f.read()
    names = exports(module)
    # Each exported callback is a VM entry on every request: response-side ones do nothing,
    # and a request's end is handled when its context is deleted.
    for unused in ["proxy_on_response_headers", "proxy_on_response_body", "proxy_on_log",
                   "proxy_on_done"]:
        assert unused not in names, f"{unused} is still exported (make build runs tools/trim_exports.py)"
    for needed in ["proxy_on_context_create", "proxy_on_configure", "proxy_on_tick",
                   "proxy_on_request_headers", "proxy_on_request_body", "proxy_on_request_trailers",
                   "proxy_on_http_call_response", "proxy_on_delete",
                   "proxy_on_memory_allocate", "proxy_abi_version_0_2_1"]:
        assert needed in names, needed
    # Running the tool again changes nothing.
    again, removed = trim_exports().trim(module)
    assert (again, removed) == (module, [])
