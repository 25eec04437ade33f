//! The built-in checks: each a pure function from [`Facts`] and a control's
//! [`Params`] to an [`Outcome`], so every check is testable with facts built by
//! hand. [`CHECKS`] lists them with their parameters; [`evaluate`] runs a policy.
//!
//! Longer than most files here because of [`CHECKS`]: one table entry per check
//! (requirement, severity, parameters, remediation), kept in one place so that a
//! reader sees every check side by side. The checks themselves are in the
//! submodules.
use std::time::Instant;

use time::OffsetDateTime;

use super::facts::{Fact, Facts};
use super::policy::{ParamDefault, ParamKind, ParamSpec, Params, Policy, Severity};
use super::result::{CheckResult, PolicyInfo, Report, Status, Summary, Target};

mod access;
mod audit_log;
mod data;
mod keys;
mod tls;

pub use tls::{suite_is_aead, version_rank};

/// What a check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The status (the worst of the findings).
    pub status: Status,
    /// Evidence lines; a finding that fails or warns starts with `FAIL:` or `WARN:`.
    pub evidence: Vec<String>,
    /// Remediation replacing the check's default, if any.
    pub remediation: Option<String>,
}

impl Outcome {
    /// A passing outcome with no evidence yet.
    pub fn pass() -> Outcome {
        Outcome {
            status: Status::Pass,
            evidence: Vec::new(),
            remediation: None,
        }
    }

    /// A skipped outcome: `why` a fact is unknown.
    pub fn skip(why: impl Into<String>) -> Outcome {
        Outcome {
            status: Status::Skip,
            evidence: vec![why.into()],
            remediation: None,
        }
    }

    /// An outcome for a check that could not run: `why`.
    pub fn errored(why: impl Into<String>) -> Outcome {
        Outcome {
            status: Status::Error,
            evidence: vec![why.into()],
            remediation: None,
        }
    }

    /// Adds a neutral evidence line.
    pub fn note(&mut self, line: impl Into<String>) {
        self.evidence.push(line.into());
    }

    /// Adds a failing finding.
    pub fn fail(&mut self, line: impl AsRef<str>) {
        self.status = self.status.worst(Status::Fail);
        self.evidence.push(format!("FAIL: {}", line.as_ref()));
    }

    /// Adds a warning.
    pub fn warn(&mut self, line: impl AsRef<str>) {
        self.status = self.status.worst(Status::Warn);
        self.evidence.push(format!("WARN: {}", line.as_ref()));
    }

    /// Adds a finding that could not be evaluated.
    pub fn error(&mut self, line: impl AsRef<str>) {
        self.status = self.status.worst(Status::Error);
        self.evidence.push(format!("ERROR: {}", line.as_ref()));
    }

    /// Takes the evidence of an early outcome of a fact that is missing; an error
    /// stays an error, a skip becomes a note.
    pub(crate) fn absorb(&mut self, early: Outcome) {
        if early.status == Status::Error {
            self.status = self.status.worst(Status::Error);
        }
        self.evidence.extend(early.evidence);
    }

    /// Adds a finding with `status` (fail, warn; anything else is a note).
    pub fn finding(&mut self, status: Status, line: impl AsRef<str>) {
        match status {
            Status::Fail => self.fail(line),
            Status::Error => self.error(line),
            Status::Warn => self.warn(line),
            _ => self.note(line.as_ref()),
        }
    }
}

/// `n` and the noun for it: `1 card`, `2 cards` (`plural` is the noun's plural).
pub(crate) fn count(n: impl Into<u64>, one: &str, plural: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { plural })
}

/// The fact a check needs, or the outcome that says why it cannot run.
pub(crate) fn need<'a, T>(fact: &'a Fact<T>, what: &str) -> Result<&'a T, Outcome> {
    match fact {
        Fact::Known(v) => Ok(v),
        Fact::Unknown(why) => Err(Outcome::skip(format!("{what} unknown: {why}"))),
        Fact::Failed(why) => Err(Outcome::errored(format!("{what} could not be read: {why}"))),
    }
}

/// A check's signature: `Err` carries an early outcome (skip or error).
pub(crate) type CheckFn = fn(&Facts, &Params) -> Result<Outcome, Outcome>;

/// A built-in check.
#[derive(Clone, Copy)]
pub struct CheckSpec {
    /// Its name, used as `check = "…"` in policies.
    pub name: &'static str,
    /// Default title.
    pub title: &'static str,
    /// The PCI DSS v4.0.1 requirements it is designed to evidence.
    pub requirements: &'static [&'static str],
    /// Parameters it takes.
    pub params: &'static [ParamSpec],
    /// What to do when it fails.
    pub remediation: &'static str,
    /// Whether `serve` runs it before starting (TLS and key checks).
    pub preflight: bool,
    pub(crate) run: CheckFn,
}

impl std::fmt::Debug for CheckSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckSpec")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

const fn int(name: &'static str, min: i64, max: i64, default: i64, doc: &'static str) -> ParamSpec {
    ParamSpec {
        name,
        kind: ParamKind::Int { min, max },
        default: ParamDefault::Int(default),
        doc,
    }
}

const fn boolean(name: &'static str, default: bool, doc: &'static str) -> ParamSpec {
    ParamSpec {
        name,
        kind: ParamKind::Bool,
        default: ParamDefault::Bool(default),
        doc,
    }
}

const fn choice(
    name: &'static str,
    allowed: &'static [&'static str],
    default: &'static str,
    doc: &'static str,
) -> ParamSpec {
    ParamSpec {
        name,
        kind: ParamKind::Choice(allowed),
        default: ParamDefault::Str(default),
        doc,
    }
}

const fn list(
    name: &'static str,
    allowed: &'static [&'static str],
    default: &'static [&'static str],
    doc: &'static str,
) -> ParamSpec {
    ParamSpec {
        name,
        kind: ParamKind::List(allowed),
        default: ParamDefault::List(default),
        doc,
    }
}

const TLS_VERSIONS: &[&str] = &["1.2", "1.3"];
const CURVES: &[&str] = &["P-256", "P-384", "P-521", "Ed25519", "Ed448"];
const DEFAULT_CURVES: &[&str] = &["P-256", "P-384"];
const CERT_PARAMS: [ParamSpec; 3] = [
    int(
        "cert_expiry_warn_days",
        0,
        825,
        30,
        "warn when a certificate expires within this many days",
    ),
    int(
        "min_rsa_bits",
        1024,
        16384,
        2048,
        "smallest RSA modulus accepted",
    ),
    list(
        "allowed_curves",
        CURVES,
        DEFAULT_CURVES,
        "key types accepted besides RSA",
    ),
];
const NONCE_LIMIT: i64 = 1 << 32;

/// Every built-in check.
pub static CHECKS: &[CheckSpec] = &[
    CheckSpec {
        name: "keys.cryptoperiod",
        title: "Cryptoperiod of the active data key and the root key",
        requirements: &["3.6.1", "3.7.4"],
        params: &[
            int(
                "max_key_age_days",
                1,
                3650,
                365,
                "largest age of the active data key",
            ),
            int(
                "max_root_age_days",
                1,
                3650,
                365,
                "largest age of the root key",
            ),
            int(
                "warn_days",
                0,
                365,
                30,
                "warn this many days before a key reaches its limit",
            ),
        ],
        remediation: "Rotate the data key (`panvault keys rotate`) and re-wrap records (`panvault keys rewrap`); and rotate the root key (re-wraps the wrapped keys only).",
        preflight: true,
        run: keys::cryptoperiod,
    },
    CheckSpec {
        name: "keys.retired_versions",
        title: "No records under retired key versions; destroyed keys unused",
        requirements: &["3.7.5"],
        params: &[int(
            "rewrap_grace_days",
            0,
            3650,
            30,
            "days a superseded key may still hold records before re-wrapping is overdue",
        )],
        remediation: "Re-wrap records under the active key (`panvault keys rewrap`), then `panvault keys retire` and `panvault keys destroy` the old versions.",
        preflight: true,
        run: keys::retired_versions,
    },
    CheckSpec {
        name: "keys.nonce_budget",
        title: "Encryptions per data key below the AES-GCM random-nonce limit",
        requirements: &["3.7.1", "3.6.1"],
        params: &[
            int(
                "max_encryptions",
                1,
                NONCE_LIMIT,
                NONCE_LIMIT,
                "encryptions per key at which the check fails (NIST SP 800-38D: 2^32 with random 96-bit nonces)",
            ),
            int(
                "warn_encryptions",
                1,
                NONCE_LIMIT,
                1 << 30,
                "encryptions per key at which the check warns",
            ),
        ],
        remediation: "Rotate the data key now (`panvault keys rotate`); the vault must not encrypt more under a key near the nonce limit.",
        preflight: true,
        run: keys::nonce_budget,
    },
    CheckSpec {
        name: "keys.dual_control",
        title: "Split knowledge and dual control of the root key (M of N custodians)",
        requirements: &["3.6.1.2", "3.7.6"],
        params: &[
            int(
                "min_threshold",
                2,
                255,
                2,
                "smallest number of custodians needed to unseal (M)",
            ),
            int(
                "min_shares",
                2,
                255,
                2,
                "smallest number of shares issued (N)",
            ),
        ],
        remediation: "Seal the root key with M-of-N custodian shares (M ≥ 2) instead of one passphrase, and hand each share to a different custodian.",
        preflight: true,
        run: keys::dual_control,
    },
    CheckSpec {
        name: "keys.kek_strength",
        title: "Key-encrypting key at least as strong as the keys it protects",
        requirements: &["3.6.1.2", "3.6.1"],
        params: &[
            int(
                "min_memory_kib",
                8,
                4_194_304,
                65_536,
                "smallest Argon2id memory (KiB) for passphrase seals",
            ),
            int(
                "min_passes",
                1,
                100,
                3,
                "smallest Argon2id pass count for passphrase seals",
            ),
        ],
        remediation: "Re-seal with stronger Argon2id parameters, or with custodian shares (a random 256-bit KEK).",
        preflight: true,
        run: keys::kek_strength,
    },
    CheckSpec {
        name: "keys.fingerprint_keyed",
        title: "Card fingerprints are keyed hashes",
        requirements: &["3.5.1.1"],
        params: &[],
        remediation: "Fingerprints must be HMACs under a secret key wrapped by the root key; re-initialise the fingerprint index with a keyed hash.",
        preflight: true,
        run: keys::fingerprint_keyed,
    },
    CheckSpec {
        name: "data.no_clear_pan",
        title: "No card number in the clear in the data directory, database, WAL or logs",
        requirements: &["3.5.1"],
        params: &[
            boolean(
                "count_test_cards",
                true,
                "whether the networks' published test numbers count as findings",
            ),
            int("max_listed", 1, 1000, 20, "findings listed in the evidence"),
        ],
        remediation: "Remove the files or lines holding card numbers (and their backups), find the code path that wrote them, and run `panvault scan` again.",
        preflight: false,
        run: data::no_clear_pan,
    },
    CheckSpec {
        name: "data.no_sensitive_auth_data",
        title: "No track data, CVV or PIN stored",
        requirements: &["3.3.1", "3.3.1.1", "3.3.1.2", "3.3.1.3"],
        params: &[list(
            "forbidden_columns",
            &[],
            &[
                "cvv",
                "cvc",
                "cid",
                "csc",
                "cav",
                "track",
                "pin",
                "service_code",
                "icvv",
            ],
            "column name fragments that mean sensitive authentication data",
        )],
        remediation: "Delete the track, CVV or PIN data now; it must never be stored after authorisation, even encrypted.",
        preflight: false,
        run: data::no_sensitive_auth_data,
    },
    CheckSpec {
        name: "data.cvc_not_retained",
        title: "Card security codes held only until first use or their deadline, sealed while held",
        requirements: &["3.3.1.2", "3.3.2"],
        params: &[
            int(
                "max_ttl_secs",
                1,
                3600,
                3600,
                "longest a security code may be held (seconds)",
            ),
            int(
                "sweep_grace_secs",
                0,
                86_400,
                120,
                "how long past its deadline a code or key may wait for the sweep",
            ),
        ],
        remediation: "Run the server (its sweep deletes expired codes and destroys their keys), lower `[relay] cvc_ttl_secs`, and find the process that wrote a code outside the sealed layout.",
        preflight: false,
        run: data::cvc_not_retained,
    },
    CheckSpec {
        name: "data.display_masking",
        title: "Displayed card numbers masked to at most the BIN and last four",
        requirements: &["3.4.1"],
        params: &[
            int("max_leading_digits", 0, 8, 6, "most leading digits shown"),
            int("max_trailing_digits", 0, 4, 4, "most trailing digits shown"),
            int(
                "min_hidden_digits",
                0,
                19,
                3,
                "fewest digits of a card number that must stay hidden, whatever its length",
            ),
        ],
        remediation: "Store and show at most the first six and last four digits, fewer for short card numbers so that enough digits stay hidden; use opaque tokens rather than format-preserving ones for short card numbers.",
        preflight: false,
        run: data::display_masking,
    },
    CheckSpec {
        name: "data.retention",
        title: "No cards kept past the retention period",
        requirements: &["3.2.1"],
        params: &[
            int(
                "retention_days_after_expiry",
                0,
                3650,
                90,
                "days a card is kept after its expiry month ends",
            ),
            int(
                "max_records_past_retention",
                0,
                i64::MAX,
                0,
                "records past retention tolerated",
            ),
        ],
        remediation: "Purge cards past retention (delete or erase their tokens) and schedule the purge at least quarterly.",
        preflight: false,
        run: data::retention,
    },
    CheckSpec {
        name: "tls.configuration",
        title: "Server allows only TLS 1.2+/AEAD suites and requires client certificates",
        requirements: &["4.2.1", "4.2.1.1"],
        params: &[
            choice(
                "min_tls",
                TLS_VERSIONS,
                "1.2",
                "lowest protocol version allowed",
            ),
            boolean(
                "require_client_auth",
                true,
                "whether client certificates must be required",
            ),
            boolean(
                "aead_only",
                true,
                "whether every cipher suite must be an AEAD suite",
            ),
        ],
        remediation: "Set `[tls] min_version = \"1.2\"` (or \"1.3\"), keep only AEAD suites, and configure `client_ca` so every client presents a certificate.",
        preflight: true,
        run: tls::configuration,
    },
    CheckSpec {
        name: "tls.certificates",
        title: "Server and CA certificates valid, strong keys, SHA-256+ signatures",
        requirements: &["4.2.1"],
        params: &CERT_PARAMS,
        remediation: "Re-issue the certificate before it expires, with an RSA ≥ 2048 or ECDSA P-256/P-384 key and a SHA-256 (or stronger) signature.",
        preflight: true,
        run: tls::certificates,
    },
    CheckSpec {
        name: "tls.endpoints",
        title: "Live endpoints: TLS 1.0/1.1 and weak suites refused, client certificate required",
        requirements: &["4.2.1", "4.2.1.1"],
        params: &[
            choice(
                "min_tls",
                TLS_VERSIONS,
                "1.2",
                "lowest protocol version a live endpoint may negotiate",
            ),
            boolean(
                "require_client_auth",
                true,
                "whether the endpoint must refuse clients without a certificate",
            ),
            CERT_PARAMS[0],
            CERT_PARAMS[1],
            CERT_PARAMS[2],
        ],
        remediation: "Disable TLS 1.0/1.1 and CBC/RC4/3DES suites on the listener (or the load balancer in front of it) and require client certificates.",
        preflight: false,
        run: tls::endpoints,
    },
    CheckSpec {
        name: "tls.inventory",
        title: "Inventory of certificates, keys, protocols and suites protecting card data in transit",
        requirements: &["12.3.3", "4.2.1.1"],
        params: &[],
        remediation: "Make every certificate and key named by the configuration readable and parseable, and review this inventory at least every 12 months.",
        preflight: false,
        run: tls::inventory,
    },
    CheckSpec {
        name: "audit.integrity",
        title: "Audit log chain and checkpoint signatures verify",
        requirements: &["10.3.4", "10.3.2"],
        params: &[int(
            "max_unsigned_events",
            0,
            i64::MAX,
            10_000,
            "events after the latest signed checkpoint before warning",
        )],
        remediation: "Treat a broken chain as a security incident: preserve the database, compare with exported copies and the last off-host checkpoint (`panvault audit verify --checkpoint`).",
        preflight: false,
        run: audit_log::integrity,
    },
    CheckSpec {
        name: "audit.retention",
        title: "Audit log retention of at least 12 months, without gaps",
        requirements: &["10.5.1"],
        params: &[int(
            "audit_retention_days",
            1,
            36_500,
            365,
            "smallest retention of audit events",
        )],
        remediation: "Keep audit events for at least 365 days (set `[audit] retention_days = 365` or more in the server configuration: the server prunes the audit log to it, never below 365 days) and keep 3 months immediately available.",
        preflight: false,
        run: audit_log::retention,
    },
    CheckSpec {
        name: "audit.event_classes",
        title: "Audit log records the event classes of 10.2.1.1–10.2.1.7",
        requirements: &[
            "10.2.1", "10.2.1.1", "10.2.1.2", "10.2.1.3", "10.2.1.4", "10.2.1.5", "10.2.1.6",
            "10.2.1.7",
        ],
        params: &[
            list(
                "required",
                audit_log::CLASS_IDS,
                audit_log::CLASS_IDS,
                "event classes that must appear in the log",
            ),
            choice(
                "missing_status",
                &["warn", "fail"],
                "warn",
                "status when a class has no event yet",
            ),
        ],
        remediation: "Exercise and confirm logging of each missing class (e.g. a denied request for 10.2.1.4, `panvault audit verify` for 10.2.1.3).",
        preflight: false,
        run: audit_log::event_classes,
    },
    CheckSpec {
        name: "audit.event_fields",
        title: "Audit events carry user, type, time, outcome, origin and resource",
        requirements: &["10.2.2"],
        params: &[boolean(
            "require_purpose",
            true,
            "whether every detokenize event must carry a purpose",
        )],
        remediation: "Fix the code path that writes incomplete events; every API event needs the peer address and card-data events the tenant and token.",
        preflight: false,
        run: audit_log::event_fields,
    },
    CheckSpec {
        name: "access.permissions",
        title: "Who may detokenize, erase and delete; no catch-all identities",
        requirements: &["7.2.1", "7.2.2", "7.2.5"],
        params: &[
            list(
                "sensitive",
                &["tokenize", "read", "detokenize", "delete", "erase"],
                &["detokenize", "erase", "delete"],
                "permissions listed as privileged",
            ),
            choice(
                "catch_all_status",
                &["fail", "warn"],
                "fail",
                "status for a catch-all identity",
            ),
            int(
                "max_holders",
                0,
                10_000,
                0,
                "most clients holding each privileged permission (0: no limit)",
            ),
        ],
        remediation: "Give each client only the permissions its job needs, one certificate identity per service; never match every certificate of a CA.",
        preflight: false,
        run: access::permissions,
    },
    CheckSpec {
        name: "access.file_modes",
        title: "Data directory and everything in it 0700/0600; seal, share and key files 0600",
        requirements: &["7.2.1", "3.6.1.3"],
        params: &[
            int(
                "max_dir_mode",
                0,
                0o7777,
                0o700,
                "most permissive mode of the data directory",
            ),
            int(
                "max_file_mode",
                0,
                0o7777,
                0o600,
                "most permissive mode of the database, shares, private keys and other files",
            ),
            int(
                "max_public_mode",
                0,
                0o7777,
                0o644,
                "most permissive mode of certificates and public keys",
            ),
        ],
        remediation: "chmod 700 the data directory and every directory in it, 600 every file in it (certificates and public keys may be 644), the share files and the private keys the configuration names or keeps beside its certificates (a CA key can mint client certificates); own them by the service user.",
        preflight: false,
        run: access::file_modes,
    },
    CheckSpec {
        name: "gdpr.erasure_deadline",
        title: "Erasure requests completed within the deadline",
        requirements: &["GDPR Art. 17", "GDPR Art. 12(3)"],
        params: &[int(
            "max_open_days",
            1,
            365,
            30,
            "days an erasure request may stay open",
        )],
        remediation: "Complete the overdue erasures and confirm them to the data subjects (keep the signed erasure receipts).",
        preflight: false,
        run: data::erasure_deadline,
    },
];

/// The check named `name`.
pub fn spec(name: &str) -> Option<&'static CheckSpec> {
    CHECKS.iter().find(|c| c.name == name)
}

/// Evaluates the enabled controls of `policy` for which `filter` is true.
pub fn evaluate_controls(
    policy: &Policy,
    facts: &Facts,
    filter: impl Fn(&CheckSpec) -> bool,
) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for control in policy.enabled() {
        let Some(spec) = spec(&control.check) else {
            continue;
        };
        if !filter(spec) {
            continue;
        }
        let started = Instant::now();
        let outcome = match (spec.run)(facts, &control.params) {
            Ok(o) | Err(o) => o,
        };
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let remediation = if matches!(outcome.status, Status::Pass | Status::Skip) {
            String::new()
        } else {
            outcome
                .remediation
                .clone()
                .or_else(|| control.remediation.clone())
                .unwrap_or_else(|| spec.remediation.to_owned())
        };
        out.push(CheckResult {
            id: control.id.clone(),
            title: control.title.clone(),
            status: outcome.status,
            severity: control.severity,
            requirements: control.requirements.clone(),
            // A second line of defence: no card number reaches a report.
            evidence: outcome
                .evidence
                .iter()
                .map(|l| crate::scan::redact(l))
                .collect(),
            remediation: crate::scan::redact(&remediation),
            check: spec.name.to_owned(),
            policy_line: control.line,
            micros,
        });
    }
    out
}

/// Evaluates every enabled control of `policy` against `facts`.
pub fn evaluate(
    policy: &Policy,
    facts: &Facts,
    target: Target,
    generated_at: OffsetDateTime,
) -> Report {
    let results = evaluate_controls(policy, facts, |_| true);
    let mut target = target;
    for path in [&mut target.config, &mut target.data_dir] {
        *path = super::collect::clean_path(std::path::Path::new(path.as_str()))
            .display()
            .to_string();
    }
    Report {
        policy: PolicyInfo {
            id: policy.id.clone(),
            title: policy.title.clone(),
            version: policy.version.clone(),
            framework: policy.framework.clone(),
            source: policy.source.clone(),
            sha256: policy.sha256.clone(),
        },
        generated_at,
        tool: format!("panvault {}", env!("CARGO_PKG_VERSION")),
        target,
        summary: Summary::of(&results),
        results,
        elapsed: facts.started.elapsed(),
    }
}

/// Severity as SARIF's `security-severity` (a CVSS-like score).
pub(crate) fn security_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "9.5",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "3.0",
        Severity::Info => "0.0",
    }
}
