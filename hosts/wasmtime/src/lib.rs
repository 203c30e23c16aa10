//! A second proxy-wasm host: runs the built `jwt_guard.wasm` in wasmtime, so the filter is
//! proven on a host other than Envoy. It implements proxy-wasm ABI 0.2.1 as the spec
//! (github.com/proxy-wasm/spec, `abi-versions/v0.2.1`) words it, for what one HTTP filter
//! needs; the module's WASI preview1 imports come from wasmtime-wasi.
//!
//! - [`Filter`]: the compiled module (compile once, instantiate many times).
//! - [`Proxy`]: one proxy process: shared data, stats and the fake clock its workers share.
//! - [`Worker`]: one VM instance (one Envoy worker thread) with its root context.
//!
//! Every call into the module returns a `Result`: a trap is an error (the worker then
//! refuses further calls, as a crashed VM would), never a crash of the test process.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use wasmtime::error::Context as _;
use wasmtime::{bail, format_err, Error, Result};
use wasmtime::{Caller, Engine, Extern, Instance, Linker, Module, Store, WasmParams, WasmResults};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::WasiCtxBuilder;

/// `proxy_status_t`.
pub mod status {
    pub const OK: u32 = 0;
    pub const NOT_FOUND: u32 = 1;
    pub const BAD_ARGUMENT: u32 = 2;
    pub const INVALID_MEMORY_ACCESS: u32 = 6;
    pub const CAS_MISMATCH: u32 = 8;
    pub const UNIMPLEMENTED: u32 = 12;
}

// `proxy_map_type_t`, `proxy_buffer_type_t` and `proxy_stream_type_t` values this host serves.
const MAP_REQUEST_HEADERS: u32 = 0;
const MAP_CALL_RESPONSE_HEADERS: u32 = 6;
const BUFFER_CALL_RESPONSE_BODY: u32 = 4;
const BUFFER_VM_CONFIGURATION: u32 = 6;
const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;
const STREAM_REQUEST: u32 = 0;
const STREAM_RESPONSE: u32 = 1;

/// `proxy_action_t`: what `proxy_on_request_headers` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

pub type Headers = Vec<(String, String)>;

/// The value of `name` (case-insensitive), if present.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The compiled filter. Cheap to clone.
#[derive(Clone)]
pub struct Filter {
    engine: Engine,
    module: Module,
}

impl Filter {
    pub fn load(path: impl AsRef<Path>) -> Result<Filter> {
        let path = path.as_ref();
        let engine = Engine::default();
        let module = Module::from_file(&engine, path)
            .with_context(|| format!("compiling {}", path.display()))?;
        Ok(Filter { engine, module })
    }

    /// `module.function` of every import, as the module declares them.
    pub fn imports(&self) -> Vec<String> {
        self.module
            .imports()
            .map(|i| format!("{}.{}", i.module(), i.name()))
            .collect()
    }
}

/// What the workers of one proxy share.
#[derive(Default)]
struct Shared {
    /// Shared data: key -> (value, cas).
    data: HashMap<Vec<u8>, (Vec<u8>, u32)>,
    last_cas: u32,
    /// Stats are process-wide in Envoy: the same name is the same metric in every worker.
    metrics: Vec<Metric>,
}

impl Shared {
    /// The metric a module's id names (ids start at 1).
    fn metric(&mut self, id: i32) -> Option<&mut Metric> {
        (id as u32)
            .checked_sub(1)
            .and_then(|i| self.metrics.get_mut(i as usize))
    }
}

struct Metric {
    /// `proxy_metric_type_t`: 0 counter, 1 gauge, 2 histogram.
    kind: u32,
    name: String,
    value: u64,
}

/// One proxy process: the filter, and what its workers share.
pub struct Proxy {
    filter: Filter,
    shared: Arc<Mutex<Shared>>,
    /// Wall-clock nanoseconds since the Unix epoch; only tests move it.
    clock: Arc<AtomicU64>,
}

impl Proxy {
    pub fn new(filter: &Filter, start: Duration) -> Proxy {
        Proxy {
            filter: filter.clone(),
            shared: Arc::default(),
            clock: Arc::new(AtomicU64::new(nanos(start))),
        }
    }

    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.clock.load(Ordering::SeqCst))
    }

    /// Moves the clock on, without ticking anyone (see [`Worker::advance`]).
    pub fn advance(&self, by: Duration) {
        self.clock.fetch_add(nanos(by), Ordering::SeqCst);
    }

    /// A stat's value, summed over workers like Envoy's `/stats`.
    pub fn metric(&self, name: &str) -> Option<u64> {
        lock(&self.shared)
            .metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }

    /// Starts a worker: instantiates the module, runs `_initialize`, creates the root
    /// context and calls `proxy_on_vm_start` (it must accept). Configure it next.
    pub fn worker(&self, options: Options) -> Result<Worker> {
        let name = options.name.clone();
        let stdout = MemoryOutputPipe::new(1 << 20);
        let stderr = MemoryOutputPipe::new(1 << 20);
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build_p1();
        let host = Host {
            options,
            shared: self.shared.clone(),
            clock: self.clock.clone(),
            effective: ROOT_ID,
            plugin_configuration: Vec::new(),
            streams: HashMap::new(),
            call_response: None,
            http_calls: Vec::new(),
            next_token: 1,
            tick_period_ms: 0,
            logs: Vec::new(),
            foreign_calls: Vec::new(),
            unsupported_calls: Vec::new(),
            dead_contexts_asked: Vec::new(),
            to_finish: Vec::new(),
        };
        let mut store = Store::new(&self.filter.engine, State { wasi, host });
        let mut linker = Linker::new(&self.filter.engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut State| &mut s.wasi)?;
        define_env(&mut linker)?;
        let instance = linker
            .instantiate(&mut store, &self.filter.module)
            .context("instantiating the filter")?;
        let mut worker = Worker {
            name,
            store,
            instance,
            stdout,
            stderr,
            trap: None,
            next_context_id: ROOT_ID + 1,
            last_tick: self.clock.load(Ordering::SeqCst),
        };
        if worker.has_export("_initialize") {
            worker.call::<(), ()>("_initialize", ())?;
        }
        worker.call::<(i32, i32), ()>("proxy_on_context_create", (ROOT_ID as i32, 0))?;
        if worker.call::<(i32, i32), i32>("proxy_on_vm_start", (ROOT_ID as i32, 0))? == 0 {
            bail!("proxy_on_vm_start refused to start");
        }
        Ok(worker)
    }
}

const ROOT_ID: u32 = 1;

/// How a worker's host behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Names the worker in the log lines printed for a failing test.
    pub name: String,
    /// Whether `proxy_set_effective_context` works; without it every call answers
    /// Unimplemented (12). The import itself always exists: the proxy-wasm SDK imports it,
    /// so a module built on it cannot even be instantiated by a host that lacks it.
    pub effective_context: bool,
    /// `proxy_get_log_level` (`proxy_log_level_t`: 0 trace .. 5 critical).
    pub log_level: u32,
    /// `proxy_get_property` answers, by the path's segments joined with `.`.
    pub properties: Vec<(String, Vec<u8>)>,
}

impl Default for Options {
    fn default() -> Options {
        let property = |k: &str, v: &str| (k.to_string(), v.as_bytes().to_vec());
        Options {
            name: "worker".into(),
            effective_context: true,
            log_level: 1,
            properties: vec![
                property("source.address", "127.0.0.1:40000"),
                property("plugin_name", "jwt_guard"),
                property("plugin_root_id", "jwt_guard"),
            ],
        }
    }
}

impl Options {
    pub fn named(name: &str) -> Options {
        Options {
            name: name.into(),
            ..Options::default()
        }
    }

    pub fn set_property(&mut self, path: &str, value: &str) {
        self.properties.retain(|(k, _)| k != path);
        self.properties
            .push((path.into(), value.as_bytes().to_vec()));
    }
}

/// A `proxy_log` line (`proxy_log_level_t` level).
#[derive(Debug, Clone)]
pub struct LogLine {
    pub level: u32,
    pub message: String,
}

/// A callout the module made with `proxy_http_call`.
#[derive(Debug, Clone)]
pub struct HttpCall {
    pub token: u32,
    /// The context that made it, which gets the answer.
    pub context_id: u32,
    /// The cluster (upstream) name.
    pub upstream: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
    pub timeout_ms: u32,
    pub answered: bool,
}

impl HttpCall {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// The answer given to a callout while `proxy_on_http_call_response` runs.
struct CallResponse {
    headers: Headers,
    body: Vec<u8>,
}

/// A `proxy_send_local_response`.
#[derive(Debug, Clone)]
pub struct LocalResponse {
    pub status: u32,
    pub details: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub grpc_status: i32,
}

impl LocalResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request (HTTP context) as the host sees it.
#[derive(Debug, Clone, Default)]
pub struct Stream {
    /// The request headers now, with the module's changes.
    pub headers: Headers,
    /// What `proxy_on_request_headers` returned.
    pub action: Option<Action>,
    /// Resumed with `proxy_continue_stream` after a pause.
    pub resumed: bool,
    /// The headers sent upstream, once the request went on (Continue or resumed).
    pub forwarded: Option<Headers>,
    pub local_response: Option<LocalResponse>,
    /// `proxy_close_stream` reset it.
    pub reset: bool,
    /// `proxy_on_done` returned false: the host waits for `proxy_done`.
    pub awaiting_done: bool,
    /// `proxy_on_delete` ran.
    pub deleted: bool,
    /// What `proxy_set_property` set on it, by name (Envoy keeps these as filter state
    /// `wasm.<name>`); a name set again keeps its last value.
    pub properties: Vec<(String, Vec<u8>)>,
}

impl Stream {
    /// A property the module set on this request, as text.
    pub fn property(&self, name: &str) -> Option<String> {
        self.properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// Where a request stands.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Sent upstream with these headers.
    Forwarded(Headers),
    /// Answered by the filter.
    Answered(LocalResponse),
    /// Paused, neither resumed nor answered.
    Waiting,
    /// Reset by the filter, or unknown.
    Gone,
}

/// A request just sent into the filter.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub id: u32,
    pub action: Action,
}

/// The store's data: WASI's context and ours.
struct State {
    wasi: WasiP1Ctx,
    host: Host,
}

/// The host side of one worker: what the module's host calls read and change.
struct Host {
    options: Options,
    shared: Arc<Mutex<Shared>>,
    clock: Arc<AtomicU64>,
    /// The context host calls act on: the one the host called into, or the one the module
    /// chose with `proxy_set_effective_context`.
    effective: u32,
    plugin_configuration: Vec<u8>,
    streams: HashMap<u32, Stream>,
    call_response: Option<CallResponse>,
    http_calls: Vec<HttpCall>,
    next_token: u32,
    tick_period_ms: u32,
    logs: Vec<LogLine>,
    foreign_calls: Vec<String>,
    unsupported_calls: Vec<String>,
    /// Contexts the module tried to make effective after they were deleted.
    dead_contexts_asked: Vec<u32>,
    /// Streams that ended during a callback; the host finishes them (done, log, delete)
    /// once the module has returned, never re-entering it.
    to_finish: Vec<u32>,
}

/// A worker: one instance of the module and its host state.
pub struct Worker {
    name: String,
    store: Store<State>,
    instance: Instance,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    trap: Option<String>,
    next_context_id: u32,
    /// Clock reading at the last tick (ns).
    last_tick: u64,
}

impl Worker {
    /// `proxy_on_configure` with `json` as the plugin configuration: whether it was
    /// accepted.
    pub fn configure(&mut self, json: &str) -> Result<bool> {
        let host = self.host_mut();
        host.plugin_configuration = json.as_bytes().to_vec();
        host.effective = ROOT_ID;
        let size = json.len() as i32;
        let accepted = self.call::<(i32, i32), i32>("proxy_on_configure", (ROOT_ID as i32, size));
        self.host_mut().plugin_configuration.clear();
        self.last_tick = self.host().clock.load(Ordering::SeqCst);
        Ok(accepted? != 0)
    }

    /// Sends a request's headers (no body) through a new HTTP context.
    pub fn request(&mut self, headers: &[(&str, &str)]) -> Result<Request> {
        let id = self.next_context_id;
        self.next_context_id += 1;
        let stream = Stream {
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Stream::default()
        };
        let host = self.host_mut();
        host.streams.insert(id, stream);
        host.effective = id;
        self.call::<(i32, i32), ()>("proxy_on_context_create", (id as i32, ROOT_ID as i32))?;
        self.host_mut().effective = id;
        let n = headers.len() as i32;
        let returned = self.call::<(i32, i32, i32), i32>(
            "proxy_on_request_headers",
            (id as i32, n, 1 /* end_of_stream */),
        )?;
        let action = match returned {
            0 => Action::Continue,
            1 => Action::Pause,
            other => bail!("proxy_on_request_headers returned {other}, not an action"),
        };
        if let Some(stream) = self.host_mut().streams.get_mut(&id) {
            stream.action = Some(action);
            if action == Action::Continue && stream.local_response.is_none() {
                stream.forwarded = Some(stream.headers.clone());
            }
        }
        self.finish_ended()?;
        Ok(Request { id, action })
    }

    pub fn stream(&self, id: u32) -> Option<&Stream> {
        self.host().streams.get(&id)
    }

    pub fn verdict(&self, id: u32) -> Verdict {
        match self.stream(id) {
            Some(Stream {
                local_response: Some(r),
                ..
            }) => Verdict::Answered(r.clone()),
            Some(Stream { reset: true, .. }) | None => Verdict::Gone,
            Some(Stream {
                forwarded: Some(h), ..
            }) => Verdict::Forwarded(h.clone()),
            Some(_) => Verdict::Waiting,
        }
    }

    /// The request is over (the upstream answered, or the client left): done, log, delete.
    pub fn end(&mut self, id: u32) -> Result<()> {
        if !self.host().streams.contains_key(&id) {
            bail!("no request {id}");
        }
        self.host_mut().to_finish.push(id);
        self.finish_ended()
    }

    /// Calls `proxy_on_tick` once, now.
    pub fn tick(&mut self) -> Result<()> {
        self.host_mut().effective = ROOT_ID;
        self.call::<(i32,), ()>("proxy_on_tick", (ROOT_ID as i32,))?;
        self.finish_ended()
    }

    /// Moves the proxy's clock on by `by`, ticking this worker every tick period on the
    /// way, as Envoy's timer would.
    pub fn advance(&mut self, by: Duration) -> Result<()> {
        let clock = self.host().clock.clone();
        let end = clock.load(Ordering::SeqCst) + nanos(by);
        loop {
            let period = u64::from(self.host().tick_period_ms) * 1_000_000;
            let next = self.last_tick + period;
            if period == 0 || next > end {
                break;
            }
            clock.fetch_max(next, Ordering::SeqCst);
            self.last_tick = next;
            self.tick()?;
        }
        clock.fetch_max(end, Ordering::SeqCst);
        Ok(())
    }

    /// Every callout the module made, answered or not.
    pub fn http_calls(&self) -> &[HttpCall] {
        &self.host().http_calls
    }

    pub fn pending_http_calls(&self) -> Vec<HttpCall> {
        self.http_calls()
            .iter()
            .filter(|c| !c.answered)
            .cloned()
            .collect()
    }

    /// Answers callout `token`: `proxy_on_http_call_response` on the context that made it,
    /// which may read `headers` (`:status` first) and `body` meanwhile. `status` None
    /// answers as a failed connection does in Envoy: no headers, no body.
    pub fn answer_http_call(
        &mut self,
        token: u32,
        status: Option<u16>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<()> {
        let host = self.host_mut();
        let Some(call) = host
            .http_calls
            .iter_mut()
            .find(|c| c.token == token && !c.answered)
        else {
            bail!("no pending http call {token}");
        };
        call.answered = true;
        let context_id = call.context_id;
        let mut all = Vec::new();
        if let Some(status) = status {
            all.push((":status".to_string(), status.to_string()));
            all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        }
        let n_headers = all.len() as i32;
        host.call_response = Some(CallResponse {
            headers: all,
            body: body.to_vec(),
        });
        host.effective = context_id;
        let result = self.call::<(i32, i32, i32, i32, i32), ()>(
            "proxy_on_http_call_response",
            (
                context_id as i32,
                token as i32,
                n_headers,
                body.len() as i32,
                0,
            ),
        );
        self.host_mut().call_response = None;
        result?;
        self.finish_ended()
    }

    pub fn tick_period(&self) -> Duration {
        Duration::from_millis(self.host().tick_period_ms.into())
    }

    pub fn logs(&self) -> &[LogLine] {
        &self.host().logs
    }

    /// Whether some log line contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.logs().iter().any(|l| l.message.contains(text))
    }

    /// Names passed to `proxy_call_foreign_function` (all answered NotFound).
    pub fn foreign_calls(&self) -> &[String] {
        &self.host().foreign_calls
    }

    /// Host calls the module made that this host does not implement (answered
    /// Unimplemented).
    pub fn unsupported_calls(&self) -> &[String] {
        &self.host().unsupported_calls
    }

    /// Requests, already over, that the module tried to act on again
    /// (`proxy_set_effective_context` on a deleted context).
    pub fn dead_contexts_asked(&self) -> &[u32] {
        &self.host().dead_contexts_asked
    }

    /// What the module wrote to WASI stdout and stderr.
    pub fn stdio(&self) -> (String, String) {
        let text = |p: &MemoryOutputPipe| String::from_utf8_lossy(&p.contents()).into_owned();
        (text(&self.stdout), text(&self.stderr))
    }

    /// The trap that stopped this worker, if one did.
    pub fn trap(&self) -> Option<&str> {
        self.trap.as_deref()
    }

    fn host(&self) -> &Host {
        &self.store.data().host
    }

    fn host_mut(&mut self) -> &mut Host {
        &mut self.store.data_mut().host
    }

    fn has_export(&mut self, name: &str) -> bool {
        self.instance.get_export(&mut self.store, name).is_some()
    }

    /// Calls an export. A trap is returned as an error and stops the worker for good.
    fn exports(&mut self, name: &str) -> bool {
        self.instance.get_func(&mut self.store, name).is_some()
    }

    fn call<P: WasmParams, R: WasmResults>(&mut self, name: &str, params: P) -> Result<R> {
        if let Some(trap) = &self.trap {
            bail!(
                "{}: the VM trapped earlier ({trap}); {name} not called",
                self.name
            );
        }
        let func = self
            .instance
            .get_typed_func::<P, R>(&mut self.store, name)
            .with_context(|| format!("export {name}"))?;
        func.call(&mut self.store, params).map_err(|e| {
            let trap = format!("{e:#}");
            eprintln!("[{}] TRAP in {name}: {trap}", self.name);
            self.trap = Some(trap);
            e.context(format!("{}: {name} trapped", self.name))
        })
    }

    /// Finishes the streams that ended: `proxy_on_done`, then (unless it asks to wait for
    /// `proxy_done`) `proxy_on_log` and `proxy_on_delete`.
    fn finish_ended(&mut self) -> Result<()> {
        while let Some(id) = self.host_mut().to_finish.pop() {
            let Some(stream) = self.host().streams.get(&id) else {
                continue;
            };
            if stream.deleted {
                continue;
            }
            let awaited = stream.awaiting_done;
            self.host_mut().effective = id;
            // Optional, as in proxy-wasm-cpp-host: a module without it is done at once.
            let done = awaited
                || !self.exports("proxy_on_done")
                || self.call::<(i32,), i32>("proxy_on_done", (id as i32,))? != 0;
            if !done {
                if let Some(s) = self.host_mut().streams.get_mut(&id) {
                    s.awaiting_done = true;
                }
                continue;
            }
            self.host_mut().effective = id;
            // Optional, as in proxy-wasm-cpp-host: a module may leave it unexported.
            if self.exports("proxy_on_log") {
                self.call::<(i32,), ()>("proxy_on_log", (id as i32,))?;
            }
            self.call::<(i32,), ()>("proxy_on_delete", (id as i32,))?;
            if let Some(s) = self.host_mut().streams.get_mut(&id) {
                s.awaiting_done = false;
                s.deleted = true;
            }
        }
        Ok(())
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A poisoned lock only means another test thread panicked; the data is still usable.
fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- Host calls ----

/// Why a host call did not succeed: a status for the module, or a trap (the allocator
/// trapped while we handed a buffer over).
enum Fail {
    Status(u32),
    Trap(Error),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail::Trap(e)
    }
}

type Call = std::result::Result<(), Fail>;

fn fail(status: u32) -> Call {
    Err(Fail::Status(status))
}

/// The i32 a host call returns, or the trap to propagate.
fn returned(result: Call) -> Result<i32> {
    match result {
        Ok(()) => Ok(status::OK as i32),
        Err(Fail::Status(s)) => Ok(s as i32),
        Err(Fail::Trap(e)) => Err(e),
    }
}

type Cx<'a> = Caller<'a, State>;

fn memory(cx: &mut Cx<'_>) -> std::result::Result<wasmtime::Memory, Fail> {
    cx.get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or(Fail::Status(status::INVALID_MEMORY_ACCESS))
}

/// Guest memory `[ptr, ptr + len)`.
fn read(cx: &mut Cx<'_>, ptr: i32, len: i32) -> std::result::Result<Vec<u8>, Fail> {
    let memory = memory(cx)?;
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    // Bounds first: a garbage length must not make the host allocate gigabytes.
    start
        .checked_add(len)
        .and_then(|end| memory.data(&*cx).get(start..end))
        .map(<[u8]>::to_vec)
        .ok_or(Fail::Status(status::INVALID_MEMORY_ACCESS))
}

fn read_string(cx: &mut Cx<'_>, ptr: i32, len: i32) -> std::result::Result<String, Fail> {
    Ok(String::from_utf8_lossy(&read(cx, ptr, len)?).into_owned())
}

fn write(cx: &mut Cx<'_>, ptr: i32, bytes: &[u8]) -> Call {
    let memory = memory(cx)?;
    memory
        .write(&mut *cx, ptr as u32 as usize, bytes)
        .map_err(|_| Fail::Status(status::INVALID_MEMORY_ACCESS))
}

fn write_u32(cx: &mut Cx<'_>, ptr: i32, value: u32) -> Call {
    write(cx, ptr, &value.to_le_bytes())
}

/// Hands `data` to the module: a buffer from its allocator (`proxy_on_memory_allocate`,
/// or the older `malloc`), whose address and size go to `ptr_ptr` and `size_ptr`. The
/// module owns the buffer from then on. Empty data is a null pointer, as in Envoy.
fn hand_over(cx: &mut Cx<'_>, data: &[u8], ptr_ptr: i32, size_ptr: i32) -> Call {
    let mut ptr = 0u32;
    if !data.is_empty() {
        let alloc = cx
            .get_export("proxy_on_memory_allocate")
            .or_else(|| cx.get_export("malloc"))
            .and_then(Extern::into_func)
            .ok_or_else(|| format_err!("the module exports no allocator"))?
            .typed::<i32, i32>(&*cx)?;
        ptr = alloc.call(&mut *cx, data.len() as i32)? as u32;
        if ptr == 0 {
            return fail(status::INVALID_MEMORY_ACCESS);
        }
        write(cx, ptr as i32, data)?;
    }
    write_u32(cx, ptr_ptr, ptr)?;
    write_u32(cx, size_ptr, data.len() as u32)
}

/// The proxy-wasm map serialization: count, (key length, value length) per pair, then
/// each key and value followed by a NUL.
fn serialize_map(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        for part in [k, v] {
            out.extend_from_slice(part.as_bytes());
            out.push(0);
        }
    }
    out
}

/// The inverse of [`serialize_map`]; None if the bytes are not such a map. Empty input
/// (or a lone 0) is the empty map.
fn deserialize_map(bytes: &[u8]) -> Option<Headers> {
    if bytes.len() <= 1 {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = word(0)?;
    let mut sizes = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        sizes.push((word(4 + 8 * i)?, word(8 + 8 * i)?));
    }
    let mut at = 4 + 8 * count;
    let mut take = |len: usize| -> Option<String> {
        let s = bytes.get(at..at + len)?;
        at += len + 1;
        Some(String::from_utf8_lossy(s).into_owned())
    };
    sizes
        .into_iter()
        .map(|(k, v)| Some((take(k)?, take(v)?)))
        .collect()
}

impl Host {
    /// The request headers of the effective context, or the callout answer's headers.
    fn map(&mut self, map: u32) -> std::result::Result<&mut Headers, Fail> {
        match map {
            MAP_REQUEST_HEADERS => self
                .streams
                .get_mut(&self.effective)
                .filter(|s| !s.deleted)
                .map(|s| &mut s.headers)
                .ok_or(Fail::Status(status::NOT_FOUND)),
            MAP_CALL_RESPONSE_HEADERS => self
                .call_response
                .as_mut()
                .map(|r| &mut r.headers)
                .ok_or(Fail::Status(status::NOT_FOUND)),
            1..=7 => Err(Fail::Status(status::NOT_FOUND)),
            _ => Err(Fail::Status(status::BAD_ARGUMENT)),
        }
    }

    /// The live stream of the effective context.
    fn effective_stream(&mut self) -> std::result::Result<&mut Stream, Fail> {
        self.streams
            .get_mut(&self.effective)
            .filter(|s| !s.deleted)
            .ok_or(Fail::Status(status::BAD_ARGUMENT))
    }

    fn log(&mut self, level: u32, message: String) {
        const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "critical"];
        let name = LEVELS.get(level as usize).unwrap_or(&"?");
        // Captured by the test harness: shown only when the test fails.
        eprintln!("[{}] {name}: {message}", self.options.name);
        self.logs.push(LogLine { level, message });
    }
}

fn host<'a>(cx: &'a mut Cx<'_>) -> &'a mut Host {
    &mut cx.data_mut().host
}

/// Defines every `env` import of ABI 0.2.1 the module may declare.
fn define_env(linker: &mut Linker<State>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut cx: Cx, level: i32, ptr: i32, len: i32| {
            returned((|| {
                let message = read_string(&mut cx, ptr, len)?;
                if level as u32 > 5 {
                    return fail(status::BAD_ARGUMENT);
                }
                host(&mut cx).log(level as u32, message);
                Ok(())
            })())
        },
    )?;

    linker.func_wrap("env", "proxy_get_log_level", |mut cx: Cx, out: i32| {
        let level = host(&mut cx).options.log_level;
        returned(write_u32(&mut cx, out, level))
    })?;

    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut cx: Cx, out: i32| {
            let now = host(&mut cx).clock.load(Ordering::SeqCst);
            returned(write(&mut cx, out, &now.to_le_bytes()))
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut cx: Cx, ms: i32| {
            host(&mut cx).tick_period_ms = ms as u32;
            status::OK as i32
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut cx: Cx, buffer: i32, start: i32, max: i32, ptr_ptr: i32, size_ptr: i32| {
            returned((|| {
                let h = host(&mut cx);
                let data = match buffer as u32 {
                    BUFFER_PLUGIN_CONFIGURATION => h.plugin_configuration.clone(),
                    BUFFER_VM_CONFIGURATION => Vec::new(),
                    BUFFER_CALL_RESPONSE_BODY => match &h.call_response {
                        Some(r) => r.body.clone(),
                        None => return fail(status::NOT_FOUND),
                    },
                    0..=8 => return fail(status::NOT_FOUND),
                    _ => return fail(status::BAD_ARGUMENT),
                };
                let start = start as u32 as usize;
                if start > data.len() {
                    return fail(status::BAD_ARGUMENT);
                }
                let end = start.saturating_add(max as u32 as usize).min(data.len());
                hand_over(&mut cx, &data[start..end], ptr_ptr, size_ptr)
            })())
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut cx: Cx, map: i32, ptr_ptr: i32, size_ptr: i32| {
            returned((|| {
                let bytes = serialize_map(host(&mut cx).map(map as u32)?);
                hand_over(&mut cx, &bytes, ptr_ptr, size_ptr)
            })())
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut cx: Cx, map: i32, ptr: i32, len: i32| {
            returned((|| {
                let bytes = read(&mut cx, ptr, len)?;
                let pairs = deserialize_map(&bytes).ok_or(Fail::Status(status::BAD_ARGUMENT))?;
                *host(&mut cx).map(map as u32)? = pairs;
                Ok(())
            })())
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut cx: Cx, map: i32, key: i32, key_len: i32, ptr_ptr: i32, size_ptr: i32| {
            returned((|| {
                let key = read_string(&mut cx, key, key_len)?;
                let values: Vec<String> = host(&mut cx)
                    .map(map as u32)?
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(&key))
                    .map(|(_, v)| v.clone())
                    .collect();
                if values.is_empty() {
                    return fail(status::NOT_FOUND);
                }
                // Envoy joins repeated headers with a comma.
                hand_over(&mut cx, values.join(",").as_bytes(), ptr_ptr, size_ptr)
            })())
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut cx: Cx, map: i32, key: i32, key_len: i32, value: i32, value_len: i32| {
            returned((|| {
                let key = read_string(&mut cx, key, key_len)?;
                let value = read_string(&mut cx, value, value_len)?;
                host(&mut cx).map(map as u32)?.push((key, value));
                Ok(())
            })())
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut cx: Cx, map: i32, key: i32, key_len: i32, value: i32, value_len: i32| {
            returned((|| {
                let key = read_string(&mut cx, key, key_len)?;
                let value = read_string(&mut cx, value, value_len)?;
                let headers = host(&mut cx).map(map as u32)?;
                headers.retain(|(k, _)| !k.eq_ignore_ascii_case(&key));
                headers.push((key, value));
                Ok(())
            })())
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut cx: Cx, map: i32, key: i32, key_len: i32| {
            returned((|| {
                let key = read_string(&mut cx, key, key_len)?;
                let headers = host(&mut cx).map(map as u32)?;
                headers.retain(|(k, _)| !k.eq_ignore_ascii_case(&key));
                Ok(())
            })())
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut cx: Cx,
         code: i32,
         details: i32,
         details_len: i32,
         body: i32,
         body_len: i32,
         headers: i32,
         headers_len: i32,
         grpc_status: i32| {
            returned((|| {
                let details = read_string(&mut cx, details, details_len)?;
                let body = read(&mut cx, body, body_len)?;
                let headers = read(&mut cx, headers, headers_len)?;
                let headers =
                    deserialize_map(&headers).ok_or(Fail::Status(status::BAD_ARGUMENT))?;
                let h = host(&mut cx);
                let id = h.effective;
                let stream = h.effective_stream()?;
                if stream.local_response.is_some() {
                    return fail(status::BAD_ARGUMENT);
                }
                stream.local_response = Some(LocalResponse {
                    status: code as u32,
                    details,
                    headers,
                    body,
                    grpc_status,
                });
                // The reply ends the request.
                h.to_finish.push(id);
                Ok(())
            })())
        },
    )?;

    linker.func_wrap("env", "proxy_continue_stream", |mut cx: Cx, stream: i32| {
        returned((|| match stream as u32 {
            STREAM_REQUEST => {
                let s = host(&mut cx).effective_stream()?;
                if s.local_response.is_none() && s.forwarded.is_none() {
                    s.resumed = true;
                    s.forwarded = Some(s.headers.clone());
                }
                Ok(())
            }
            // Responses are never paused here: nothing to resume.
            STREAM_RESPONSE => Ok(()),
            2 | 3 => fail(status::UNIMPLEMENTED),
            _ => fail(status::BAD_ARGUMENT),
        })())
    })?;

    linker.func_wrap("env", "proxy_close_stream", |mut cx: Cx, stream: i32| {
        returned((|| match stream as u32 {
            STREAM_REQUEST | STREAM_RESPONSE => {
                let h = host(&mut cx);
                let id = h.effective;
                h.effective_stream()?.reset = true;
                h.to_finish.push(id);
                Ok(())
            }
            2 | 3 => fail(status::UNIMPLEMENTED),
            _ => fail(status::BAD_ARGUMENT),
        })())
    })?;

    linker.func_wrap("env", "proxy_done", |mut cx: Cx| {
        let h = host(&mut cx);
        let id = h.effective;
        match h.streams.get(&id) {
            Some(s) if s.awaiting_done => {
                h.to_finish.push(id);
                status::OK as i32
            }
            _ => status::NOT_FOUND as i32,
        }
    })?;

    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut cx: Cx, id: i32| {
            let h = host(&mut cx);
            let id = id as u32;
            if !h.options.effective_context {
                return status::UNIMPLEMENTED as i32;
            }
            let live = id == ROOT_ID || h.streams.get(&id).is_some_and(|s| !s.deleted);
            if !live {
                h.dead_contexts_asked.push(id);
                return status::BAD_ARGUMENT as i32;
            }
            h.effective = id;
            status::OK as i32
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut cx: Cx, path: i32, path_len: i32, ptr_ptr: i32, size_ptr: i32| {
            returned((|| {
                // The path is its segments, each followed by a NUL.
                let path = read_string(&mut cx, path, path_len)?;
                let path = path.trim_end_matches('\0').replace('\0', ".");
                let value = host(&mut cx)
                    .options
                    .properties
                    .iter()
                    .find(|(k, _)| *k == path)
                    .map(|(_, v)| v.clone());
                match value {
                    Some(v) => hand_over(&mut cx, &v, ptr_ptr, size_ptr),
                    None => fail(status::NOT_FOUND),
                }
            })())
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut cx: Cx, path: i32, path_len: i32, value: i32, value_len: i32| {
            returned((|| {
                // As Envoy: the name is kept as sent; without a request there is nothing
                // to set it on.
                let name = read_string(&mut cx, path, path_len)?;
                let value = read(&mut cx, value, value_len)?;
                let h = host(&mut cx);
                let stream = h
                    .streams
                    .get_mut(&h.effective)
                    .filter(|s| !s.deleted)
                    .ok_or(Fail::Status(status::NOT_FOUND))?;
                stream.properties.retain(|(k, _)| *k != name);
                stream.properties.push((name, value));
                Ok(())
            })())
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut cx: Cx, key: i32, key_len: i32, ptr_ptr: i32, size_ptr: i32, cas_ptr: i32| {
            returned((|| {
                let key = read(&mut cx, key, key_len)?;
                let entry = lock(&host(&mut cx).shared).data.get(&key).cloned();
                let Some((value, cas)) = entry else {
                    return fail(status::NOT_FOUND);
                };
                hand_over(&mut cx, &value, ptr_ptr, size_ptr)?;
                write_u32(&mut cx, cas_ptr, cas)
            })())
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut cx: Cx, key: i32, key_len: i32, value: i32, value_len: i32, cas: i32| {
            returned((|| {
                let key = read(&mut cx, key, key_len)?;
                let value = read(&mut cx, value, value_len)?;
                let shared = host(&mut cx).shared.clone();
                let mut shared = lock(&shared);
                // As in Envoy: a CAS guards only a key that exists; 0 writes unconditionally.
                if let Some((_, current)) = shared.data.get(&key) {
                    if cas != 0 && cas as u32 != *current {
                        return fail(status::CAS_MISMATCH);
                    }
                }
                shared.last_cas = shared.last_cas.wrapping_add(1).max(1);
                let next = shared.last_cas;
                shared.data.insert(key, (value, next));
                Ok(())
            })())
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut cx: Cx,
         upstream: i32,
         upstream_len: i32,
         headers: i32,
         headers_len: i32,
         body: i32,
         body_len: i32,
         trailers: i32,
         trailers_len: i32,
         timeout_ms: i32,
         token_ptr: i32| {
            returned((|| {
                let upstream = read_string(&mut cx, upstream, upstream_len)?;
                let headers = read(&mut cx, headers, headers_len)?;
                let body = read(&mut cx, body, body_len)?;
                let trailers = read(&mut cx, trailers, trailers_len)?;
                let (Some(headers), Some(trailers)) =
                    (deserialize_map(&headers), deserialize_map(&trailers))
                else {
                    return fail(status::BAD_ARGUMENT);
                };
                let h = host(&mut cx);
                let token = h.next_token;
                h.next_token += 1;
                h.http_calls.push(HttpCall {
                    token,
                    context_id: h.effective,
                    upstream,
                    headers,
                    body,
                    trailers,
                    timeout_ms: timeout_ms as u32,
                    answered: false,
                });
                write_u32(&mut cx, token_ptr, token)
            })())
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_get_status",
        |mut cx: Cx, code_ptr: i32, ptr_ptr: i32, size_ptr: i32| {
            returned((|| {
                let code = match &host(&mut cx).call_response {
                    Some(r) => header(&r.headers, ":status").and_then(|s| s.parse().ok()),
                    None => return fail(status::NOT_FOUND),
                };
                write_u32(&mut cx, code_ptr, code.unwrap_or(0))?;
                hand_over(&mut cx, &[], ptr_ptr, size_ptr)
            })())
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut cx: Cx, kind: i32, name: i32, name_len: i32, id_ptr: i32| {
            returned((|| {
                let name = read_string(&mut cx, name, name_len)?;
                let kind = kind as u32;
                if kind > 2 {
                    return fail(status::BAD_ARGUMENT);
                }
                let shared = host(&mut cx).shared.clone();
                let id = {
                    let mut shared = lock(&shared);
                    match shared.metrics.iter().position(|m| m.name == name) {
                        Some(i) => i,
                        None => {
                            shared.metrics.push(Metric {
                                kind,
                                name,
                                value: 0,
                            });
                            shared.metrics.len() - 1
                        }
                    }
                };
                // Ids start at 1: 0 would look like "no metric" to a careless module.
                write_u32(&mut cx, id_ptr, id as u32 + 1)
            })())
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |mut cx: Cx, id: i32, delta: i64| {
            let mut shared = lock(&host(&mut cx).shared);
            let Some(m) = shared.metric(id) else {
                return status::NOT_FOUND as i32;
            };
            if m.kind == 0 && delta < 0 {
                return status::BAD_ARGUMENT as i32;
            }
            m.value = m.value.wrapping_add_signed(delta);
            status::OK as i32
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |mut cx: Cx, id: i32, value: i64| {
            let mut shared = lock(&host(&mut cx).shared);
            let Some(m) = shared.metric(id) else {
                return status::NOT_FOUND as i32;
            };
            m.value = value as u64;
            status::OK as i32
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut cx: Cx,
         name: i32,
         name_len: i32,
         _args: i32,
         _args_len: i32,
         _ptr: i32,
         _size: i32| {
            returned((|| {
                let name = read_string(&mut cx, name, name_len)?;
                // No host extensions here (not Envoy's verify_signature either).
                host(&mut cx).foreign_calls.push(name);
                fail(status::NOT_FOUND)
            })())
        },
    )?;

    define_unsupported(linker)
}

/// Imports of the SDK that jwt-guard never uses (gRPC, shared queues, writable buffers): they exist so the module links, answer Unimplemented, and are recorded so
/// a test can check that none was called.
fn define_unsupported(linker: &mut Linker<State>) -> Result<()> {
    use wasmtime::{FuncType, Val, ValType};
    const CALLS: [(&str, usize); 10] = [
        ("proxy_set_buffer_bytes", 5),
        ("proxy_grpc_call", 12),
        ("proxy_grpc_stream", 9),
        ("proxy_grpc_send", 4),
        ("proxy_grpc_cancel", 1),
        ("proxy_grpc_close", 1),
        ("proxy_register_shared_queue", 3),
        ("proxy_resolve_shared_queue", 5),
        ("proxy_enqueue_shared_queue", 3),
        ("proxy_dequeue_shared_queue", 3),
    ];
    let engine = linker.engine().clone();
    for (name, arity) in CALLS {
        let ty = FuncType::new(&engine, vec![ValType::I32; arity], [ValType::I32]);
        linker.func_new("env", name, ty, move |mut cx: Cx, _params, results| {
            host(&mut cx).unsupported_calls.push(name.to_string());
            results[0] = Val::I32(status::UNIMPLEMENTED as i32);
            Ok(())
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_serialization_round_trips() {
        let pairs = vec![
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "22".to_string()),
        ];
        let bytes = serialize_map(&pairs);
        // The spec's example.
        assert_eq!(
            bytes,
            [
                2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, b'a', 0, b'1', 0, b'b',
                0, b'2', b'2', 0
            ]
        );
        assert_eq!(deserialize_map(&bytes), Some(pairs));
        assert_eq!(deserialize_map(&[]), Some(vec![]));
        assert_eq!(deserialize_map(&[0]), Some(vec![]));
        assert_eq!(deserialize_map(&[9, 0, 0, 0, 1]), None);
    }
}
