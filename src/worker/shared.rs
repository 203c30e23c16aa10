//! The verified-token cache shared by all workers ([`crate::shared_cache`]), in the host's
//! shared data: one read on a local miss, one write after a signature check.

use std::rc::Rc;

use crate::host::Host;
use crate::shared_cache::{decode_for, encode, slot_key, SharedTokens, Vouch};

pub struct SharedSlots {
    pub host: Rc<dyn Host>,
    pub slots: u32,
}

impl SharedTokens for SharedSlots {
    fn vouch(&mut self, token: &str) -> Option<Vouch> {
        let bytes = self
            .host
            .shared_data(&slot_key(token, self.slots))
            .ok()?
            .0?;
        decode_for(&bytes, token)
    }

    fn record(&mut self, token: &str, vouch: &Vouch) {
        let Some(entry) = encode(token, vouch) else {
            return;
        };
        // Last writer wins: a slot holds one token, and a lost write costs a verification.
        if let Err(e) = self
            .host
            .set_shared_data(&slot_key(token, self.slots), &entry, None)
        {
            log::debug!("jwt-guard: could not share a verified token: {e:?}");
        }
    }
}
