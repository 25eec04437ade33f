//! Data checks: no card number in the clear, no sensitive authentication data,
//! masking, retention, and the GDPR erasure deadline.
use super::{Outcome, need};
use crate::compliance::facts::{Facts, HitKind};
use crate::compliance::policy::Params;

pub(super) fn no_clear_pan(f: &Facts, p: &Params) -> Result<Outcome, Outcome> {
    let s = need(&f.scan, "scan of the data directory and logs")?;
    let count_tests = p.bool("count_test_cards");
    let max_listed = usize::try_from(p.int("max_listed")).unwrap_or(20);
    let mut o = Outcome::pass();
    o.note(format!(
        "scanned {} files, {} bytes under: {}",
        s.files,
        s.bytes,
        s.roots.join(", ")
    ));
    let hits: Vec<_> = s
        .hits
        .iter()
        .filter(|h| count_tests || !h.test_card)
        .collect();
    let ignored = s.hits.len() - hits.len();
    if hits.is_empty() {
        o.note("no card number found in the clear");
    } else {
        let files: std::collections::BTreeSet<&str> =
            hits.iter().map(|h| h.path.as_str()).collect();
        o.fail(format!(
            "{} card numbers in the clear in {} files",
            hits.len(),
            files.len()
        ));
        for h in hits.iter().take(max_listed) {
            let test = if h.test_card {
                " (published test number)"
            } else {
                ""
            };
            o.fail(format!(
                "{}:{}: {} {}{test}",
                h.path,
                h.line,
                h.kind_name(),
                h.masked
            ));
        }
        if hits.len() > max_listed {
            o.note(format!("… and {} more", hits.len() - max_listed));
        }
    }
    if ignored > 0 {
        o.note(format!(
            "{ignored} published test card numbers ignored (count_test_cards = false)"
        ));
    }
    for w in s.warnings.iter().take(max_listed) {
        o.warn(format!("not fully scanned: {w}"));
    }
    Ok(o)
}

impl crate::compliance::facts::ScanHit {
    fn kind_name(&self) -> &'static str {
        match self.kind {
            HitKind::Pan => "PAN",
            HitKind::Track1 => "track 1 data",
            HitKind::Track2 => "track 2 data",
        }
    }
}

pub(super) fn no_sensitive_auth_data(f: &Facts, p: &Params) -> Result<Outcome, Outcome> {
    let mut o = Outcome::pass();
    let forbidden: Vec<String> = p
        .list("forbidden_columns")
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let mut known = false;
    match need(&f.data, "stored card data") {
        Ok(d) => {
            known = true;
            let bad: Vec<&String> = d
                .card_columns
                .iter()
                .filter(|c| {
                    forbidden
                        .iter()
                        .any(|x| c.to_ascii_lowercase().contains(x.as_str()))
                })
                .collect();
            if bad.is_empty() {
                o.note(format!(
                    "cards table columns: {} (no CVV, track or PIN column)",
                    d.card_columns.join(", ")
                ));
            } else {
                for c in bad {
                    o.fail(format!("cards table has a column `{c}` that looks like sensitive authentication data"));
                }
            }
        }
        Err(early) => o.absorb(early),
    }
    match need(&f.scan, "scan of the data directory and logs") {
        Ok(s) => {
            known = true;
            let tracks: Vec<_> = s.hits.iter().filter(|h| h.kind != HitKind::Pan).collect();
            if tracks.is_empty() {
                o.note(format!(
                    "no magnetic-stripe track data found in {} scanned files",
                    s.files
                ));
            }
            for h in tracks.iter().take(20) {
                o.fail(format!(
                    "{}:{}: {} of {}",
                    h.path,
                    h.line,
                    h.kind_name(),
                    h.masked
                ));
            }
        }
        Err(early) => o.absorb(early),
    }
    if !known && o.status != crate::compliance::result::Status::Error {
        return Err(Outcome::skip(o.evidence.join("; ")));
    }
    Ok(o)
}

/// Digits shown before the first mask character and after the last.
fn revealed(masked: &str) -> (usize, usize) {
    let lead = masked.chars().take_while(char::is_ascii_digit).count();
    let trail = masked
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .count();
    if lead == masked.chars().count() {
        (lead, 0)
    } else {
        (lead, trail)
    }
}

pub(super) fn display_masking(f: &Facts, p: &Params) -> Result<Outcome, Outcome> {
    let d = need(&f.data, "stored card data")?;
    let (max_lead, max_trail) = (p.int("max_leading_digits"), p.int("max_trailing_digits"));
    let mut o = Outcome::pass();
    let lead = i64::from(d.max_leading_digits);
    let trail = i64::from(d.max_trailing_digits);
    let line = format!(
        "stored in the clear and shown by the API: at most the first {lead} and last {trail} digits"
    );
    if lead > max_lead || trail > max_trail {
        o.fail(format!(
            "{line}; allowed: first {max_lead}, last {max_trail}"
        ));
    } else {
        o.note(line);
    }
    // The masking used in every report and log line (panvault_audit::card::mask).
    let mut worst = (0usize, 0usize);
    for card in crate::card::TEST_CARDS {
        let (l, t) = revealed(&crate::card::mask(card.as_bytes()));
        worst = (worst.0.max(l), worst.1.max(t));
    }
    let line = format!(
        "report and log masking shows at most the first {} and last {} digits",
        worst.0, worst.1
    );
    if i64::try_from(worst.0).unwrap_or(i64::MAX) > max_lead
        || i64::try_from(worst.1).unwrap_or(i64::MAX) > max_trail
    {
        o.fail(line);
    } else {
        o.note(line);
    }
    Ok(o)
}

pub(super) fn retention(f: &Facts, p: &Params) -> Result<Outcome, Outcome> {
    let d = need(&f.data, "stored card data")?;
    let days = p.int("retention_days_after_expiry");
    let tolerated = p.int("max_records_past_retention");
    let mut o = Outcome::pass();
    if d.retention_days_after_expiry != days {
        o.warn(format!(
            "records were counted with a retention of {} days after expiry, the policy says {days}",
            d.retention_days_after_expiry
        ));
    }
    let line = format!(
        "{} of {} cards are past retention ({} days after the end of their expiry month)",
        d.records_past_retention, d.records, d.retention_days_after_expiry
    );
    if d.records_past_retention > tolerated {
        o.fail(line);
    } else {
        o.note(line);
    }
    Ok(o)
}

pub(super) fn erasure_deadline(f: &Facts, p: &Params) -> Result<Outcome, Outcome> {
    let e = need(&f.erasure, "erasure requests")?;
    let max = p.int("max_open_days");
    let mut o = Outcome::pass();
    o.note(format!(
        "{} open erasure requests, {} completed",
        e.open.len(),
        e.completed
    ));
    for r in &e.open {
        if r.age_days > max {
            o.fail(format!(
                "request {} open for {} days (deadline {max} days)",
                r.id, r.age_days
            ));
        } else {
            o.note(format!("request {} open for {} days", r.id, r.age_days));
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::revealed;

    #[test]
    fn revealed_digits() {
        assert_eq!(revealed("411111******1111"), (6, 4));
        assert_eq!(revealed("********1111"), (0, 4));
        assert_eq!(revealed("4111111111111111"), (16, 0));
    }
}
