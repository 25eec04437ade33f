//! Compliance evidence, collected by the vault: the facts the checks of
//! `panvault_audit::compliance` evaluate, read from a deployment without
//! unsealing it — the key inventory and stored-data facts (through the store),
//! the server configuration (read leniently, so a file the server would refuse
//! is assessed and the refusal becomes evidence), its certificates and keys,
//! file modes, the PAN scanner over the data directory and given paths, the
//! audit log verified with its public key, and optional live endpoint probes.
//!
//! [`collect`] gathers the facts and [`assess`] evaluates a policy over them
//! into a report; [`preflight`] runs
//! the TLS and key checks `serve` runs before it starts, and names each failure
//! as a [`PreflightFailure`]; [`record_run`] records a run in the audit log.
//! The CLI only picks the policy, parses arguments and renders.

mod config_facts;
mod preflight;
#[cfg(test)]
mod tests;
mod vault_facts;

use std::path::{Path, PathBuf};
use std::time::Duration;

use panvault_audit::compliance::{
    AccessFacts, Fact, Facts, FileRole, Policy, Report, Target, collect as audit_collect, evaluate,
    probe, x509,
};
use time::OffsetDateTime;

pub use self::preflight::{PreflightFailure, preflight};
use crate::AccessContext;
use crate::config::{LenientConfig, Permission};
use crate::error::VaultError;
use crate::service::{AuditAction, append_admin_event};

/// What a run looks at besides the configuration.
#[derive(Debug, Clone, Default)]
pub struct CollectOptions {
    /// Live endpoints (`host:port`) to probe.
    pub endpoints: Vec<String>,
    /// More files or directories to scan for card numbers, besides the data directory.
    pub scan: Vec<PathBuf>,
    /// Custodian share files whose modes to check.
    pub share_files: Vec<PathBuf>,
    /// The audit public key (default: `audit-signing.pub` in the data directory).
    pub audit_pubkey: Option<PathBuf>,
    /// How long to wait for each endpoint connection.
    pub probe_timeout: Duration,
}

/// How much to collect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Everything the policy can check.
    Full,
    /// The TLS and key facts only (`serve`'s preflight).
    Preflight,
}

/// The parameter `name` of the first enabled control running `check`.
fn policy_int(policy: &Policy, check: &str, name: &str, default: i64) -> i64 {
    policy
        .enabled()
        .find(|c| c.check == check)
        .map_or(default, |c| c.params.int(name))
}

/// The name of the host the run is made on.
fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Collects every fact `policy` can check about the deployment `config`
/// describes, as of `now` (what [`assess`] evaluates), and the run's target.
pub fn collect(
    config: &LenientConfig,
    policy: &Policy,
    opts: &CollectOptions,
    now: OffsetDateTime,
) -> (Facts, Target) {
    collect_scoped(config, policy, opts, Scope::Full, now)
}

/// [`collect`], or only the preflight's facts.
fn collect_scoped(
    c: &LenientConfig,
    policy: &Policy,
    opts: &CollectOptions,
    scope: Scope,
    now: OffsetDateTime,
) -> (Facts, Target) {
    let mut f = Facts::unknown(now);
    let grace = policy_int(policy, "data.retention", "retention_days_after_expiry", 90);
    let v = vault_facts::collect(&c.data_dir, grace, now);
    f.keys = v.keys;
    f.tls = Fact::Known(config_facts::tls(c));
    f.certificates = Fact::Known(config_facts::certificates(c));
    let target = Target {
        config: c.path.display().to_string(),
        data_dir: c.data_dir.display().to_string(),
        vault_id: v.vault_id,
        endpoints: opts.endpoints.clone(),
        host: host_name(),
    };
    if scope == Scope::Preflight {
        return (f, target);
    }
    f.data = v.data;
    f.erasure = v.erasure;
    f.masking = v.masking;
    f.cvc = v.cvc;
    f.key_files = Fact::Known(
        c.key
            .iter()
            .map(|k| x509::read_key_file(k, "tls.key"))
            .collect(),
    );
    let mut roots = vec![c.data_dir.clone()];
    roots.extend(opts.scan.iter().cloned());
    f.scan = Fact::from_result(audit_collect::scan_facts(&roots));
    let mut extra: Vec<(PathBuf, FileRole)> = c
        .key
        .iter()
        .map(|k| (k.clone(), FileRole::TlsKey))
        .collect();
    extra.extend(
        opts.share_files
            .iter()
            .map(|s| (s.clone(), FileRole::Share)),
    );
    // The certificates the config names, and the private key beside each one.
    extra.extend(
        c.cert
            .iter()
            .chain(&c.client_ca)
            .map(|p| (p.clone(), FileRole::Public)),
    );
    f.files = Fact::from_result(audit_collect::data_dir_modes(&c.data_dir, &extra));
    let pubkey = opts
        .audit_pubkey
        .clone()
        .unwrap_or_else(|| c.data_dir.join("audit-signing.pub"));
    let retention = match c.audit_retention_days {
        Some(d) => (
            Some(d),
            format!("[audit] retention_days in {}", c.path.display()),
        ),
        None => (
            Some(panvault_audit::log::DEFAULT_RETENTION.whole_days()),
            format!(
                "not configured: panvault's default; `prune` refuses less than {} days",
                panvault_audit::log::MIN_RETENTION.whole_days()
            ),
        ),
    };
    f.audit_log = match crate::store::Location::of(&c.data_dir) {
        // The audit-log facts read the SQLite log; a log shared by nodes in
        // PostgreSQL is not measured here, and says so (never a pass it did not earn).
        Ok(crate::store::Location::Postgres(s)) => Fact::Failed(format!(
            "the audit log is in PostgreSQL ({s}): not measured by this check; \
             verify it with `panvault audit verify --data-dir {}`",
            c.data_dir.display()
        )),
        _ => Fact::from_result(audit_collect::audit_log_facts(
            &crate::store::db_path(&c.data_dir),
            &pubkey,
            retention,
        )),
    };
    f.access = Fact::Known(AccessFacts {
        source: c.path.display().to_string(),
        clients: config_facts::clients(c),
        all_permissions: Permission::ALL
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
    });
    f.endpoints = opts
        .endpoints
        .iter()
        .map(|e| probe::probe(e, opts.probe_timeout))
        .collect();
    (f, target)
}

/// Collects every fact `policy` can check about the deployment `config`
/// describes, as of `now`, and evaluates the policy.
pub fn assess(
    config: &LenientConfig,
    policy: &Policy,
    opts: &CollectOptions,
    now: OffsetDateTime,
) -> Report {
    let (facts, target) = collect(config, policy, opts, now);
    evaluate(policy, &facts, target, OffsetDateTime::now_utc())
}

/// Records a run in the audit log of the vault in `data_dir` (without
/// unsealing it): the policy, the report's format and SHA-256, and its summary.
/// Returns the event's sequence number.
pub fn record_run(
    data_dir: &Path,
    actor: &AccessContext,
    report: &Report,
    format: &str,
    report_sha256: &str,
) -> Result<u64, VaultError> {
    let s = &report.summary;
    let details = format!(
        "policy={} policy_sha256={} format={format} report_sha256={report_sha256} pass={} fail={} warn={} skip={} error={} exit={}",
        report.policy.id,
        report.policy.sha256,
        s.pass,
        s.fail,
        s.warn,
        s.skip,
        s.error,
        report.exit_code()
    );
    append_admin_event(data_dir, actor, AuditAction::ComplianceRun, &details)
}
