//! The native `jwt-guard` command's logic, on the filter's own code (the `cli` feature;
//! `src/bin/jwt-guard.rs` parses arguments and prints):
//! - `check` ([`check`]) loads a config with [`crate::config::Config::from_json`], adds
//!   [`lint`] warnings, and places each in the file ([`locate`]);
//! - `explain` ([`explain`]) runs the real [`crate::worker::Worker`] on an in-memory
//!   host ([`crate::host::memory`]) and shows each requirement ([`trace`]) and the filter's log lines ([`logs`]);
//! - `schema` prints [`crate::json_schema`].

pub mod check;
pub mod explain;
pub mod lint;
pub mod locate;
pub mod logs;
pub mod trace;
