//! [`Host`] on the proxy-wasm ABI: each method is one host call, its status translated.

use std::time::Duration;

use proxy_wasm::hostcalls;

use super::abi::{self, Status};
use crate::host::{Host, HostError, MetricKind};

pub struct ProxyWasmHost;

impl From<Status> for HostError {
    fn from(s: Status) -> HostError {
        match s.code() {
            1 => HostError::NotFound,
            2 => HostError::BadArgument,
            8 => HostError::CasMismatch,
            12 => HostError::Unimplemented,
            other => HostError::Other(other),
        }
    }
}

impl Host for ProxyWasmHost {
    fn now_nanos(&self) -> u64 {
        abi::now_nanos()
    }

    fn shared_data(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        Ok(abi::shared_data(key)?)
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
        Ok(abi::set_shared_data(key, value, cas)?)
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<u32, HostError> {
        // Through the SDK: it must register the callout to route the answer to the root.
        hostcalls::dispatch_http_call(cluster, headers.to_vec(), None, vec![], timeout).map_err(
            |status| match status {
                proxy_wasm::types::Status::NotFound => HostError::NotFound,
                proxy_wasm::types::Status::BadArgument => HostError::BadArgument,
                other => HostError::Other(other as u32),
            },
        )
    }

    fn call_response_header(&self, name: &str) -> Option<Vec<u8>> {
        abi::call_response_header(name)
    }

    fn call_response_body(&self, size: usize) -> Option<Vec<u8>> {
        abi::call_response_body(size)
    }

    fn request_headers(&self) -> Result<Vec<u8>, HostError> {
        Ok(abi::request_header_pairs()?)
    }

    fn set_request_header(&self, name: &str, value: Option<&[u8]>) -> Result<(), HostError> {
        Ok(abi::set_request_header(name, value)?)
    }

    fn send_reply(
        &self,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        Ok(abi::send_local_response(status, headers, body)?)
    }

    fn resume_request(&self) -> Result<(), HostError> {
        Ok(abi::resume_request()?)
    }

    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError> {
        Ok(abi::set_effective_context(context_id)?)
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        abi::property(path)
    }

    fn set_property(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        Ok(abi::set_property(name, value)?)
    }

    fn foreign_function(&self, name: &str, args: &[u8]) -> Result<Option<Vec<u8>>, HostError> {
        Ok(abi::foreign_function(name, args)?)
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        let kind = match kind {
            MetricKind::Counter => abi::COUNTER,
            MetricKind::Gauge => abi::GAUGE,
            MetricKind::Histogram => abi::HISTOGRAM,
        };
        abi::define_metric(kind, name)
    }

    fn increment_metric(&self, id: u32, by: u64) {
        abi::increment_metric(id, by);
    }

    fn record_metric(&self, id: u32, value: u64) {
        abi::record_metric(id, value);
    }
}
