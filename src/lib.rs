//! jwt-guard: a JWT authorization filter for proxy-wasm hosts.
//!
//! Decisions are pure functions ([`config`], [`extract`], [`jwks`], [`verify`], [`policy`],
//! [`routing`], [`deny`], [`fetch_lease`], [`flow`], [`forward`], [`audit`], [`headers`]); a
//! [`worker`] carries them out through the [`host::Host`] trait; `wasm` (wasm32 only) is
//! the only code that talks to proxy-wasm. ARCHITECTURE.md has the whole picture.

pub mod alg;
pub mod audit;
pub mod cache;
pub mod client_address;
pub mod config;
pub mod cors;
pub mod deny;
pub mod envoy_crypto;
pub mod extract;
pub(crate) mod fetch_lease;
pub mod filter_state;
pub mod flow;
pub mod forward;
pub mod headers;
pub mod jwks;
pub mod policy;
pub mod routing;
pub mod rust_crypto;
pub mod schema;
pub mod shared_cache;
pub mod verify;

pub mod host;
pub mod worker;

/// The native `jwt-guard` command's logic (the `cli` feature; `src/bin/jwt-guard.rs`).
#[cfg(feature = "cli")]
pub mod cli;
/// The JSON Schema of the plugin config (the `schema` feature).
#[cfg(feature = "schema")]
pub mod json_schema;

#[cfg(target_arch = "wasm32")]
mod wasm;

#[cfg(test)]
mod robustness;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Trace);
    proxy_wasm::set_root_context(|context_id| Box::new(wasm::root::Root::new(context_id)));
}}
