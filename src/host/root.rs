//! The root context: owns the configuration, the tick that keeps keys fresh, and the JWKS
//! callouts. Replies to callouts made here arrive here; requests that waited for keys are
//! resumed from here (`set_effective_context`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use serde::Deserialize;

use crate::config::{split_http_uri, Config};
use crate::jwks::KeySet;
use crate::keystore;

use super::abi;
use super::http::Http;
use super::request;
use super::vm::{bump, now_ms, update_record, Remote, Stage, Vm, Waiter};

/// How often each worker checks shared data for new keys and whether a fetch is due.
const TICK: Duration = Duration::from_millis(100);

pub struct Root {
    context_id: u32,
    vm: Option<Rc<RefCell<Vm>>>,
}

/// The fields of an OpenID configuration document the filter uses.
#[derive(Deserialize)]
struct Discovered {
    issuer: String,
    jwks_uri: String,
}

/// A finished callout, reduced to what the fetch logic needs.
struct Response {
    status: String,
    cache_control: Option<String>,
    body: Result<Vec<u8>, String>,
}

impl Root {
    pub fn new(context_id: u32) -> Root {
        Root {
            context_id,
            vm: None,
        }
    }

    /// Takes the lease and starts a fetch for every provider that is due: first keys, a
    /// refresh, or a refetch a request asked for because of an unknown `kid`.
    fn fetch_due(vm: &mut Vm, now: u64) {
        let worker = vm.worker;
        for i in 0..vm.providers.len() {
            vm.sync(i);
            let jitter = vm.random();
            let Some(remote) = vm.providers.get_mut(i).and_then(|p| p.remote.as_mut()) else {
                continue;
            };
            remote.stats.observe(&remote.record, now);
            let refetch = std::mem::take(&mut remote.refetch_wanted);
            if remote.in_flight.is_some() {
                continue;
            }
            let t = remote.timing;
            // Which branch produced the record written (the closure may run again on CAS
            // retries; the last run is the one that counts).
            let is_refetch = Cell::new(false);
            let leased = update_record(&remote.record_key, |r| {
                is_refetch.set(false);
                if keystore::should_fetch(r, now) {
                    Some(keystore::acquire(r, worker, now, &t))
                } else if refetch && keystore::refetch_allowed(r, now, &t) {
                    is_refetch.set(true);
                    Some(keystore::acquire_refetch(r, worker, now, &t))
                } else {
                    None
                }
            });
            let Some(leased) = leased else { continue };
            if is_refetch.get() {
                bump(remote.stats.unknown_kid_refetch);
            }
            remote.record = leased;
            if remote.jwks.discovery {
                // Shared, so one worker's failed fetch makes every worker discover again.
                remote.discovered = remote.shared_discovery();
            }
            let jwks = &remote.jwks;
            let (stage, cluster, authority, path) = match (&remote.discovered, jwks.discovery) {
                (Some((authority, path)), true) => {
                    (Stage::Jwks, &jwks.jwks_cluster, authority, path)
                }
                (None, true) => (Stage::Discovery, &jwks.cluster, &jwks.authority, &jwks.path),
                (_, false) => (Stage::Jwks, &jwks.cluster, &jwks.authority, &jwks.path),
            };
            let (cluster, authority, path) = (cluster.clone(), authority.clone(), path.clone());
            if let Err(reason) = dispatch(remote, stage, &cluster, &authority, &path) {
                fail(remote, now, jitter, &reason);
            }
        }
    }

    /// Decides again for every waiting request whose provider's keys changed, or whose
    /// wait is over, and resumes or answers it.
    fn resolve_waiters(&self, vm_cell: &Rc<RefCell<Vm>>, now: u64) {
        let (ready, config, metrics) = {
            let Ok(mut vm) = vm_cell.try_borrow_mut() else {
                return;
            };
            let (ready, keep): (Vec<Waiter>, Vec<Waiter>) =
                std::mem::take(&mut vm.waiters).into_iter().partition(|w| {
                    let p = vm.providers.get(w.provider);
                    let changed =
                        p.is_some_and(|p| p.keys.is_some() && p.version != w.seen_version);
                    let gives_up = p.and_then(|p| p.remote.as_ref()).is_none_or(|r| {
                        keystore::waiter_gives_up(&r.record, w.since_ms, now, &r.timing)
                    });
                    changed || gives_up
                });
            vm.waiters = keep;
            (ready, vm.config.clone(), vm.metrics.clone())
        };
        for w in ready {
            if abi::set_effective_context(w.context_id).is_err() {
                continue; // the client went away
            }
            // Managed headers were stripped when the request first came in.
            let mut headers = request::read_headers();
            let (outcome, line) = match vm_cell.try_borrow_mut() {
                Ok(mut vm) => request::decide(&mut vm, &headers, now, true),
                Err(_) => continue,
            };
            if request::apply(&config, &metrics, &mut headers, &outcome, &line) {
                if let Err(e) = abi::resume_request() {
                    log::warn!(
                        "jwt-guard: could not resume request {}: {e:?}",
                        w.context_id
                    );
                }
            }
        }
        // Later host calls from this root (callouts) must be its own again.
        let _ = abi::set_effective_context(self.context_id);
    }

    fn read_response(&self, body_size: usize, max_bytes: usize) -> Response {
        let header = |name: &str| {
            abi::call_response_header(name).map(|v| String::from_utf8_lossy(&v).into_owned())
        };
        let body = if body_size > max_bytes {
            Err(format!(
                "body of {body_size} bytes is over the {max_bytes} byte limit"
            ))
        } else {
            Ok(abi::call_response_body(body_size).unwrap_or_default())
        };
        Response {
            status: header(":status").unwrap_or_default(),
            cache_control: header("cache-control"),
            body,
        }
    }
}

fn dispatch(
    remote: &mut Remote,
    stage: Stage,
    cluster: &str,
    authority: &str,
    path: &str,
) -> Result<(), String> {
    let headers = vec![
        (":method", "GET"),
        (":path", path),
        (":authority", authority),
        ("accept", "application/json"),
        ("user-agent", "jwt-guard"),
    ];
    let timeout = Duration::from_millis(remote.jwks.timeout_ms);
    bump(remote.stats.fetch_attempt);
    match hostcalls::dispatch_http_call(cluster, headers, None, vec![], timeout) {
        Ok(token) => {
            remote.in_flight = Some((token, stage));
            log::debug!("jwt-guard: fetching {authority}{path} through {cluster}");
            Ok(())
        }
        Err(status) => Err(format!(
            "cannot call cluster {cluster:?} ({status:?}): is it defined in Envoy?"
        )),
    }
}

fn fail(remote: &mut Remote, now: u64, jitter: u64, reason: &str) {
    bump(remote.stats.fetch_failure);
    remote.in_flight = None;
    // The IdP may have moved its keys: discover again next time.
    if remote.discovered.is_some() {
        remote.share_discovery(None);
    }
    let t = remote.timing;
    if let Some(r) = update_record(&remote.record_key, |r| {
        Some(keystore::failed(r, now, &t, jitter))
    }) {
        remote.record = r;
        let keeping = if r.version > 0 {
            "keeping the last good keys"
        } else {
            "no keys yet"
        };
        log::warn!(
            "jwt-guard: JWKS fetch from {} failed: {reason}; {keeping}; retry in {} ms",
            remote.jwks.uri,
            r.next_attempt_ms.saturating_sub(now)
        );
    }
}

/// Handles the discovery document: checks its issuer, then fetches the JWKS it names.
fn on_discovery(remote: &mut Remote, issuer: &str, resp: Response) -> Result<(), String> {
    if resp.status != "200" {
        return Err(status_reason(&resp.status));
    }
    let body = resp.body?;
    let doc: Discovered =
        serde_json::from_slice(&body).map_err(|e| format!("not an OpenID configuration: {e}"))?;
    if doc.issuer != issuer {
        return Err(format!(
            "the discovery document's issuer {:?} is not the configured {issuer:?}",
            doc.issuer.chars().take(200).collect::<String>()
        ));
    }
    let (authority, path) = split_http_uri(&doc.jwks_uri).map_err(|e| format!("jwks_uri {e}"))?;
    let cluster = remote.jwks.jwks_cluster.clone();
    dispatch(remote, Stage::Jwks, &cluster, &authority, &path)?;
    remote.share_discovery(Some((authority, path)));
    Ok(())
}

/// Handles the JWKS: stores a good one for every worker; a bad one changes nothing.
fn on_jwks(vm: &mut Vm, i: usize, resp: Response, now: u64) -> Result<usize, String> {
    if resp.status != "200" {
        return Err(status_reason(&resp.status));
    }
    let body = resp.body?;
    let set = KeySet::from_json(&body).map_err(|e| e.to_string())?;
    let count = set.len();
    let max_age = resp.cache_control.as_deref().and_then(keystore::max_age_s);
    let Some(p) = vm.providers.get_mut(i) else {
        return Ok(count);
    };
    let Some(remote) = p.remote.as_mut() else {
        return Ok(count);
    };
    remote.in_flight = None;
    bump(remote.stats.fetch_success);
    // Body first, then the version that points at it.
    let _ = abi::set_shared_data(&remote.body_key, &body, None);
    let t = remote.timing;
    if let Some(r) = update_record(&remote.record_key, |r| {
        Some(keystore::succeeded(r, now, max_age, &t))
    }) {
        remote.record = r;
        p.version = r.version;
    }
    p.keys = Some(Arc::new(set));
    Ok(count)
}

fn status_reason(status: &str) -> String {
    if status.is_empty() {
        "no response (connection failed or timed out)".into()
    } else {
        format!("status {}", status.chars().take(8).collect::<String>())
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some(vm_cell) = self.vm.clone() else {
            return;
        };
        let now = now_ms();
        {
            let Ok(mut vm) = vm_cell.try_borrow_mut() else {
                return;
            };
            let found = vm.providers.iter().enumerate().find_map(|(i, p)| {
                let (t, stage) = p.remote.as_ref()?.in_flight?;
                (t == token).then_some((i, stage))
            });
            let Some((i, stage)) = found else { return };
            let issuer = vm
                .config
                .providers
                .get(i)
                .map(|p| p.issuer.clone())
                .unwrap_or_default();
            let jitter = vm.random();
            let Some(remote) = vm.providers.get_mut(i).and_then(|p| p.remote.as_mut()) else {
                return;
            };
            remote.in_flight = None;
            let resp = self.read_response(body_size, remote.jwks.max_bytes);
            let result = match stage {
                Stage::Discovery => on_discovery(remote, &issuer, resp),
                Stage::Jwks => match on_jwks(&mut vm, i, resp, now) {
                    Ok(count) => {
                        let name = vm.providers.get(i).map_or("", |p| p.name.as_str());
                        log::info!("jwt-guard: provider {name}: loaded {count} keys");
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
            };
            if let Err(reason) = result {
                if let Some(remote) = vm.providers.get_mut(i).and_then(|p| p.remote.as_mut()) {
                    fail(remote, now, jitter, &reason);
                }
            }
        }
        self.resolve_waiters(&vm_cell, now);
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
            "jwt-guard: configured {} providers, {} rules",
            config.providers.len(),
            config.rules.len()
        );
        // Nanoseconds: workers configure within the same millisecond, and their ids
        // (drawn from this seed) must differ for the fetch lease to mean anything.
        let seed = abi::now_nanos() ^ (u64::from(self.context_id) << 40);
        self.vm = Some(Rc::new(RefCell::new(Vm::new(config, seed))));
        self.set_tick_period(TICK);
        true
    }

    fn on_tick(&mut self) {
        let Some(vm_cell) = self.vm.clone() else {
            return;
        };
        let now = now_ms();
        if let Ok(mut vm) = vm_cell.try_borrow_mut() {
            Root::fetch_due(&mut vm, now);
        }
        self.resolve_waiters(&vm_cell, now);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let vm = self.vm.clone()?;
        Some(Box::new(Http::new(context_id, vm)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
