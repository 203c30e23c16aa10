//! Token -> verified claims: alg allow-list, key lookup by `kid`, signature, then
//! `exp`/`nbf` with skew, `iss` and `aud`.
//!
//! A token only becomes [`Verified`] through [`verify`]; until then it is an
//! [`UntrustedToken`] whose claims may be peeked at (to pick a provider) but never trusted.

use jwt_compact::{ParseError, UntrustedToken};
use serde::Deserialize;
use serde_json::{Map, Value};

pub use crate::alg::Alg;
use crate::jwks::{Jwk, KeySet};
pub use crate::rust_crypto::RustCrypto;

/// What a provider accepts of a token: all that verification needs of its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acceptance {
    /// `iss` must equal it exactly.
    pub issuer: String,
    /// Allowed `alg`s.
    pub algorithms: Vec<Alg>,
    /// Leeway on `exp` and `nbf`.
    pub clock_skew_s: u64,
    /// Accepted `typ` values, normalized by [`normalize_typ`] (empty: any).
    pub token_types: Vec<String>,
    /// The longest `exp - iat` accepted (then `iat` is required).
    pub max_lifetime_s: Option<u64>,
}

/// Why a token was refused. Each maps to one stable deny code (see `deny.rs`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Not a compact JWS: wrong number of parts, bad base64 or header JSON, empty, or
    /// `crit` header parameters we do not understand.
    #[error("the token is malformed")]
    Malformed,
    /// The header's `alg` is not in the provider's allow-list (this covers `none` and HS*).
    #[error("the token's algorithm is not allowed")]
    AlgNotAllowed { alg: String },
    /// The header names a `kid` the provider's JWKS does not have.
    #[error("no key matches the token's key id")]
    UnknownKid { kid: String },
    /// No `kid`, and no key of the provider fits the token's algorithm.
    #[error("no key fits the token's algorithm")]
    NoFittingKey,
    #[error("the token signature is invalid")]
    BadSignature,
    /// The payload is not a JSON object of claims, or a time claim is not a number.
    #[error("the token claims are malformed")]
    MalformedClaims,
    #[error("the token has no {claim} claim")]
    MissingClaim { claim: &'static str },
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token issuer is not accepted")]
    IssuerMismatch,
    #[error("the token audience is not accepted")]
    AudienceMismatch,
    /// The header's `typ` is not one of the provider's `token_types` (an ID token where an
    /// access token is wanted, say).
    #[error("the token type is not accepted")]
    TypeNotAccepted,
    /// `exp - iat` is longer than the provider's `max_lifetime_s`.
    #[error("the token's lifetime is longer than accepted")]
    LifetimeTooLong,
}

/// Header fields jwt-compact leaves to us.
#[derive(Debug, Clone, Deserialize)]
pub struct HeaderExt {
    #[serde(default)]
    crit: Option<Value>,
}

/// A token split and decoded, nothing in it trusted yet.
#[derive(Debug)]
pub struct Untrusted<'a> {
    token: UntrustedToken<'a, HeaderExt>,
    /// `header.payload`: the bytes the signature covers.
    signing_input: &'a str,
}

/// Longest token accepted; larger ones are refused before any decoding work.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Splits and decodes a compact JWS without trusting anything in it.
pub fn parse(token: &str) -> Result<Untrusted<'_>, VerifyError> {
    // Header and payload must be there; an empty signature is left to the algorithm check,
    // so `alg: none` tokens are reported as such.
    if token.len() > MAX_TOKEN_BYTES || token.split('.').take(2).any(str::is_empty) {
        return Err(VerifyError::Malformed);
    }
    let t = UntrustedToken::<HeaderExt>::try_from(token)
        .map_err(|_: ParseError| VerifyError::Malformed)?;
    if t.header().other_fields.crit.is_some() {
        return Err(VerifyError::Malformed);
    }
    let signing_input = token.rsplit_once('.').map_or("", |(input, _)| input);
    Ok(Untrusted {
        token: t,
        signing_input,
    })
}

/// The `iss` the token claims, unverified: only to choose which provider verifies it.
/// A payload that is not a JSON object of claims is malformed; one without a string
/// `iss` names no issuer.
pub fn unverified_issuer(t: &Untrusted<'_>) -> Result<Option<String>, VerifyError> {
    let claims = t
        .token
        .deserialize_claims_unchecked::<Map<String, Value>>()
        .map_err(|_| VerifyError::Malformed)?;
    Ok(claims
        .custom
        .get("iss")
        .and_then(Value::as_str)
        .map(str::to_string))
}

/// A `typ` as compared: lower case, without `application/` (RFC 7515 §4.1.9 lets a
/// token omit it, so `at+jwt` and `application/at+JWT` are the same type).
pub fn normalize_typ(typ: &str) -> String {
    let t = typ.to_ascii_lowercase();
    t.strip_prefix("application/")
        .map(str::to_string)
        .unwrap_or(t)
}

/// A token whose signature was checked against a provider's keys. Its claims are
/// checked by [`check_claims`] on every use, cached or not.
#[derive(Debug, Clone)]
pub struct Verified {
    /// All claims but the time claims, which jwt-compact keeps typed.
    pub claims: Map<String, Value>,
    pub expires_at: i64,
    pub not_before: Option<i64>,
    pub issued_at: Option<i64>,
    pub kid: Option<String>,
    pub alg: Alg,
}

/// Verifies `t` for a provider that `accepts` it, with `keys`, at `now` (Unix seconds). `audiences`
/// are the accepted audiences: the provider's, or a rule's override (empty: unchecked).
pub fn verify(
    t: &Untrusted<'_>,
    accepts: &Acceptance,
    audiences: &[String],
    keys: &KeySet,
    now: i64,
) -> Result<Verified, VerifyError> {
    let v = verify_signature(t, accepts, keys, &RustCrypto)?;
    check_claims(&v, accepts, audiences, now)?;
    Ok(v)
}

/// The costly, cacheable half: algorithm allow-list, key lookup and signature. An `exp`
/// is required here, so that every cached token has an end.
pub fn verify_signature(
    t: &Untrusted<'_>,
    accepts: &Acceptance,
    keys: &KeySet,
    crypto: &dyn Crypto,
) -> Result<Verified, VerifyError> {
    let name = t.token.algorithm();
    let alg = Alg::from_token_name(name)
        .filter(|a| accepts.algorithms.contains(a))
        .ok_or_else(|| VerifyError::AlgNotAllowed {
            alg: name.chars().take(32).collect(),
        })?;
    if !accepts.token_types.is_empty() {
        let typ = t.token.header().token_type.as_deref().map(normalize_typ);
        if !typ.is_some_and(|typ| accepts.token_types.contains(&typ)) {
            return Err(VerifyError::TypeNotAccepted);
        }
    }
    let kid = t.token.header().key_id.as_deref();
    if let Some(kid) = kid {
        if !keys.has_kid(kid) {
            return Err(VerifyError::UnknownKid {
                kid: kid.chars().take(128).collect(),
            });
        }
    }
    let input = t.signing_input.as_bytes();
    let signature = t.token.signature_bytes();
    let mut tried = false;
    let mut valid = false;
    for jwk in keys.candidates(kid, alg) {
        tried = true;
        valid = crypto
            .verify(alg, jwk, input, signature)
            .unwrap_or_else(|| RustCrypto.verify_key(alg, &jwk.key, input, signature));
        if valid {
            break;
        }
    }
    if !tried {
        return Err(VerifyError::NoFittingKey);
    }
    if !valid {
        return Err(VerifyError::BadSignature);
    }
    let claims = t
        .token
        .deserialize_claims_unchecked::<Map<String, Value>>()
        .map_err(|_| VerifyError::MalformedClaims)?;
    let expires_at = claims
        .expiration
        .ok_or(VerifyError::MissingClaim { claim: "exp" })?
        .timestamp();
    Ok(Verified {
        not_before: claims.not_before.map(|t| t.timestamp()),
        issued_at: claims.issued_at.map(|t| t.timestamp()),
        claims: claims.custom,
        expires_at,
        kid: kid.map(str::to_string),
        alg,
    })
}

/// The cheap half, run on every request: `exp`/`nbf` with skew, the lifetime, `iss`, `aud`.
pub fn check_claims(
    v: &Verified,
    accepts: &Acceptance,
    audiences: &[String],
    now: i64,
) -> Result<(), VerifyError> {
    let skew = i64::try_from(accepts.clock_skew_s).unwrap_or(i64::MAX);
    if now > v.expires_at.saturating_add(skew) {
        return Err(VerifyError::Expired);
    }
    if v.not_before
        .is_some_and(|nbf| now.saturating_add(skew) < nbf)
    {
        return Err(VerifyError::NotYetValid);
    }
    if let Some(max) = accepts.max_lifetime_s {
        let iat = v
            .issued_at
            .ok_or(VerifyError::MissingClaim { claim: "iat" })?;
        let lifetime = v.expires_at.saturating_sub(iat);
        if lifetime > i64::try_from(max).unwrap_or(i64::MAX) {
            return Err(VerifyError::LifetimeTooLong);
        }
    }
    check_issuer(&v.claims, &accepts.issuer)?;
    check_audience(&v.claims, audiences)
}

/// Who checks signatures. Pure Rust always can; a host (Envoy's BoringSSL) may be faster.
pub trait Crypto {
    /// `Some(valid)` when this backend checked the signature; `None` to leave it to the
    /// pure-Rust fallback (an algorithm or key it does not handle, or no host support).
    fn verify(&self, alg: Alg, key: &Jwk, signing_input: &[u8], signature: &[u8]) -> Option<bool>;
}

impl Crypto for RustCrypto {
    fn verify(&self, alg: Alg, key: &Jwk, input: &[u8], signature: &[u8]) -> Option<bool> {
        Some(self.verify_key(alg, &key.key, input, signature))
    }
}

fn check_issuer(claims: &Map<String, Value>, issuer: &str) -> Result<(), VerifyError> {
    match claims.get("iss") {
        Some(Value::String(iss)) if iss == issuer => Ok(()),
        _ => Err(VerifyError::IssuerMismatch),
    }
}

fn check_audience(claims: &Map<String, Value>, accepted: &[String]) -> Result<(), VerifyError> {
    if accepted.is_empty() {
        return Ok(());
    }
    let fits = |v: &Value| v.as_str().is_some_and(|a| accepted.iter().any(|x| x == a));
    let ok = match claims.get("aud") {
        Some(Value::Array(list)) => list.iter().any(fits),
        Some(v) => fits(v),
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(VerifyError::AudienceMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;

    #[test]
    fn es256_and_rs256_tokens_verify() {
        let keys = keys();
        for alg in [Alg::Es256, Alg::Rs256, Alg::Ps256, Alg::Rs512, Alg::EdDsa] {
            let p = provider_with_algs(&[alg]);
            let tok = mint(alg, Some(kid_for(alg)), &claims(NOW));
            let v = verify(&parse(&tok).unwrap(), &p.accepts, &p.audiences, &keys, NOW)
                .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            assert_eq!(v.claims["sub"], "svc-a");
            assert_eq!(v.expires_at, NOW + 300);
            assert_eq!(v.alg, alg);
        }
    }

    #[test]
    fn rfc7515_reference_tokens_verify_signature() {
        // RFC 7515 A.3 (ES256, no kid): the signature is valid, so the first check to
        // fail is its 2011 expiry; a flipped signature bit fails the signature instead.
        let keys = keys();
        let p = provider();
        let err = verify(
            &parse(RFC7515_A3).unwrap(),
            &p.accepts,
            &p.audiences,
            &keys,
            NOW,
        )
        .unwrap_err();
        assert_eq!(err, VerifyError::Expired);
        let flipped = RFC7515_A3.replace("Eg8L38V", "Eg8L39V");
        assert_ne!(flipped, RFC7515_A3);
        let err = verify(
            &parse(&flipped).unwrap(),
            &p.accepts,
            &p.audiences,
            &keys,
            NOW,
        )
        .unwrap_err();
        assert_eq!(err, VerifyError::BadSignature);
    }

    #[test]
    fn token_without_kid_tries_keys_that_fit() {
        let tok = mint(Alg::Es256, None, &claims(NOW));
        assert!(verify(
            &parse(&tok).unwrap(),
            &provider().accepts,
            &[AUD.to_string()],
            &keys(),
            NOW
        )
        .is_ok());
    }

    #[test]
    fn time_claims_with_skew() {
        let keys = keys();
        let p = provider();
        let mut c = claims(NOW);
        c["exp"] = (NOW - 61).into();
        let tok = mint(Alg::Es256, Some("ec1"), &c);
        assert_eq!(
            verify(&parse(&tok).unwrap(), &p.accepts, &p.audiences, &keys, NOW).unwrap_err(),
            VerifyError::Expired
        );
        c["exp"] = (NOW - 59).into();
        let tok = mint(Alg::Es256, Some("ec1"), &c);
        assert!(verify(&parse(&tok).unwrap(), &p.accepts, &p.audiences, &keys, NOW).is_ok());

        let mut c = claims(NOW);
        c["nbf"] = (NOW + 61).into();
        let tok = mint(Alg::Es256, Some("ec1"), &c);
        assert_eq!(
            verify(&parse(&tok).unwrap(), &p.accepts, &p.audiences, &keys, NOW).unwrap_err(),
            VerifyError::NotYetValid
        );
        c["nbf"] = (NOW + 59).into();
        let tok = mint(Alg::Es256, Some("ec1"), &c);
        assert!(verify(&parse(&tok).unwrap(), &p.accepts, &p.audiences, &keys, NOW).is_ok());

        let mut c = claims(NOW);
        c.as_object_mut().unwrap().remove("exp");
        let tok = mint(Alg::Es256, Some("ec1"), &c);
        assert_eq!(
            verify(&parse(&tok).unwrap(), &p.accepts, &p.audiences, &keys, NOW).unwrap_err(),
            VerifyError::MissingClaim { claim: "exp" }
        );
    }

    #[test]
    fn extreme_time_claims_do_not_panic() {
        let keys = keys();
        let p = provider();
        for (claim, v) in [
            ("exp", i64::MAX),
            ("exp", i64::MIN),
            ("nbf", i64::MAX),
            ("nbf", i64::MIN),
        ] {
            let mut c = claims(NOW);
            c[claim] = v.into();
            let tok = mint(Alg::Es256, Some("ec1"), &c);
            let _ = verify(&parse(&tok).unwrap(), &p.accepts, &p.audiences, &keys, NOW);
        }
        let mut c = claims(NOW);
        c["exp"] = "tomorrow".into();
        let tok = mint(Alg::Es256, Some("ec1"), &c);
        assert_eq!(
            verify(&parse(&tok).unwrap(), &p.accepts, &p.audiences, &keys, NOW).unwrap_err(),
            VerifyError::MalformedClaims
        );
    }

    #[test]
    fn issuer_and_audience() {
        let keys = keys();
        let p = provider();
        let mut c = claims(NOW);
        c["iss"] = "https://evil.example".into();
        let tok = mint(Alg::Es256, Some("ec1"), &c);
        assert_eq!(
            verify(&parse(&tok).unwrap(), &p.accepts, &p.audiences, &keys, NOW).unwrap_err(),
            VerifyError::IssuerMismatch
        );

        let mut c = claims(NOW);
        c["aud"] = "https://other.example".into();
        let tok = mint(Alg::Es256, Some("ec1"), &c);
        assert_eq!(
            verify(&parse(&tok).unwrap(), &p.accepts, &p.audiences, &keys, NOW).unwrap_err(),
            VerifyError::AudienceMismatch
        );

        c["aud"] = serde_json::json!(["https://other.example", AUD]);
        let tok = mint(Alg::Es256, Some("ec1"), &c);
        assert!(verify(&parse(&tok).unwrap(), &p.accepts, &p.audiences, &keys, NOW).is_ok());
    }

    #[test]
    fn algorithm_and_key_selection() {
        let keys = keys();
        let p = provider(); // ES256 and RS256
        let tok = mint(Alg::Ps256, Some("rsa1"), &claims(NOW));
        assert!(matches!(
            verify(&parse(&tok).unwrap(), &p.accepts, &p.audiences, &keys, NOW),
            Err(VerifyError::AlgNotAllowed { .. })
        ));
        let tok = mint(Alg::Es256, Some("nope"), &claims(NOW));
        assert!(matches!(
            verify(&parse(&tok).unwrap(), &p.accepts, &p.audiences, &keys, NOW),
            Err(VerifyError::UnknownKid { .. })
        ));
        // kid of an RSA key on an ES256 token: no key fits.
        let tok = mint(Alg::Es256, Some("rsa1"), &claims(NOW));
        assert_eq!(
            verify(&parse(&tok).unwrap(), &p.accepts, &p.audiences, &keys, NOW).unwrap_err(),
            VerifyError::NoFittingKey
        );
    }

    #[test]
    fn unsigned_alg_none_is_an_algorithm_refusal() {
        let tok = forge(r#"{"alg":"none"}"#, &claims(NOW), b"");
        assert!(tok.ends_with('.'));
        assert!(matches!(
            verify(
                &parse(&tok).unwrap(),
                &provider().accepts,
                &[AUD.to_string()],
                &keys(),
                NOW
            ),
            Err(VerifyError::AlgNotAllowed { .. })
        ));
    }

    #[test]
    fn forged_tokens_are_refused() {
        let keys = keys();
        let p = provider();
        // alg none, and HS256 keyed with the public key: never accepted.
        for header in [
            r#"{"alg":"none","kid":"ec1"}"#,
            r#"{"alg":"HS256","kid":"rsa1"}"#,
        ] {
            let tok = forge(header, &claims(NOW), b"sig");
            assert!(matches!(
                verify(&parse(&tok).unwrap(), &p.accepts, &p.audiences, &keys, NOW),
                Err(VerifyError::AlgNotAllowed { .. })
            ));
        }
        // A valid signature over other claims.
        let good = mint(Alg::Es256, Some("ec1"), &claims(NOW));
        let mut c = claims(NOW);
        c["sub"] = "admin".into();
        let other = mint(Alg::Es256, Some("ec1"), &c);
        let spliced = format!(
            "{}.{}",
            other.rsplit_once('.').unwrap().0,
            good.rsplit_once('.').unwrap().1
        );
        assert_eq!(
            verify(
                &parse(&spliced).unwrap(),
                &p.accepts,
                &p.audiences,
                &keys,
                NOW
            )
            .unwrap_err(),
            VerifyError::BadSignature
        );
        // A signature by a key the JWKS does not have, under its kid.
        let tok = mint_with_other_key(Alg::Es256, "ec1", &claims(NOW));
        assert_eq!(
            verify(&parse(&tok).unwrap(), &p.accepts, &p.audiences, &keys, NOW).unwrap_err(),
            VerifyError::BadSignature
        );
    }

    #[test]
    fn malformed_tokens() {
        for t in [
            "",
            "abc",
            "a.b",
            "a.b.c",
            "....",
            "eyJhbGciOiJFUzI1NiJ9..",
            &"a".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert!(parse(t).is_err(), "{t}");
        }
        let tok = forge(
            r#"{"alg":"ES256","crit":["exp"],"exp":1}"#,
            &claims(NOW),
            b"sig",
        );
        assert_eq!(parse(&tok).unwrap_err(), VerifyError::Malformed);
    }

    #[test]
    fn issuer_can_be_peeked_before_verification() {
        let tok = mint(Alg::Es256, Some("ec1"), &claims(NOW));
        assert_eq!(
            unverified_issuer(&parse(&tok).unwrap()).unwrap().as_deref(),
            Some(ISS)
        );
        let tok = forge(r#"{"alg":"ES256"}"#, &serde_json::json!({"iss": 5}), b"s");
        assert_eq!(unverified_issuer(&parse(&tok).unwrap()), Ok(None));
    }
}
