"""End-to-end harness: a JWKS/OIDC server the tests control, an echo upstream, real
upstreams that route on their own (Flask, Express, Tomcat), tokens minted with PyJWT
(independent of the filter's code), and a real Envoy running the filter.

Everything listens on 127.0.0.1 on free ports; every wait is a bounded poll."""

from .cli import CLI, explain_json, run_cli
from .client import Response, request
from .envoy import (ENVOY, ENVOY_DEFAULT_HCM, RECOMMENDED_HCM, RUNNING, WASM, Envoy, bootstrap,
                    run_envoy_expecting_failure, static_cluster, wasm_filter)
from .registry import Registry
from .servers import ControlledServer, EchoUpstream
from .tokens import Key, b64url, claims, forge, hs256_keyed_with_public_key, jwks
from .upstreams import ExpressUpstream, FlaskUpstream, ServletUpstream
from .waiting import free_port, wait_for

__all__ = [
    "CLI", "explain_json", "run_cli",
    "ENVOY", "ENVOY_DEFAULT_HCM", "RECOMMENDED_HCM", "RUNNING", "WASM", "ControlledServer", "EchoUpstream", "Envoy", "ExpressUpstream",
    "FlaskUpstream", "Key", "Registry", "Response", "ServletUpstream",
    "b64url", "bootstrap", "claims", "forge", "free_port", "hs256_keyed_with_public_key", "jwks",
    "request", "run_envoy_expecting_failure", "static_cluster", "wait_for", "wasm_filter",
]
