//! Signature checks by the host's crypto through Envoy's `verify_signature` foreign
//! function (BoringSSL), many times faster than pure Rust inside the VM. A host without it
//! (other proxies, older Envoys) answers NotFound or Unimplemented once; from then on this
//! worker stays on the pure-Rust path.

use std::cell::Cell;
use std::rc::Rc;

use crate::alg::HostCheck;
use crate::envoy_crypto::{decode_result, encode_request, es256_der};
use crate::host::{Host, HostError, MetricKind};
use crate::jwks::Jwk;
use crate::verify::{Alg, Crypto};

use super::metrics::{bump, StatPrefix};

pub struct HostCrypto {
    host: Rc<dyn Host>,
    available: Cell<bool>,
    /// `jwt_guard.<instance>.signature_checks.host`: signatures the host checked.
    checked: Option<u32>,
}

impl HostCrypto {
    pub fn new(host: Rc<dyn Host>, stats: &StatPrefix) -> HostCrypto {
        let checked = host.define_metric(MetricKind::Counter, &stats.name("signature_checks.host"));
        HostCrypto {
            host,
            available: Cell::new(true),
            checked,
        }
    }
}

impl Crypto for HostCrypto {
    fn verify(&self, alg: Alg, key: &Jwk, input: &[u8], signature: &[u8]) -> Option<bool> {
        if !self.available.get() {
            return None;
        }
        let der = key.spki_der.as_deref()?;
        let request = match alg.host_check() {
            HostCheck::None => return None,
            HostCheck::Raw(hash) => encode_request(hash, der, signature, input),
            HostCheck::EcdsaDer(hash) => match es256_der(signature) {
                Some(sig) => encode_request(hash, der, &sig, input),
                None => return Some(false),
            },
        };
        match self.host.foreign_function("verify_signature", &request) {
            Ok(Some(reply)) => {
                bump(&*self.host, self.checked);
                Some(decode_result(&reply))
            }
            Ok(None) => None,
            Err(HostError::NotFound | HostError::Unimplemented) => {
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
