//! Request templates: `{{card.*}}` placeholders replaced by the card's data, with
//! the escaping the body's content type needs, so that a substituted value can
//! never change the request's structure (close a JSON string, add a form field).

use std::fmt::Write as _;

use zeroize::Zeroizing;

use super::RelayError;

/// A placeholder a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Placeholder {
    /// `{{card.number}}`: the card number, digits only.
    Number,
    /// `{{card.exp_month}}`: two digits, `01` to `12`.
    ExpMonth,
    /// `{{card.exp_year}}`: four digits.
    ExpYear,
    /// `{{card.cvc}}`: the security code held for the token.
    Cvc,
    /// `{{card.name}}`: the cardholder name (empty when none is stored).
    Name,
}

impl Placeholder {
    fn from_name(name: &str) -> Option<Placeholder> {
        Some(match name {
            "card.number" => Placeholder::Number,
            "card.exp_month" => Placeholder::ExpMonth,
            "card.exp_year" => Placeholder::ExpYear,
            "card.cvc" => Placeholder::Cvc,
            "card.name" => Placeholder::Name,
            _ => return None,
        })
    }
}

/// How a body is written, from its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/json` (or `application/*+json`): values are JSON-string escaped
    /// and placeholders may stand only inside string values.
    Json,
    /// `application/x-www-form-urlencoded`: values are percent-encoded.
    Form,
    /// No body at all (and so no placeholder).
    Empty,
}

impl BodyKind {
    /// The kind for a body with content type `content_type`; other types are refused.
    pub fn of(content_type: Option<&str>, body: &str) -> Result<BodyKind, RelayError> {
        let Some(ct) = content_type else {
            return if body.is_empty() {
                Ok(BodyKind::Empty)
            } else {
                Err(RelayError::template(
                    "unsupported_content_type",
                    "a body needs a content-type header: application/json or application/x-www-form-urlencoded",
                ))
            };
        };
        let essence = ct
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if essence == "application/json"
            || (essence.starts_with("application/") && essence.ends_with("+json"))
        {
            Ok(BodyKind::Json)
        } else if essence == "application/x-www-form-urlencoded" {
            Ok(BodyKind::Form)
        } else {
            Err(RelayError::template(
                "unsupported_content_type",
                "the body's content type must be application/json or application/x-www-form-urlencoded",
            ))
        }
    }
}

/// The card data a template is resolved with. Borrowed from the opened card
/// (which zeroizes itself); the values here are never printed.
pub struct CardValues<'a> {
    /// Digits.
    pub number: &'a str,
    /// 1 to 12.
    pub exp_month: u8,
    /// Four digits.
    pub exp_year: u16,
    /// The held security code, if any.
    pub cvc: Option<&'a str>,
    /// The cardholder name, if stored.
    pub name: Option<&'a str>,
}

impl std::fmt::Debug for CardValues<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardValues([REDACTED])")
    }
}

impl CardValues<'_> {
    /// The text a placeholder stands for (before escaping).
    fn value(&self, p: Placeholder) -> Result<Zeroizing<String>, RelayError> {
        Ok(Zeroizing::new(match p {
            Placeholder::Number => self.number.to_owned(),
            Placeholder::ExpMonth => format!("{:02}", self.exp_month),
            Placeholder::ExpYear => format!("{:04}", self.exp_year),
            Placeholder::Cvc => self.cvc.ok_or(RelayError::CvcUnavailable)?.to_owned(),
            Placeholder::Name => self.name.unwrap_or_default().to_owned(),
        }))
    }
}

/// One placeholder found in a template: where it stands (bytes) and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Found {
    start: usize,
    end: usize,
    what: Placeholder,
}

/// Finds every `{{…}}` in `text`: each must be a known placeholder.
fn find_all(text: &str) -> Result<Vec<Found>, RelayError> {
    let mut out = Vec::new();
    let mut from = 0usize;
    while let Some(rel) = text.get(from..).and_then(|t| t.find("{{")) {
        let start = from + rel;
        let inner_start = start + 2;
        let Some(close) = text.get(inner_start..).and_then(|t| t.find("}}")) else {
            return Err(RelayError::template(
                "bad_template",
                format!("`{{{{` at byte {start} is never closed by `}}}}`"),
            ));
        };
        let inner = text
            .get(inner_start..inner_start + close)
            .unwrap_or_default()
            .trim();
        let what = Placeholder::from_name(inner).ok_or_else(|| {
            let shown: String = inner.chars().take(32).collect();
            // Letters, dots and underscores only: a detail must never carry digits
            // a caller might have put there (a card number).
            let shown = if shown
                .chars()
                .all(|c| c.is_ascii_alphabetic() || c == '.' || c == '_')
            {
                shown
            } else {
                "…".to_owned()
            };
            RelayError::template(
                "unknown_placeholder",
                format!(
                    "unknown placeholder {{{{{shown}}}}} at byte {start}; known: card.number, card.exp_month, card.exp_year, card.cvc, card.name"
                ),
            )
        })?;
        let end = inner_start + close + 2;
        out.push(Found { start, end, what });
        from = end;
    }
    Ok(out)
}

/// The placeholders a template uses (to know, before opening anything, whether
/// it needs the security code).
pub fn placeholders(template: &str) -> Result<Vec<Placeholder>, RelayError> {
    Ok(find_all(template)?.into_iter().map(|f| f.what).collect())
}

/// Checks that every placeholder of a JSON template stands inside a string
/// *value* (not a key, not between tokens), and that the template is JSON.
fn check_json(template: &str, found: &[Found]) -> Result<(), RelayError> {
    if serde_json::from_str::<serde::de::IgnoredAny>(template).is_err() {
        return Err(RelayError::template(
            "bad_template",
            "the body is not valid JSON (placeholders must stand inside JSON strings)",
        ));
    }
    // Walk the JSON text: which byte ranges are string values.
    #[derive(Clone, Copy, PartialEq)]
    enum Ctx {
        Object { expect_key: bool },
        Array,
    }
    let mut stack: Vec<Ctx> = Vec::new();
    let mut value_strings: Vec<(usize, usize)> = Vec::new();
    let bytes = template.as_bytes();
    let mut i = 0usize;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'{' => stack.push(Ctx::Object { expect_key: true }),
            b'[' => stack.push(Ctx::Array),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => {
                if let Some(Ctx::Object { expect_key }) = stack.last_mut() {
                    *expect_key = true;
                }
            }
            b':' => {
                if let Some(Ctx::Object { expect_key }) = stack.last_mut() {
                    *expect_key = false;
                }
            }
            b'"' => {
                let start = i;
                i += 1;
                while let Some(&c) = bytes.get(i) {
                    match c {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                let is_key = matches!(stack.last(), Some(Ctx::Object { expect_key: true }));
                if !is_key {
                    value_strings.push((start, i));
                }
            }
            _ => {}
        }
        i += 1;
    }
    for f in found {
        let inside = value_strings
            .iter()
            .any(|&(s, e)| s < f.start && f.end <= e);
        if !inside {
            return Err(RelayError::template(
                "bad_template",
                format!(
                    "the placeholder at byte {} is not inside a JSON string value",
                    f.start
                ),
            ));
        }
    }
    Ok(())
}

/// Resolves `template` with `card` for a body of `kind`: each placeholder is
/// replaced by its value, escaped for `kind`. The result is wiped on drop.
pub fn resolve(
    kind: BodyKind,
    template: &str,
    card: &CardValues<'_>,
) -> Result<Zeroizing<String>, RelayError> {
    let found = find_all(template)?;
    match kind {
        BodyKind::Json => check_json(template, &found)?,
        BodyKind::Form | BodyKind::Empty => {}
    }
    let values = found
        .iter()
        .map(|f| card.value(f.what))
        .collect::<Result<Vec<_>, _>>()?;
    // Sized up front (escaping at most sextuples a value) so the buffer holding
    // card data never reallocates, which would leave an unwiped copy behind.
    let room = values.iter().fold(template.len(), |n, v| {
        n.saturating_add(v.len().saturating_mul(6))
    });
    let mut out = Zeroizing::new(String::with_capacity(room));
    let mut at = 0usize;
    for (f, value) in found.iter().zip(&values) {
        out.push_str(template.get(at..f.start).unwrap_or_default());
        match kind {
            BodyKind::Json => json_escape_into(value, &mut out),
            BodyKind::Form | BodyKind::Empty => percent_encode_into(value, &mut out),
        }
        at = f.end;
    }
    out.push_str(template.get(at..).unwrap_or_default());
    Ok(out)
}

/// Writes `s` escaped as the inside of a JSON string: `"` and `\` escaped,
/// control characters as `\u00XX`.
pub(crate) fn json_escape_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

/// Writes `s` percent-encoded: everything but `A-Z a-z 0-9 - . _ ~` becomes
/// `%XX` (so `&`, `=`, `+` and `%` can never start a new field).
fn percent_encode_into(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

#[cfg(test)]
mod tests;
