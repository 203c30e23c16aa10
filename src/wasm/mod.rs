//! The proxy-wasm adapter (wasm32 only): the raw ABI calls, [`crate::host::Host`] on them,
//! and the root and http contexts, which only hand events to the [`crate::worker::Worker`].

mod abi;
mod host;
mod http;
pub mod root;
