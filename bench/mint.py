#!/usr/bin/env python3
"""Keys, JWKS and token sets for `make bench`.

Writes into OUT (default bench/out):
  jwks.json                   public keys (kids bench-es256, bench-rs256)
  tokens/es256-one.txt        one ES256 token (repeated by wrk)
  tokens/es256-many.txt       N distinct ES256 tokens (distinct sub/jti), one per line
  tokens/rs256-one.txt        the same for RS256 (RSA-2048)
  tokens/rs256-many.txt
  tokens/es256-fresh.txt      with --fresh M: M more distinct tokens per algorithm, for the
  tokens/rs256-fresh.txt      several-workers run (never primed)
  tokens/es256-noscope.txt    one ES256 token without the required scope (must get 403)
  claims.json                 issuers, audience and scope the tokens carry

Every token: one issuer (both keys in its JWKS), aud, sub, jti, iat, nbf, exp = now + TTL (default 1 h),
scope "openid bench:read profile". Keys are fresh on every run and never leave OUT.
"""
import argparse
import json
import os
import sys
import time
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

# One issuer with both keys, as a real IdP has: each side then has ONE provider, like for
# like (two providers under requires_any make jwt_authn try the wrong one first).
ISS = "https://issuer.bench.local"
AUD = "https://api.bench.local"
SCOPE_REQUIRED = "bench:read"
SCOPE = "openid bench:read profile"


def b64u_int(n: int, length: int | None = None) -> str:
    import base64

    raw = n.to_bytes(length or (n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    ap.add_argument("--count", type=int, default=5000, help="distinct tokens per algorithm")
    ap.add_argument("--fresh", type=int, default=0,
                    help="distinct tokens per algorithm for the several-workers run (0: none)")
    ap.add_argument("--ttl", type=int, default=3600, help="seconds until exp")
    args = ap.parse_args()
    if args.count < 1:
        print("mint.py: --count must be >= 1", file=sys.stderr)
        return 2

    tok_dir = os.path.join(args.out, "tokens")
    os.makedirs(tok_dir, exist_ok=True)

    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_pub = ec_key.public_key().public_numbers()
    rsa_pub = rsa_key.public_key().public_numbers()
    jwks = {
        "keys": [
            {"kty": "EC", "crv": "P-256", "kid": "bench-es256", "use": "sig", "alg": "ES256",
             "x": b64u_int(ec_pub.x, 32), "y": b64u_int(ec_pub.y, 32)},
            {"kty": "RSA", "kid": "bench-rs256", "use": "sig", "alg": "RS256",
             "n": b64u_int(rsa_pub.n), "e": b64u_int(rsa_pub.e)},
        ]
    }
    with open(os.path.join(args.out, "jwks.json"), "w") as f:
        json.dump(jwks, f, separators=(",", ":"))

    now = int(time.time())
    sets = {
        "es256": ("ES256", ec_key, "bench-es256", ISS),
        "rs256": ("RS256", rsa_key, "bench-rs256", ISS),
    }
    for name, (alg, key, kid, iss) in sets.items():
        def token(i: int) -> str:
            claims = {
                "iss": iss, "aud": AUD, "sub": f"bench-client-{i}", "jti": str(uuid.uuid4()),
                "iat": now, "nbf": now - 5, "exp": now + args.ttl, "scope": SCOPE,
            }
            return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})

        with open(os.path.join(tok_dir, f"{name}-one.txt"), "w") as f:
            f.write(token(0) + "\n")
        with open(os.path.join(tok_dir, f"{name}-many.txt"), "w") as f:
            f.writelines(token(i) + "\n" for i in range(1, args.count + 1))
        if args.fresh:
            with open(os.path.join(tok_dir, f"{name}-fresh.txt"), "w") as f:
                first = args.count + 1
                f.writelines(token(i) + "\n" for i in range(first, first + args.fresh))

    noscope = jwt.encode(
        {"iss": ISS, "aud": AUD, "sub": "bench-noscope", "jti": str(uuid.uuid4()),
         "iat": now, "exp": now + args.ttl, "scope": "openid profile"},
        ec_key, algorithm="ES256", headers={"kid": "bench-es256"})
    with open(os.path.join(tok_dir, "es256-noscope.txt"), "w") as f:
        f.write(noscope + "\n")

    with open(os.path.join(args.out, "claims.json"), "w") as f:
        json.dump({"issuer": ISS, "audience": AUD,
                   "scope_required": SCOPE_REQUIRED, "scope": SCOPE,
                   "exp": now + args.ttl, "count": args.count}, f, indent=2)
    print(f"mint.py: {args.count} distinct tokens per algorithm (+1 repeated), exp in {args.ttl}s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
