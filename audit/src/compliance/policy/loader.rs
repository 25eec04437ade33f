//! The policy loader: reads the TOML through its spans, so every problem is
//! reported with its line and column, and checks each control against the built-in
//! checks and their parameters.

use std::collections::HashSet;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{Control, ParamKind, ParamSpec, ParamValue, Params, Policy, Problem, Severity};
use crate::compliance::checks;

type Table<'a> = DeTable<'a>;
type Value<'a> = Spanned<DeValue<'a>>;

pub(super) struct Parser<'t> {
    pub(super) text: &'t str,
    pub(super) problems: Vec<Problem>,
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

    pub(super) fn document(&mut self, source: &str) -> Option<Policy> {
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
