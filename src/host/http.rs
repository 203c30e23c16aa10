//! The per-request context: decide on headers, then continue, reply, or wait for keys.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::flow::Outcome;

use super::request;
use super::vm::{now_ms, Vm, Waiter};

pub struct Http {
    pub context_id: u32,
    pub vm: Rc<RefCell<Vm>>,
    waiting: bool,
}

impl Http {
    pub fn new(context_id: u32, vm: Rc<RefCell<Vm>>) -> Http {
        Http {
            context_id,
            vm,
            waiting: false,
        }
    }

    /// Pause while this request is among the VM's waiters; once the root has resumed (or
    /// answered) it, the rest of the body flows.
    fn hold_while_waiting(&self) -> Action {
        if !self.waiting {
            return Action::Continue;
        }
        let still_waiting = self.vm.try_borrow().map_or(true, |vm| {
            vm.waiters.iter().any(|w| w.context_id == self.context_id)
        });
        if still_waiting {
            Action::Pause
        } else {
            Action::Continue
        }
    }
}

impl Context for Http {
    fn on_done(&mut self) -> bool {
        if self.waiting {
            if let Ok(mut vm) = self.vm.try_borrow_mut() {
                vm.waiters.retain(|w| w.context_id != self.context_id);
            }
        }
        true
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let now = now_ms();
        // The borrow ends before replying: a local reply may re-enter the VM. A failed
        // borrow cannot happen in a single-threaded VM; if it ever did, fail closed.
        let Ok(mut vm) = self.vm.try_borrow_mut() else {
            request::reply_unavailable();
            return Action::Pause;
        };
        let config = vm.config.clone();
        let mut headers = request::read_headers();
        request::strip_managed_headers(&config, &mut headers);
        let (outcome, line) = request::decide(&mut vm, &headers, now, false);
        if let Outcome::WaitForKeys { provider } = outcome {
            let seen_version = vm.providers.get(provider).map_or(0, |p| p.version);
            vm.waiters.push(Waiter {
                context_id: self.context_id,
                provider,
                since_ms: now,
                seen_version,
            });
            self.waiting = true;
            return Action::Pause;
        }
        let metrics = vm.metrics.clone();
        drop(vm);
        if request::apply(&config, &metrics, &mut headers, &outcome, &line) {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    // While the request waits for keys, its body and trailers wait too. Envoy keeps a
    // paused request paused whatever these return, but proxy-wasm lets a host resume a
    // request whose body callback says Continue: that would send it upstream undecided.
    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        self.hold_while_waiting()
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.hold_while_waiting()
    }
}
