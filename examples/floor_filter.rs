//! The floor of a proxy-wasm JWT filter, for `make bench`: built on the same SDK and with
//! the same exports as jwt-guard (`tools/trim_exports.py`), it does only what any such
//! filter must do for a request, read the request's headers (one host call) and the clock,
//! then lets the request go. The bench runs it beside native `jwt_authn` and jwt-guard: what
//! separates jwt-guard from it is jwt-guard's own work; what separates it from native is
//! the price of running in a wasm VM at all.
//!
//! wasm32 only (`cargo build --release --example floor_filter --target wasm32-wasip1`);
//! natively it is empty.

#[cfg(target_arch = "wasm32")]
mod floor {
    use std::ptr::null_mut;

    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType};

    const REQUEST_HEADERS: u32 = 0;

    extern "C" {
        fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, size: *mut usize) -> u32;
        fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
    }

    /// The headers and the clock, as jwt-guard reads them (src/wasm/abi.rs).
    fn read_request() -> (usize, u64) {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        let mut now: u64 = 0;
        // SAFETY: out-params are valid locals; on success the host hands over a buffer
        // it allocated through the SDK's allocator, of exactly `size` bytes, freed here.
        unsafe {
            if proxy_get_header_map_pairs(REQUEST_HEADERS, &mut data, &mut size) == 0
                && !data.is_null()
            {
                drop(Vec::from_raw_parts(data, size, size));
            }
            proxy_get_current_time_nanoseconds(&mut now);
        }
        (size, now)
    }

    struct Root;

    impl Context for Root {}

    impl RootContext for Root {
        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Request))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    struct Request;

    impl Context for Request {}

    impl HttpContext for Request {
        fn on_http_request_headers(&mut self, _headers: usize, _end: bool) -> Action {
            std::hint::black_box(read_request());
            Action::Continue
        }
    }

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| Box::new(Root));
    }}
}
