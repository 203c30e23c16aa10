//! Shared by the scenarios: the built filter, signing keys, tokens and plugin configs.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::sync::OnceLock;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_guard_wasmtime_host::{Filter, LocalResponse, Options, Proxy, Request, Verdict, Worker};
use p256::ecdsa::signature::{SignatureEncoding, Signer};
use rand_core::OsRng;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};

/// The fake clock starts here (seconds since the epoch); tokens are minted around it.
pub const NOW: u64 = 1_800_000_000;
pub const ISS: &str = "https://auth.example.com";
pub const AUD: &str = "https://api.example.com";
pub const CLUSTER: &str = "auth_example";
pub const JWKS_AUTHORITY: &str = "auth.example.com";
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// The identity header the configs ask for (the token's `sub`).
pub const SUB_HEADER: &str = "x-jwt-sub";

/// The built module, compiled once per test binary. `make test-host` names it in
/// JWT_GUARD_WASM; by default, the release build of the repository this crate is in.
pub fn filter() -> &'static Filter {
    static FILTER: OnceLock<Filter> = OnceLock::new();
    FILTER.get_or_init(|| {
        let path = std::env::var("JWT_GUARD_WASM").unwrap_or_else(|_| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../target/wasm32-wasip1/release/jwt_guard.wasm"
            )
            .into()
        });
        Filter::load(&path).unwrap_or_else(|e| panic!("{e:?} (run `make build` first)"))
    })
}

pub fn proxy() -> Proxy {
    Proxy::new(filter(), Duration::from_secs(NOW))
}

/// A worker of `proxy`, configured with `config` (which must be accepted).
pub fn worker(proxy: &Proxy, options: Options, config: &Value) -> Worker {
    let mut w = proxy.worker(options).unwrap();
    assert!(w.configure(&config.to_string()).unwrap(), "config refused");
    w
}

pub struct Keys {
    pub ec: p256::ecdsa::SigningKey,
    pub rsa: rsa::RsaPrivateKey,
    /// Not in the JWKS: for bad signatures.
    pub ec_other: p256::ecdsa::SigningKey,
}

/// Generated once per test binary (RSA key generation takes a while).
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        ec: p256::ecdsa::SigningKey::random(&mut OsRng),
        rsa: rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap(),
        ec_other: p256::ecdsa::SigningKey::random(&mut OsRng),
    })
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The JWKS of [`keys`]: kid `ec1` (ES256) and `rsa1` (RS256).
pub fn jwks() -> Value {
    let k = keys();
    let point = k.ec.verifying_key().to_encoded_point(false);
    let rsa = k.rsa.to_public_key();
    json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "ec1", "use": "sig", "alg": "ES256",
         "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())},
        {"kty": "RSA", "kid": "rsa1", "use": "sig", "alg": "RS256",
         "n": b64(&rsa.n().to_bytes_be()), "e": b64(&rsa.e().to_bytes_be())}
    ]})
}

/// Claims valid at [`NOW`] with the `workflow:read` scope.
pub fn claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": "svc-a", "iat": NOW, "exp": NOW + 300,
           "scope": "workflow:read"})
}

fn signing_input(alg: &str, kid: &str, claims: &Value) -> String {
    let header = json!({"alg": alg, "typ": "JWT", "kid": kid});
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

pub fn es256_with(key: &p256::ecdsa::SigningKey, claims: &Value) -> String {
    let input = signing_input("ES256", "ec1", claims);
    let sig: p256::ecdsa::Signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&sig.to_bytes()))
}

pub fn es256(claims: &Value) -> String {
    es256_with(&keys().ec, claims)
}

pub fn rs256(claims: &Value) -> String {
    let input = signing_input("RS256", "rsa1", claims);
    let key = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(keys().rsa.clone());
    format!("{input}.{}", b64(&key.sign(input.as_bytes()).to_bytes()))
}

fn provider(keys: Value) -> Value {
    let mut p = json!({
        "name": "corp",
        "issuer": ISS,
        "audiences": [AUD],
        "algorithms": ["ES256", "RS256"],
        "claims_to_headers": [{"claim": "sub", "header": SUB_HEADER}]
    });
    p.as_object_mut()
        .unwrap()
        .extend(keys.as_object().unwrap().clone());
    p
}

fn config(provider: Value) -> Value {
    json!({
        "providers": [provider],
        "rules": [
            {"match": {"path_prefix": "/health"}, "allow": "anonymous"},
            {"match": {"methods": ["GET"], "path_prefix": "/workflows"},
             "require": {"providers": ["corp"], "scopes": ["workflow:read"]}}
        ]
    })
}

/// Keys inline in the config.
pub fn local_config() -> Value {
    config(provider(json!({"local_jwks": {"inline": jwks()}})))
}

/// Keys fetched from `CLUSTER`.
pub fn remote_config() -> Value {
    let uri = format!("https://{JWKS_AUTHORITY}{JWKS_PATH}");
    config(provider(
        json!({"remote_jwks": {"uri": uri, "cluster": CLUSTER}}),
    ))
}

/// A GET of `path`, with `token` as a bearer token.
pub fn get(w: &mut Worker, path: &str, token: Option<&str>) -> Request {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![
        (":method", "GET"),
        (":path", path),
        (":authority", "api.example.com"),
        (":scheme", "https"),
    ];
    if let Some(b) = &bearer {
        headers.push(("authorization", b));
    }
    w.request(&headers).unwrap()
}

/// The local reply a request got; fails the test if it got none.
pub fn answered(w: &Worker, r: Request) -> LocalResponse {
    match w.verdict(r.id) {
        Verdict::Answered(resp) => resp,
        other => panic!("request {} not answered: {other:?}", r.id),
    }
}

/// The headers a request went upstream with; fails the test if it did not.
pub fn forwarded(w: &Worker, r: Request) -> Vec<(String, String)> {
    match w.verdict(r.id) {
        Verdict::Forwarded(headers) => headers,
        other => panic!("request {} not forwarded: {other:?}", r.id),
    }
}

/// The stable code (`AUTH_1xx`) of a local reply's JSON body.
pub fn code(resp: &LocalResponse) -> String {
    let body: Value = serde_json::from_slice(&resp.body).unwrap();
    body["code"].as_str().unwrap_or_default().to_string()
}

/// Answers the worker's one pending JWKS callout with `status` and `body`.
pub fn answer_jwks(w: &mut Worker, status: u16, body: &str) {
    let calls = w.pending_http_calls();
    assert_eq!(calls.len(), 1, "expected one pending callout: {calls:?}");
    w.answer_http_call(calls[0].token, Some(status), &[], body.as_bytes())
        .unwrap();
}
