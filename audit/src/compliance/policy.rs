//! Policies: TOML files of controls, each naming a built-in check, the requirement
//! numbers it evidences, a severity and the check's parameters.
//!
//! ```toml
//! [policy]
//! id = "pci-dss-4.0.1"
//! title = "PCI DSS v4.0.1 controls for a panvault deployment"
//! version = "1"
//! framework = "PCI DSS v4.0.1"
//!
//! [[controls]]
//! id = "keys.cryptoperiod"          # stable id; `check` defaults to it
//! title = "Cryptoperiod of the active data key and the root key"
//! requirements = ["3.6.1", "3.7.4"]
//! severity = "high"                 # critical, high, medium, low, info
//! [controls.params]
//! max_key_age_days = 365
//! ```
//!
//! Users copy and edit these files, so the loader is strict and says where: an
//! unknown key, a missing field, a value of the wrong type or out of range, an
//! unknown check or parameter is reported as `FILE:LINE:COLUMN: message`, all
//! problems at once.
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Serialize;

use self::loader::Parser;
use super::checks::CheckSpec;

mod loader;

/// How much a failed control matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Card data or keys are exposed now.
    Critical,
    /// A required control is missing.
    High,
    /// A control is weakened.
    Medium,
    /// Hygiene.
    Low,
    /// For the record only.
    Info,
}

impl Severity {
    /// All severities, most severe first.
    pub const ALL: [Severity; 5] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Info,
    ];

    /// `critical`, `high`, `medium`, `low`, `info`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
            Severity::Info => "info",
        }
    }

    /// From its name.
    pub fn from_name(s: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a parameter accepts.
#[derive(Clone, Copy, Debug)]
pub enum ParamKind {
    /// An integer in `min..=max` (TOML allows `0o700` for modes).
    Int {
        /// Smallest accepted.
        min: i64,
        /// Largest accepted.
        max: i64,
    },
    /// `true` or `false`.
    Bool,
    /// One of these strings.
    Choice(&'static [&'static str]),
    /// A list of strings, each one of these (any non-empty string when empty).
    List(&'static [&'static str]),
}

/// A parameter's default.
#[derive(Clone, Copy, Debug)]
pub enum ParamDefault {
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(&'static str),
    /// A list of strings.
    List(&'static [&'static str]),
}

/// A parameter a check takes.
#[derive(Clone, Copy, Debug)]
pub struct ParamSpec {
    /// Its key in `[controls.params]`.
    pub name: &'static str,
    /// What it accepts.
    pub kind: ParamKind,
    /// Its value when the policy does not set it.
    pub default: ParamDefault,
    /// One line for the docs.
    pub doc: &'static str,
}

/// A parameter's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
    /// A list of strings.
    List(Vec<String>),
}

impl From<ParamDefault> for ParamValue {
    fn from(d: ParamDefault) -> Self {
        match d {
            ParamDefault::Int(i) => ParamValue::Int(i),
            ParamDefault::Bool(b) => ParamValue::Bool(b),
            ParamDefault::Str(s) => ParamValue::Str(s.to_owned()),
            ParamDefault::List(l) => ParamValue::List(l.iter().map(|s| (*s).to_owned()).collect()),
        }
    }
}

/// The parameters of one control: every parameter of its check, from the policy
/// or the check's default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Params {
    values: BTreeMap<String, ParamValue>,
}

impl Params {
    /// The defaults of `spec`.
    pub fn defaults(spec: &CheckSpec) -> Params {
        Params {
            values: spec
                .params
                .iter()
                .map(|p| (p.name.to_owned(), ParamValue::from(p.default)))
                .collect(),
        }
    }

    /// Sets a value (tests, and the loader after validation).
    pub fn set(&mut self, name: &str, value: ParamValue) {
        self.values.insert(name.to_owned(), value);
    }

    /// An integer parameter (0 if absent or not an integer, which the loader rules out).
    pub fn int(&self, name: &str) -> i64 {
        match self.values.get(name) {
            Some(ParamValue::Int(i)) => *i,
            _ => 0,
        }
    }

    /// A boolean parameter (false if absent).
    pub fn bool(&self, name: &str) -> bool {
        matches!(self.values.get(name), Some(ParamValue::Bool(true)))
    }

    /// A string parameter ("" if absent).
    pub fn str(&self, name: &str) -> &str {
        match self.values.get(name) {
            Some(ParamValue::Str(s)) => s,
            _ => "",
        }
    }

    /// A list parameter (empty if absent).
    pub fn list(&self, name: &str) -> &[String] {
        match self.values.get(name) {
            Some(ParamValue::List(l)) => l,
            _ => &[],
        }
    }

    /// All values, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ParamValue)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// One control of a policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Control {
    /// Stable id (unique in the policy).
    pub id: String,
    /// The built-in check that evaluates it.
    pub check: String,
    /// Title.
    pub title: String,
    /// Requirement numbers it evidences.
    pub requirements: Vec<String>,
    /// Severity of a failure.
    pub severity: Severity,
    /// Whether it is evaluated.
    pub enabled: bool,
    /// Parameters (all of the check's, defaults filled in).
    pub params: Params,
    /// Remediation text replacing the check's own, if given.
    pub remediation: Option<String>,
    /// Line of the control in the policy file.
    pub line: u32,
}

/// A loaded policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// Id, e.g. `pci-dss-4.0.1`.
    pub id: String,
    /// Title.
    pub title: String,
    /// Version of the policy file.
    pub version: String,
    /// The standard it maps to.
    pub framework: String,
    /// Where it was read from (a path or `builtin:<name>`).
    pub source: String,
    /// SHA-256 of the text (hex).
    pub sha256: String,
    /// Controls, in file order.
    pub controls: Vec<Control>,
}

/// The PCI DSS v4.0.1 policy shipped with panvault (`policies/pci-dss-4.0.1.toml`).
pub const PCI_DSS_4_0_1: &str = include_str!("../../../policies/pci-dss-4.0.1.toml");
/// The GDPR policy shipped with panvault (`policies/gdpr.toml`).
pub const GDPR: &str = include_str!("../../../policies/gdpr.toml");

/// One problem in a policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Line, from 1.
    pub line: u32,
    /// Column (characters), from 1.
    pub column: u32,
    /// What is wrong.
    pub message: String,
}

/// A policy file that cannot be used: every problem found, with its place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// The file (as given).
    pub file: String,
    /// The problems, in file order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}:{}:{}: {}", self.file, p.line, p.column, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}

impl Policy {
    /// Reads and checks the policy file at `path`.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            file: name.clone(),
            problems: vec![Problem {
                line: 1,
                column: 1,
                message: e.to_string(),
            }],
        })?;
        Policy::parse(&text, &name)
    }

    /// A policy shipped with panvault: `pci-dss-4.0.1` or `gdpr`.
    pub fn builtin(name: &str) -> Option<Result<Policy, PolicyError>> {
        let text = match name {
            "pci-dss-4.0.1" => PCI_DSS_4_0_1,
            "gdpr" => GDPR,
            _ => return None,
        };
        Some(Policy::parse(text, &format!("builtin:{name}")))
    }

    /// Parses and checks a policy text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Policy, PolicyError> {
        let mut p = Parser {
            text,
            problems: Vec::new(),
        };
        let policy = p.document(source);
        if p.problems.is_empty()
            && let Some(policy) = policy
        {
            return Ok(policy);
        }
        let mut problems = p.problems;
        problems.sort_by_key(|x| (x.line, x.column));
        problems.dedup();
        Err(PolicyError {
            file: source.to_owned(),
            problems,
        })
    }

    /// The enabled controls.
    pub fn enabled(&self) -> impl Iterator<Item = &Control> {
        self.controls.iter().filter(|c| c.enabled)
    }
}

#[cfg(test)]
mod tests;
