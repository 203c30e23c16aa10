"""Signing keys and tokens minted with PyJWT, so the filter is checked against an
implementation that shares no code with it."""

import base64
import hashlib
import hmac
import json
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


class Key:
    """A signing key (EC P-256 for ES256, RSA 2048 otherwise) and its public JWK."""

    def __init__(self, alg, kid):
        self.alg, self.kid = alg, kid
        if alg == "ES256":
            self.private = ec.generate_private_key(ec.SECP256R1())
            algo = jwt.algorithms.ECAlgorithm
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            algo = jwt.algorithms.RSAAlgorithm
        self.jwk = json.loads(algo.to_jwk(self.private.public_key()))
        self.jwk.update(kid=kid, use="sig", alg=alg)

    def sign(self, claims, alg=None, **header):
        """A token signed with this key; `kid` defaults to the key's, `kid=None` drops it,
        `alg` signs with another algorithm of the same key type (e.g. PS256 with RSA)."""
        headers = {"kid": self.kid}
        headers.update(header)
        if headers.get("kid") is None:
            headers.pop("kid")
        return jwt.encode(claims, self.private, algorithm=alg or self.alg, headers=headers)

    def public_pem(self):
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def jwks(*keys):
    """A JWKS document with the public keys."""
    return {"keys": [k.jwk for k in keys]}


def b64url(data):
    if isinstance(data, (dict, list)):
        data = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header, claims, signature=b"sig"):
    """A token with any header and signature bytes (alg none, ...): PyJWT refuses to make these."""
    return f"{b64url(header)}.{b64url(claims)}.{b64url(signature)}"


def hs256_keyed_with_public_key(key, claims):
    """The classic key-confusion forgery: an HS256 MAC keyed with the RSA public key PEM.
    Built by hand because PyJWT refuses a PEM as an HMAC secret."""
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    signing_input = f"{b64url(header)}.{b64url(claims)}".encode()
    mac = hmac.new(key.public_pem(), signing_input, hashlib.sha256).digest()
    return f"{signing_input.decode()}.{b64url(mac)}"


def claims(iss, aud, **extra):
    """Valid claims for ten minutes; `extra` overrides or adds (exp, nbf, scope, ...)."""
    now = int(time.time())
    c = {"iss": iss, "aud": aud, "sub": "svc-a", "iat": now, "exp": now + 600}
    c.update(extra)
    return c
