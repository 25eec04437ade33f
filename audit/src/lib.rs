//! # panvault-audit
//!
//! The parts of panvault that watch the vault rather than run it: card-number
//! recognition shared with the vault (Luhn, the IIN table), the PAN discovery
//! scanner, the tamper-evident audit log, erasure receipts and retention, and the
//! compliance checks with their reports.
//!
//! This crate never depends on `panvault-vault`: the vault writes into the types
//! defined here, and the checks read plain facts that the vault collects.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod card;
pub mod compliance;
pub mod log;
pub mod scan;
