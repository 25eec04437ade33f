//! Data checks: no card number in the clear, no sensitive authentication data,
//! masking, retention, and the GDPR erasure deadline.
use super::{Outcome, count, need};
use crate::compliance::facts::{Facts, HitKind};
use crate::compliance::policy::Params;
use crate::compliance::result::Status;

/// A length as a count (a `usize` always fits in a `u64` on supported targets).
fn len64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

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
            "{} in the clear in {}",
            count(len64(hits.len()), "card number", "card numbers"),
            count(len64(files.len()), "file", "files")
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
            "{} ignored (count_test_cards = false)",
            count(
                len64(ignored),
                "published test card number",
                "published test card numbers"
            )
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
    if !known && o.status != Status::Error {
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
    let rows = need(&f.masking, "digits of stored cards kept in the clear")?;
    let (max_lead, max_trail) = (p.int("max_leading_digits"), p.int("max_trailing_digits"));
    let min_hidden = p.int("min_hidden_digits");
    let mut o = Outcome::pass();
    let mut unknown_len = 0u64;
    for r in rows {
        let (lead, trail) = (i64::from(r.leading), i64::from(r.trailing));
        if lead > max_lead || trail > max_trail {
            o.fail(format!(
                "{} keep the first {lead} and last {trail} digits in the clear; allowed: first {max_lead}, last {max_trail}",
                count(r.cards, "card", "cards")
            ));
        }
        match r.pan_len {
            Some(len) => {
                let len = i64::from(len);
                let shown = (lead + trail).min(len);
                let line = format!(
                    "{} of {len} digits (format-preserving tokens): {shown} of {len} digits in the clear, {} hidden",
                    count(r.cards, "card", "cards"),
                    len - shown
                );
                if len - shown < min_hidden {
                    o.fail(format!("{line} (at least {min_hidden} must be hidden)"));
                } else {
                    o.note(line);
                }
            }
            None => {
                unknown_len = unknown_len.saturating_add(r.cards);
                o.note(format!(
                    "{} with opaque tokens {} at most the first {lead} and last {trail} digits in the clear",
                    count(r.cards, "card", "cards"),
                    if r.cards == 1 { "keeps" } else { "keep" }
                ));
            }
        }
    }
    if rows.is_empty() {
        o.note("no stored card");
    }
    // The masking of every report and log line, for every card-number length.
    for len in 12..=19usize {
        let digits = vec![b'4'; len];
        let (l, t) = revealed(&crate::card::mask(&digits));
        let hidden = len.saturating_sub(l.saturating_add(t));
        let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        if as_i64(l) > max_lead || as_i64(t) > max_trail || as_i64(hidden) < min_hidden {
            o.fail(format!(
                "report and log masking of a {len}-digit card shows the first {l} and last {t} digits ({hidden} hidden)"
            ));
        }
    }
    o.note(format!(
        "report and log masking checked for 12 to 19 digits: at most the first {max_lead} and last {max_trail}, at least {min_hidden} hidden"
    ));
    if unknown_len > 0 && o.status == Status::Pass {
        o.note(format!(
            "attested, not measured: the length of {} is sealed, so the digits they keep hidden \
             cannot be counted without unsealing; a card of fewer than {} digits would keep fewer than {min_hidden} hidden",
            count(unknown_len, "card", "cards"),
            max_lead.saturating_add(max_trail).saturating_add(min_hidden)
        ));
        o.status = Status::Attest;
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
        "{} open, {} completed",
        count(len64(e.open.len()), "erasure request", "erasure requests"),
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

/// A 3- or 4-digit code sealed with AES-256-GCM: its digits and a 16-byte tag.
const SEALED_CVC_LEN: std::ops::RangeInclusive<i64> = 19..=20;

pub(super) fn cvc_not_retained(f: &Facts, p: &Params) -> Result<Outcome, Outcome> {
    let c = need(&f.cvc, "held security codes")?;
    let max_ttl = p.int("max_ttl_secs");
    let grace = p.int("sweep_grace_secs");
    let mut o = Outcome::pass();
    o.note(format!(
        "{} held under {}",
        count(c.held, "security code", "security codes"),
        count(c.keys, "window key", "window keys")
    ));
    let unexpected: Vec<&String> = c
        .columns
        .iter()
        .filter(|col| !c.sealed_layout.contains(col))
        .collect();
    if unexpected.is_empty() {
        o.note(format!(
            "held codes are stored only as sealed bytes (columns: {})",
            c.columns.join(", ")
        ));
    }
    for col in unexpected {
        o.fail(format!(
            "the table of held codes has a column `{col}` outside the sealed layout"
        ));
    }
    match c.sealed_len {
        Some((lo, hi)) if !SEALED_CVC_LEN.contains(&lo) || !SEALED_CVC_LEN.contains(&hi) => {
            o.fail(format!(
                "a held code is stored in {} to {hi} bytes: not a sealed 3 or 4 digit code (19 to 20 bytes with its tag)",
                lo
            ));
        }
        Some(_) => o.note("every held code is sealed (AES-256-GCM, 19 to 20 bytes with its tag)"),
        None => {}
    }
    match c.longest_lifetime_secs {
        Some(l) if l > max_ttl => o.fail(format!(
            "a security code was given {l} s to live, more than {max_ttl} s"
        )),
        Some(l) => o.note(format!(
            "the longest lifetime given to a held code is {l} s"
        )),
        None => {}
    }
    match c.most_overdue_secs {
        Some(s) if s > grace => o.fail(format!(
            "{} still stored past the deadline, the oldest by {s} s (sweep grace {grace} s)",
            count(c.past_deadline, "security code", "security codes")
        )),
        Some(s) => o.note(format!(
            "{} past the deadline by at most {s} s, awaiting the sweep (reads refuse them)",
            count(c.past_deadline, "security code is", "security codes are")
        )),
        None => o.note("no security code is stored past its deadline"),
    }
    match c.key_overdue_secs {
        Some(s) if s > grace => o.fail(format!(
            "a window key is still stored {s} s after its destruction time (sweep grace {grace} s): codes sealed under it stay readable"
        )),
        Some(s) => o.note(format!(
            "a window key is {s} s past its destruction time, awaiting the sweep"
        )),
        None => {}
    }
    match c.longest_key_life_secs {
        Some(l) if l > 2 * max_ttl => o.fail(format!(
            "a window key was made to live {l} s, more than twice the longest code lifetime ({max_ttl} s)"
        )),
        _ => {}
    }
    if let Some(a) = c.oldest_key_age_secs {
        o.note(format!("the oldest window key is {a} s old"));
    }
    if c.orphaned > 0 {
        o.note(format!(
            "{} under destroyed keys (unreadable; the sweep deletes them)",
            count(c.orphaned, "held code is", "held codes are")
        ));
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
