//! The native `jwt-guard` command's logic, on the filter's own code: `check` loads a
//! config with [`crate::config::Config::from_json`] and adds [`lint`] warnings, pointing
//! into the file ([`locate`]); `explain` runs the real [`crate::worker::Worker`] on an
//! offline host ([`offline`]) and shows each requirement ([`trace`]); `schema` prints
//! [`crate::json_schema`]. `src/bin/jwt-guard.rs` parses arguments and prints.

pub mod check;
pub mod lint;
pub mod locate;
