//! The per-request context: hands the request's events to the [`Worker`].

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::worker::{Next, Worker};

use super::host::ProxyWasmHost;

pub struct Http {
    context_id: u32,
    worker: Rc<RefCell<Worker>>,
}

impl Http {
    pub fn new(context_id: u32, worker: Rc<RefCell<Worker>>) -> Http {
        Http { context_id, worker }
    }

    /// Body and trailers wait while the request waits for keys. A worker busy elsewhere
    /// (a local reply re-entering the VM) means hold: never let an undecided request on.
    fn hold_while_waiting(&self) -> Action {
        match self.worker.try_borrow() {
            Ok(w) if !w.holds(self.context_id) => Action::Continue,
            _ => Action::Pause,
        }
    }
}

impl Context for Http {}

/// The SDK drops a request's context when the host deletes it (`proxy_on_delete`): the
/// request is over, answered or abandoned, and no longer waits. Done here rather than in
/// `on_done` so that the module need not export `proxy_on_done`, a VM entry on every
/// request (`tools/trim_exports.py`; hosts treat a missing one as done).
impl Drop for Http {
    fn drop(&mut self) {
        // Busy only while answering this very request, which then is no waiter.
        if let Ok(mut w) = self.worker.try_borrow_mut() {
            w.on_request_done(self.context_id);
        }
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Ok(mut w) = self.worker.try_borrow_mut() else {
            Worker::reply_unavailable(&ProxyWasmHost);
            return Action::Pause;
        };
        match w.on_request_headers(self.context_id) {
            Next::Continue => Action::Continue,
            Next::Pause => Action::Pause,
        }
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        self.hold_while_waiting()
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.hold_while_waiting()
    }
}
