//! Signature checks by Envoy's BoringSSL through the `verify_signature` foreign function,
//! many times faster than pure Rust inside the VM. Hosts without it (other proxies, older
//! Envoys) answer NotFound once; from then on this worker stays on the pure-Rust path.

use std::cell::Cell;

use crate::envoy_crypto::{decode_result, encode_request, es256_der, hash_name};
use crate::jwks::Jwk;
use crate::verify::{Alg, Crypto};

use super::abi::{self, Status};
use super::vm::bump;

pub struct HostCrypto {
    available: Cell<bool>,
    /// `wasmcustom.jwt_guard.signature_checks.host`: signatures BoringSSL checked.
    checked: Option<u32>,
}

impl HostCrypto {
    pub fn new() -> HostCrypto {
        HostCrypto {
            available: Cell::new(true),
            checked: abi::define_metric(abi::COUNTER, "jwt_guard.signature_checks.host"),
        }
    }
}

impl Crypto for HostCrypto {
    fn verify(&self, alg: Alg, key: &Jwk, input: &[u8], signature: &[u8]) -> Option<bool> {
        if !self.available.get() {
            return None;
        }
        let hash = hash_name(alg)?;
        let der = key.spki_der.as_deref()?;
        let der_signature;
        let signature = if alg == Alg::Es256 {
            match es256_der(signature) {
                Some(d) => {
                    der_signature = d;
                    der_signature.as_slice()
                }
                None => return Some(false),
            }
        } else {
            signature
        };
        let request = encode_request(hash, der, signature, input);
        match abi::foreign_function("verify_signature", &request) {
            Ok(Some(reply)) => {
                bump(self.checked);
                Some(decode_result(&reply))
            }
            Ok(None) => None,
            Err(Status::NOT_FOUND) => {
                log::info!("jwt-guard: the host has no verify_signature; using pure-Rust crypto");
                self.available.set(false);
                None
            }
            Err(e) => {
                log::debug!("jwt-guard: host verify_signature failed ({e:?}); using pure Rust");
                None
            }
        }
    }
}
