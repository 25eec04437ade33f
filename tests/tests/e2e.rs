//! The end-to-end suite: the real server over real mutual TLS on 127.0.0.1:0, and
//! the real `panvault` binary. One test binary; shared helpers are in the
//! `panvault-tests` library (`tests/src/lib.rs`), used here as `util`.
//!
//! `cargo test -p panvault-tests`
// Test code: unwrap and indexing are how a test says "this must hold".
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use panvault_tests as util;

#[path = "e2e/admin_load.rs"]
mod admin_load;
#[path = "e2e/audit_tail.rs"]
mod audit_tail;
#[path = "e2e/batch.rs"]
mod batch;
#[path = "e2e/binary.rs"]
mod binary;
#[path = "e2e/compliance_run.rs"]
mod compliance_run;
#[path = "e2e/crash.rs"]
mod crash;
#[path = "e2e/dedup.rs"]
mod dedup;
#[path = "e2e/edge.rs"]
mod edge;
#[path = "e2e/erasure.rs"]
mod erasure;
#[path = "e2e/errors.rs"]
mod errors;
#[path = "e2e/faults.rs"]
mod faults;
#[path = "e2e/flow.rs"]
mod flow;
#[path = "e2e/keys_cli.rs"]
mod keys_cli;
#[path = "e2e/lifecycle.rs"]
mod lifecycle;
#[path = "e2e/live_keys.rs"]
mod live_keys;
#[path = "e2e/refusals.rs"]
mod refusals;
#[path = "e2e/soak.rs"]
mod soak;
