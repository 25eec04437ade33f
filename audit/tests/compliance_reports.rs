//! The report formats: JSON shape, SARIF 2.1.0 validated against the OASIS schema,
//! JUnit XML read by a JUnit parser, a self-contained HTML page. The schema and
//! parser checks use Python (`jsonschema`, `junitparser`) and are skipped, saying
//! so, when those are not installed.
// Test helpers outside #[test] functions: a panic is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod compliance_util;

use std::path::{Path, PathBuf};
use std::process::Command;

use compliance_util::*;
use panvault_audit::compliance::{Fact, Facts, Format, Report, Status, render};

/// A report with every status: fail (old key, card in a log), warn (nonce
/// budget), skip (no endpoint), error (the four audit-log checks: unreadable
/// log), pass (the rest).
fn mixed() -> (GoodVault, Report) {
    let v = good_vault();
    let mut f: Facts = good_facts(&v);
    if let Fact::Known(k) = &mut f.keys {
        k.data_keys[0].age_days = 400;
        k.data_keys[0].encryptions = 3 << 30;
    }
    std::fs::write(v.log_dir.join("debug&<x>.log"), "card=5555555555554444\n").unwrap();
    refresh(&v, &mut f);
    f.endpoints.clear();
    f.audit_log = Fact::Failed("vault.db: file is not a database".into());
    let r = run(&pci(), &f);
    (v, r)
}

fn python(script: &str, args: &[&Path]) -> Option<String> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .ok()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if let Some(what) = stdout.strip_prefix("SKIP ") {
        compliance_util::tool_missing(what.trim());
        return None;
    }
    assert!(out.status.success(), "python failed:\n{stdout}\n{stderr}");
    Some(stdout)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn json_has_the_documented_shape() {
    let (_v, r) = mixed();
    let v: serde_json::Value = serde_json::from_str(&render(&r, Format::Json, false)).unwrap();
    assert_eq!(v["policy"]["id"], "pci-dss-4.0.1");
    assert!(v["generated_at"].as_str().unwrap().ends_with('Z'));
    for k in ["pass", "attest", "fail", "warn", "skip", "error"] {
        assert!(v["summary"][k].is_u64(), "{k}");
    }
    assert_eq!(v["summary"]["attest"], 2);
    assert!(v["elapsed_seconds"].is_f64());
    assert_eq!(v["summary"]["fail"], 2);
    assert_eq!(v["summary"]["skip"], 1);
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 21);
    for x in results {
        let keys: Vec<&str> = x.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "evidence",
                "id",
                "remediation",
                "requirements",
                "severity",
                "status",
                "title"
            ]
        );
        assert!(
            ["pass", "attest", "fail", "warn", "skip", "error"]
                .contains(&x["status"].as_str().unwrap())
        );
        assert!(
            x["requirements"]
                .as_array()
                .unwrap()
                .iter()
                .all(serde_json::Value::is_string)
        );
    }
    let key = results
        .iter()
        .find(|x| x["id"] == "keys.cryptoperiod")
        .unwrap();
    assert_eq!(key["status"], "fail");
    assert!(key["evidence"].as_str().unwrap().contains("400 days old"));
    assert!(!key["remediation"].as_str().unwrap().is_empty());
    assert_eq!(r.exit_code(), 100);
}

#[test]
fn no_format_shows_a_card_number() {
    let (_v, r) = mixed();
    for fmt in Format::ALL {
        let out = render(&r, fmt, fmt == Format::Text);
        assert!(!out.contains("5555555555554444"), "{fmt:?}");
        assert!(out.contains("555555******4444"), "{fmt:?}");
    }
}

const SARIF_CHECK: &str = r#"
import json, sys
try:
    import jsonschema
except ImportError:
    print("SKIP python3 module jsonschema is not installed (pip install jsonschema)"); sys.exit(0)
log = json.load(open(sys.argv[1]))
schema = json.load(open(sys.argv[2]))
jsonschema.Draft4Validator.check_schema(schema)
errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(log), key=lambda e: list(e.path))
for e in errors:
    print("INVALID", list(e.path), e.message)
if errors:
    sys.exit(1)
run = log["runs"][0]
print(len(run["results"]), len(run["tool"]["driver"]["rules"]))
print(" ".join(sorted({r["kind"] for r in run["results"]})))
"#;

#[test]
fn sarif_validates_against_the_oasis_schema() {
    let (v, r) = mixed();
    let sarif = render(&r, Format::Sarif, false);
    let log: serde_json::Value = serde_json::from_str(&sarif).unwrap();
    assert_eq!(log["version"], "2.1.0");
    // A link to a placeholder domain would lead nowhere.
    assert!(!sarif.contains("example.invalid"), "{sarif}");
    let results = log["runs"][0]["results"].as_array().unwrap();
    let attested = results
        .iter()
        .find(|x| x["ruleId"] == "tls.configuration")
        .unwrap();
    assert_eq!(
        (attested["kind"].as_str(), attested["level"].as_str()),
        (Some("review"), Some("none"))
    );
    let old = results
        .iter()
        .find(|x| x["ruleId"] == "keys.cryptoperiod")
        .unwrap();
    assert_eq!(
        (old["kind"].as_str(), old["level"].as_str()),
        (Some("fail"), Some("error"))
    );
    assert_eq!(
        old["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "policies/pci-dss-4.0.1.toml"
    );
    let line = old["locations"][0]["physicalLocation"]["region"]["startLine"]
        .as_u64()
        .unwrap();
    let policy_line = panvault_audit::compliance::PCI_DSS_4_0_1
        .lines()
        .nth(usize::try_from(line).unwrap() - 1)
        .unwrap();
    assert_eq!(policy_line, "[[controls]]");
    let schema =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/compliance/sarif-schema-2.1.0.json");
    assert!(
        schema.exists(),
        "the SARIF schema must be committed at {}",
        schema.display()
    );
    let file = write(v.tmp.path(), "report.sarif", &sarif);
    if let Some(out) = python(SARIF_CHECK, &[&file, &schema]) {
        assert_eq!(out.lines().next(), Some("21 21"), "{out}");
        assert_eq!(
            out.lines().nth(1),
            Some("fail notApplicable open pass review"),
            "{out}"
        );
    }
    // A report whose only result is a pass validates too.
    let mut one = r.clone();
    one.results.retain(|x| x.status == Status::Pass);
    one.results.truncate(1);
    let file = write(
        v.tmp.path(),
        "one.sarif",
        &render(&one, Format::Sarif, false),
    );
    if let Some(out) = python(SARIF_CHECK, &[&file, &schema]) {
        assert!(out.starts_with("1 1"), "{out}");
    }
}

const JUNIT_CHECK: &str = r#"
import sys
try:
    from junitparser import JUnitXml, Failure, Error, Skipped
except ImportError:
    print("SKIP python3 module junitparser is not installed (pip install junitparser)"); sys.exit(0)
xml = JUnitXml.fromfile(sys.argv[1])
for suite in xml:
    print(suite.name, suite.tests, suite.failures, suite.errors, suite.skipped)
    for case in suite:
        kinds = [type(r).__name__ for r in case.result]
        print(case.classname, case.name.split(":")[0], ",".join(kinds) or "passed", case.time)
"#;

const ETREE_CHECK: &str = r#"
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == "testsuites", root.tag
suite = root.find("testsuite")
cases = suite.findall("testcase")
assert int(suite.get("tests")) == len(cases)
assert int(suite.get("failures")) == sum(1 for c in cases if c.find("failure") is not None)
assert int(suite.get("errors")) == sum(1 for c in cases if c.find("error") is not None)
assert int(suite.get("skipped")) == sum(1 for c in cases if c.find("skipped") is not None)
print("etree ok", len(cases))
"#;

#[test]
fn junit_is_read_by_a_junit_parser() {
    let (v, r) = mixed();
    let xml = render(&r, Format::Junit, false);
    let file = write(v.tmp.path(), "report.xml", &xml);
    if let Some(out) = python(ETREE_CHECK, &[&file]) {
        assert_eq!(out.trim(), "etree ok 21");
    }
    if let Some(out) = python(JUNIT_CHECK, &[&file]) {
        let mut lines = out.lines();
        // skipped: the unprobed endpoint and the two attested controls
        assert_eq!(lines.next(), Some("pci-dss-4.0.1 21 2 4 3"), "{out}");
        let cases: Vec<&str> = lines.collect();
        assert_eq!(cases.len(), 21, "{out}");
        assert!(
            cases
                .iter()
                .any(|l| l.starts_with("panvault.compliance.keys keys.cryptoperiod Failure")),
            "{out}"
        );
        assert!(
            cases
                .iter()
                .any(|l| l.starts_with("panvault.compliance.tls tls.endpoints Skipped")),
            "{out}"
        );
        assert!(
            cases
                .iter()
                .any(|l| l.starts_with("panvault.compliance.audit audit.integrity Error")),
            "{out}"
        );
        assert!(
            cases
                .iter()
                .any(|l| l.starts_with("panvault.compliance.keys keys.nonce_budget passed")),
            "{out}"
        );
        assert!(
            cases
                .iter()
                .any(|l| l.starts_with("panvault.compliance.tls tls.configuration Skipped")),
            "an attestation is never a pass: {out}"
        );
    }
    assert!(xml.contains("<skipped message=\"attestation: "), "{xml}");
}

#[test]
fn junit_time_is_the_runs_real_duration() {
    let (_v, mut r) = mixed();
    r.elapsed = std::time::Duration::from_millis(2_345);
    let xml = render(&r, Format::Junit, false);
    assert!(
        xml.contains("<testsuites name=\"panvault compliance: pci-dss-4.0.1\" tests=\"21\"")
            && xml.matches("time=\"2.345000\"").count() == 2,
        "{xml}"
    );
}

#[test]
fn html_rolls_requirements_up_per_sub_requirement() {
    let (_v, mut r) = mixed();
    let classes = r
        .results
        .iter_mut()
        .find(|x| x.id == "audit.event_classes")
        .unwrap();
    classes.status = Status::Warn;
    classes.evidence = vec![
        "10.2.1.1 individual access to cardholder data: 4 events".into(),
        "WARN: 10.2.1.5 changes to identification and authentication credentials and keys: 0 events".into(),
    ];
    let html = render(&r, Format::Html, false);
    let row = |q: &str| {
        let start = html.find(&format!("<td class=\"req\">{q}</td>")).unwrap();
        let end = start + html[start..].find("</tr>").unwrap();
        html[start..end].to_owned()
    };
    assert!(
        row("10.2.1.5").contains("<td><span class=\"badge warn\">"),
        "{}",
        row("10.2.1.5")
    );
    assert!(
        row("10.2.1.1").contains("<td><span class=\"badge pass\">"),
        "{}",
        row("10.2.1.1")
    );
    // The parent requirement keeps the control's status.
    assert!(
        row("10.2.1").contains("<td><span class=\"badge warn\">"),
        "{}",
        row("10.2.1")
    );
}

#[test]
fn html_is_one_self_contained_page() {
    let (_v, r) = mixed();
    let html = render(&r, Format::Html, false);
    assert!(html.starts_with("<!DOCTYPE html>"));
    for external in ["<script", "src=", "href=\"http", "@import", "url("] {
        assert!(!html.contains(external), "{external}");
    }
    assert!(html.contains("NOT COMPLIANT"));
    assert!(
        html.contains("debug&amp;&lt;x&gt;.log:1: PAN 555555******4444"),
        "evidence is escaped"
    );
    for q in ["3.5.1", "3.7.4", "4.2.1.1", "10.2.1.7", "12.3.3"] {
        assert!(html.contains(&format!("<td class=\"req\">{q}</td>")), "{q}");
    }
    let pos = |s: &str| html.find(s).unwrap();
    let order = [
        "3.2.1", "3.7.4", "4.2.1", "7.2.1", "10.2.1", "10.5.1", "12.3.3",
    ]
    .map(|q| pos(&format!("<td class=\"req\">{q}</td>")));
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "requirements in natural order"
    );
}

#[test]
fn text_is_a_table_with_colour_on_request() {
    let (_v, r) = mixed();
    let plain = render(&r, Format::Text, false);
    assert!(plain.contains("STATUS  ID"));
    assert!(plain.contains("FAIL    keys.cryptoperiod"), "{plain}");
    assert!(
        plain.contains("21 controls: 11 pass, 2 attest, 2 fail, 1 warn, 1 skip, 4 error"),
        "{plain}"
    );
    assert!(!plain.contains('\x1b'));
    let coloured = render(&r, Format::Text, true);
    assert!(coloured.contains("\x1b[31;1mFAIL"));
}
