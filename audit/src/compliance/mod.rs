//! Compliance checks as code (PCI DSS v4.0.1, GDPR): policies, checks, reports.
//!
//! A run has three steps, each usable on its own:
//!
//! 1. **Policy.** [`Policy::load`] reads a TOML file of controls — stable id,
//!    title, requirement numbers, severity, parameters — and reports every
//!    unknown key or bad value with its file and line. [`Policy::builtin`] gives
//!    the shipped `policies/pci-dss-4.0.1.toml` and `policies/gdpr.toml`.
//! 2. **Facts.** [`Facts`] is plain data: key inventory, stored-data facts, scanner
//!    findings, TLS settings, certificates, live probes ([`probe::probe`]), the
//!    audit log ([`collect::audit_log_facts`]), clients and permissions, file
//!    modes, erasure requests. The vault collects them
//!    (`panvault_vault::compliance`; this crate never depends on the vault);
//!    tests build them by hand. A fact can be unknown (the check is skipped) or
//!    failed (the check errors).
//! 3. **Evaluation and reports.** [`evaluate`] runs each enabled control's check
//!    ([`CHECKS`]) into a [`CheckResult`] with evidence and remediation;
//!    [`render`] writes text, JSON, SARIF 2.1.0, JUnit XML or HTML, and
//!    [`Report::exit_code`] follows InSpec (0 pass, 100 fail, 101 skipped).
//!
//! Evidence never holds a card number: checks only see masked numbers, and every
//! evidence line is passed through [`crate::scan::redact`] once more.
mod checks;
pub mod collect;
mod facts;
mod policy;
pub mod probe;
mod report;
mod result;
pub mod x509;

pub use checks::{
    CHECKS, CheckSpec, Outcome, evaluate, evaluate_controls, spec, suite_is_aead, version_rank,
};
pub use facts::{
    AccessFacts, AuditLogFacts, AuditVerifyFacts, CertFacts, CertRole, CertSource, ClientAuth,
    ClientFacts, CvcFacts, DEV_PASSPHRASE_FILE, DataFacts, DataKeyFacts, EndpointFacts,
    ErasureFacts, ErasureRequest, Fact, Facts, FieldStats, FileFacts, FileRole, FingerprintFacts,
    HelloProbe, HelloReply, HitKind, KeyAlgorithm, KeyFacts, KeyFileFacts, KeyState, MaskingRow,
    Negotiated, ScanFacts, ScanHit, SealFacts, TlsConfigFacts,
};
pub use policy::{
    Control, GDPR, PCI_DSS_4_0_1, ParamDefault, ParamKind, ParamSpec, ParamValue, Params, Policy,
    PolicyError, Problem, Severity,
};
pub use report::{Format, render};
pub use result::{
    CheckResult, EXIT_ERROR, EXIT_FAIL, EXIT_PASS, EXIT_SKIP, PolicyInfo, Report, Status, Summary,
    Target,
};
