//! JWKS document -> [`KeySet`] of prepared verifying keys.
//!
//! Keys the filter cannot use (encryption keys, unknown `kty`, other curves, weak RSA) are
//! skipped, not fatal: an IdP may publish keys for other purposes beside its signing keys.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_compact::alg::Ed25519;
use jwt_compact::Algorithm;
use rsa::pkcs8::EncodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{BoxedUint, PublicKey as RsaPublicKey};
use serde::Deserialize;

use crate::alg::{Alg, KeyKind};

pub type EdPublicKey = <Ed25519 as Algorithm>::VerifyingKey;

/// RSA moduli below this are refused (RFC 7518 §3.3 asks for 2048 bits).
const MIN_RSA_BYTES: usize = 256;
/// Larger RSA moduli are refused: verification time grows with the size, and no IdP
/// signs with more.
const MAX_RSA_BITS: usize = 4096;

/// Why a whole JWKS document was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwksError {
    /// Not JSON, or no `keys` array.
    #[error("not a JWKS document: {0}")]
    NotJwks(String),
    /// Parsed, but not one key could be used for verification.
    #[error("no usable signing key in the JWKS ({skipped} skipped)")]
    NoUsableKeys { skipped: usize },
}

/// A verifying key, prepared once per JWKS version.
#[derive(Debug, Clone)]
pub enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    Rsa(RsaPublicKey),
    Ed25519(EdPublicKey),
}

impl PublicKey {
    pub fn kind(&self) -> KeyKind {
        match self {
            PublicKey::P256(_) => KeyKind::P256,
            PublicKey::Rsa(_) => KeyKind::Rsa,
            PublicKey::Ed25519(_) => KeyKind::Ed25519,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Jwk {
    pub kid: Option<String>,
    /// The key's own `alg`, when the JWKS pins one.
    pub alg: Option<Alg>,
    pub key: PublicKey,
    /// SubjectPublicKeyInfo DER: what hosts that verify signatures take, and the key's
    /// identity in the shared verified-token cache.
    pub spki_der: Option<Vec<u8>>,
}

impl Jwk {
    /// Whether a token signed with `alg` may be checked with this key.
    pub fn fits(&self, alg: Alg) -> bool {
        self.key.kind() == alg.key_kind() && self.alg.is_none_or(|a| a == alg)
    }
}

#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    usage: Option<String>,
    #[serde(default)]
    key_ops: Option<Vec<String>>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

impl KeySet {
    /// Parses a JWKS, keeping the keys it can verify with.
    pub fn from_json(bytes: &[u8]) -> Result<KeySet, JwksError> {
        let raw: RawJwks =
            serde_json::from_slice(bytes).map_err(|e| JwksError::NotJwks(e.to_string()))?;
        let total = raw.keys.len();
        let keys: Vec<Jwk> = raw.keys.into_iter().filter_map(parse_key).collect();
        if keys.is_empty() {
            return Err(JwksError::NoUsableKeys { skipped: total });
        }
        Ok(KeySet { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Keys that may have signed a token with this `kid` (if any) and `alg`.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Alg,
    ) -> impl Iterator<Item = &'a Jwk> + 'a {
        self.keys
            .iter()
            .filter(move |k| kid.is_none_or(|kid| k.kid.as_deref() == Some(kid)) && k.fits(alg))
    }
}

fn parse_key(value: serde_json::Value) -> Option<Jwk> {
    let raw: RawJwk = serde_json::from_value(value).ok()?;
    if raw.usage.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    if raw
        .key_ops
        .as_ref()
        .is_some_and(|ops| !ops.iter().any(|o| o == "verify"))
    {
        return None;
    }
    // An `alg` we do not know (say RSA-OAEP) marks a key we must not verify with.
    let alg = match raw.alg.as_deref() {
        None => None,
        Some(name) => Some(Alg::from_token_name(name)?),
    };
    let key = match (raw.kty.as_str(), raw.crv.as_deref()) {
        ("EC", Some("P-256")) => {
            let x = b64_fixed::<32>(raw.x.as_deref()?)?;
            let y = b64_fixed::<32>(raw.y.as_deref()?)?;
            let point = p256::Sec1Point::from_affine_coordinates(&x.into(), &y.into(), false);
            PublicKey::P256(p256::ecdsa::VerifyingKey::from_sec1_point(&point).ok()?)
        }
        ("RSA", _) => {
            let n = b64(raw.n.as_deref()?)?;
            let e = b64(raw.e.as_deref()?)?;
            let (n, e) = (
                BoxedUint::from_be_slice_vartime(&n),
                BoxedUint::from_be_slice_vartime(&e),
            );
            let key = RsaPublicKey::new_with_size_limits(n, e, 1..=MAX_RSA_BITS).ok()?;
            if key.size() < MIN_RSA_BYTES {
                return None;
            }
            PublicKey::Rsa(key)
        }
        ("OKP", Some("Ed25519")) => {
            let x = b64_fixed::<32>(raw.x.as_deref()?)?;
            PublicKey::Ed25519(EdPublicKey::new(x))
        }
        _ => return None,
    };
    let spki_der = match &key {
        PublicKey::P256(k) => Some(p256_spki_der(k)),
        PublicKey::Rsa(k) => k.to_public_key_der().ok().map(|d| d.as_bytes().to_vec()),
        PublicKey::Ed25519(k) => Some(ed25519_spki_der(k.as_ref())),
    };
    let jwk = Jwk {
        kid: raw.kid,
        alg,
        key,
        spki_der,
    };
    // A key whose pinned alg does not fit its kind is unusable.
    if let Some(a) = jwk.alg {
        if !jwk.fits(a) {
            return None;
        }
    }
    Some(jwk)
}

/// SubjectPublicKeyInfo for a P-256 key: the fixed algorithm header (id-ecPublicKey,
/// prime256v1), then the uncompressed point.
fn p256_spki_der(k: &p256::ecdsa::VerifyingKey) -> Vec<u8> {
    const PREFIX: [u8; 26] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    let point = k.to_sec1_point(false);
    [&PREFIX[..], point.as_bytes()].concat()
}

/// SubjectPublicKeyInfo for an Ed25519 key (RFC 8410): the fixed header (id-Ed25519),
/// then the 32 key bytes. The host never checks EdDSA; this names the key in the shared
/// cache.
fn ed25519_spki_der(key: &[u8]) -> Vec<u8> {
    const PREFIX: [u8; 12] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    [&PREFIX[..], key].concat()
}

fn b64(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

fn b64_fixed<const N: usize>(s: &str) -> Option<[u8; N]> {
    b64(s)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7515 A.3 (ES256) and A.2 (RS256) public keys.
    pub const EC_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    pub const EC_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
    pub const RSA_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";

    fn jwks(keys: serde_json::Value) -> Vec<u8> {
        serde_json::json!({ "keys": keys }).to_string().into_bytes()
    }

    #[test]
    fn ec_and_rsa_keys_are_prepared() {
        let set = KeySet::from_json(&jwks(serde_json::json!([
            {"kty":"EC","crv":"P-256","kid":"e","x":EC_X,"y":EC_Y,"use":"sig","alg":"ES256"},
            {"kty":"RSA","kid":"r","n":RSA_N,"e":"AQAB"}
        ])))
        .unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.candidates(Some("e"), Alg::Es256).count(), 1);
        assert_eq!(set.candidates(Some("e"), Alg::Rs256).count(), 0);
        assert_eq!(set.candidates(None, Alg::Rs256).count(), 1);
        assert_eq!(set.candidates(None, Alg::Ps256).count(), 1);
        assert!(set.has_kid("r"));
        assert!(!set.has_kid("x"));
    }

    #[test]
    fn unusable_keys_are_skipped_not_fatal() {
        let set = KeySet::from_json(&jwks(serde_json::json!([
            {"kty":"EC","crv":"P-256","kid":"enc","x":EC_X,"y":EC_Y,"use":"enc"},
            {"kty":"RSA","kid":"oaep","n":RSA_N,"e":"AQAB","alg":"RSA-OAEP"},
            {"kty":"EC","crv":"P-384","kid":"p384","x":EC_X,"y":EC_Y},
            {"kty":"oct","kid":"hmac","k":"c2VjcmV0"},
            {"kty":"EC","crv":"P-256","kid":"offcurve","x":EC_X,"y":EC_X},
            {"kty":"EC","crv":"P-256","kid":"short","x":"AQ","y":EC_Y},
            {"kty":"RSA","kid":"weak","n":"AQAB","e":"AQAB"},
            {"kty":"RSA","kid":"empty-n","n":"","e":"AQAB"},
            {"kty":"RSA","kid":"empty-e","n":RSA_N,"e":""},
            {"kty":"RSA","kid":"e=1","n":RSA_N,"e":"AQ"},
            {"kty":"RSA","kid":"8192-bit","n":URL_SAFE_NO_PAD.encode([0xff; 1024]),"e":"AQAB"},
            {"kty":"RSA","kid":"mislabelled","n":RSA_N,"e":"AQAB","alg":"ES256"},
            {"kty":"EC","crv":"P-256","kid":"ok","x":EC_X,"y":EC_Y},
            "not an object",
            {"kty": 7}
        ])))
        .unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.has_kid("ok"));
    }

    #[test]
    fn documents_without_usable_keys_are_refused() {
        assert!(matches!(
            KeySet::from_json(b"garbage"),
            Err(JwksError::NotJwks(_))
        ));
        assert!(matches!(
            KeySet::from_json(b"{\"nokeys\":[]}"),
            Err(JwksError::NotJwks(_))
        ));
        assert_eq!(
            KeySet::from_json(&jwks(serde_json::json!([]))).unwrap_err(),
            JwksError::NoUsableKeys { skipped: 0 }
        );
        assert_eq!(
            KeySet::from_json(&jwks(serde_json::json!([{"kty":"oct","k":"AA"}]))).unwrap_err(),
            JwksError::NoUsableKeys { skipped: 1 }
        );
    }

    #[test]
    fn keys_carry_their_spki_der() {
        // The RFC 7515 A.3 key, encoded independently (Python cryptography).
        const EXPECTED: &str = "3059301306072a8648ce3d020106082a8648ce3d030107034200047fcdce2770f6c45d4183cbee6fdb4b7b580733357be9ef13bacf6e3c7bd15445c7f144cd1bbd9b7e872cdfedb9eeb9f4b3695d6ea90b24ad8a4623288588e5ad";
        let set = KeySet::from_json(&jwks(serde_json::json!([
            {"kty":"EC","crv":"P-256","kid":"e","x":EC_X,"y":EC_Y},
            {"kty":"RSA","kid":"r","n":RSA_N,"e":"AQAB"}
        ])))
        .unwrap();
        let ec = set.candidates(Some("e"), Alg::Es256).next().unwrap();
        let hex: String = ec
            .spki_der
            .as_ref()
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, EXPECTED);
        let rsa = set.candidates(Some("r"), Alg::Rs256).next().unwrap();
        let der = rsa.spki_der.as_ref().unwrap();
        // SEQUENCE { SEQUENCE { rsaEncryption OID, NULL }, BIT STRING { ... } }
        assert_eq!(&der[..2], &[0x30, 0x82]);
        assert!(der
            .windows(9)
            .any(|w| w == [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]));
        // RFC 8410 §10.1's example Ed25519 public key, as the RFC encodes it.
        let set = KeySet::from_json(&jwks(serde_json::json!([{"kty":"OKP","crv":"Ed25519",
            "x":"Gb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE"}])))
        .unwrap();
        let ed = set.candidates(None, Alg::EdDsa).next().unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(ed.spki_der.as_ref().unwrap()),
            "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE="
        );
    }
}
