//! The text report: a table, then the evidence of every control that did not pass.
use std::fmt::Write;

use crate::compliance::result::{Report, Status};

fn paint(s: &str, status: Status, colour: bool) -> String {
    if !colour {
        return s.to_owned();
    }
    let code = match status {
        Status::Pass => "32",
        Status::Attest => "36",
        Status::Warn => "33",
        Status::Fail => "31;1",
        Status::Error => "35;1",
        Status::Skip => "2",
    };
    format!("\x1b[{code}m{s}\x1b[0m")
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// Renders the table.
pub(super) fn render(r: &Report, colour: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} — {}", r.policy.title, r.policy.framework);
    let _ = writeln!(
        out,
        "policy {} v{} ({}), {}",
        r.policy.id, r.policy.version, r.policy.source, r.tool
    );
    let _ = writeln!(
        out,
        "target {} (data {}), generated {}",
        r.target.config,
        r.target.data_dir,
        r.generated_at.date()
    );
    if !r.target.endpoints.is_empty() {
        let _ = writeln!(out, "endpoints {}", r.target.endpoints.join(", "));
    }
    out.push('\n');
    let idw = r
        .results
        .iter()
        .map(|x| x.id.chars().count())
        .max()
        .unwrap_or(2)
        .clamp(2, 32);
    let _ = writeln!(
        out,
        "{:<6}  {:<idw$}  {:<8}  {:<24}  TITLE",
        "STATUS", "ID", "SEVERITY", "REQUIREMENTS"
    );
    for x in &r.results {
        let status = format!("{:<6}", x.status.as_str().to_uppercase());
        let _ = writeln!(
            out,
            "{}  {:<idw$}  {:<8}  {:<24}  {}",
            paint(&status, x.status, colour),
            truncate(&x.id, idw),
            x.severity.as_str(),
            truncate(&x.requirements.join(", "), 24),
            x.title
        );
    }
    let s = &r.summary;
    let _ = writeln!(
        out,
        "\n{} controls: {} pass, {} attest, {} fail, {} warn, {} skip, {} error",
        s.total(),
        s.pass,
        s.attest,
        s.fail,
        s.warn,
        s.skip,
        s.error
    );
    for x in r.results.iter().filter(|x| x.status != Status::Pass) {
        let _ = writeln!(
            out,
            "\n{} {} — {}",
            paint(
                &format!("[{}]", x.status.as_str().to_uppercase()),
                x.status,
                colour
            ),
            x.id,
            x.title
        );
        let _ = writeln!(out, "  requirements: {}", x.requirements.join(", "));
        for line in &x.evidence {
            let _ = writeln!(out, "  {line}");
        }
        if !x.remediation.is_empty() {
            let _ = writeln!(out, "  remediation: {}", x.remediation);
        }
    }
    out
}
