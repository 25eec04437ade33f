//! `panvault audit run`: compliance checks as code.
//!
//! Collects the facts of a deployment — the vault's key inventory and stored-data
//! facts (read without unsealing), the server configuration, its certificates and
//! keys, file modes, the PAN scanner over the data directory (database, WAL) and
//! log paths, the audit log verified with its public key, and optional live
//! `--endpoint` probes — evaluates a policy (`policies/pci-dss-4.0.1.toml` by
//! default) and writes a report as text, JSON, SARIF, JUnit or HTML. Exit codes
//! follow InSpec: 0 all passed (warnings allowed), 100 a control failed, 101
//! nothing failed but something was skipped, 1 usage or internal error.
//!
//! Each run is recorded in the vault's audit log (`compliance.run`) with the
//! SHA-256 of the report it wrote. [`preflight`] runs the TLS and key checks for
//! `serve`.
//!
//! `run` and `preflight` are called by `panvault audit run` and `serve`; until
//! those are wired (outside this file), the module is reached only by its tests.
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use panvault_audit::compliance::{
    AccessFacts, CertRole, CheckResult, ClientAuth, ClientFacts, DataFacts, DataKeyFacts,
    ErasureFacts, ErasureRequest, Fact, Facts, FileRole, FingerprintFacts, Format, KeyFacts,
    Policy, Report, SealFacts, Status, Target, TlsConfigFacts, collect, evaluate,
    evaluate_controls, probe, render, x509,
};
use panvault_vault::config::{Config, Permission, TlsVersion};
use panvault_vault::service::inventory::Inventory;
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
    /// A live endpoint to probe: negotiated version, suite and chain; TLS 1.0/1.1 and
    /// CBC suites must be refused, a client certificate required. Repeat for each.
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

/// What `run` learned about the configuration file.
#[derive(Debug, Clone)]
struct ConfigView {
    path: PathBuf,
    data_dir: PathBuf,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    crls: usize,
    versions: Vec<String>,
    suites: Vec<String>,
    clients: Vec<ClientFacts>,
    /// Why the server would refuse the file, if it would.
    error: Option<String>,
    /// `[audit] retention_days`, if present.
    audit_retention_days: Option<i64>,
}

fn versions_from(min: &str) -> Vec<String> {
    ["1.0", "1.1", "1.2", "1.3"]
        .iter()
        .filter(|v| {
            panvault_audit::compliance::version_rank(v)
                >= panvault_audit::compliance::version_rank(min)
        })
        .map(|v| (*v).to_owned())
        .collect()
}

fn server_suites() -> Vec<String> {
    panvault_vault::tls::AEAD_SUITES
        .iter()
        .map(|s| format!("{:?}", s.suite()))
        .collect()
}

/// Reads the configuration through the server's own loader; if the server would
/// refuse it, reads what it can from the TOML so the checks still say why.
fn load_config(path: &Path) -> Result<ConfigView, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
    let raw: toml::Table =
        toml::from_str(&text).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
    let audit_retention_days = raw
        .get("audit")
        .and_then(|a| a.get("retention_days"))
        .and_then(toml::Value::as_integer);
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let resolve = |p: &Path| {
        if p.is_relative() {
            base.join(p)
        } else {
            p.to_path_buf()
        }
    };
    match Config::load(path) {
        Ok(c) => Ok(ConfigView {
            path: path.to_path_buf(),
            data_dir: collect::clean_path(&c.data_dir),
            cert: Some(c.tls.cert.clone()),
            key: Some(c.tls.key.clone()),
            client_ca: Some(c.tls.client_ca.clone()),
            crls: c.tls.crls.len(),
            versions: versions_from(match c.tls.min_version {
                TlsVersion::Tls13 => "1.3",
                _ => "1.2",
            }),
            suites: server_suites(),
            clients: c
                .clients
                .iter()
                .map(|cl| ClientFacts {
                    name: cl.name.clone(),
                    common_name: cl.common_name.clone(),
                    uri_san: cl.uri_san.clone(),
                    tenant: cl.tenant.clone(),
                    permissions: cl
                        .permissions
                        .iter()
                        .map(|p| p.as_str().to_owned())
                        .collect(),
                })
                .collect(),
            error: None,
            audit_retention_days,
        }),
        Err(e) => {
            let tls = raw.get("tls").and_then(toml::Value::as_table);
            let tls_path = |k: &str| {
                tls.and_then(|t| t.get(k))
                    .and_then(toml::Value::as_str)
                    .map(|s| resolve(Path::new(s)))
            };
            let data_dir = raw
                .get("data_dir")
                .and_then(toml::Value::as_str)
                .map(|s| collect::clean_path(&resolve(Path::new(s))))
                .ok_or_else(|| {
                    CliError::usage(format!(
                        "{}: {e} (and no data_dir to assess)",
                        path.display()
                    ))
                })?;
            let min = tls
                .and_then(|t| t.get("min_version"))
                .and_then(toml::Value::as_str)
                .unwrap_or("1.2");
            let suites = tls
                .and_then(|t| t.get("cipher_suites"))
                .and_then(toml::Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(toml::Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_else(server_suites);
            let strs = |v: Option<&toml::Value>| -> Vec<String> {
                v.and_then(toml::Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(toml::Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let clients = raw
                .get("clients")
                .and_then(toml::Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(toml::Value::as_table)
                        .map(|t| {
                            let s =
                                |k: &str| t.get(k).and_then(toml::Value::as_str).map(str::to_owned);
                            let name = s("name").unwrap_or_default();
                            let (cn, uri) = (s("common_name"), s("uri_san"));
                            ClientFacts {
                                common_name: if cn.is_none() && uri.is_none() {
                                    Some(name.clone())
                                } else {
                                    cn
                                },
                                uri_san: uri,
                                tenant: s("tenant").unwrap_or_default(),
                                permissions: strs(t.get("permissions")),
                                name,
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(ConfigView {
                path: path.to_path_buf(),
                data_dir,
                cert: tls_path("cert"),
                key: tls_path("key"),
                client_ca: tls_path("client_ca"),
                crls: strs(tls.and_then(|t| t.get("crls"))).len(),
                versions: versions_from(min),
                suites,
                clients,
                error: Some(e.to_string()),
                audit_retention_days,
            })
        }
    }
}

fn tls_facts(c: &ConfigView) -> TlsConfigFacts {
    TlsConfigFacts {
        source: c.path.display().to_string(),
        versions: c.versions.clone(),
        cipher_suites: c.suites.clone(),
        // panvault's server always builds a WebPkiClientVerifier over client_ca:
        // a verified client certificate is mandatory whenever a CA is configured.
        client_auth: if c.client_ca.is_some() {
            ClientAuth::Required
        } else {
            ClientAuth::None
        },
        client_ca: c.client_ca.as_ref().map(|p| p.display().to_string()),
        crls: c.crls,
        config_error: c.error.clone(),
    }
}

fn cert_facts(c: &ConfigView) -> Vec<panvault_audit::compliance::CertSource> {
    let mut out = Vec::new();
    if let Some(p) = &c.cert {
        out.push(x509::read_cert_file(p, CertRole::ServerLeaf));
    }
    if let Some(p) = &c.client_ca {
        out.push(x509::read_cert_file(p, CertRole::ClientCa));
    }
    out
}

/// Keys and data from the vault's inventory and its `cards` table (read only,
/// never unsealed).
fn vault_facts(
    data_dir: &Path,
    grace_days: i64,
    now: OffsetDateTime,
) -> (
    Fact<KeyFacts>,
    Fact<DataFacts>,
    Option<String>,
    Fact<ErasureFacts>,
) {
    let inv = match Inventory::read(data_dir, grace_days, now) {
        Ok(i) => i,
        Err(e) => {
            let why = format!("{}: {e}", data_dir.display());
            return (
                Fact::Failed(why.clone()),
                Fact::Failed(why.clone()),
                None,
                Fact::Failed(why),
            );
        }
    };
    let mut data_keys: Vec<DataKeyFacts> = inv
        .keys
        .iter()
        .map(|k| DataKeyFacts {
            version: k.version,
            state: k.state.into(),
            age_days: k.age_days,
            superseded_days: inv
                .keys
                .iter()
                .filter(|n| n.version > k.version)
                .min_by_key(|n| n.version)
                .map(|n| n.age_days),
            records: k.records,
            encryptions: k.encryptions,
        })
        .collect();
    data_keys.sort_by_key(|k| k.version);
    let seal = match (inv.seal_method.as_str(), inv.kdf, inv.shares) {
        ("passphrase", Some((m, t, p)), _) => SealFacts::Passphrase {
            memory_kib: m,
            passes: t,
            lanes: p,
        },
        ("shamir", _, Some((total, threshold))) => SealFacts::Shares { total, threshold },
        (other, _, _) => SealFacts::Other {
            name: other.to_owned(),
        },
    };
    let has_fp_key = inv.wrapped_keys.iter().any(|n| n == "fingerprint");
    let table = card_table(&inv.db_path);
    let keys = KeyFacts {
        data_keys,
        root_age_days: inv.root_age_days,
        seal,
        fingerprint: FingerprintFacts {
            algorithm: "HMAC-SHA-256 truncated to 128 bits, per-tenant key derived with HKDF from the fingerprint key".to_owned(),
            keyed: has_fp_key,
            key_wrapped: has_fp_key,
            stored_len: table.as_ref().ok().and_then(|t| t.fingerprint_len),
        },
    };
    let data = table.map(|t| DataFacts {
        records: inv.records,
        records_past_retention: inv.records_past_retention,
        retention_days_after_expiry: grace_days,
        card_columns: t.columns,
        max_leading_digits: t.max_bin,
        max_trailing_digits: t.max_last,
    });
    let erasure = erasure_facts(&inv.db_path, now);
    (
        Fact::Known(keys),
        Fact::from_result(data),
        Some(inv.vault_id),
        erasure,
    )
}

struct CardTable {
    columns: Vec<String>,
    max_bin: u32,
    max_last: u32,
    fingerprint_len: Option<u32>,
}

fn card_table(db: &Path) -> Result<CardTable, String> {
    let conn =
        panvault_audit::log::open_read_only(db).map_err(|e| format!("{}: {e}", db.display()))?;
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", db.display());
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_table_info('cards')")
        .map_err(|e| err(&e))?;
    let columns = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(|e| err(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(&e))?;
    let (bin, last, fp): (Option<i64>, Option<i64>, Option<i64>) = conn
        .query_row(
            "SELECT max(length(bin)), max(length(last4)), max(length(fingerprint)) FROM cards",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(|e| err(&e))?;
    let n = |v: Option<i64>| v.and_then(|x| u32::try_from(x).ok());
    Ok(CardTable {
        columns,
        max_bin: n(bin).unwrap_or(0),
        max_last: n(last).unwrap_or(0),
        fingerprint_len: n(fp),
    })
}

/// Open erasure requests from the vault's `erasure_requests` table; unknown for a
/// vault whose schema predates erasure tracking.
fn erasure_facts(db: &Path, now: OffsetDateTime) -> Fact<ErasureFacts> {
    let conn = match panvault_audit::log::open_read_only(db) {
        Ok(c) => c,
        Err(e) => return Fact::Failed(format!("{}: {e}", db.display())),
    };
    let exists = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'erasure_requests'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap_or(0);
    if exists == 0 {
        return Fact::Unknown(
            "this vault does not track erasure requests (no erasure_requests table)".to_owned(),
        );
    }
    let read = || -> Result<ErasureFacts, String> {
        let mut stmt = conn.prepare("SELECT id, requested_at FROM erasure_requests WHERE completed_at IS NULL ORDER BY requested_at").map_err(|e| e.to_string())?;
        let open = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
            .map_err(|e| e.to_string())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(id, at)| ErasureRequest {
                id: format!("#{id}"),
                age_days: (now.unix_timestamp() - at).max(0) / 86_400,
            })
            .collect();
        let completed: i64 = conn
            .query_row(
                "SELECT count(*) FROM erasure_requests WHERE completed_at IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .map_err(|e| e.to_string())?;
        Ok(ErasureFacts {
            open,
            completed: u64::try_from(completed).unwrap_or(0),
        })
    };
    Fact::from_result(read())
}

/// The parameter `name` of the first enabled control running `check`.
fn policy_int(policy: &Policy, check: &str, name: &str, default: i64) -> i64 {
    policy
        .enabled()
        .find(|c| c.check == check)
        .map_or(default, |c| c.params.int(name))
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// What [`collect_facts`] needs besides the configuration.
#[derive(Debug, Default)]
struct Collect<'a> {
    endpoints: &'a [String],
    scan: &'a [PathBuf],
    share_files: &'a [PathBuf],
    audit_pubkey: Option<&'a Path>,
    probe_timeout: Duration,
    /// TLS and key facts only (for `serve`).
    preflight: bool,
}

fn collect_facts(
    c: &ConfigView,
    policy: &Policy,
    opts: &Collect<'_>,
    now: OffsetDateTime,
) -> (Facts, Target) {
    let mut f = Facts::unknown(now);
    let grace = policy_int(policy, "data.retention", "retention_days_after_expiry", 90);
    let (keys, data, vault_id, erasure) = vault_facts(&c.data_dir, grace, now);
    f.keys = keys;
    f.tls = Fact::Known(tls_facts(c));
    f.certificates = Fact::Known(cert_facts(c));
    let target = Target {
        config: c.path.display().to_string(),
        data_dir: c.data_dir.display().to_string(),
        vault_id,
        endpoints: opts.endpoints.to_vec(),
        host: host_name(),
    };
    if opts.preflight {
        return (f, target);
    }
    f.data = data;
    f.erasure = erasure;
    f.masking = Fact::from_result(collect::masking_facts(&c.data_dir.join("vault.db")));
    f.key_files = Fact::Known(
        c.key
            .iter()
            .map(|k| x509::read_key_file(k, "tls.key"))
            .collect(),
    );
    let mut roots = vec![c.data_dir.clone()];
    roots.extend(opts.scan.iter().cloned());
    f.scan = Fact::from_result(collect::scan_facts(&roots));
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
    extra.extend(
        c.cert
            .iter()
            .chain(&c.client_ca)
            .map(|p| (p.clone(), FileRole::Public)),
    );
    f.files = Fact::from_result(collect::data_dir_modes(&c.data_dir, &extra));
    let pubkey = opts
        .audit_pubkey
        .map_or_else(|| c.data_dir.join("audit-signing.pub"), Path::to_path_buf);
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
    f.audit_log = Fact::from_result(collect::audit_log_facts(
        &c.data_dir.join("vault.db"),
        &pubkey,
        retention,
    ));
    f.access = Fact::Known(AccessFacts {
        source: c.path.display().to_string(),
        clients: c.clients.clone(),
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
    let config = load_config(&args.config)?;
    let opts = Collect {
        endpoints: &args.endpoints,
        scan: &args.scan,
        share_files: &args.share_files,
        audit_pubkey: args.audit_pubkey.as_deref(),
        probe_timeout: Duration::from_secs(args.probe_timeout.max(1)),
        preflight: false,
    };
    let (facts, target) = collect_facts(&config, &policy, &opts, now);
    let report = evaluate(&policy, &facts, target, OffsetDateTime::now_utc());
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

/// Records the run in the vault's audit log: the report's SHA-256 and summary.
fn record_run(
    data_dir: &Path,
    report: &Report,
    format: ReportFormat,
    sha256: &str,
) -> Result<u64, String> {
    let s = &report.summary;
    let details = format!(
        "policy={} policy_sha256={} format={} report_sha256={sha256} pass={} fail={} warn={} skip={} error={} exit={}",
        report.policy.id,
        report.policy.sha256,
        format.format().as_str(),
        s.pass,
        s.fail,
        s.warn,
        s.skip,
        s.error,
        report.exit_code()
    );
    panvault_vault::service::append_admin_event(
        data_dir,
        &crate::common::admin_actor(),
        panvault_vault::service::AuditAction::ComplianceRun,
        &details,
    )
    .map_err(|e| e.to_string())
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
    match record_run(&data_dir, &report, args.format, &sha) {
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

/// The TLS and key checks of the built-in PCI DSS policy (or `policy`) for the
/// server configuration at `config_path`, as `serve` runs them before starting.
/// A check that fails or errors should stop the server (see [`refusal`]).
pub fn preflight(config_path: &Path) -> Result<Vec<CheckResult>, CliError> {
    preflight_with(config_path, None)
}

/// [`preflight`] with a policy file instead of the built-in one.
pub fn preflight_with(
    config_path: &Path,
    policy: Option<&Path>,
) -> Result<Vec<CheckResult>, CliError> {
    let policy = load_policy(policy)?;
    let config = load_config(config_path)?;
    let now = OffsetDateTime::now_utc();
    let opts = Collect {
        preflight: true,
        ..Collect::default()
    };
    let (facts, _) = collect_facts(&config, &policy, &opts, now);
    Ok(evaluate_controls(&policy, &facts, |spec| spec.preflight))
}

/// The preflight checks that failed, each as `id (requirements): first finding`;
/// empty when every check passed or only warned.
pub fn failed_checks(results: &[CheckResult]) -> Vec<String> {
    results
        .iter()
        .filter(|r| matches!(r.status, Status::Fail | Status::Error))
        .map(|r| {
            let first = r
                .evidence
                .iter()
                .find(|l| l.starts_with("FAIL:") || l.starts_with("ERROR:"))
                .or(r.evidence.first())
                .cloned()
                .unwrap_or_default();
            format!("{} ({}): {first}", r.id, r.requirements.join(", "))
        })
        .collect()
}

/// Why `serve` refuses to start, naming each failed check (from [`failed_checks`])
/// and its first finding.
pub fn refusal_text(failed: &[String]) -> String {
    format!(
        "refusing to start: the configuration fails {} compliance check(s):\n  {}\nfix it, or start with --allow-noncompliant (logged and audited)",
        failed.len(),
        failed.join("\n  ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `serve` says when it refuses, or `None` when it starts.
    fn refusal(results: &[CheckResult]) -> Option<String> {
        let failed = failed_checks(results);
        (!failed.is_empty()).then(|| refusal_text(&failed))
    }
    use panvault_vault::core::kdf::KdfParams;
    use panvault_vault::{
        AccessContext, SealSpec, SecretText, TokenizeRequest, Unlock, Vault, system_clock,
    };

    #[test]
    fn versions_from_minimum() {
        assert_eq!(versions_from("1.2"), ["1.2", "1.3"]);
        assert_eq!(versions_from("1.0"), ["1.0", "1.1", "1.2", "1.3"]);
        assert_eq!(versions_from("1.3"), ["1.3"]);
        assert!(
            server_suites()
                .iter()
                .all(|s| panvault_audit::compliance::suite_is_aead(s)),
            "{:?}",
            server_suites()
        );
    }

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
[[clients]]
name = "payments"
tenant = "demo-shop"
permissions = ["detokenize"]
"#;

    /// A real vault (shares seal when `shares`), two cards, a dev PKI, a config.
    fn deployment(shares: bool) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let unlock = || Unlock::Passphrase(SecretText::new("correct horse battery staple".into()));
        let spec = SealSpec {
            unlock: unlock(),
            kdf: KdfParams::MINIMUM,
            shares: shares.then_some((3, 2)),
        };
        let report = Vault::init(&data, &spec, &system_clock()).unwrap();
        if !shares {
            let v = Vault::open(&data, &unlock()).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let ctx = AccessContext {
                actor: "storefront".into(),
                peer: Some("127.0.0.1:1".into()),
                ..Default::default()
            };
            for n in ["4111111111111111", "5555555555554444"] {
                rt.block_on(v.tokenize(
                    "demo-shop",
                    TokenizeRequest::new(n, 12, 2031, v.today()).unwrap(),
                    &ctx,
                ))
                .unwrap();
            }
            v.shutdown();
        }
        drop(report);
        panvault_vault::tls::pki::ensure_dev_pki(
            &tmp.path().join("pki"),
            &["storefront", "payments"],
        )
        .unwrap();
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

    fn statuses(r: &Report) -> Vec<(String, Status)> {
        r.results
            .iter()
            .filter(|x| x.status != Status::Pass)
            .map(|x| (x.id.clone(), x.status))
            .collect()
    }

    #[test]
    fn real_vault_passphrase_seal() {
        let (tmp, config) = deployment(false);
        let (report, text) = assess(&args(&config)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["results"].as_array().unwrap().len(), 20);
        let bad = statuses(&report);
        let plain = render(&report, Format::Text, false);
        // One passphrase: no dual control. No endpoint given: skipped.
        assert!(
            bad.contains(&("keys.dual_control".into(), Status::Fail)),
            "{plain}"
        );
        assert!(
            bad.contains(&("tls.endpoints".into(), Status::Skip)),
            "{plain}"
        );
        for id in [
            "keys.fingerprint_keyed",
            "data.display_masking",
            "tls.configuration",
        ] {
            assert_eq!(
                report.result(id).unwrap().status,
                Status::Attest,
                "{id}\n{plain}"
            );
        }
        for id in [
            "keys.cryptoperiod",
            "keys.nonce_budget",
            "keys.kek_strength",
            "data.no_clear_pan",
            "data.no_sensitive_auth_data",
            "data.retention",
            "tls.certificates",
            "tls.inventory",
            "access.permissions",
            "access.file_modes",
        ] {
            assert_eq!(
                report.result(id).unwrap().status,
                Status::Pass,
                "{id}\n{plain}"
            );
        }
        let masking = report
            .result("data.display_masking")
            .unwrap()
            .evidence
            .join("\n");
        assert!(masking.contains("first 6 and last 4"), "{masking}");
        let fp = report
            .result("keys.fingerprint_keyed")
            .unwrap()
            .evidence
            .join("\n");
        assert!(fp.contains("stored fingerprints are 16 bytes"), "{fp}");
        let scanned = report
            .result("data.no_clear_pan")
            .unwrap()
            .evidence
            .join("\n");
        assert!(
            scanned.contains("no card number found in the clear"),
            "{scanned}"
        );
        drop(tmp);
    }

    #[test]
    fn live_panvault_server_passes_the_probe() {
        let (tmp, config) = deployment(false);
        let cfg = Config::load(&config).unwrap();
        let unlock = Unlock::Passphrase(SecretText::new("correct horse battery staple".into()));
        let vault = Vault::open(&cfg.data_dir, &unlock).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = rt
            .block_on(panvault_vault::http::start(
                &cfg,
                vault.clone(),
                async move {
                    let _ = stopped.await;
                },
            ))
            .unwrap();
        let mut a = args(&config);
        a.endpoints = vec![server.addr().to_string()];
        let (report, _) = assess(&a).unwrap();
        let _ = stop.send(());
        rt.block_on(server.wait());
        vault.shutdown();
        let r = report.result("tls.endpoints").unwrap();
        let ev = r.evidence.join("\n");
        assert_eq!(r.status, Status::Pass, "{ev}");
        assert!(
            ev.contains("negotiated TLS 1.3") && ev.contains("client certificate required"),
            "{ev}"
        );
        assert!(
            ev.contains("TLS 1.0 ClientHello") && ev.contains("refused"),
            "{ev}"
        );
        drop(tmp);
    }

    #[test]
    fn run_writes_the_report_and_records_itself() {
        let (tmp, config) = deployment(true);
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
            .find(|e| e.event.action.as_str() == "compliance.run")
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

    /// The controls that do not pass, with their status.
    fn not_passing(a: &RunArgs) -> Vec<(String, Status)> {
        statuses(&assess(a).unwrap().0)
    }

    #[test]
    fn real_vault_in_bad_states_fails_exactly_that_check() {
        let (tmp, config) = deployment(true);
        let data = tmp.path().join("data");
        let base = not_passing(&args(&config));
        assert_eq!(
            base,
            [
                ("keys.fingerprint_keyed".to_owned(), Status::Attest),
                ("tls.configuration".to_owned(), Status::Attest),
                ("tls.endpoints".to_owned(), Status::Skip),
                ("audit.event_classes".to_owned(), Status::Warn)
            ],
            "a fresh share-sealed vault"
        );
        let only = |a: &RunArgs, id: &str| {
            let mut want = base.clone();
            want.retain(|(x, _)| x != id);
            want.push((id.to_owned(), Status::Fail));
            want.sort_by(|x, y| x.0.cmp(&y.0));
            let mut got = not_passing(a);
            got.sort_by(|x, y| x.0.cmp(&y.0));
            assert_eq!(got, want, "{id}");
        };
        // A plaintext card in a server log passed with --scan.
        let logs = tmp.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        std::fs::write(
            logs.join("server.log"),
            "WARN body={\"pan\":\"4000056655665556\"}\n",
        )
        .unwrap();
        let mut a = args(&config);
        a.scan = vec![logs.clone()];
        only(&a, "data.no_clear_pan");
        std::fs::remove_file(logs.join("server.log")).unwrap();
        // An old data key.
        let conn = rusqlite::Connection::open(data.join("vault.db")).unwrap();
        conn.execute(
            "UPDATE data_keys SET created_at = created_at - 400 * 86400",
            [],
        )
        .unwrap();
        only(&a, "keys.cryptoperiod");
        conn.execute(
            "UPDATE data_keys SET created_at = created_at + 400 * 86400",
            [],
        )
        .unwrap();
        // A broken audit chain.
        let actor: String = conn
            .query_row("SELECT actor FROM audit_events WHERE seq = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        conn.execute(
            "UPDATE audit_events SET actor = 'admin:mallory' WHERE seq = 1",
            [],
        )
        .unwrap();
        only(&a, "audit.integrity");
        conn.execute("UPDATE audit_events SET actor = ?1 WHERE seq = 1", [actor])
            .unwrap();
        drop(conn);
        assert_eq!(not_passing(&a), base);
        // A world-readable seal (the database holds the sealed root key).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                data.join("vault.db"),
                std::fs::Permissions::from_mode(0o644),
            )
            .unwrap();
            only(&a, "access.file_modes");
            std::fs::set_permissions(
                data.join("vault.db"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
        }
        // TLS 1.0 allowed.
        let bad = tmp.path().join("tls10.toml");
        std::fs::write(
            &bad,
            CONFIG.replace(
                "client_ca = \"pki/ca.pem\"",
                "client_ca = \"pki/ca.pem\"\nmin_version = \"1.0\"",
            ),
        )
        .unwrap();
        only(&args(&bad), "tls.configuration");
    }

    #[test]
    fn shares_seal_passes_dual_control() {
        let (_tmp, config) = deployment(true);
        let (report, _) = assess(&args(&config)).unwrap();
        let plain = render(&report, Format::Text, false);
        assert_eq!(
            report.result("keys.dual_control").unwrap().status,
            Status::Pass,
            "{plain}"
        );
        assert!(
            report
                .result("keys.dual_control")
                .unwrap()
                .evidence
                .join(" ")
                .contains("2-of-3"),
            "{plain}"
        );
    }

    #[test]
    fn preflight_refuses_tls_1_0_and_world_readable_keys() {
        let (tmp, config) = deployment(true);
        let results = preflight(&config).unwrap();
        assert!(
            results.iter().all(|r| r.status != Status::Fail),
            "{results:#?}"
        );
        assert_eq!(refusal(&results), None);
        let names: Vec<&str> = results.iter().map(|r| r.check.as_str()).collect();
        assert!(
            names.contains(&"tls.configuration")
                && names.contains(&"keys.cryptoperiod")
                && !names.contains(&"data.no_clear_pan"),
            "{names:?}"
        );
        let bad = tmp.path().join("bad.toml");
        std::fs::write(
            &bad,
            CONFIG.replace(
                "client_ca = \"pki/ca.pem\"",
                "client_ca = \"pki/ca.pem\"\nmin_version = \"1.0\"",
            ),
        )
        .unwrap();
        let results = preflight(&bad).unwrap();
        let msg = refusal(&results).unwrap();
        assert!(msg.contains("tls.configuration (4.2.1, 4.2.1.1)"), "{msg}");
        assert!(msg.contains("--allow-noncompliant"), "{msg}");
        let (report, _) = assess(&args(&bad)).unwrap();
        let ev = report
            .result("tls.configuration")
            .unwrap()
            .evidence
            .join("\n");
        assert!(
            ev.contains("FAIL: TLS 1.0 is allowed")
                && ev.contains("the server refuses this configuration"),
            "{ev}"
        );
    }

    #[test]
    fn preflight_refuses_an_expired_certificate() {
        let (tmp, config) = deployment(true);
        let pki = tmp.path().join("pki");
        let ca = panvault_vault::tls::pki::CertAuthority::load(
            &std::fs::read_to_string(pki.join("ca.pem")).unwrap(),
            &std::fs::read_to_string(pki.join("ca.key")).unwrap(),
        )
        .unwrap();
        let mut spec = panvault_vault::tls::pki::LeafSpec::localhost_server();
        spec.not_before = OffsetDateTime::now_utc() - time::Duration::days(400);
        spec.not_after = OffsetDateTime::now_utc() - time::Duration::days(1);
        let issued = ca.issue(&spec).unwrap();
        std::fs::write(pki.join("server.pem"), issued.cert_pem).unwrap();
        std::fs::write(pki.join("server.key"), issued.key_pem.as_bytes()).unwrap();
        let msg = refusal(&preflight(&config).unwrap()).unwrap();
        assert!(
            msg.contains("tls.certificates (4.2.1)") && msg.contains("expired on"),
            "{msg}"
        );
    }

    #[test]
    fn bad_policy_and_config_are_usage_errors() {
        let (tmp, config) = deployment(true);
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
    }
}
