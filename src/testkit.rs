//! The test fixtures, one copy for unit tests, `tests/`, the benches and examples (the
//! `testkit` feature): signing keys and their JWKS, token minting, a provider, and a
//! keyring of a config's inline keys. Never part of the filter.

// Fixture set-up may fail loudly: nothing here runs in the filter.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use getrandom::rand_core::UnwrapErr;
use getrandom::SysRng;
use jwt_compact::alg::Ed25519;
use jwt_compact::{Algorithm, AlgorithmSignature};
use p256::ecdsa::signature::Signer;
use p256::elliptic_curve::Generate;
use rand_core::OsRng;
use rsa::sha2::{Digest, Sha256, Sha384, Sha512};
use rsa::traits::{PublicKeyParts, SignatureScheme};
use rsa::{Pkcs1v15Sign, Pss};
use serde_json::{json, Map, Value};

use crate::config::{Config, KeySource, Provider};
use crate::extract::TokenSource;
use crate::flow::{Keyring, Keys, Refetch};
use crate::jwks::KeySet;
use crate::verify::{Acceptance, Alg};

pub const NOW: i64 = 1_800_000_000;
pub const ISS: &str = "https://auth.example.com";
pub const AUD: &str = "https://api.example.com";

/// RFC 7515 A.3: ES256, signed by the key whose x/y are below, no `kid`.
pub const RFC7515_A3: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
const RFC7515_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const RFC7515_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";

pub struct SigningKeys {
    pub ec: p256::ecdsa::SigningKey,
    pub ec_other: p256::ecdsa::SigningKey,
    pub rsa: rsa::PrivateKey,
    pub ed: <Ed25519 as jwt_compact::Algorithm>::SigningKey,
    pub ed_pub: <Ed25519 as jwt_compact::Algorithm>::VerifyingKey,
}

/// Generated once per test binary (RSA key generation is slow).
pub fn signing_keys() -> &'static SigningKeys {
    static KEYS: OnceLock<SigningKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let (ed, ed_pub) = Ed25519::generate(&mut OsRng);
        SigningKeys {
            ec: p256::ecdsa::SigningKey::generate_from_rng(&mut UnwrapErr(SysRng)),
            ec_other: p256::ecdsa::SigningKey::generate_from_rng(&mut UnwrapErr(SysRng)),
            rsa: rsa::PrivateKey::new(&mut SysRng, 2048).expect("rsa keygen"),
            ed,
            ed_pub,
        }
    })
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The JWKS for [`signing_keys`] (kids ec1, rsa1, ed1) plus the RFC 7515 key without a kid.
pub fn jwks_json() -> String {
    let k = signing_keys();
    let point = k.ec.verifying_key().to_sec1_point(false);
    let rsa_pub = k.rsa.to_public_key();
    json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "ec1", "use": "sig", "alg": "ES256",
         "x": b64(point.x().expect("x")), "y": b64(point.y().expect("y"))},
        {"kty": "RSA", "kid": "rsa1", "use": "sig",
         "n": b64(&rsa_pub.n_bytes()), "e": b64(&rsa_pub.e_bytes())},
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed1", "x": b64(k.ed_pub.as_ref())},
        {"kty": "EC", "crv": "P-256", "x": RFC7515_X, "y": RFC7515_Y}
    ]})
    .to_string()
}

pub fn keys() -> KeySet {
    KeySet::from_json(jwks_json().as_bytes()).expect("test jwks")
}

pub fn kid_for(alg: Alg) -> &'static str {
    match alg {
        Alg::Es256 => "ec1",
        Alg::EdDsa => "ed1",
        _ => "rsa1",
    }
}

pub fn provider_with_algs(algs: &[Alg]) -> Provider {
    Provider {
        name: "corp".into(),
        accepts: Acceptance {
            issuer: ISS.into(),
            algorithms: algs.to_vec(),
            clock_skew_s: 60,
            token_types: Vec::new(),
            max_lifetime_s: None,
        },
        audiences: vec![AUD.into()],
        keys: KeySource::Local(Arc::new(keys())),
        token_sources: vec![TokenSource::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        }],
        keep_token: true,
        role_claims: crate::policy::default_role_claims(),
        claims_to_headers: Vec::new(),
        payload_header: None,
        ip_bindings: Vec::new(),
    }
}

pub fn provider() -> Provider {
    provider_with_algs(&[Alg::Es256, Alg::Rs256])
}

pub fn claims(now: i64) -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": "svc-a", "iat": now, "exp": now + 300,
           "scope": "workflow:read validation:write"})
}

/// Signs `claims` (a JSON object, time claims included) with the test key for `alg`.
pub fn mint(alg: Alg, kid: Option<&str>, claims: &Value) -> String {
    sign(&header(alg, kid, None), claims, |input| {
        signature(alg, input)
    })
}

/// An ES256 token under kid `ec1` whose header has `typ`.
pub fn mint_typed(typ: &str, claims: &Value) -> String {
    sign(
        &header(Alg::Es256, Some("ec1"), Some(typ)),
        claims,
        |input| signature(Alg::Es256, input),
    )
}

/// An ES256 token under `kid` signed by a key the JWKS does not hold.
pub fn mint_with_other_key(_alg: Alg, kid: &str, claims: &Value) -> String {
    sign(&header(Alg::Es256, Some(kid), None), claims, |input| {
        es256(&signing_keys().ec_other, input)
    })
}

fn header(alg: Alg, kid: Option<&str>, typ: Option<&str>) -> Value {
    let mut h = Map::new();
    h.insert("alg".into(), alg.name().into());
    if let Some(kid) = kid {
        h.insert("kid".into(), kid.into());
    }
    if let Some(typ) = typ {
        h.insert("typ".into(), typ.into());
    }
    Value::Object(h)
}

/// `header.claims.signature`; claims that are not a JSON object sign as `{}`.
fn sign(header: &Value, claims: &Value, signature: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let claims = if claims.is_object() {
        claims.to_string()
    } else {
        "{}".to_string()
    };
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.as_bytes())
    );
    let sig = signature(input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

/// `alg`'s signature of `input` with the test key for it.
pub fn signature(alg: Alg, input: &[u8]) -> Vec<u8> {
    let k = signing_keys();
    match alg {
        Alg::Es256 => es256(&k.ec, input),
        Alg::EdDsa => Ed25519.sign(&k.ed, input).as_bytes().to_vec(),
        Alg::Rs256 => rsa_sign(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(input)),
        Alg::Rs384 => rsa_sign(Pkcs1v15Sign::new::<Sha384>(), &Sha384::digest(input)),
        Alg::Rs512 => rsa_sign(Pkcs1v15Sign::new::<Sha512>(), &Sha512::digest(input)),
        Alg::Ps256 => rsa_sign(Pss::<Sha256>::new(), &Sha256::digest(input)),
        Alg::Ps384 => rsa_sign(Pss::<Sha384>::new(), &Sha384::digest(input)),
        Alg::Ps512 => rsa_sign(Pss::<Sha512>::new(), &Sha512::digest(input)),
    }
}

fn es256(key: &p256::ecdsa::SigningKey, input: &[u8]) -> Vec<u8> {
    let sig: p256::ecdsa::Signature = key.sign(input);
    sig.to_bytes().to_vec()
}

fn rsa_sign(scheme: impl SignatureScheme, hashed: &[u8]) -> Vec<u8> {
    signing_keys()
        .rsa
        .sign_with_rng(&mut SysRng, scheme, hashed)
        .expect("sign")
}

/// A token with an arbitrary header and signature bytes.
pub fn forge(header: &str, claims: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(sig)
    )
}

/// The keys of a config's providers that have inline keys, always ready; no refetch.
pub struct LocalKeys<'a>(pub &'a Config);

impl Keyring for LocalKeys<'_> {
    fn keys(&mut self, provider: usize) -> Keys {
        match self.0.providers.get(provider).map(|p| &p.keys) {
            Some(KeySource::Local(k)) => Keys::Ready(Arc::clone(k)),
            _ => Keys::Unavailable,
        }
    }

    fn refetch_for_unknown_kid(&mut self, _provider: usize) -> Refetch {
        Refetch::Refused
    }
}

/// Decides a GET of `path` at `authority` carrying `authorization`, for a config whose
/// providers have inline keys, with pure-Rust crypto, at `now`.
pub fn decide(
    cfg: &Config,
    path: &str,
    authority: &str,
    authorization: &str,
    cache: &mut crate::cache::VerifiedCache,
    now: i64,
) -> crate::flow::Outcome {
    let headers = crate::headers::HeaderSnapshot::from_pairs(&[("authorization", authorization)]);
    let req = crate::flow::Request {
        method: "GET",
        authority,
        path,
        headers: &headers,
        source: None,
    };
    let mut rt = crate::flow::Runtime {
        keys: &mut LocalKeys(cfg),
        cache,
        shared: &mut crate::shared_cache::NoSharedTokens,
        crypto: &crate::verify::RustCrypto,
        now,
    };
    crate::flow::evaluate(cfg, &req, &mut rt)
}
