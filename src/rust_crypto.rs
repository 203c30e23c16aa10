//! The pure-Rust signature checks, used on every host that does not verify signatures
//! itself: RustCrypto's `p256` (ES256) and `rsa` (PS*) called directly, EdDSA through
//! jwt-compact's `ed25519-compact` algorithm. RS* is `rsa`'s key and big-integer arithmetic
//! (crypto-bigint) with the few steps around it here: the crate's exponentiation is built
//! for secret exponents and does twice the work a public one needs (see [`rsavp1`]).
//!
//! The JOSE rules are kept here rather than left to the crates' defaults: an ES256
//! signature is exactly the 64-byte `r||s` (RFC 7518 §3.4), never DER; a PSS salt is as
//! long as the hash (RFC 7518 §3.5); an RSA signature is exactly as long as the modulus.

use jwt_compact::alg::Ed25519;
use jwt_compact::{Algorithm, AlgorithmSignature};
use p256::ecdsa::signature::Verifier;
use rsa::sha2::digest::const_oid::AssociatedOid;
use rsa::sha2::digest::FixedOutputReset;
use rsa::sha2::{Digest, Sha256, Sha384, Sha512};
use rsa::traits::{PublicKeyParts, SignatureScheme};
use rsa::{BoxedUint, Pkcs1v15Sign, Pss, PublicKey as RsaPublicKey};

use crate::alg::Alg;
use crate::jwks::{EdPublicKey, PublicKey};

/// Pure-Rust verification: works on every host.
pub struct RustCrypto;

impl RustCrypto {
    /// Whether `signature` is `key`'s signature of `input` under `alg`. Any input, however
    /// malformed, is an answer, never a panic.
    pub fn verify_key(&self, alg: Alg, key: &PublicKey, input: &[u8], signature: &[u8]) -> bool {
        match (key, alg) {
            (PublicKey::P256(k), Alg::Es256) => es256(k, input, signature),
            (PublicKey::Ed25519(k), Alg::EdDsa) => eddsa(k, input, signature),
            (PublicKey::Rsa(k), Alg::Rs256) => pkcs1v15::<Sha256>(k, input, signature),
            (PublicKey::Rsa(k), Alg::Rs384) => pkcs1v15::<Sha384>(k, input, signature),
            (PublicKey::Rsa(k), Alg::Rs512) => pkcs1v15::<Sha512>(k, input, signature),
            (PublicKey::Rsa(k), Alg::Ps256) => pss::<Sha256>(k, input, signature),
            (PublicKey::Rsa(k), Alg::Ps384) => pss::<Sha384>(k, input, signature),
            (PublicKey::Rsa(k), Alg::Ps512) => pss::<Sha512>(k, input, signature),
            _ => false,
        }
    }
}

/// ECDSA P-256 with SHA-256 over the raw `r||s`. Either `s` and `n - s` verify, as with
/// OpenSSL, BoringSSL and jwt-compact before: P-256 has no low-S rule.
fn es256(key: &p256::ecdsa::VerifyingKey, input: &[u8], signature: &[u8]) -> bool {
    signature.len() == 64
        && p256::ecdsa::Signature::from_slice(signature)
            .is_ok_and(|sig| key.verify(input, &sig).is_ok())
}

fn eddsa(key: &EdPublicKey, input: &[u8], signature: &[u8]) -> bool {
    type Sig = <Ed25519 as Algorithm>::Signature;
    Sig::LENGTH.is_some_and(|len| len.get() == signature.len())
        && Sig::try_from_slice(signature)
            .is_ok_and(|sig| Ed25519.verify_signature(&sig, key, input))
}

/// RSASSA-PSS through the crate. `Pss::new` takes the digest's length as the salt length
/// and requires exactly that.
fn pss<D: Digest + FixedOutputReset>(key: &RsaPublicKey, input: &[u8], signature: &[u8]) -> bool {
    Pss::<D>::new()
        .verify(key, &D::digest(input), signature)
        .is_ok()
}

/// RSASSA-PKCS1-v1_5 verification as RFC 8017 §8.2.2 describes it: RSAVP1, then the
/// expected encoding of the digest built and compared byte for byte (nothing parsed).
fn pkcs1v15<D: Digest + AssociatedOid>(key: &RsaPublicKey, input: &[u8], signature: &[u8]) -> bool {
    let prefix = Pkcs1v15Sign::new::<D>().prefix;
    let hashed = D::digest(input);
    let k = key.size();
    let Some(em) = rsavp1(key, signature) else {
        return false;
    };
    // EM = 0x00 || 0x01 || PS (0xff, at least 8) || 0x00 || DigestInfo prefix || H
    let t_len = prefix.len() + hashed.len();
    let Some(ps_len) = k.checked_sub(t_len + 3).filter(|n| *n >= 8) else {
        return false;
    };
    let mut expected = Vec::with_capacity(k);
    expected.extend_from_slice(&[0x00, 0x01]);
    expected.resize(2 + ps_len, 0xff);
    expected.push(0x00);
    expected.extend_from_slice(&prefix);
    expected.extend_from_slice(&hashed);
    em == expected
}

/// RSAVP1 (RFC 8017 §5.2.2): `s^e mod n` as `k` big-endian bytes, for a signature of
/// exactly `k` bytes whose value is below `n`. The exponent is public, so a plain
/// square-and-multiply over its bits (17 steps for 65537) is enough; the crate's
/// exponentiation is a constant-time 4-bit window, twice the work for such an exponent.
fn rsavp1(key: &RsaPublicKey, signature: &[u8]) -> Option<Vec<u8>> {
    use crypto_bigint::modular::BoxedMontyForm;
    let k = key.size();
    if signature.len() != k {
        return None;
    }
    let s = BoxedUint::from_be_slice(signature, key.n_bits_precision()).ok()?;
    if s >= *key.n().as_ref() {
        return None;
    }
    let base = BoxedMontyForm::new(s, key.n_params());
    let e = key.e();
    let mut acc = base.clone();
    for bit in (0..e.bit_width_vartime().saturating_sub(1)).rev() {
        acc = acc.square();
        if e.bit_vartime(bit) {
            acc = acc.mul(&base);
        }
    }
    let m = acc.retrieve().to_be_bytes();
    // m < n, so everything above the last k bytes is zero.
    let cut = m.len().checked_sub(k)?;
    m.get(cut..).map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{keys, signature};

    #[test]
    fn every_algorithm_verifies_its_own_signatures_and_refuses_altered_ones() {
        let keys = keys();
        let input = b"header.payload";
        for alg in Alg::ALL {
            let key = &keys.candidates(None, alg).next().unwrap().key;
            let mut sig = signature(alg, input);
            assert!(RustCrypto.verify_key(alg, key, input, &sig), "{alg:?}");
            assert!(
                !RustCrypto.verify_key(alg, key, b"header.payloaD", &sig),
                "{alg:?}"
            );
            *sig.last_mut().unwrap() ^= 1;
            assert!(!RustCrypto.verify_key(alg, key, input, &sig), "{alg:?}");
        }
    }

    #[test]
    fn a_signature_of_another_algorithm_is_refused() {
        let keys = keys();
        let rsa = &keys.candidates(None, Alg::Rs256).next().unwrap().key;
        let sig = signature(Alg::Rs256, b"x");
        for other in [Alg::Rs384, Alg::Rs512, Alg::Ps256, Alg::Es256, Alg::EdDsa] {
            assert!(!RustCrypto.verify_key(other, rsa, b"x", &sig), "{other:?}");
        }
        // ES256 takes the raw r||s only, not the DER form other libraries emit.
        let ec = &keys.candidates(Some("ec1"), Alg::Es256).next().unwrap().key;
        let raw = signature(Alg::Es256, b"x");
        let der = crate::envoy_crypto::es256_der(&raw).unwrap();
        assert!(RustCrypto.verify_key(Alg::Es256, ec, b"x", &raw));
        assert!(!RustCrypto.verify_key(Alg::Es256, ec, b"x", &der));
    }

    #[test]
    fn signatures_of_any_length_and_content_are_an_answer_not_a_panic() {
        let keys = keys();
        for alg in Alg::ALL {
            let key = &keys.candidates(None, alg).next().unwrap().key;
            for len in [0, 1, 31, 32, 63, 64, 65, 255, 256, 257, 511, 512, 513, 4096] {
                for fill in [0x00, 0x01, 0x7f, 0xff] {
                    let sig = vec![fill; len];
                    assert!(
                        !RustCrypto.verify_key(alg, key, b"x", &sig),
                        "{alg:?} {len}"
                    );
                }
            }
        }
    }
}
