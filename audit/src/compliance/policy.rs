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
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::Path;

use serde::Serialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::checks::{self, CheckSpec};

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

type Table<'a> = DeTable<'a>;
type Value<'a> = Spanned<DeValue<'a>>;

struct Parser<'t> {
    text: &'t str,
    problems: Vec<Problem>,
}

/// A label: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

impl<'t> Parser<'t> {
    fn at(&self, offset: usize) -> (u32, u32) {
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (
            u32::try_from(line).unwrap_or(u32::MAX),
            u32::try_from(col).unwrap_or(u32::MAX),
        )
    }

    fn problem(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let (line, column) = self.at(span.start);
        self.problems.push(Problem {
            line,
            column,
            message: message.into(),
        });
    }

    fn document(&mut self, source: &str) -> Option<Policy> {
        let root = match DeTable::parse(self.text) {
            Ok(t) => t,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let msg = e.message().trim_end().to_owned();
                self.problem(&span, format!("invalid TOML: {msg}"));
                return None;
            }
        };
        let table = root.get_ref();
        let mut header = None;
        let mut controls = Vec::new();
        let mut saw_controls = false;
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "policy" => header = self.header(value),
                "controls" => {
                    saw_controls = true;
                    controls = self.controls(value);
                }
                other => self.problem(
                    &key.span(),
                    format!("unknown key `{other}` (expected `policy` or `controls`)"),
                ),
            }
        }
        if header.is_none() && !table.iter().any(|(k, _)| k.get_ref() == "policy") {
            self.problem(&(0..0), "missing [policy] table (id, title)");
        }
        if !saw_controls {
            self.problem(&(0..0), "no [[controls]]");
        }
        let (id, title, version, framework) = header?;
        let mut seen = HashSet::new();
        for (c, span) in &controls {
            if !seen.insert(c.id.clone()) {
                self.problem(span, format!("duplicate control id `{}`", c.id));
            }
        }
        Some(Policy {
            id,
            title,
            version,
            framework,
            source: source.to_owned(),
            sha256: crate::log::sha256_hex(self.text.as_bytes()),
            controls: controls.into_iter().map(|(c, _)| c).collect(),
        })
    }

    fn expect_table<'a, 'v>(&mut self, value: &'a Value<'v>, what: &str) -> Option<&'a Table<'v>> {
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.problem(
                    &value.span(),
                    format!("`{what}` must be a table, found {}", type_name(other)),
                );
                None
            }
        }
    }

    fn string(&mut self, value: &Value<'_>, key: &str) -> Option<String> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            other => {
                self.problem(
                    &value.span(),
                    format!("`{key}` must be a string, found {}", type_name(other)),
                );
                None
            }
        }
    }

    fn header(&mut self, value: &Value<'_>) -> Option<(String, String, String, String)> {
        let t = self.expect_table(value, "policy")?;
        let (mut id, mut title, mut version, mut framework) =
            (None, None, String::new(), String::new());
        for (k, v) in t.iter() {
            let key = k.get_ref().as_ref();
            match key {
                "id" => {
                    id = self.string(v, key);
                    if let Some(s) = &id
                        && !is_label(s)
                    {
                        self.problem(&v.span(), "`id` must be 1 to 64 characters of A-Z a-z 0-9 . _ -");
                    }
                }
                "title" => title = self.string(v, key),
                "version" => version = self.string(v, key).unwrap_or_default(),
                "framework" => framework = self.string(v, key).unwrap_or_default(),
                "description" => {
                    self.string(v, key);
                }
                other => self.problem(&k.span(), format!("unknown key `{other}` in [policy] (expected id, title, version, framework, description)")),
            }
        }
        let span = value.span();
        if id.is_none() && !t.iter().any(|(k, _)| k.get_ref() == "id") {
            self.problem(&span, "[policy] needs `id`");
        }
        if title.is_none() && !t.iter().any(|(k, _)| k.get_ref() == "title") {
            self.problem(&span, "[policy] needs `title`");
        }
        Some((id?, title?, version, framework))
    }

    fn controls(&mut self, value: &Value<'_>) -> Vec<(Control, Range<usize>)> {
        let DeValue::Array(items) = value.get_ref() else {
            self.problem(
                &value.span(),
                "`controls` must be an array of tables ([[controls]])",
            );
            return Vec::new();
        };
        if items.is_empty() {
            self.problem(&value.span(), "the policy has no controls");
        }
        items.iter().filter_map(|item| self.control(item)).collect()
    }

    fn control(&mut self, item: &Value<'_>) -> Option<(Control, Range<usize>)> {
        let t = self.expect_table(item, "controls[]")?;
        let span = item.span();
        let mut id = None;
        let mut id_span = span.clone();
        let mut check = None;
        let mut check_span = span.clone();
        let mut title = None;
        let mut requirements = None;
        let mut severity = None;
        let mut enabled = true;
        let mut remediation = None;
        let mut params_value: Option<&Value<'_>> = None;
        let mut ok = true;
        for (k, v) in t.iter() {
            let key = k.get_ref().as_ref();
            match key {
                "id" => {
                    id_span = v.span();
                    id = self.string(v, key);
                    if let Some(s) = &id
                        && !is_label(s)
                    {
                        self.problem(
                            &v.span(),
                            "`id` must be 1 to 64 characters of A-Z a-z 0-9 . _ -",
                        );
                        ok = false;
                    }
                }
                "check" => {
                    check_span = v.span();
                    check = self.string(v, key);
                }
                "title" => title = self.string(v, key),
                "requirements" => requirements = self.requirements(v),
                "severity" => {
                    if let Some(s) = self.string(v, key) {
                        severity = Severity::from_name(&s);
                        if severity.is_none() {
                            self.problem(&v.span(), format!("unknown severity `{s}` (expected critical, high, medium, low or info)"));
                            ok = false;
                        }
                    }
                }
                "enabled" => match v.get_ref() {
                    DeValue::Boolean(b) => enabled = *b,
                    other => {
                        self.problem(
                            &v.span(),
                            format!(
                                "`enabled` must be true or false, found {}",
                                type_name(other)
                            ),
                        );
                        ok = false;
                    }
                },
                "remediation" => remediation = self.string(v, key),
                "params" => params_value = Some(v),
                other => {
                    self.problem(
                        &k.span(),
                        format!("unknown key `{other}` in a control (expected id, check, title, requirements, severity, enabled, remediation, params)"),
                    );
                    ok = false;
                }
            }
        }
        let has = |name: &str| t.iter().any(|(k, _)| k.get_ref() == name);
        if !has("id") {
            self.problem(&span, "a control needs `id`");
        }
        if !has("requirements") {
            self.problem(
                &span,
                format!(
                    "control `{}` needs `requirements`",
                    id.as_deref().unwrap_or("?")
                ),
            );
        }
        if !has("severity") {
            self.problem(
                &span,
                format!(
                    "control `{}` needs `severity`",
                    id.as_deref().unwrap_or("?")
                ),
            );
        }
        let id = id?;
        let check_name = check.unwrap_or_else(|| id.clone());
        let Some(spec) = checks::spec(&check_name) else {
            let known: Vec<&str> = checks::CHECKS.iter().map(|c| c.name).collect();
            let at = if has("check") { check_span } else { id_span };
            self.problem(
                &at,
                format!("unknown check `{check_name}` (known: {})", known.join(", ")),
            );
            return None;
        };
        let mut params = Params::defaults(spec);
        if let Some(v) = params_value {
            if let Some(pt) = self.expect_table(v, "params") {
                for (k, pv) in pt.iter() {
                    let name = k.get_ref().as_ref();
                    let Some(ps) = spec.params.iter().find(|p| p.name == name) else {
                        let known: Vec<&str> = spec.params.iter().map(|p| p.name).collect();
                        let known = if known.is_empty() {
                            "it takes none".to_owned()
                        } else {
                            format!("known: {}", known.join(", "))
                        };
                        self.problem(
                            &k.span(),
                            format!(
                                "unknown parameter `{name}` for check `{}` ({known})",
                                spec.name
                            ),
                        );
                        ok = false;
                        continue;
                    };
                    match self.param(ps, pv) {
                        Some(val) => params.set(name, val),
                        None => ok = false,
                    }
                }
            } else {
                ok = false;
            }
        }
        let (line, _) = self.at(span.start);
        let control = Control {
            id,
            check: spec.name.to_owned(),
            title: title.unwrap_or_else(|| spec.title.to_owned()),
            requirements: requirements?,
            severity: severity?,
            enabled,
            params,
            remediation,
            line,
        };
        ok.then_some((control, id_span))
    }

    fn requirements(&mut self, v: &Value<'_>) -> Option<Vec<String>> {
        let DeValue::Array(items) = v.get_ref() else {
            self.problem(
                &v.span(),
                format!(
                    "`requirements` must be an array of strings, found {}",
                    type_name(v.get_ref())
                ),
            );
            return None;
        };
        if items.is_empty() {
            self.problem(
                &v.span(),
                "`requirements` is empty: name at least one requirement number",
            );
            return None;
        }
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) if !s.trim().is_empty() && s.len() <= 64 => {
                    out.push(s.trim().to_owned())
                }
                DeValue::String(_) => {
                    self.problem(
                        &item.span(),
                        "a requirement number must be 1 to 64 characters",
                    );
                    return None;
                }
                other => {
                    self.problem(
                        &item.span(),
                        format!(
                            "a requirement number must be a string, found {}",
                            type_name(other)
                        ),
                    );
                    return None;
                }
            }
        }
        Some(out)
    }

    fn param(&mut self, spec: &ParamSpec, v: &Value<'_>) -> Option<ParamValue> {
        let name = spec.name;
        match (spec.kind, v.get_ref()) {
            (ParamKind::Int { min, max }, DeValue::Integer(i)) => {
                let digits = i.as_str().replace('_', "");
                match i64::from_str_radix(&digits, i.radix()) {
                    Ok(n) if (min..=max).contains(&n) => Some(ParamValue::Int(n)),
                    Ok(n) => {
                        self.problem(
                            &v.span(),
                            format!("`{name}` = {n} is out of range ({min} to {max})"),
                        );
                        None
                    }
                    Err(_) => {
                        self.problem(
                            &v.span(),
                            format!("`{name}` is out of range ({min} to {max})"),
                        );
                        None
                    }
                }
            }
            (ParamKind::Bool, DeValue::Boolean(b)) => Some(ParamValue::Bool(*b)),
            (ParamKind::Choice(allowed), DeValue::String(s)) => {
                if allowed.contains(&s.as_ref()) {
                    Some(ParamValue::Str(s.to_string()))
                } else {
                    self.problem(
                        &v.span(),
                        format!("`{name}` = {s:?} is not one of {}", quoted(allowed)),
                    );
                    None
                }
            }
            (ParamKind::List(allowed), DeValue::Array(items)) => {
                let mut out = Vec::new();
                for item in items.iter() {
                    match item.get_ref() {
                        DeValue::String(s) if allowed.is_empty() && !s.is_empty() => {
                            out.push(s.to_string())
                        }
                        DeValue::String(s) if allowed.contains(&s.as_ref()) => {
                            out.push(s.to_string())
                        }
                        DeValue::String(s) => {
                            let expected = if allowed.is_empty() {
                                "a non-empty string".to_owned()
                            } else {
                                format!("one of {}", quoted(allowed))
                            };
                            self.problem(
                                &item.span(),
                                format!("`{name}`: {s:?} is not {expected}"),
                            );
                            return None;
                        }
                        other => {
                            self.problem(
                                &item.span(),
                                format!("`{name}` must hold strings, found {}", type_name(other)),
                            );
                            return None;
                        }
                    }
                }
                Some(ParamValue::List(out))
            }
            (kind, other) => {
                let expected = match kind {
                    ParamKind::Int { min, max } => format!("an integer ({min} to {max})"),
                    ParamKind::Bool => "true or false".to_owned(),
                    ParamKind::Choice(allowed) => format!("one of {}", quoted(allowed)),
                    ParamKind::List(_) => "an array of strings".to_owned(),
                };
                self.problem(
                    &v.span(),
                    format!("`{name}` must be {expected}, found {}", type_name(other)),
                );
                None
            }
        }
    }
}

fn quoted(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_policies_load() {
        let pci = Policy::builtin("pci-dss-4.0.1").unwrap().unwrap();
        assert_eq!(pci.id, "pci-dss-4.0.1");
        assert!(pci.controls.len() >= 18, "{}", pci.controls.len());
        let gdpr = Policy::builtin("gdpr").unwrap().unwrap();
        assert!(
            gdpr.controls
                .iter()
                .any(|c| c.check == "gdpr.erasure_deadline")
        );
        assert!(Policy::builtin("sox").is_none());
    }

    #[test]
    fn every_check_is_in_the_pci_policy_or_gdpr() {
        let pci = Policy::builtin("pci-dss-4.0.1").unwrap().unwrap();
        let gdpr = Policy::builtin("gdpr").unwrap().unwrap();
        for spec in checks::CHECKS {
            assert!(
                pci.controls
                    .iter()
                    .chain(&gdpr.controls)
                    .any(|c| c.check == spec.name),
                "check {} is in no shipped policy",
                spec.name
            );
        }
    }

    const HEAD: &str = "[policy]\nid = \"p\"\ntitle = \"t\"\n";

    fn err(text: &str) -> PolicyError {
        Policy::parse(text, "p.toml").unwrap_err()
    }

    #[test]
    fn params_override_defaults() {
        let p = Policy::parse(
            &format!(
                "{HEAD}[[controls]]\nid = \"keys.cryptoperiod\"\nrequirements = [\"3.7.4\"]\nseverity = \"high\"\n[controls.params]\nmax_key_age_days = 90\n"
            ),
            "p.toml",
        )
        .unwrap();
        let c = &p.controls[0];
        assert_eq!(c.params.int("max_key_age_days"), 90);
        assert_eq!(c.params.int("max_root_age_days"), 365);
        assert_eq!(c.line, 4);
        assert_eq!(c.title, checks::spec("keys.cryptoperiod").unwrap().title);
    }

    #[test]
    fn octal_modes_are_accepted() {
        let p = Policy::parse(
            &format!("{HEAD}[[controls]]\nid = \"access.file_modes\"\nrequirements = [\"7.2.1\"]\nseverity = \"high\"\nparams = {{ max_dir_mode = 0o750 }}\n"),
            "p.toml",
        )
        .unwrap();
        assert_eq!(p.controls[0].params.int("max_dir_mode"), 0o750);
    }

    #[test]
    fn errors_have_file_and_line() {
        let e = err(&format!(
            "{HEAD}[[controls]]\nid = \"keys.cryptoperiod\"\nrequirements = [\"3.7.4\"]\nseverity = \"high\"\ncolour = 1\n[controls.params]\nmax_key_age_days = \"a year\"\nmax_age = 3\n"
        ));
        let s = e.to_string();
        assert!(s.contains("p.toml:8:1: unknown key `colour`"), "{s}");
        assert!(
            s.contains("p.toml:10:20: `max_key_age_days` must be an integer"),
            "{s}"
        );
        assert!(
            s.contains("p.toml:11:1: unknown parameter `max_age`"),
            "{s}"
        );
        assert_eq!(e.problems.len(), 3, "{s}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = err(&format!(
            "{HEAD}[[controls]]\nid = \"tls.configuration\"\nrequirements = []\nseverity = \"urgent\"\nparams = {{ min_tls = \"1.0\" }}\n"
        ));
        let s = e.to_string();
        assert!(s.contains("p.toml:6:16: `requirements` is empty"), "{s}");
        assert!(s.contains("p.toml:7:12: unknown severity `urgent`"), "{s}");
        assert!(
            s.contains("p.toml:8:22: `min_tls` = \"1.0\" is not one of \"1.2\", \"1.3\""),
            "{s}"
        );
        let e = err(&format!(
            "{HEAD}[[controls]]\nid = \"nope\"\nrequirements = [\"1\"]\nseverity = \"low\"\n"
        ));
        assert!(
            e.to_string().contains("p.toml:5:6: unknown check `nope`"),
            "{e}"
        );
        let e = err(&format!(
            "{HEAD}[[controls]]\nid = \"keys.cryptoperiod\"\nseverity = \"low\"\nparams = {{ max_key_age_days = 0 }}\n"
        ));
        let s = e.to_string();
        assert!(s.contains("needs `requirements`"), "{s}");
        assert!(
            s.contains("p.toml:7:31: `max_key_age_days` = 0 is out of range"),
            "{s}"
        );
    }

    #[test]
    fn syntax_errors_and_structure() {
        let e = err("[policy\nid = 1");
        assert_eq!(e.problems[0].line, 1, "{e}");
        assert!(e.to_string().starts_with("p.toml:1:"), "{e}");
        let e = err("title = \"x\"\n");
        let s = e.to_string();
        assert!(
            s.contains("unknown key `title`")
                && s.contains("missing [policy]")
                && s.contains("no [[controls]]"),
            "{s}"
        );
        let e = err(&format!(
            "{HEAD}[[controls]]\nid = \"keys.cryptoperiod\"\nrequirements = [\"1\"]\nseverity = \"low\"\n[[controls]]\nid = \"keys.cryptoperiod\"\nrequirements = [\"1\"]\nseverity = \"low\"\n"
        ));
        assert!(
            e.to_string().contains("p.toml:9:6: duplicate control id"),
            "{e}"
        );
    }
}
