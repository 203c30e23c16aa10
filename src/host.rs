//! The seam between jwt-guard and its proxy: [`Host`] is everything the filter asks of a
//! proxy-wasm host. The logic that uses it (`worker`) is compiled natively and driven in
//! tests by a fake host; the proxy-wasm implementation (`wasm`, wasm32 only) calls the ABI
//! and only translates (statuses to [`HostError`]).

use std::time::Duration;

#[cfg(any(test, feature = "cli"))]
pub mod memory;

/// A host call that did not succeed, by the proxy-wasm status it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostError {
    /// No such key, header, property, context or foreign function.
    NotFound,
    BadArgument,
    /// A shared-data write whose CAS token is no longer current.
    CasMismatch,
    /// The host does not implement the call.
    Unimplemented,
    /// Any other status, as the host's number.
    Other(u32),
}

/// Kinds of proxy-wasm metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    /// A distribution of integer samples (Envoy keeps buckets and quantiles).
    Histogram,
}

/// What the filter asks of its host. Request calls (headers, reply, resume) act on the
/// effective context: the request being handled, or the one named by
/// [`Host::set_effective_context`].
pub trait Host {
    /// Wall-clock time in nanoseconds since the Unix epoch (0 if the host cannot say).
    fn now_nanos(&self) -> u64;

    fn now_ms(&self) -> u64 {
        self.now_nanos() / 1_000_000
    }

    /// A shared-data value and its CAS token; an absent key is `(None, None)`.
    fn shared_data(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError>;

    /// Writes a shared-data value; with `cas`, only if nobody wrote since it was read.
    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError>;

    /// Starts a GET through an upstream `cluster`; its answer comes to
    /// the worker's `on_http_call_response` with the returned token.
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<u32, HostError>;

    /// A header of the callout answer being handled.
    fn call_response_header(&self, name: &str) -> Option<Vec<u8>>;

    /// Up to `size` bytes of the body of the callout answer being handled.
    fn call_response_body(&self, size: usize) -> Option<Vec<u8>>;

    /// The request's headers in the proxy-wasm map serialization
    /// ([`crate::headers::HeaderSnapshot::parse`]).
    fn request_headers(&self) -> Result<Vec<u8>, HostError>;

    /// Sets (replaces every value of) or, with `None`, removes a request header.
    fn set_request_header(&self, name: &str, value: Option<&[u8]>) -> Result<(), HostError>;

    /// Answers the request with a local reply instead of sending it upstream.
    fn send_reply(
        &self,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError>;

    /// Lets a paused request go on upstream.
    fn resume_request(&self) -> Result<(), HostError>;

    /// Makes `context_id` the context later request calls act on. Optional in practice:
    /// a host without it cannot have paused requests resumed from the root, so the
    /// filter then never pauses one.
    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError>;

    /// A host property such as `["source", "address"]`.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;

    /// Sets a property of the request being handled, for the filters and logs after this
    /// one. Envoy keeps it as filter state under `wasm.<name>`. NotFound or Unimplemented:
    /// the host keeps no such state (or no request is effective).
    fn set_property(&self, name: &str, value: &[u8]) -> Result<(), HostError>;

    /// Calls a host extension such as Envoy's `verify_signature`.
    fn foreign_function(&self, name: &str, args: &[u8]) -> Result<Option<Vec<u8>>, HostError>;

    /// Defines a metric; its id, if the host took it.
    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32>;

    /// Adds `by` to a counter. A failed stat update is not worth failing a request for.
    fn increment_metric(&self, id: u32, by: u64);

    /// Sets a gauge, or adds a sample to a histogram.
    fn record_metric(&self, id: u32, value: u64);
}
