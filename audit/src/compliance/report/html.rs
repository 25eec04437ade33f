//! One self-contained HTML page a security lead can forward: no scripts, fonts,
//! images or links to load; inline CSS that also prints. Summary tiles, the
//! findings that need action, a per-requirement table, every control's evidence.
use std::collections::BTreeMap;
use std::fmt::Write;

use super::junit::xml_escape as esc;
use super::requirement_order;
use crate::compliance::result::{CheckResult, Report, Status};

const CSS: &str = r#"
:root{--pass:#1a7f37;--fail:#cf222e;--warn:#9a6700;--skip:#6e7781;--attest:#0969da;--error:#8250df;--ink:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#f6f8fa}
*{box-sizing:border-box}
body{font:14px/1.5 -apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:var(--ink);margin:0;background:#fff}
main{max-width:1180px;margin:0 auto;padding:28px 32px 48px}
header{border-bottom:3px solid var(--ink);padding-bottom:14px;margin-bottom:22px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:32px 0 10px;padding-bottom:6px;border-bottom:1px solid var(--line)}
h3{font-size:15px;margin:0}
.meta{color:var(--muted);margin:0}
.meta code{font-size:12px}
.verdict{display:inline-block;margin-top:10px;padding:6px 14px;border-radius:6px;font-weight:700;color:#fff}
.tiles{display:grid;grid-template-columns:repeat(5,1fr);gap:12px;margin:18px 0}
.tile{border:1px solid var(--line);border-radius:8px;padding:12px 14px;background:var(--bg)}
.tile b{display:block;font-size:28px;line-height:1.1}
.tile span{color:var(--muted);text-transform:uppercase;font-size:12px;letter-spacing:.04em}
.tile.pass b{color:var(--pass)}.tile.fail b{color:var(--fail)}.tile.warn b{color:var(--warn)}.tile.skip b{color:var(--skip)}.tile.attest b{color:var(--attest)}.tile.error b{color:var(--error)}
table{border-collapse:collapse;width:100%;margin:8px 0 4px}
th,td{border-bottom:1px solid var(--line);padding:6px 8px;text-align:left;vertical-align:top}
th{background:var(--bg);font-size:12px;text-transform:uppercase;letter-spacing:.03em;color:var(--muted)}
td.req{white-space:nowrap;font-weight:600}
.badge{display:inline-block;min-width:46px;text-align:center;padding:1px 7px;border-radius:10px;font-size:12px;font-weight:700;color:#fff;text-transform:uppercase}
.pass .badge,.badge.pass{background:var(--pass)}.badge.fail{background:var(--fail)}.badge.warn{background:var(--warn)}.badge.skip{background:var(--skip)}.badge.attest{background:var(--attest)}.badge.error{background:var(--error)}
.ctl{border:1px solid var(--line);border-left:6px solid var(--skip);border-radius:6px;padding:12px 14px;margin:12px 0;break-inside:avoid}
.ctl.pass{border-left-color:var(--pass)}.ctl.fail{border-left-color:var(--fail)}.ctl.warn{border-left-color:var(--warn)}.ctl.error{border-left-color:var(--error)}.ctl.attest{border-left-color:var(--attest)}
.ctl .head{display:flex;gap:10px;align-items:baseline;flex-wrap:wrap}
.ctl .id{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;color:var(--muted);font-size:13px}
.ctl .sev{margin-left:auto;color:var(--muted);font-size:12px}
ul.ev{margin:8px 0 0;padding-left:18px;font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;word-break:break-word}
ul.ev li.f{color:var(--fail);font-weight:600}ul.ev li.w{color:var(--warn);font-weight:600}ul.ev li.e{color:var(--error);font-weight:600}
.fix{margin:8px 0 0;padding:8px 10px;background:#fff8c5;border-radius:4px}
a{color:#0969da;text-decoration:none}
footer{margin-top:36px;color:var(--muted);font-size:12px;border-top:1px solid var(--line);padding-top:10px}
@media print{main{padding:0}.ctl{page-break-inside:avoid}a{color:inherit}}
"#;

fn badge(s: Status) -> String {
    format!("<span class=\"badge {0}\">{0}</span>", s.as_str())
}

fn anchor(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn control(out: &mut String, x: &CheckResult) {
    let _ = write!(
        out,
        "<section class=\"ctl {st}\" id=\"c-{a}\"><div class=\"head\">{b}<h3>{t}</h3><span class=\"id\">{id}</span><span class=\"sev\">{sev} · {req}</span></div><ul class=\"ev\">",
        st = x.status.as_str(),
        a = anchor(&x.id),
        b = badge(x.status),
        t = esc(&x.title),
        id = esc(&x.id),
        sev = x.severity,
        req = esc(&x.requirements.join(", "))
    );
    for line in &x.evidence {
        let class = if line.starts_with("FAIL:") {
            " class=\"f\""
        } else if line.starts_with("WARN:") {
            " class=\"w\""
        } else if line.starts_with("ERROR:") {
            " class=\"e\""
        } else {
            ""
        };
        let _ = write!(out, "<li{class}>{}</li>", esc(line));
    }
    out.push_str("</ul>");
    if !x.remediation.is_empty() {
        let _ = write!(
            out,
            "<p class=\"fix\"><b>Remediation.</b> {}</p>",
            esc(&x.remediation)
        );
    }
    out.push_str("</section>\n");
}

/// Renders the page.
pub(super) fn render(r: &Report) -> String {
    let s = &r.summary;
    let when = r
        .generated_at
        .format(&time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
        ))
        .unwrap_or_default();
    let (verdict, colour) = match r.exit_code() {
        0 if s.attest > 0 => (
            "COMPLIANT AS MEASURED — every measured control passed; attested controls need an assessor",
            "var(--pass)",
        ),
        0 => ("COMPLIANT — every control passed", "var(--pass)"),
        101 => (
            "INCOMPLETE — nothing failed, some controls were not evaluated",
            "var(--skip)",
        ),
        _ => ("NOT COMPLIANT — controls failed", "var(--fail)"),
    };
    let mut out = String::with_capacity(32 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title} — {id}</title><style>{CSS}</style></head><body><main>\n<header><h1>{title}</h1>\
         <p class=\"meta\">{fw} · policy <b>{id}</b> v{ver} · generated {when} by {tool}</p>\
         <p class=\"meta\">target <code>{cfg}</code> · data <code>{data}</code>{vault}{eps} · host {host}</p>\
         <p class=\"meta\">policy source <code>{src}</code> · SHA-256 <code>{sha}</code></p>\
         <div class=\"verdict\" style=\"background:{colour}\">{verdict}</div></header>\n",
        title = esc(&r.policy.title),
        id = esc(&r.policy.id),
        fw = esc(&r.policy.framework),
        ver = esc(&r.policy.version),
        tool = esc(&r.tool),
        cfg = esc(&r.target.config),
        data = esc(&r.target.data_dir),
        vault = r
            .target
            .vault_id
            .as_ref()
            .map(|v| format!(" · vault <code>{}</code>", esc(v)))
            .unwrap_or_default(),
        eps = if r.target.endpoints.is_empty() {
            String::new()
        } else {
            format!(
                " · endpoints <code>{}</code>",
                esc(&r.target.endpoints.join(", "))
            )
        },
        host = esc(&r.target.host),
        src = esc(&r.policy.source),
        sha = esc(&r.policy.sha256),
    );
    out.push_str("<div class=\"tiles\">");
    for (n, label) in [
        (s.pass, "pass"),
        (s.attest, "attest"),
        (s.fail, "fail"),
        (s.warn, "warn"),
        (s.skip, "skip"),
        (s.error, "error"),
    ] {
        let _ = write!(
            out,
            "<div class=\"tile {label}\"><b>{n}</b><span>{label}</span></div>"
        );
    }
    out.push_str("</div>\n");

    let attention: Vec<&CheckResult> = {
        let mut v: Vec<&CheckResult> = r
            .results
            .iter()
            .filter(|x| x.status != Status::Pass)
            .collect();
        v.sort_by_key(|x| std::cmp::Reverse(x.status.rank()));
        v
    };
    out.push_str("<h2>Needs attention</h2>");
    if attention.is_empty() {
        out.push_str("<p>Nothing: every control passed.</p>");
    } else {
        out.push_str("<table><tr><th>Status</th><th>Control</th><th>Severity</th><th>Requirements</th><th>Finding</th></tr>");
        for x in &attention {
            let finding = x
                .evidence
                .iter()
                .find(|l| {
                    l.starts_with("FAIL:") || l.starts_with("ERROR:") || l.starts_with("WARN:")
                })
                .or(x.evidence.first())
                .cloned()
                .unwrap_or_default();
            let _ = write!(
                out,
                "<tr><td>{}</td><td><a href=\"#c-{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                badge(x.status),
                anchor(&x.id),
                esc(&x.id),
                x.severity,
                esc(&x.requirements.join(", ")),
                esc(&finding)
            );
        }
        out.push_str("</table>");
    }

    let mut by_req: BTreeMap<String, Vec<&CheckResult>> = BTreeMap::new();
    for x in &r.results {
        for q in &x.requirements {
            by_req.entry(q.clone()).or_default().push(x);
        }
    }
    let mut reqs: Vec<&String> = by_req.keys().collect();
    reqs.sort_by(|a, b| requirement_order(a, b));
    out.push_str("<h2>By requirement</h2><table><tr><th>Requirement</th><th>Status</th><th>Evidenced by</th></tr>");
    for q in reqs {
        let controls = by_req.get(q).map(Vec::as_slice).unwrap_or_default();
        // Per requirement: a control whose evidence names sub-requirements
        // (10.2.1.1 … 10.2.1.7) counts only the lines about this one.
        let worst = controls
            .iter()
            .fold(Status::Pass, |acc, x| acc.worst(x.status_for(q)));
        let links: Vec<String> = controls
            .iter()
            .map(|x| {
                format!(
                    "<a href=\"#c-{}\">{}</a> {}",
                    anchor(&x.id),
                    esc(&x.id),
                    badge(x.status_for(q))
                )
            })
            .collect();
        let _ = write!(
            out,
            "<tr><td class=\"req\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(q),
            badge(worst),
            links.join(" &nbsp; ")
        );
    }
    out.push_str("</table>\n<h2>Controls and evidence</h2>\n");
    for x in &r.results {
        control(&mut out, x);
    }
    let _ = write!(
        out,
        "<footer>Exit code {} ({} pass, {} attest, {} fail, {} warn, {} skip, {} error). Attested controls cannot be measured on a deployment and are never counted as passed. Card numbers in this report are masked (first 6, last 4 at most); \
         no key material is included. The run is recorded in the vault's audit log with the SHA-256 of this file.</footer>\n</main></body></html>\n",
        r.exit_code(),
        s.pass,
        s.attest,
        s.fail,
        s.warn,
        s.skip,
        s.error
    );
    out
}
