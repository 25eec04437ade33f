//! Setup shared by the vault's integration tests: a vault with the fastest KDF, the
//! passphrase that opens it, access contexts, runtimes, test cards and raw access to
//! the database file. Each test file uses a part of it.

#![allow(
    dead_code,
    reason = "each test crate uses a different part of this module"
)]

use std::path::Path;

use panvault_vault::core::kdf::KdfParams;
use panvault_vault::{AccessContext, SealSpec, SecretText, Unlock, Vault, system_clock};

/// The passphrase of the vaults made by [`init`].
pub const PASS: &str = "pw";

/// An unlock with the passphrase `p`.
pub fn pass_of(p: &str) -> Unlock {
    Unlock::Passphrase(SecretText::new(p.into()))
}

/// The unlock of the vaults made by [`init`].
pub fn pass() -> Unlock {
    pass_of(PASS)
}

/// A context with only an actor.
pub fn ctx_of(actor: &str) -> AccessContext {
    AccessContext {
        actor: actor.into(),
        ..Default::default()
    }
}

/// A context with every field an audit event records (a client over mTLS).
pub fn full_ctx() -> AccessContext {
    AccessContext {
        actor: "storefront".into(),
        actor_fingerprint: Some("ab".repeat(32)),
        request_id: Some("req-1".into()),
        peer: Some("127.0.0.1:5555".into()),
    }
}

/// Creates a vault in `dir` sealed by `unlock`, with the fastest KDF.
pub fn init_with(dir: &Path, unlock: Unlock) {
    let spec = SealSpec {
        unlock,
        kdf: KdfParams::MINIMUM,
        shares: None,
    };
    Vault::init(dir, &spec, &system_clock()).unwrap();
}

/// Creates a vault in `dir` sealed by [`PASS`].
pub fn init(dir: &Path) {
    init_with(dir, pass());
}

/// A single-threaded runtime.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A runtime with two workers, for tests where tasks must run side by side.
pub fn rt_multi() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Test card number `i` (distinct per `i`, the same on every run).
pub fn card(i: u64) -> String {
    panvault_audit::card::testing::card(i)
}

/// A raw connection to the vault's database, to look at or damage what is stored.
pub fn raw(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join("vault.db")).unwrap()
}

/// Whether `needle` (not empty) occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}
