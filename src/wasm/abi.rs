//! The proxy-wasm host calls jwt-guard makes, declared here rather than through the SDK's
//! `hostcalls`, which panics on any status it did not expect (and reads the status as an
//! enum, so a value it does not know is undefined behaviour). A panic traps the VM and fails
//! every request on the worker; here every status is a value the caller handles.
//!
//! Not here: `dispatch_http_call` (the SDK must register the callout to route its answer
//! back), and calls made once at configure time (tick period, log level).

use std::fmt;
use std::ptr::{null, null_mut};

/// A status other than Ok, kept as the host's number: an unknown one is an error to handle.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Status(u32);

impl Status {
    pub const NOT_FOUND: Status = Status(1);

    pub fn code(self) -> u32 {
        self.0
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            1 => "NotFound",
            2 => "BadArgument",
            3 => "SerializationFailure",
            4 => "ParseFailure",
            7 => "Empty",
            8 => "CasMismatch",
            10 => "InternalFailure",
            12 => "Unimplemented",
            _ => "Unknown",
        };
        write!(f, "{name}({})", self.0)
    }
}

fn check(status: u32) -> Result<(), Status> {
    match status {
        0 => Ok(()),
        other => Err(Status(other)),
    }
}

// Enum arguments of the ABI, as the numbers the host expects.
const REQUEST_HEADERS: u32 = 0;
const CALL_RESPONSE_HEADERS: u32 = 6;
const CALL_RESPONSE_BODY: u32 = 4;
const PLUGIN_CONFIGURATION: u32 = 7;
const STREAM_REQUEST: u32 = 0;
pub const COUNTER: u32 = 0;
pub const GAUGE: u32 = 1;
pub const HISTOGRAM: u32 = 2;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *mut *mut u8,
        value_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_replace_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
    fn proxy_get_buffer_bytes(
        buffer: u32,
        start: usize,
        max_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_get_property(
        path: *const u8,
        path_size: usize,
        value: *mut *mut u8,
        value_size: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        value: *mut *mut u8,
        value_size: *mut usize,
        cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_set_property(
        path: *const u8,
        path_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_continue_stream(stream: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_call_foreign_function(
        name: *const u8,
        name_size: usize,
        args: *const u8,
        args_size: usize,
        results: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
    fn proxy_record_metric(id: u32, value: u64) -> u32;
    fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
}

/// Calls a host function that hands back a buffer, and takes ownership of it: the host
/// allocated it through the SDK's `proxy_on_memory_allocate`, as a boxed slice of exactly
/// `size` bytes. Ok without a buffer is `Ok(None)`.
fn call_for_buffer(
    call: impl FnOnce(*mut *mut u8, *mut usize) -> u32,
) -> Result<Option<Vec<u8>>, Status> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    check(call(&mut data, &mut size))?;
    if data.is_null() {
        return Ok(None);
    }
    // SAFETY: on Ok the host filled `data`/`size` with a buffer it allocated for us and
    // owns no longer; its capacity and length are both `size`.
    Ok(Some(unsafe { Vec::from_raw_parts(data, size, size) }))
}

/// Like [`call_for_buffer`] for lookups: NotFound is `Ok(None)`, and Ok without a buffer
/// (an empty header value, say) is an empty one.
fn read_buffer(
    call: impl FnOnce(*mut *mut u8, *mut usize) -> u32,
) -> Result<Option<Vec<u8>>, Status> {
    match call_for_buffer(call) {
        Ok(buffer) => Ok(Some(buffer.unwrap_or_default())),
        Err(Status::NOT_FOUND) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every request header in one host call, in the proxy-wasm map serialization
/// (see [`crate::headers::HeaderSnapshot`]).
pub fn request_header_pairs() -> Result<Vec<u8>, Status> {
    read_buffer(|data, size| {
        // SAFETY: out-params are valid locals.
        unsafe { proxy_get_header_map_pairs(REQUEST_HEADERS, data, size) }
    })
    .map(Option::unwrap_or_default)
}

/// Sets (replaces every value of) or, with `None`, removes a request header.
pub fn set_request_header(name: &str, value: Option<&[u8]>) -> Result<(), Status> {
    // SAFETY: pointers and lengths come from live slices.
    check(unsafe {
        match value {
            Some(v) => proxy_replace_header_map_value(
                REQUEST_HEADERS,
                name.as_ptr(),
                name.len(),
                v.as_ptr(),
                v.len(),
            ),
            None => proxy_remove_header_map_value(REQUEST_HEADERS, name.as_ptr(), name.len()),
        }
    })
}

/// A header of the answer to a callout (only valid in `on_http_call_response`).
pub fn call_response_header(name: &str) -> Option<Vec<u8>> {
    read_buffer(|data, size| {
        // SAFETY: key pointer/length come from a live &str; out-params are valid locals.
        unsafe {
            proxy_get_header_map_value(CALL_RESPONSE_HEADERS, name.as_ptr(), name.len(), data, size)
        }
    })
    .ok()
    .flatten()
}

/// The body of the answer to a callout (only valid in `on_http_call_response`).
pub fn call_response_body(size: usize) -> Option<Vec<u8>> {
    buffer(CALL_RESPONSE_BODY, size)
}

/// The plugin configuration (only valid in `on_configure`).
pub fn plugin_configuration() -> Option<Vec<u8>> {
    buffer(PLUGIN_CONFIGURATION, usize::MAX)
}

fn buffer(kind: u32, max_size: usize) -> Option<Vec<u8>> {
    read_buffer(|data, size| {
        // SAFETY: out-params are valid locals.
        unsafe { proxy_get_buffer_bytes(kind, 0, max_size, data, size) }
    })
    .ok()
    .flatten()
}

/// A host property such as `["source", "address"]`.
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    // The ABI's path is the segments, each followed by a NUL.
    let mut serialized = Vec::new();
    for segment in path {
        serialized.extend_from_slice(segment.as_bytes());
        serialized.push(0);
    }
    read_buffer(|data, size| {
        // SAFETY: the path is a live Vec; out-params are valid locals.
        unsafe { proxy_get_property(serialized.as_ptr(), serialized.len(), data, size) }
    })
    .ok()
    .flatten()
}

/// Sets a property of the current request. Envoy stores the name verbatim (after its
/// `wasm.` prefix), so it is sent as one segment, without the NUL that ends each segment
/// of a path that is read.
pub fn set_property(name: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: pointers and lengths come from live slices.
    check(unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) })
}

/// A shared-data value and its CAS token; an absent key is `(None, None)`.
pub fn shared_data(key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), Status> {
    let mut cas: u32 = 0;
    let value = call_for_buffer(|data, size| {
        // SAFETY: key from a live &str; out-params are valid locals.
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), data, size, &mut cas) }
    });
    match value {
        Ok(value) => Ok((value, Some(cas).filter(|c| *c != 0))),
        Err(Status::NOT_FOUND) => Ok((None, None)),
        Err(e) => Err(e),
    }
}

/// Writes a shared-data value; with `cas`, only if nobody wrote since it was read
/// (`Err(Status::CAS_MISMATCH)` otherwise).
pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
    // SAFETY: pointers and lengths come from live slices.
    check(unsafe {
        proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            cas.unwrap_or(0),
        )
    })
}

/// Answers the current request with a local reply instead of sending it upstream.
pub fn send_local_response(
    status: u32,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(), Status> {
    let serialized = crate::headers::serialize(headers);
    // SAFETY: pointers and lengths come from live slices; no details string.
    check(unsafe {
        proxy_send_local_response(
            status,
            null(),
            0,
            body.as_ptr(),
            body.len(),
            serialized.as_ptr(),
            serialized.len(),
            -1,
        )
    })
}

/// Lets the current (paused) request go on upstream.
pub fn resume_request() -> Result<(), Status> {
    // SAFETY: no pointers.
    check(unsafe { proxy_continue_stream(STREAM_REQUEST) })
}

/// Makes `context_id` the context later calls act on; fails if that request is gone.
pub fn set_effective_context(context_id: u32) -> Result<(), Status> {
    // SAFETY: no pointers.
    check(unsafe { proxy_set_effective_context(context_id) })
}

/// Calls a host extension such as Envoy's `verify_signature`.
/// NotFound means "no such function" here, so it stays an error.
pub fn foreign_function(name: &str, args: &[u8]) -> Result<Option<Vec<u8>>, Status> {
    call_for_buffer(|data, size| {
        // SAFETY: pointers and lengths come from live slices; out-params are valid locals.
        unsafe {
            proxy_call_foreign_function(
                name.as_ptr(),
                name.len(),
                args.as_ptr(),
                args.len(),
                data,
                size,
            )
        }
    })
}

/// Defines a counter, gauge or histogram (`COUNTER`, `GAUGE`, `HISTOGRAM`); its id, if the
/// host took it.
pub fn define_metric(kind: u32, name: &str) -> Option<u32> {
    let mut id: u32 = 0;
    // SAFETY: name from a live &str; out-param is a valid local.
    check(unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) })
        .ok()
        .map(|()| id)
}

pub fn increment_metric(id: u32, by: u64) {
    let by = i64::try_from(by).unwrap_or(i64::MAX);
    // SAFETY: no pointers. A failed stat update is not worth failing a request for.
    let _ = unsafe { proxy_increment_metric(id, by) };
}

pub fn record_metric(id: u32, value: u64) {
    // SAFETY: no pointers.
    let _ = unsafe { proxy_record_metric(id, value) };
}

/// Wall-clock time in ns since the Unix epoch (0 if the host cannot say).
pub fn now_nanos() -> u64 {
    let mut nanos: u64 = 0;
    // SAFETY: out-param is a valid local.
    match check(unsafe { proxy_get_current_time_nanoseconds(&mut nanos) }) {
        Ok(()) => nanos,
        Err(_) => 0,
    }
}
