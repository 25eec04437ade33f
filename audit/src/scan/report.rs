//! Output formats: text, JSON lines, SARIF 2.1.0. Findings hold masked numbers
//! only, so nothing here can print a full card number.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde_json::{Value, json};

use super::{Finding, Kind};

/// Writes one line per finding: `path[!member]:line:column: kind brand masked`.
pub fn write_text<W: Write>(w: &mut W, findings: &[Finding]) -> io::Result<()> {
    for f in findings {
        match &f.member {
            Some(m) => write!(w, "{}!{m}", f.path)?,
            None => write!(w, "{}", f.path)?,
        }
        write!(
            w,
            ":{}:{}: {} {} {}",
            f.line, f.column, f.kind, f.brand, f.masked
        )?;
        if f.test_card {
            write!(w, " (test card)")?;
        }
        writeln!(w)?;
    }
    Ok(())
}

/// Writes one JSON object per line per finding, with the fields of [`Finding`].
pub fn write_jsonl<W: Write>(w: &mut W, findings: &[Finding]) -> io::Result<()> {
    for f in findings {
        serde_json::to_writer(&mut *w, f).map_err(io::Error::other)?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// Percent-encodes a path into a URI reference (relative paths stay relative,
/// absolute ones become `file://` URIs).
fn uri(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 8);
    if path.starts_with('/') {
        out.push_str("file://");
    }
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn rule(kind: Kind) -> Value {
    let (name, short, help) = match kind {
        Kind::Pan => (
            "CardNumber",
            "Primary account number (PAN) stored in clear",
            "A card number that passes the Luhn check and has an issued IIN and length. \
             PCI DSS requirement 3.5.1: render PAN unreadable wherever it is stored \
             (tokenize it with the vault, truncate, or delete the file).",
        ),
        Kind::Track1 => (
            "MagstripeTrack1",
            "Magnetic-stripe track 1 data (sensitive authentication data)",
            "Full track data must not be stored after authorization (PCI DSS requirement 3.3.1). \
             Delete it.",
        ),
        Kind::Track2 => (
            "MagstripeTrack2",
            "Magnetic-stripe track 2 data (sensitive authentication data)",
            "Full track data must not be stored after authorization (PCI DSS requirement 3.3.1). \
             Delete it.",
        ),
    };
    json!({
        "id": kind.as_str(),
        "name": name,
        "shortDescription": { "text": short },
        "fullDescription": { "text": help },
        "help": { "text": help },
        "defaultConfiguration": { "level": "error" },
        "properties": { "tags": ["security", "pci-dss"] },
    })
}

const KINDS: [Kind; 3] = [Kind::Pan, Kind::Track1, Kind::Track2];

/// Writes a SARIF 2.1.0 log with one result per finding. Archive members are
/// artifacts whose `parentIndex` is the archive; `version` is the tool's version.
pub fn write_sarif<W: Write>(w: &mut W, findings: &[Finding], version: &str) -> io::Result<()> {
    let mut artifacts: Vec<Value> = Vec::new();
    let mut index: BTreeMap<(String, Option<String>), usize> = BTreeMap::new();
    let mut artifact = |path: &str, member: Option<&str>| -> usize {
        let key = (path.to_string(), member.map(str::to_string));
        if let Some(&i) = index.get(&key) {
            return i;
        }
        let parent = member.map(|_| {
            let pkey = (path.to_string(), None);
            match index.get(&pkey) {
                Some(&i) => i,
                None => {
                    artifacts.push(json!({ "location": { "uri": uri(path) } }));
                    let i = artifacts.len() - 1;
                    index.insert(pkey, i);
                    i
                }
            }
        });
        let entry = match (member, parent) {
            (Some(m), Some(p)) => json!({ "location": { "uri": uri(m) }, "parentIndex": p }),
            _ => json!({ "location": { "uri": uri(path) } }),
        };
        artifacts.push(entry);
        let i = artifacts.len() - 1;
        index.insert(key, i);
        i
    };
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let at = artifact(&f.path, f.member.as_deref());
            let shown = match &f.member {
                Some(m) => uri(m),
                None => uri(&f.path),
            };
            let rule_index = KINDS.iter().position(|k| *k == f.kind).unwrap_or(0);
            let what = match f.kind {
                Kind::Pan => "card number",
                Kind::Track1 => "track 1 data with card number",
                Kind::Track2 => "track 2 data with card number",
            };
            let test = if f.test_card {
                " (published test number)"
            } else {
                ""
            };
            json!({
                "ruleId": f.kind.as_str(),
                "ruleIndex": rule_index,
                "level": "error",
                "message": { "text": format!("{} {what} {}{test}", f.brand, f.masked) },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": shown, "index": at },
                        "region": {
                            "startLine": f.line,
                            "startColumn": f.column,
                            "byteOffset": f.offset,
                        },
                    },
                }],
                "properties": {
                    "path": f.path,
                    "member": f.member,
                    "brand": f.brand.as_str(),
                    "masked": f.masked,
                    "length": f.length,
                    "kind": f.kind.as_str(),
                    "test_card": f.test_card,
                },
            })
        })
        .collect();
    let log = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "panvault",
                    "version": version,
                    "rules": KINDS.iter().map(|k| rule(*k)).collect::<Vec<_>>(),
                },
            },
            "columnKind": "unicodeCodePoints",
            "artifacts": artifacts,
            "results": results,
        }],
    });
    serde_json::to_writer_pretty(&mut *w, &log).map_err(io::Error::other)?;
    w.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::Brand;

    fn sample() -> Vec<Finding> {
        vec![
            Finding {
                path: "logs/app 1.log".into(),
                member: None,
                line: 3,
                column: 7,
                offset: 120,
                brand: Brand::Visa,
                masked: "424242******4242".into(),
                length: 16,
                kind: Kind::Pan,
                test_card: true,
            },
            Finding {
                path: "/data/export.zip".into(),
                member: Some("dir/a.csv".into()),
                line: 2,
                column: 1,
                offset: 9,
                brand: Brand::Amex,
                masked: "378282*****0005".into(),
                length: 15,
                kind: Kind::Track2,
                test_card: false,
            },
        ]
    }

    #[test]
    fn jsonl_has_the_documented_fields() {
        let mut out = Vec::new();
        write_jsonl(&mut out, &sample()).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: Value = serde_json::from_str(lines[1]).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        for k in [
            "path",
            "member",
            "line",
            "column",
            "offset",
            "brand",
            "masked",
            "length",
            "kind",
            "test_card",
        ] {
            assert!(keys.contains(&k), "{k}");
        }
        assert_eq!(v["kind"], "track2");
        assert_eq!(v["brand"], "amex");
        assert_eq!(v["member"], "dir/a.csv");
        let first: Value = serde_json::from_str(lines[0]).unwrap();
        assert!(first["member"].is_null());
        // Round trip (the scorer reads this format back).
        let back: Finding = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(back, sample()[1]);
    }

    #[test]
    fn text_format() {
        let mut out = Vec::new();
        write_text(&mut out, &sample()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "logs/app 1.log:3:7: pan visa 424242******4242 (test card)\n\
             /data/export.zip!dir/a.csv:2:1: track2 amex 378282*****0005\n"
        );
    }

    #[test]
    fn sarif_shape() {
        let mut out = Vec::new();
        write_sarif(&mut out, &sample(), "0.1.0").unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["version"], "2.1.0");
        let run = &v["runs"][0];
        assert_eq!(run["tool"]["driver"]["rules"].as_array().unwrap().len(), 3);
        let r0 = &run["results"][0];
        assert_eq!(r0["ruleId"], "pan");
        let loc = &r0["locations"][0]["physicalLocation"];
        assert_eq!(loc["artifactLocation"]["uri"], "logs/app%201.log");
        assert_eq!(loc["region"]["startLine"], 3);
        let r1 = &run["results"][1];
        let idx = r1["locations"][0]["physicalLocation"]["artifactLocation"]["index"]
            .as_u64()
            .unwrap();
        let art = &run["artifacts"][usize::try_from(idx).unwrap()];
        assert_eq!(art["location"]["uri"], "dir/a.csv");
        let parent =
            &run["artifacts"][usize::try_from(art["parentIndex"].as_u64().unwrap()).unwrap()];
        assert_eq!(parent["location"]["uri"], "file:///data/export.zip");
    }
}
