#!/usr/bin/env python3
"""Envoy bootstrap for `make bench`: one Envoy, one listener per scenario, all on 127.0.0.1.

Listeners bind port 0 (the kernel picks a free port, so nothing can clash with other
Envoys running at the same time); run.sh reads the real ports from admin /listeners.
Every listener answers with a direct_response 200 once its HTTP filters let the request
through, so the only difference between scenarios is the filter chain:

  none                no HTTP filter but the router (the ceiling)
  native              envoy.filters.http.jwt_authn (JWT cache off) + envoy.filters.http.rbac on scope
  native-cache        the same with jwt_authn's jwt_cache_config (jwt_cache_size CACHE)
  jwt-guard           jwt-guard wasm (V8), cache.max_entries and shared_entries CACHE (same size as native-cache)
  jwt-guard-nocache   jwt-guard wasm (V8), cache.max_entries 0 (no cache, shared or not)
  jwt-guard-rust      (optional) no cache, "crypto": "rust": pure-Rust signatures inside the VM
  wasm-floor          examples/floor_filter.rs: a proxy-wasm filter that only reads the headers
                      and the clock (--floor-wasm), what any such filter pays; answers 200 to all
                      instead of Envoy's BoringSSL

Usage: config.py --out FILE --jwks JWKS --claims CLAIMS --wasm WASM --listeners a,b,c
"""
import argparse
import json
import sys

ALL = ["none", "native", "native-cache", "jwt-guard", "jwt-guard-nocache", "jwt-guard-rust",
       "wasm-floor"]
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def jwt_authn(jwks: str, c: dict, cache: int | None) -> dict:
    p = {
        "issuer": c["issuer"],
        "audiences": [c["audience"]],
        "local_jwks": {"inline_string": jwks},
        "from_headers": [{"name": "Authorization", "value_prefix": "Bearer "}],
        "forward": True,
        "clock_skew_seconds": 60,
        "payload_in_metadata": "jwt_payload",
        # "scope" is one space-separated string; as a list RBAC can match one element.
        "normalize_payload_in_metadata": {"space_delimited_claims": ["scope"]},
    }
    if cache is not None:
        p["jwt_cache_config"] = {"jwt_cache_size": cache}
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"bench": p},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
        },
    }


def rbac_scope(c: dict) -> dict:
    return {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {
                "action": "ALLOW",
                "policies": {"scope": {
                    "permissions": [{"any": True}],
                    # Principal.metadata is deprecated; sourced_metadata reads dynamic metadata.
                    "principals": [{"sourced_metadata": {"metadata_matcher": {
                        "filter": "envoy.filters.http.jwt_authn",
                        "path": [{"key": "jwt_payload"}, {"key": "scope"}],
                        "value": {"list_match": {"one_of": {
                            "string_match": {"exact": c["scope_required"]}}}},
                    }}}],
                }},
            },
        },
    }


def wasm_filter(name: str, wasm: str, vm_id: str, configuration: str) -> dict:
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": vm_id,
                "vm_config": {
                    "vm_id": vm_id,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": configuration,
                },
                "fail_open": False,
            },
        },
    }


def jwt_guard(name: str, wasm: str, jwks: str, c: dict, cache: int, crypto: str | None = None) -> dict:
    plugin = {
        "realm": "bench",
        "providers": [{"name": "bench", "issuer": c["issuer"], "audiences": [c["audience"]],
                       "local_jwks": {"inline": jwks}}],
        "rules": [{"match": {"path_prefix": "/"}, "require": {"scopes": [c["scope_required"]]}}],
        "default": "deny",
        # The shared cache (one copy for all workers) as large as the per-worker one; with
        # max_entries 0 both are off.
        "cache": {"max_entries": cache, "shared_entries": min(cache, 100000)},
    }
    if crypto:
        plugin["crypto"] = crypto
    return wasm_filter(name, wasm, "jwt_guard", json.dumps(plugin, separators=(",", ":")))


def listener(name: str, filters: list) -> dict:
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": HCM,
                "stat_prefix": name,
                "codec_type": "AUTO",
                "route_config": {"virtual_hosts": [{
                    "name": "all", "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"},
                                "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}],
                }]},
                "http_filters": filters + [{
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                }],
            },
        }]}],
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--jwks", required=True)
    ap.add_argument("--claims", required=True)
    ap.add_argument("--wasm", required=True)
    ap.add_argument("--floor-wasm", default="")
    ap.add_argument("--listeners", default=",".join(ALL))
    ap.add_argument("--cache", type=int, default=10000)
    args = ap.parse_args()
    with open(args.jwks) as f:
        jwks = f.read().strip()
    with open(args.claims) as f:
        c = json.load(f)
    names = [n for n in args.listeners.split(",") if n]
    unknown = [n for n in names if n not in ALL]
    if unknown:
        print(f"config.py: unknown listener(s) {unknown}; known: {ALL}", file=sys.stderr)
        return 2

    build = {
        "none": lambda: [],
        "native": lambda: [jwt_authn(jwks, c, None), rbac_scope(c)],
        "native-cache": lambda: [jwt_authn(jwks, c, args.cache), rbac_scope(c)],
        "jwt-guard": lambda: [jwt_guard("jwt_guard_cache", args.wasm, jwks, c, args.cache)],
        "jwt-guard-nocache": lambda: [jwt_guard("jwt_guard_nocache", args.wasm, jwks, c, 0)],
        "jwt-guard-rust": lambda: [jwt_guard("jwt_guard_rust", args.wasm, jwks, c, 0, "rust")],
        "wasm-floor": lambda: [wasm_filter("floor", args.floor_wasm, "floor", "")],
    }
    if "wasm-floor" in names and not args.floor_wasm:
        print("config.py: wasm-floor needs --floor-wasm", file=sys.stderr)
        return 2
    bootstrap = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": [listener(n, build[n]()) for n in names]},
    }
    with open(args.out, "w") as f:
        json.dump(bootstrap, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
