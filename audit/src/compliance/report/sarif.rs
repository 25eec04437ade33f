//! SARIF 2.1.0: one rule per control, one result per control (kind `pass`, `fail`,
//! `notApplicable` or `open`), located at the control's line in the policy file.
use serde_json::{Value, json};

use crate::compliance::checks::{self, security_severity};
use crate::compliance::policy::Severity;
use crate::compliance::result::{CheckResult, Report, Status};

/// The schema URI written into `$schema`.
pub const SARIF_SCHEMA: &str =
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json";

/// The project's home from the crate metadata (`repository`), unless it is a
/// placeholder under a reserved domain: a dashboard link must lead somewhere.
fn information_uri() -> Option<&'static str> {
    let repo = option_env!("CARGO_PKG_REPOSITORY")?;
    let host = repo
        .strip_prefix("https://")?
        .split('/')
        .next()?
        .to_ascii_lowercase();
    let reserved = ["invalid", "example", "test", "localhost"]
        .iter()
        .any(|tld| host == *tld || host.ends_with(&format!(".{tld}")))
        || ["example.com", "example.org", "example.net"]
            .iter()
            .any(|d| host == *d || host.ends_with(&format!(".{d}")));
    (!reserved).then_some(repo)
}

/// A relative or `file://` URI for a policy source.
fn policy_uri(source: &str) -> String {
    if let Some(name) = source.strip_prefix("builtin:") {
        return format!("policies/{name}.toml");
    }
    let mut out = String::new();
    for b in source.replace('\\', "/").bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.starts_with('/') {
        format!("file://{out}")
    } else {
        out
    }
}

fn kind_level(x: &CheckResult) -> (&'static str, &'static str) {
    match x.status {
        Status::Pass => ("pass", "none"),
        // Not measurable: a person must review it (never `pass`).
        Status::Attest => ("review", "none"),
        Status::Skip => ("notApplicable", "none"),
        Status::Error => ("open", "none"),
        Status::Warn => ("fail", "warning"),
        Status::Fail => (
            "fail",
            match x.severity {
                Severity::Critical | Severity::High | Severity::Medium => "error",
                Severity::Low => "warning",
                Severity::Info => "note",
            },
        ),
    }
}

fn default_level(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High | Severity::Medium => "error",
        Severity::Low => "warning",
        Severity::Info => "note",
    }
}

fn message(x: &CheckResult) -> String {
    let findings: Vec<&str> = x
        .evidence
        .iter()
        .map(String::as_str)
        .filter(|l| l.starts_with("FAIL:") || l.starts_with("WARN:") || l.starts_with("ERROR:"))
        .collect();
    let body = if findings.is_empty() {
        x.evidence.join("\n")
    } else {
        findings.join("\n")
    };
    format!("[{}] {}: {}\n{}", x.status, x.id, x.title, body)
}

/// Renders the SARIF log.
pub(super) fn render(r: &Report) -> String {
    let uri = policy_uri(&r.policy.source);
    let rules: Vec<Value> = r
        .results
        .iter()
        .map(|x| {
            let help = checks::spec(&x.check).map_or("", |s| s.remediation);
            let mut tags: Vec<String> = vec!["security".into(), "compliance".into()];
            tags.extend(x.requirements.iter().map(|q| if q.starts_with(|c: char| c.is_ascii_digit()) { format!("PCI-DSS-{q}") } else { q.clone() }));
            json!({
                "id": x.id,
                "name": x.check,
                "shortDescription": { "text": x.title },
                "fullDescription": { "text": format!("{} (evidences {})", x.title, x.requirements.join(", ")) },
                "help": { "text": help },
                "defaultConfiguration": { "level": default_level(x.severity) },
                "properties": {
                    "tags": tags,
                    "requirements": x.requirements,
                    "severity": x.severity.as_str(),
                    "security-severity": security_severity(x.severity),
                    "precision": "very-high"
                }
            })
        })
        .collect();
    let results: Vec<Value> = r
        .results
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let (kind, level) = kind_level(x);
            json!({
                "ruleId": x.id,
                "ruleIndex": i,
                "kind": kind,
                "level": level,
                "message": { "text": message(x) },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": uri },
                        "region": { "startLine": x.policy_line.max(1) }
                    }
                }],
                "partialFingerprints": { "panvaultControl/v1": format!("{}/{}", r.policy.id, x.id) },
                "properties": {
                    "status": x.status.as_str(),
                    "severity": x.severity.as_str(),
                    "requirements": x.requirements,
                    "evidence": x.evidence,
                    "remediation": x.remediation
                }
            })
        })
        .collect();
    let notifications: Vec<Value> = r
        .results
        .iter()
        .filter(|x| x.status == Status::Error)
        .map(|x| json!({ "level": "error", "message": { "text": format!("{}: {}", x.id, x.evidence.join("; ")) } }))
        .collect();
    let end = r
        .generated_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut log = json!({
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "panvault-compliance",
                    "fullName": r.tool,
                    "version": env!("CARGO_PKG_VERSION"),
                    "semanticVersion": env!("CARGO_PKG_VERSION"),
                    "rules": rules
                }
            },
            "automationDetails": { "id": format!("panvault-compliance/{}/", r.policy.id) },
            "invocations": [{
                "executionSuccessful": true,
                "endTimeUtc": end,
                "toolExecutionNotifications": notifications
            }],
            "results": results,
            "properties": {
                "policy": r.policy,
                "target": r.target,
                "summary": r.summary
            }
        }]
    });
    if let Some(uri) = information_uri()
        && let Some(driver) = log.pointer_mut("/runs/0/tool/driver")
        && let Some(driver) = driver.as_object_mut()
    {
        driver.insert("informationUri".to_owned(), Value::String(uri.to_owned()));
    }
    let mut s = serde_json::to_string_pretty(&log).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::policy_uri;

    #[test]
    fn uris() {
        assert_eq!(policy_uri("builtin:gdpr"), "policies/gdpr.toml");
        assert_eq!(
            policy_uri("/etc/pan vault/p.toml"),
            "file:///etc/pan%20vault/p.toml"
        );
        assert_eq!(policy_uri("policies/p.toml"), "policies/p.toml");
    }
}
