//! End-to-end test utilities: temporary vaults, a throwaway PKI, an in-process
//! server on 127.0.0.1:0, an mTLS HTTP client, child processes, and a log capture to
//! check that no card number is ever logged.
//!
//! What runs the real `panvault` binary (a vault on disk served by it, the binary's
//! path) lives with the end-to-end test target in `cli/tests/e2e/served.rs`: only
//! there does Cargo hand over the binary it built for the run, so a test can never
//! run a stale one.
//!
//! Test code: panics on setup failures are the point.
#![forbid(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    missing_debug_implementations
)]

pub mod cards;
mod client;
mod db;
mod logs;
mod output;
mod pki;
pub mod postgres;
mod process;
pub mod provider;
mod rng;
mod server;
pub mod tools;

pub use self::client::{Client, Resp, card_request, this_year};
pub use self::db::integrity_check;
pub use self::logs::{captured_logs, init_logs};
pub use self::output::{child_log_level, keep_output, kept};
pub use self::pki::{CLIENTS, TestPki};
pub use self::process::{CmdOutput, LineCollector, collect_lines, run_command, within};
pub use self::rng::{TestRng, env_number};
pub use self::server::{ServerOpts, TEST_KDF, TestServer};
