//! JUnit XML: one `<testsuite>` per policy, one `<testcase>` per control. A failed
//! control is a `<failure>`, an unevaluated one an `<error>`, a skipped one
//! `<skipped>`; warnings pass with the evidence in `<system-out>`. An attested
//! control (not measurable, confirmed by an assessor) is `<skipped>` with a
//! message that starts `attestation:`, so that no CI dashboard counts it as a pass.
//! The suite's `time` is the real duration of the run (collection included).
use std::fmt::Write;

use crate::compliance::result::{Report, Status};

/// Escapes text for XML, dropping characters XML 1.0 cannot hold.
pub(crate) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

fn seconds(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

fn area(check: &str) -> &str {
    check.split('.').next().unwrap_or("other")
}

/// Renders the XML.
pub(super) fn render(r: &Report) -> String {
    let s = &r.summary;
    let total_micros = u64::try_from(r.elapsed.as_micros()).unwrap_or(u64::MAX);
    let stamp = r
        .generated_at
        .format(&time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]"
        ))
        .unwrap_or_default();
    let name = xml_escape(&format!("panvault compliance: {}", r.policy.id));
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let counts = format!(
        "tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{}\"",
        s.total(),
        s.fail,
        s.error,
        s.skip.saturating_add(s.attest),
        seconds(total_micros)
    );
    let _ = writeln!(out, "<testsuites name=\"{name}\" {counts}>");
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" {counts} timestamp=\"{stamp}\" hostname=\"{}\">",
        xml_escape(&r.policy.id),
        xml_escape(&r.target.host)
    );
    out.push_str("    <properties>\n");
    let mut props = vec![
        ("policy", r.policy.id.clone()),
        ("policy.title", r.policy.title.clone()),
        ("policy.version", r.policy.version.clone()),
        ("policy.source", r.policy.source.clone()),
        ("policy.sha256", r.policy.sha256.clone()),
        ("framework", r.policy.framework.clone()),
        ("config", r.target.config.clone()),
        ("data_dir", r.target.data_dir.clone()),
        ("tool", r.tool.clone()),
    ];
    if let Some(v) = &r.target.vault_id {
        props.push(("vault_id", v.clone()));
    }
    for e in &r.target.endpoints {
        props.push(("endpoint", e.clone()));
    }
    for (k, v) in props {
        let _ = writeln!(
            out,
            "      <property name=\"{}\" value=\"{}\"/>",
            xml_escape(k),
            xml_escape(&v)
        );
    }
    out.push_str("    </properties>\n");
    for x in &r.results {
        let _ = write!(
            out,
            "    <testcase name=\"{}\" classname=\"panvault.compliance.{}\" time=\"{}\">",
            xml_escape(&format!("{}: {}", x.id, x.title)),
            xml_escape(area(&x.check)),
            seconds(x.micros)
        );
        let mut body = format!(
            "requirements: {}\nseverity: {}\n{}",
            x.requirements.join(", "),
            x.severity,
            x.evidence.join("\n")
        );
        if !x.remediation.is_empty() {
            body.push_str(&format!("\nremediation: {}", x.remediation));
        }
        let first = x
            .evidence
            .iter()
            .find(|l| l.starts_with("FAIL:") || l.starts_with("ERROR:"))
            .or(x.evidence.first())
            .cloned()
            .unwrap_or_default();
        match x.status {
            Status::Fail => {
                let _ = write!(
                    out,
                    "\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    ",
                    xml_escape(&first),
                    x.severity,
                    xml_escape(&body)
                );
            }
            Status::Error => {
                let _ = write!(
                    out,
                    "\n      <error message=\"{}\" type=\"error\">{}</error>\n    ",
                    xml_escape(&first),
                    xml_escape(&body)
                );
            }
            Status::Skip => {
                let _ = write!(
                    out,
                    "\n      <skipped message=\"{}\"/>\n    ",
                    xml_escape(&first)
                );
            }
            Status::Attest => {
                let _ = write!(
                    out,
                    "\n      <skipped message=\"{}\"/>\n      <system-out>{}</system-out>\n    ",
                    xml_escape(&format!("attestation: {first}")),
                    xml_escape(&body)
                );
            }
            Status::Pass | Status::Warn => {
                let _ = write!(
                    out,
                    "\n      <system-out>{}</system-out>\n    ",
                    xml_escape(&body)
                );
            }
        }
        out.push_str("</testcase>\n");
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            xml_escape("a<b>&\"c'\u{1}\n"),
            "a&lt;b&gt;&amp;&quot;c&apos;\n"
        );
        assert_eq!(seconds(1_500_000), "1.500000");
    }
}
