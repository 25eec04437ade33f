//! What a run produces: one [`CheckResult`] per control, gathered in a [`Report`]
//! with its summary and exit code.
use std::fmt;

use serde::Serialize;
use time::OffsetDateTime;

use super::policy::Severity;

/// How a control came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The control is met.
    Pass,
    /// The control cannot be measured on a panvault deployment (the property
    /// holds by construction, or only a person can confirm it): the report states
    /// what is attested and what was measured, and an assessor confirms it. Never
    /// counted as a pass; does not change the exit code.
    Attest,
    /// The control is met, but something needs attention soon (e.g. a certificate
    /// inside its expiry warning window).
    Warn,
    /// The control is not met.
    Fail,
    /// The control could not be evaluated because a fact it needs is unknown
    /// (e.g. no live endpoint given, erasure requests not tracked).
    Skip,
    /// The control could not be evaluated because collecting its facts failed
    /// (counts as a failure for the exit code).
    Error,
}

impl Status {
    /// `pass`, `attest`, `warn`, `fail`, `skip`, `error`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Attest => "attest",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
            Status::Error => "error",
        }
    }

    /// How bad it is, for combining the statuses of several findings: the worse
    /// wins (pass < attest < skip < warn < fail < error).
    pub const fn rank(self) -> u8 {
        match self {
            Status::Pass => 0,
            Status::Attest => 1,
            Status::Skip => 2,
            Status::Warn => 3,
            Status::Fail => 4,
            Status::Error => 5,
        }
    }

    /// The worse of two statuses.
    #[must_use]
    pub fn worst(self, other: Status) -> Status {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one control.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// The control's stable id (from the policy).
    pub id: String,
    /// The control's title.
    pub title: String,
    /// How it came out.
    pub status: Status,
    /// How much a failure matters.
    pub severity: Severity,
    /// The requirement numbers the control evidences (e.g. `3.7.4`).
    pub requirements: Vec<String>,
    /// What was looked at and found, one line per fact. Never a card number
    /// (masked only) or key bytes.
    #[serde(serialize_with = "lines")]
    pub evidence: Vec<String>,
    /// What to do about a failure or warning (empty when passing).
    pub remediation: String,
    /// The built-in check that evaluated the control.
    #[serde(skip)]
    pub check: String,
    /// The control's line in the policy file (for SARIF locations).
    #[serde(skip)]
    pub policy_line: u32,
    /// How long the check took, in microseconds.
    #[serde(skip)]
    pub micros: u64,
}

impl CheckResult {
    /// The status of this control for one of its `requirement`s. A control whose
    /// evidence lines start with requirement numbers (`WARN: 10.2.1.5 …`) is
    /// rolled up per requirement: a requirement named by some lines takes the
    /// worst of those lines; one named by none takes the control's status.
    pub fn status_for(&self, requirement: &str) -> Status {
        let mut named = None::<Status>;
        for line in &self.evidence {
            let (status, rest) = if let Some(r) = line.strip_prefix("FAIL: ") {
                (Status::Fail, r)
            } else if let Some(r) = line.strip_prefix("WARN: ") {
                (Status::Warn, r)
            } else if let Some(r) = line.strip_prefix("ERROR: ") {
                (Status::Error, r)
            } else {
                (Status::Pass, line.as_str())
            };
            if rest.split_whitespace().next() == Some(requirement) {
                named = Some(named.map_or(status, |n| n.worst(status)));
            }
        }
        named.unwrap_or(self.status)
    }
}

fn lines<S: serde::Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.join("\n"))
}

/// Counts of each status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Controls met.
    pub pass: u32,
    /// Controls attested, not measured.
    pub attest: u32,
    /// Controls not met.
    pub fail: u32,
    /// Controls met with a warning.
    pub warn: u32,
    /// Controls not evaluated (a fact is unknown).
    pub skip: u32,
    /// Controls that could not be evaluated because of an error.
    pub error: u32,
}

impl Summary {
    /// Counts the statuses of `results`.
    pub fn of(results: &[CheckResult]) -> Summary {
        let mut s = Summary::default();
        for r in results {
            let slot = match r.status {
                Status::Pass => &mut s.pass,
                Status::Attest => &mut s.attest,
                Status::Fail => &mut s.fail,
                Status::Warn => &mut s.warn,
                Status::Skip => &mut s.skip,
                Status::Error => &mut s.error,
            };
            *slot = slot.saturating_add(1);
        }
        s
    }

    /// Number of controls.
    pub fn total(&self) -> u32 {
        self.pass
            .saturating_add(self.attest)
            .saturating_add(self.fail)
            .saturating_add(self.warn)
            .saturating_add(self.skip)
            .saturating_add(self.error)
    }
}

/// The policy a report was evaluated against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyInfo {
    /// The policy's id, e.g. `pci-dss-4.0.1`.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Its version.
    pub version: String,
    /// The standard it maps to, e.g. `PCI DSS v4.0.1`.
    pub framework: String,
    /// Where it was read from (a path, or `builtin:<name>`).
    pub source: String,
    /// SHA-256 of the policy text (hex), so a report names exactly what it checked.
    pub sha256: String,
}

/// What was assessed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Target {
    /// The server configuration file.
    pub config: String,
    /// The vault's data directory.
    pub data_dir: String,
    /// The vault's id, when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vault_id: Option<String>,
    /// Live endpoints probed.
    pub endpoints: Vec<String>,
    /// The host the run was made on.
    pub host: String,
}

/// A whole run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The policy.
    pub policy: PolicyInfo,
    /// When the run finished (UTC).
    #[serde(with = "crate::compliance::facts::rfc3339")]
    pub generated_at: OffsetDateTime,
    /// The tool and its version.
    pub tool: String,
    /// What was assessed.
    pub target: Target,
    /// Counts of each status.
    pub summary: Summary,
    /// One result per enabled control, in policy order.
    pub results: Vec<CheckResult>,
    /// How long the run took, from the first fact collected to the report.
    #[serde(rename = "elapsed_seconds", serialize_with = "seconds")]
    pub elapsed: std::time::Duration,
}

fn seconds<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Exit code: every control passed (warnings allowed).
pub const EXIT_PASS: u8 = 0;
/// Exit code: a usage or internal error.
pub const EXIT_ERROR: u8 = 1;
/// Exit code: at least one control failed (or could not be evaluated).
pub const EXIT_FAIL: u8 = 100;
/// Exit code: nothing failed, but at least one control was skipped.
pub const EXIT_SKIP: u8 = 101;

impl Report {
    /// The process exit code, following InSpec: 0 when everything passed
    /// (warnings and attestations allowed), 100 when a control failed or errored, 101 when nothing
    /// failed but something was skipped.
    pub fn exit_code(&self) -> u8 {
        if self.summary.fail > 0 || self.summary.error > 0 {
            EXIT_FAIL
        } else if self.summary.skip > 0 {
            EXIT_SKIP
        } else {
            EXIT_PASS
        }
    }

    /// The results that failed or errored.
    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.results
            .iter()
            .filter(|r| matches!(r.status, Status::Fail | Status::Error))
    }

    /// The result of the control `id`.
    pub fn result(&self, id: &str) -> Option<&CheckResult> {
        self.results.iter().find(|r| r.id == id)
    }
}
