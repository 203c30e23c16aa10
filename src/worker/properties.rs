//! Sets a decision's filter state ([`crate::filter_state`]) on the request being handled.
//! Filter state is optional: a host without `proxy_set_property` (Unimplemented) is asked
//! once and then left alone; a call that fails otherwise is skipped, never failing the
//! request.

use std::cell::Cell;

use crate::audit::Verdict;
use crate::filter_state::entries;
use crate::host::{Host, HostError};

pub struct Properties {
    available: Cell<bool>,
}

impl Properties {
    /// `enabled`: the config's `filter_state` (each entry is a host call, so it is opt-in).
    pub fn new(enabled: bool) -> Properties {
        Properties {
            available: Cell::new(enabled),
        }
    }

    /// Sets the properties of `verdict` on the effective request.
    pub fn publish(&self, host: &dyn Host, verdict: &Verdict<'_>) {
        if !self.available.get() {
            return;
        }
        for (name, value) in entries(verdict) {
            let Some(value) = value else { continue };
            match host.set_property(name, value.as_bytes()) {
                Ok(()) => {}
                Err(HostError::Unimplemented) => {
                    log::info!("jwt-guard: the host keeps no filter state; not setting it");
                    self.available.set(false);
                    return;
                }
                // No request to set it on: the other names would fail alike.
                Err(HostError::NotFound) => return,
                Err(e) => log::debug!("jwt-guard: filter state {name} not set: {e:?}"),
            }
        }
    }
}
