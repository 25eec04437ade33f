//! The end-to-end suite: the real server over real mutual TLS on 127.0.0.1:0, and
//! the real `panvault` binary, the one Cargo built for this run. One test binary;
//! shared helpers are in the `panvault-tests` library (`tests/src/`) and, for what
//! runs the binary, in `e2e/served.rs`; both are reached here as `util`.
//!
//! `cargo test -p panvault-cli --test e2e`
// Test code: unwrap and indexing are how a test says "this must hold".
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

/// The harness: the `panvault-tests` library, and what runs the real binary.
mod util {
    pub use crate::served::*;
    pub use panvault_tests::*;
}

#[path = "e2e/served.rs"]
mod served;

#[path = "e2e/admin_load.rs"]
mod admin_load;
#[path = "e2e/api_fuzz.rs"]
mod api_fuzz;
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
#[path = "e2e/cvc.rs"]
mod cvc;
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
#[path = "e2e/openapi.rs"]
mod openapi;
#[path = "e2e/outside_verifier.rs"]
mod outside_verifier;
#[path = "e2e/pg_audit.rs"]
mod pg_audit;
#[path = "e2e/pg_batch.rs"]
mod pg_batch;
#[path = "e2e/pg_cards.rs"]
mod pg_cards;
#[path = "e2e/pg_cluster.rs"]
mod pg_cluster;
#[path = "e2e/pg_cvc.rs"]
mod pg_cvc;
#[path = "e2e/pg_harness.rs"]
mod pg_harness;
#[path = "e2e/pg_nodes.rs"]
mod pg_nodes;
#[path = "e2e/pg_ops.rs"]
mod pg_ops;
#[path = "e2e/pg_root.rs"]
mod pg_root;
#[path = "e2e/pg_store.rs"]
mod pg_store;
#[path = "e2e/refusals.rs"]
mod refusals;
#[path = "e2e/relay.rs"]
mod relay;
#[path = "e2e/relay_bench.rs"]
mod relay_bench;
#[path = "e2e/soak.rs"]
mod soak;
#[path = "e2e/tls_probe.rs"]
mod tls_probe;
