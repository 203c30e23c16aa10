//! The root context: parses the configuration into a [`Worker`], and hands it the tick and
//! the answers to its callouts (which proxy-wasm delivers here).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use crate::config::Config;
use crate::worker::Worker;

use super::abi;
use super::host::ProxyWasmHost;
use super::http::Http;

/// How often each worker checks shared data for new keys and whether a fetch is due.
const TICK: Duration = Duration::from_millis(100);

pub struct Root {
    context_id: u32,
    worker: Option<Rc<RefCell<Worker>>>,
}

impl Root {
    pub fn new(context_id: u32) -> Root {
        Root {
            context_id,
            worker: None,
        }
    }

    fn with_worker(&self, f: impl FnOnce(&mut Worker)) {
        if let Some(mut w) = self.worker.as_ref().and_then(|w| w.try_borrow_mut().ok()) {
            f(&mut w);
        }
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _: usize) {
        self.with_worker(|w| w.on_http_call_response(token, body_size));
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        // Format only what Envoy will print (its wasm log level), not every debug line.
        if let Ok(level) = hostcalls::get_log_level() {
            proxy_wasm::set_log_level(level);
        }
        let bytes = abi::plugin_configuration().unwrap_or_default();
        let config = match Config::from_json(&bytes) {
            Ok(c) => c,
            Err(e) => {
                log::error!("jwt-guard: invalid configuration: {e}");
                return false;
            }
        };
        log::info!(
            "jwt-guard {}: configured {} providers, {} rules",
            env!("CARGO_PKG_VERSION"),
            config.providers.len(),
            config.rules.len()
        );
        let worker = match Worker::new(Rc::new(ProxyWasmHost), config, self.context_id) {
            Ok(w) => w,
            Err(e) => {
                log::error!("jwt-guard: invalid configuration for this host: {e}");
                return false;
            }
        };
        self.worker = Some(Rc::new(RefCell::new(worker)));
        self.set_tick_period(TICK);
        true
    }

    fn on_tick(&mut self) {
        self.with_worker(Worker::on_tick);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let worker = self.worker.clone()?;
        Some(Box::new(Http::new(context_id, worker)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
