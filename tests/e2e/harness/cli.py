"""The native jwt-guard command (`make cli`), run as a user runs it."""

import json
import os
import subprocess

CLI = os.environ.get("JWT_GUARD_CLI", os.path.abspath("target/release/jwt-guard"))


def run_cli(*args, stdin=None, timeout=60):
    """Runs `jwt-guard args...`; returns the CompletedProcess (text mode). Fails the test,
    rather than skipping it, when the binary is not built."""
    if not os.path.exists(CLI):
        raise AssertionError(f"{CLI} is missing: build it with `make cli` (or set JWT_GUARD_CLI)")
    return subprocess.run([CLI, *[str(a) for a in args]], input=stdin, capture_output=True,
                          text=True, timeout=timeout)


def explain_json(*args):
    """`jwt-guard explain --format json args...`: (exit code, parsed output)."""
    p = run_cli("explain", "--format", "json", *args)
    assert p.returncode in (0, 1), f"explain failed ({p.returncode}): {p.stderr}"
    return p.returncode, json.loads(p.stdout)
