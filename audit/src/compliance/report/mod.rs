//! Report renderers: a text table (coloured on a terminal), JSON, SARIF 2.1.0,
//! JUnit XML, and one self-contained HTML page.
use std::cmp::Ordering;

use super::result::Report;

mod html;
mod junit;
mod sarif;
mod text;

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// A table for people (ANSI colours when asked for).
    Text,
    /// `{"policy","generated_at","summary","results":[…]}`.
    Json,
    /// SARIF 2.1.0 (code-scanning dashboards).
    Sarif,
    /// JUnit XML (CI test reports).
    Junit,
    /// One self-contained HTML file.
    Html,
}

impl Format {
    /// All formats.
    pub const ALL: [Format; 5] = [
        Format::Text,
        Format::Json,
        Format::Sarif,
        Format::Junit,
        Format::Html,
    ];

    /// `text`, `json`, `sarif`, `junit`, `html`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
            Format::Sarif => "sarif",
            Format::Junit => "junit",
            Format::Html => "html",
        }
    }

    /// From its name.
    pub fn from_name(s: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

/// Renders `report` as `format`; `colour` applies to text only.
pub fn render(report: &Report, format: Format, colour: bool) -> String {
    match format {
        Format::Text => text::render(report, colour),
        Format::Json => json(report),
        Format::Sarif => sarif::render(report),
        Format::Junit => junit::render(report),
        Format::Html => html::render(report),
    }
}

fn json(report: &Report) -> String {
    let mut s = serde_json::to_string_pretty(report)
        .unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()));
    s.push('\n');
    s
}

/// Orders requirement numbers naturally: `3.2.1` < `3.10`, text after numbers.
pub(crate) fn requirement_order(a: &str, b: &str) -> Ordering {
    let key = |s: &str| -> Vec<(u32, String)> {
        s.split(['.', ' ', '(', ')'])
            .filter(|p| !p.is_empty())
            .map(|p| (p.parse::<u32>().unwrap_or(u32::MAX), p.to_owned()))
            .collect()
    };
    let (ka, kb) = (key(a), key(b));
    let numeric_a = a.chars().next().is_some_and(|c| c.is_ascii_digit());
    let numeric_b = b.chars().next().is_some_and(|c| c.is_ascii_digit());
    numeric_b.cmp(&numeric_a).then_with(|| ka.cmp(&kb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirement_ordering() {
        let mut v = vec![
            "10.2.1",
            "3.7.4",
            "GDPR Art. 17",
            "3.10",
            "3.2.1",
            "12.3.3",
            "GDPR Art. 12(3)",
        ];
        v.sort_by(|a, b| requirement_order(a, b));
        assert_eq!(
            v,
            [
                "3.2.1",
                "3.7.4",
                "3.10",
                "10.2.1",
                "12.3.3",
                "GDPR Art. 12(3)",
                "GDPR Art. 17"
            ]
        );
    }
}
