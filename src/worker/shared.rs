//! The verified-token cache shared by all workers ([`crate::shared_cache`]), in the host's
//! shared data: up to two reads on a local miss, one write after a signature check.

use std::rc::Rc;

use crate::host::Host;
use crate::shared_cache::{
    decode_for, encode, slot_keys, slot_to_replace, tail_hash, written_at, SharedTokens, Vouch,
};

pub struct SharedSlots {
    host: Rc<dyn Host>,
    slots: u32,
    /// The slots the last lookup read in vain, and when each one's entry was written
    /// (`None`: empty): where to record that token needs no second read.
    seen: Option<([String; 2], [Option<i64>; 2])>,
}

impl SharedSlots {
    pub fn new(host: Rc<dyn Host>, slots: u32) -> SharedSlots {
        SharedSlots {
            host,
            slots,
            seen: None,
        }
    }
}

impl SharedTokens for SharedSlots {
    fn vouch(&mut self, token: &str) -> Option<Vouch> {
        let keys = slot_keys(token, self.slots);
        let mut written = [None, None];
        let [first, second] = &keys;
        let one_slot = first == second;
        for (key, at) in keys
            .iter()
            .zip(written.iter_mut())
            .take(if one_slot { 1 } else { 2 })
        {
            let bytes = self.host.shared_data(key).ok().and_then(|(b, _)| b);
            if let Some(v) = bytes.as_deref().and_then(|b| decode_for(b, token)) {
                self.seen = None;
                return Some(v);
            }
            *at = written_at(bytes.as_deref());
        }
        if one_slot {
            let [at, _] = written;
            written = [at, at];
        }
        self.seen = Some((keys, written));
        None
    }

    fn record(&mut self, token: &str, vouch: &Vouch, now: i64) {
        let keys = slot_keys(token, self.slots);
        let written = match self.seen.take() {
            Some((seen, written)) if seen == keys => written,
            _ => [None, None],
        };
        let Some(entry) = encode(token, vouch, now) else {
            return;
        };
        // The hash's top bit: not the bits that chose the slots.
        let tie = usize::from(tail_hash(token) >> 63 == 1);
        let [first, _] = &keys;
        let key = keys.get(slot_to_replace(written, tie)).unwrap_or(first);
        // Last writer wins: a lost write costs a verification.
        if let Err(e) = self.host.set_shared_data(key, &entry, None) {
            log::debug!("jwt-guard: could not share a verified token: {e:?}");
        }
    }
}
