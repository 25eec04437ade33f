//! The checks `serve` runs before it unseals anything: TLS and keys.
use std::fmt;
use std::path::Path;

use panvault_audit::compliance::{CheckResult, Policy, Status, evaluate_controls};
use time::OffsetDateTime;

use super::{CollectOptions, Scope, collect_scoped};
use crate::config::{Config, ConfigError};

/// A preflight check that failed (or could not run): `serve` refuses to start
/// on it, or, when the operator overrides, records it in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreflightFailure {
    /// The control's id, e.g. `tls.configuration`.
    pub check: String,
    /// The requirements it covers, e.g. `4.2.1`.
    pub requirements: Vec<String>,
    /// Its first finding (a `FAIL:` or `ERROR:` line when there is one).
    pub message: String,
}

impl PreflightFailure {
    /// The failures among `results`; empty when every check passed or only warned.
    pub fn from_results(results: &[CheckResult]) -> Vec<PreflightFailure> {
        results
            .iter()
            .filter(|r| matches!(r.status, Status::Fail | Status::Error))
            .map(|r| PreflightFailure {
                check: r.id.clone(),
                requirements: r.requirements.clone(),
                message: r
                    .evidence
                    .iter()
                    .find(|l| l.starts_with("FAIL:") || l.starts_with("ERROR:"))
                    .or(r.evidence.first())
                    .cloned()
                    .unwrap_or_else(|| format!("{:?} without a finding", r.status)),
            })
            .collect()
    }
}

impl fmt::Display for PreflightFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.check,
            self.requirements.join(", "),
            self.message
        )
    }
}

/// The preflight controls of `policy` (the TLS and key checks) for the server
/// configuration at `config_path`, evaluated now. A configuration the server
/// would refuse is still assessed (its refusal is evidence); only a file with
/// nothing to assess is an error.
pub fn preflight(config_path: &Path, policy: &Policy) -> Result<Vec<CheckResult>, ConfigError> {
    let config = Config::load_lenient(config_path)?;
    let (facts, _) = collect_scoped(
        &config,
        policy,
        &CollectOptions::default(),
        Scope::Preflight,
        OffsetDateTime::now_utc(),
    );
    Ok(evaluate_controls(policy, &facts, |spec| spec.preflight))
}
