//! Every fact about each JWS algorithm the filter verifies, in one table: its name, the
//! kind of key it takes, and how Envoy's `verify_signature` checks it. Adding an algorithm
//! means a row here, its key type in the JWK parser (`jwks.rs`) and its pure-Rust check
//! (`rust_crypto::RustCrypto`).

use crate::schema::SyntaxError;

/// The JWS algorithms the filter verifies. Symmetric ones (HS*) and `none` are not here on
/// purpose: with a public JWKS they would let anyone forge tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Es256,
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    EdDsa,
}

/// The kind of public key an algorithm verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    P256,
    Rsa,
    Ed25519,
}

/// What Envoy's `verify_signature` (BoringSSL) needs to check an algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostCheck {
    /// Not offered by the host (PSS padding, EdDSA): pure Rust checks it.
    None,
    /// Digest name; the JWS signature goes as it is (RSA PKCS#1 v1.5).
    Raw(&'static str),
    /// Digest name; the JWS `r||s` signature goes as a DER `ECDSA-Sig-Value`.
    EcdsaDer(&'static str),
}

struct Facts {
    name: &'static str,
    key: KeyKind,
    host: HostCheck,
}

impl Alg {
    pub const ALL: [Alg; 8] = [
        Alg::Es256,
        Alg::Rs256,
        Alg::Rs384,
        Alg::Rs512,
        Alg::Ps256,
        Alg::Ps384,
        Alg::Ps512,
        Alg::EdDsa,
    ];

    fn facts(self) -> Facts {
        let f = |name, key, host| Facts { name, key, host };
        match self {
            Alg::Es256 => f("ES256", KeyKind::P256, HostCheck::EcdsaDer("sha256")),
            Alg::Rs256 => f("RS256", KeyKind::Rsa, HostCheck::Raw("sha256")),
            Alg::Rs384 => f("RS384", KeyKind::Rsa, HostCheck::Raw("sha384")),
            Alg::Rs512 => f("RS512", KeyKind::Rsa, HostCheck::Raw("sha512")),
            Alg::Ps256 => f("PS256", KeyKind::Rsa, HostCheck::None),
            Alg::Ps384 => f("PS384", KeyKind::Rsa, HostCheck::None),
            Alg::Ps512 => f("PS512", KeyKind::Rsa, HostCheck::None),
            Alg::EdDsa => f("EdDSA", KeyKind::Ed25519, HostCheck::None),
        }
    }

    pub fn name(self) -> &'static str {
        self.facts().name
    }

    pub fn key_kind(self) -> KeyKind {
        self.facts().key
    }

    pub fn host_check(self) -> HostCheck {
        self.facts().host
    }

    /// The algorithm a token header names (exact, case-sensitive as in RFC 7515).
    pub fn from_token_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The algorithm a config names, with a reason when it cannot be allowed.
    pub fn from_config_name(name: &str) -> Result<Alg, SyntaxError> {
        if let Some(a) = Alg::from_token_name(name) {
            return Ok(a);
        }
        if name.starts_with("HS") {
            return Err(SyntaxError::SymmetricAlgorithm(name.to_string()));
        }
        let known: Vec<&str> = Alg::ALL.iter().map(|a| a.name()).collect();
        Err(SyntaxError::UnknownAlgorithm {
            name: name.to_string(),
            known: known.join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_symmetric_algorithms_are_refused_with_a_reason() {
        for a in Alg::ALL {
            assert_eq!(Alg::from_token_name(a.name()), Some(a));
            assert_eq!(Alg::from_config_name(a.name()), Ok(a));
        }
        assert_eq!(Alg::from_token_name("es256"), None, "case-sensitive");
        assert_eq!(
            Alg::from_config_name("HS256"),
            Err(SyntaxError::SymmetricAlgorithm("HS256".into()))
        );
        let unknown = Alg::from_config_name("none").unwrap_err().to_string();
        assert!(unknown.contains("ES256, RS256"), "{unknown}");
    }

    #[test]
    fn host_checks() {
        assert_eq!(Alg::Rs512.host_check(), HostCheck::Raw("sha512"));
        assert_eq!(Alg::Es256.host_check(), HostCheck::EcdsaDer("sha256"));
        assert_eq!(Alg::Ps256.host_check(), HostCheck::None);
        assert_eq!(Alg::EdDsa.key_kind(), KeyKind::Ed25519);
    }
}
