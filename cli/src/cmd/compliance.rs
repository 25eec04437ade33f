//! `panvault audit run`: compliance checks as code.
//!
//! The vault collects the facts of a deployment and evaluates the policy
//! (`panvault_vault::compliance`); this command picks the policy
//! (`policies/pci-dss-4.0.1.toml` by default), parses the arguments, and writes
//! the report as text, JSON, SARIF, JUnit or HTML. Exit codes follow InSpec: 0
//! all passed (warnings allowed), 100 a control failed, 101 nothing failed but
//! something was skipped, 1 usage or internal error.
//!
//! Each run is recorded in the vault's audit log (`compliance.run`) with the
//! SHA-256 of the report it wrote. [`preflight`] runs the TLS and key checks for
//! `serve`, and [`refusal_text`] says why it refuses to start.
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use panvault_audit::compliance::{Format, Policy, Report, render};
use panvault_vault::compliance::{CollectOptions, PreflightFailure};
use panvault_vault::config::Config;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::common::CliError;

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// A table (coloured on a terminal).
    Text,
    /// JSON: policy, generated_at, summary, results.
    Json,
    /// SARIF 2.1.0 for code-scanning dashboards.
    Sarif,
    /// JUnit XML for CI test reports.
    Junit,
    /// One self-contained HTML file to forward.
    Html,
}

impl ReportFormat {
    fn format(self) -> Format {
        match self {
            ReportFormat::Text => Format::Text,
            ReportFormat::Json => Format::Json,
            ReportFormat::Sarif => Format::Sarif,
            ReportFormat::Junit => Format::Junit,
            ReportFormat::Html => Format::Html,
        }
    }
}

/// `audit run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The server configuration (TOML) of the vault to assess.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The policy (default: the built-in PCI DSS v4.0.1 policy, policies/pci-dss-4.0.1.toml).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// A live endpoint to probe (the vault or whatever fronts it): every protocol from
    /// SSL 2.0 to TLS 1.3 and every registered suite is offered, and what it accepts
    /// is named; legacy protocols and non-AEAD suites fail, and a client certificate
    /// must be required. Repeat for each.
    #[arg(long = "endpoint", value_name = "HOST:PORT")]
    pub endpoints: Vec<String>,
    /// Report format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Write the report to FILE (mode 0600) instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Exit 0 whatever the results (report-only pipelines); errors still exit 1.
    #[arg(long)]
    pub exit_zero: bool,
    /// More files or directories to scan for card numbers (server logs, exports),
    /// besides the data directory. Repeat for each.
    #[arg(long = "scan", value_name = "PATH")]
    pub scan: Vec<PathBuf>,
    /// A custodian share file whose mode to check. Repeat for each.
    #[arg(long = "share-file", value_name = "FILE")]
    pub share_files: Vec<PathBuf>,
    /// The audit public key (default DIR/audit-signing.pub; better a copy kept elsewhere).
    #[arg(long, value_name = "FILE")]
    pub audit_pubkey: Option<PathBuf>,
    /// Seconds to wait for each endpoint connection.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub probe_timeout: u64,
    /// Evaluate as of this time (RFC 3339) instead of now.
    #[arg(long, value_name = "RFC3339", hide = true)]
    pub now: Option<String>,
}

fn load_policy(path: Option<&Path>) -> Result<Policy, CliError> {
    let loaded = match path {
        Some(p) => Policy::load(p),
        None => Policy::builtin("pci-dss-4.0.1").unwrap_or_else(|| {
            Err(panvault_audit::compliance::PolicyError {
                file: "builtin".into(),
                problems: Vec::new(),
            })
        }),
    };
    loaded.map_err(|e| CliError::usage(format!("policy:\n{e}")))
}

fn parse_now(now: Option<&str>) -> Result<OffsetDateTime, CliError> {
    match now {
        Some(s) => OffsetDateTime::parse(s, &Rfc3339)
            .map_err(|e| CliError::usage(format!("--now {s:?}: {e}"))),
        None => Ok(OffsetDateTime::now_utc()),
    }
}

/// Evaluates the policy; the report and the rendered bytes.
fn assess(args: &RunArgs) -> Result<(Report, String), CliError> {
    let policy = load_policy(args.policy.as_deref())?;
    let now = parse_now(args.now.as_deref())?;
    let config = Config::load_lenient(&args.config)
        .map_err(|e| CliError::usage(format!("{}: {e}", args.config.display())))?;
    let opts = CollectOptions {
        endpoints: args.endpoints.clone(),
        scan: args.scan.clone(),
        share_files: args.share_files.clone(),
        audit_pubkey: args.audit_pubkey.clone(),
        probe_timeout: Duration::from_secs(args.probe_timeout.max(1)),
    };
    let report = panvault_vault::compliance::assess(&config, &policy, &opts, now);
    let colour = args.format == ReportFormat::Text
        && args.output.is_none()
        && std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none();
    let text = render(&report, args.format.format(), colour);
    Ok((report, text))
}

fn write_report(path: &Path, text: &str) -> Result<(), CliError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))
}

/// Runs `audit run`.
pub fn run(args: RunArgs) -> Result<ExitCode, CliError> {
    let (report, text) = assess(&args)?;
    match &args.output {
        Some(p) => write_report(p, &text)?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|e| CliError::usage(format!("standard output: {e}")))?;
        }
    }
    let sha = panvault_audit::log::sha256_hex(text.as_bytes());
    let data_dir = PathBuf::from(&report.target.data_dir);
    match panvault_vault::compliance::record_run(
        &data_dir,
        &crate::common::admin_actor(),
        &report,
        args.format.format().as_str(),
        &sha,
    ) {
        Ok(seq) => eprintln!(
            "panvault: compliance run recorded as audit event {seq} (report SHA-256 {sha})"
        ),
        Err(e) => eprintln!(
            "panvault: warning: the run could not be recorded in the audit log: {e} (report SHA-256 {sha})"
        ),
    }
    if let Some(p) = &args.output {
        let s = &report.summary;
        eprintln!(
            "panvault: wrote {} ({} pass, {} fail, {} warn, {} skip, {} error)",
            p.display(),
            s.pass,
            s.fail,
            s.warn,
            s.skip,
            s.error
        );
    }
    Ok(ExitCode::from(if args.exit_zero {
        0
    } else {
        report.exit_code()
    }))
}

/// The TLS and key checks of the built-in PCI DSS policy for the server
/// configuration at `config_path`, as `serve` runs them before starting: the
/// checks that failed or could not run, each with its first finding (empty when
/// the server may start).
pub fn preflight(config_path: &Path) -> Result<Vec<PreflightFailure>, CliError> {
    let policy = load_policy(None)?;
    let results = panvault_vault::compliance::preflight(config_path, &policy)
        .map_err(|e| CliError::usage(format!("{}: {e}", config_path.display())))?;
    Ok(PreflightFailure::from_results(&results))
}

/// Why `serve` refuses to start, naming each failed check and its first finding.
pub fn refusal_text(failed: &[PreflightFailure]) -> String {
    format!(
        "refusing to start: the configuration fails {} compliance check(s):\n  {}\nfix it, or start with --allow-noncompliant (logged and audited)",
        failed.len(),
        lines(failed)
    )
}

/// The failures, one per line (indented after the first).
pub fn lines(failed: &[PreflightFailure]) -> String {
    failed
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n  ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use panvault_vault::core::kdf::KdfParams;
    use panvault_vault::{SealSpec, SecretText, Unlock, Vault, system_clock};

    const CONFIG: &str = r#"
listen = "127.0.0.1:0"
data_dir = "data"
[tls]
cert = "pki/server.pem"
key = "pki/server.key"
client_ca = "pki/ca.pem"
[[clients]]
name = "storefront"
tenant = "demo-shop"
permissions = ["tokenize", "read"]
"#;

    /// A share-sealed vault, a dev PKI, a config. (What is collected from it is
    /// tested in `panvault_vault::compliance`.)
    fn deployment() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let spec = SealSpec {
            unlock: Unlock::Passphrase(SecretText::new("correct horse battery staple".into())),
            kdf: KdfParams::MINIMUM,
            shares: Some((3, 2)),
        };
        drop(Vault::init(&tmp.path().join("data"), &spec, &system_clock()).unwrap());
        panvault_vault::tls::pki::ensure_dev_pki(&tmp.path().join("pki"), &["storefront"]).unwrap();
        let config = tmp.path().join("panvault.toml");
        std::fs::write(&config, CONFIG).unwrap();
        (tmp, config)
    }

    fn args(config: &Path) -> RunArgs {
        RunArgs {
            config: config.to_path_buf(),
            policy: None,
            endpoints: Vec::new(),
            format: ReportFormat::Json,
            output: None,
            exit_zero: false,
            scan: Vec::new(),
            share_files: Vec::new(),
            audit_pubkey: None,
            probe_timeout: 2,
            now: None,
        }
    }

    #[test]
    fn json_report_has_every_control() {
        let (_tmp, config) = deployment();
        let (_, text) = assess(&args(&config)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["results"].as_array().unwrap().len(), 21);
    }

    #[test]
    fn run_writes_the_report_and_records_itself() {
        let (tmp, config) = deployment();
        let out = tmp.path().join("report.html");
        let mut a = args(&config);
        a.format = ReportFormat::Html;
        a.output = Some(out.clone());
        let code = run(a.clone()).unwrap();
        assert_eq!(
            format!("{code:?}"),
            format!("{:?}", ExitCode::from(101)),
            "skipped endpoint, everything else may pass or fail"
        );
        let html = std::fs::read(&out).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let sha = panvault_audit::log::sha256_hex(&html);
        let conn = panvault_audit::log::open_read_only(&tmp.path().join("data/vault.db")).unwrap();
        let events = panvault_audit::log::read_events(&conn, 1, 10_000).unwrap();
        let run_event = events
            .iter()
            .rev()
            .find(|e| e.event.action == panvault_audit::log::Action::ComplianceRun)
            .expect("a compliance.run event");
        let details = run_event.event.details.clone().unwrap();
        assert!(
            details.contains(&format!("report_sha256={sha}")) && details.contains("format=html"),
            "{details}"
        );
        a.exit_zero = true;
        assert_eq!(
            format!("{:?}", run(a).unwrap()),
            format!("{:?}", ExitCode::SUCCESS)
        );
    }

    #[test]
    fn preflight_refusal_names_each_failed_check_and_the_override() {
        let (tmp, config) = deployment();
        assert_eq!(preflight(&config).unwrap(), []);
        let bad = tmp.path().join("bad.toml");
        std::fs::write(
            &bad,
            CONFIG.replace(
                "client_ca = \"pki/ca.pem\"",
                "client_ca = \"pki/ca.pem\"\nmin_version = \"1.0\"",
            ),
        )
        .unwrap();
        let failed = preflight(&bad).unwrap();
        let msg = refusal_text(&failed);
        assert!(
            msg.contains(
                "fails 1 compliance check(s):\n  tls.configuration (4.2.1, 4.2.1.1): FAIL: "
            ),
            "{msg}"
        );
        assert!(msg.contains("--allow-noncompliant"), "{msg}");
    }

    #[test]
    fn bad_policy_and_config_are_usage_errors() {
        let (tmp, config) = deployment();
        let p = tmp.path().join("p.toml");
        std::fs::write(&p, "[policy]\nid = \"x\"\ntitle = \"t\"\n[[controls]]\nid = \"keys.cryptoperiod\"\nrequirements = [\"3.7.4\"]\nseverity = \"high\"\nmax_age = 1\n").unwrap();
        let mut a = args(&config);
        a.policy = Some(p.clone());
        let e = run(a).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(
            e.to_string()
                .contains(&format!("{}:8:1: unknown key `max_age`", p.display())),
            "{e}"
        );
        let e = run(args(&tmp.path().join("missing.toml"))).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(preflight(&tmp.path().join("missing.toml")).is_err());
    }
}
