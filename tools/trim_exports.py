#!/usr/bin/env python3
"""Removes the proxy-wasm callbacks jwt-guard does not use from the built module's exports.

The proxy-wasm Rust SDK exports every callback of the ABI, and a host calls each exported
one on every request: response headers, response body (once per chunk), response trailers,
metadata, log. Each call is a VM entry (about half a microsecond in V8) for a default that
does nothing. Hosts skip callbacks a module does not export (proxy-wasm-cpp-host, which
Envoy embeds, checks each one), so the module stops exporting them. Everything the filter
implements stays: context create, configure, tick, request headers, body and trailers (a
request held for keys must keep its body held), callout responses and delete.

Only the export entries go; the functions stay in the code section and no index changes.
Idempotent: running it on a trimmed module changes nothing.

Usage: trim_exports.py MODULE.wasm   (rewritten in place)
"""
import sys

UNUSED = {
    "proxy_on_response_headers",
    "proxy_on_response_body",
    "proxy_on_response_trailers",
    "proxy_on_response_metadata",
    "proxy_on_request_metadata",
    "proxy_on_log",
    # A request's end is handled when its context is deleted (src/wasm/http.rs); the root
    # has nothing to finish. Hosts take a missing proxy_on_done as "done".
    "proxy_on_done",
}

EXPORT_SECTION = 7


def read_leb(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def trim(module: bytes, unused=UNUSED) -> tuple[bytes, list[str]]:
    """The module without the `unused` exports, and the names removed."""
    if module[:4] != b"\0asm":
        raise ValueError("not a wasm module")
    out = bytearray(module[:8])
    removed: list[str] = []
    pos = 8
    while pos < len(module):
        section_id = module[pos]
        size, body = read_leb(module, pos + 1)
        end = body + size
        if section_id != EXPORT_SECTION:
            out += module[pos:end]
            pos = end
            continue
        count, p = read_leb(module, body)
        kept = []
        for _ in range(count):
            start = p
            name_len, p = read_leb(module, p)
            name = module[p:p + name_len].decode()
            p += name_len + 1  # the kind byte
            _, p = read_leb(module, p)  # the index
            if name in unused:
                removed.append(name)
            else:
                kept.append(module[start:p])
        if p != end:
            raise ValueError("export section size mismatch")
        content = leb(len(kept)) + b"".join(kept)
        out += bytes([EXPORT_SECTION]) + leb(len(content)) + content
        pos = end
    return bytes(out), removed


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    path = sys.argv[1]
    with open(path, "rb") as f:
        module = f.read()
    trimmed, removed = trim(module)
    if removed:
        with open(path, "wb") as f:
            f.write(trimmed)
        print(f"trim_exports: removed {', '.join(sorted(removed))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
