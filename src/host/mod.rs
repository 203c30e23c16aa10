//! The proxy-wasm glue: the only code that calls the host. It reads what the pure modules
//! need, and carries out their decisions.

pub mod abi;
pub mod crypto;
pub mod http;
pub mod request;
pub mod root;
pub mod vm;
