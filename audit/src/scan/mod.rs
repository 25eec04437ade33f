//! PAN discovery: finds card numbers and magnetic-stripe data left in files.
//!
//! [`Scanner`] walks directories (every regular file: a security scanner does not
//! honour ignore files), opens `.gz` and zip-based files (`.zip`, `.docx`, `.xlsx`,
//! …, recognised by their magic bytes), decodes UTF-16 text, and reports each card
//! number as a [`Finding`] that holds only the masked number (first 6, last 4).
//! [`scan_bytes`] runs the same detector over a buffer.
//!
//! What counts as a card number, in short (the detector's module docs have the
//! details): 12–19 digits that pass Luhn and whose IIN and length are issued by a
//! network in [`crate::card::IIN_TABLE`]; written contiguously or grouped with one
//! kind of separator at the boundaries real cards use (4-4-4-4, 4-4-4-4-3, 4-6-5 for
//! Amex, 4-6-4 for Diners); bounded by non-word bytes, so digits inside base64, hex
//! or identifiers do not count. Track 1 (`%B…^NAME^…`) and track 2 (`;…=…?`) are
//! reported as [`Kind::Track1`] and [`Kind::Track2`]. With
//! [`ScanOptions::join_lines`], a number broken by a line break is found too.
//! Other separators (`4111.1111.1111.1111`, double spaces, `_`, tabs, JSON arrays of
//! digit groups) and digits of other scripts (full-width, Arabic-Indic, …) are read
//! by [`crate::card::CardFinder`], the detector the vault's request filter uses, in
//! its scanning mode.
//!
//! Speed: files are spread over threads (largest first) and plain files over 64 MiB
//! are cut into segments at line boundaries; each thread reads 1 MiB chunks into
//! one reused buffer and skips eight bytes at a time to the next digit.

mod detect;
mod report;
mod stream;
mod walk;

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::card::Brand;

pub use self::report::{write_jsonl, write_sarif, write_text};
pub use self::walk::{ScanReport, ScanStats, Scanner, Warning};

/// What kind of card data a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Kind {
    /// A primary account number on its own.
    Pan,
    /// Magnetic-stripe track 1 (`%B<pan>^<name>^…`): sensitive authentication data.
    Track1,
    /// Magnetic-stripe track 2 (`;<pan>=<expiry><service code>…`): sensitive
    /// authentication data.
    Track2,
}

impl Kind {
    /// The name used in reports: `pan`, `track1`, `track2`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Pan => "pan",
            Kind::Track1 => "track1",
            Kind::Track2 => "track2",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A card number found in a buffer by [`scan_bytes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    /// Byte offset of the first digit (in the original bytes, also for UTF-16).
    pub offset: u64,
    /// Line of the first digit, from 1.
    pub line: u64,
    /// Column of the first digit, from 1, in characters (Unicode code points).
    pub column: u64,
    /// Network, from the IIN table.
    pub brand: Brand,
    /// The number masked: first 6 and last 4 digits at most.
    pub masked: String,
    /// Number of digits.
    pub length: u8,
    /// Plain PAN or track data.
    pub kind: Kind,
    /// Whether it is one of the networks' published test numbers.
    pub test_card: bool,
}

/// A card number found in a file.
///
/// Holds the masked number only; `path` and `member` are masked too should a file
/// name contain a card number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The file, as reached from the scanned path.
    pub path: String,
    /// The member inside an archive (`a/b.csv`, nested: `inner.zip!b.csv`), or
    /// `None` for a plain file.
    pub member: Option<String>,
    /// Line of the first digit, from 1.
    pub line: u64,
    /// Column of the first digit, from 1.
    pub column: u64,
    /// Byte offset of the first digit in the file (or in the decompressed member).
    pub offset: u64,
    /// Network, from the IIN table.
    #[serde(with = "brand_name")]
    pub brand: Brand,
    /// The number masked: first 6 and last 4 digits at most.
    pub masked: String,
    /// Number of digits.
    pub length: u8,
    /// Plain PAN or track data.
    pub kind: Kind,
    /// Whether it is one of the networks' published test numbers.
    pub test_card: bool,
}

/// Serializes a [`Brand`] by its name.
mod brand_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::card::Brand;

    pub(super) fn serialize<S: Serializer>(b: &Brand, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(b.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Brand, D::Error> {
        let name = String::deserialize(d)?;
        Brand::from_name(&name).ok_or_else(|| serde::de::Error::custom("unknown brand"))
    }
}

/// How to scan.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ScanOptions {
    /// Worker threads; 0 means one per available core.
    pub threads: usize,
    /// Glob patterns of paths to leave out (matched against the whole path, the
    /// path below the scanned root and the file name; a matching directory is not
    /// entered).
    pub exclude: Vec<String>,
    /// The most bytes scanned from one file or archive member. Archive members are
    /// decompressed up to this size (1 GiB when `None`), and one archive up to 8
    /// times it in all, which bounds zip bombs; plain files are scanned whole when
    /// `None`.
    pub max_file_size: Option<u64>,
    /// Whether a number broken by a line break (`\n` or `\r\n`) is joined.
    pub join_lines: bool,
}

/// An error that stops a scan before it starts. Problems with single files are
/// [`Warning`]s instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// An `--exclude` pattern is not a valid glob.
    #[error("invalid exclude pattern {pattern:?}: {reason}")]
    Exclude {
        /// The pattern as given.
        pattern: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A path to scan does not exist or cannot be read at all.
    #[error("cannot scan {path}: {reason}")]
    Root {
        /// The path as given.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
}

/// Scans one buffer as the content of a file (UTF-16 is recognised and decoded;
/// archives are not opened). Positions are in `data`'s bytes.
pub fn scan_bytes(data: &[u8], join_lines: bool) -> Vec<Match> {
    stream::scan_buffer(data, join_lines)
}

/// Replaces any card number in `text` by its masked form (for paths and member
/// names, which are printed). Stricter than the scanner: a digit run that is a card
/// number is masked even when glued to letters.
pub fn redact(text: &str) -> String {
    redact_counted(text).0
}

/// [`redact`], also saying how many card numbers it masked (for the relay, whose
/// audit event records it).
pub fn redact_counted(text: &str) -> (String, usize) {
    // Masking one hit can leave the digits around it forming another card number
    // (a long run of grouped digits): repeat until a scan finds nothing. Each pass
    // masks at least one digit, so this ends; the bound is a safeguard.
    let (mut out, mut count) = redact_once(text);
    for _ in 0..64 {
        let det = detect::Detector { join_lines: false };
        if detect::scan_all(&det, out.as_bytes()).is_empty() {
            break;
        }
        let (next, n) = redact_once(&out);
        if next == out {
            break;
        }
        out = next;
        count = count.saturating_add(n);
    }
    (out, count)
}

fn redact_once(text: &str) -> (String, usize) {
    let (glued, runs) = mask_runs(text);
    let det = detect::Detector { join_lines: false };
    let bytes = glued.as_bytes();
    let hits = detect::scan_all(&det, bytes);
    if hits.is_empty() {
        return (glued, runs);
    }
    let count = runs.saturating_add(hits.len());
    let mut out = String::with_capacity(glued.len());
    let mut at = 0usize;
    for h in hits {
        // The masked text replaces the digits (of any script) and the separators
        // between them.
        let mut end = h.start;
        let mut seen = 0u8;
        for c in glued.get(h.start..).unwrap_or("").chars() {
            if seen == h.digits {
                break;
            }
            if crate::card::digit_value(c).is_some() {
                seen += 1;
            }
            end += c.len_utf8();
        }
        out.push_str(glued.get(at..h.start).unwrap_or(""));
        out.push_str(&h.masked);
        at = end;
    }
    out.push_str(glued.get(at..).unwrap_or(""));
    (out, count)
}

/// Masks every maximal digit run of `text` that is a card number by itself, and
/// says how many.
fn mask_runs(text: &str) -> (String, usize) {
    let mut count = 0usize;
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        let run_len = rest
            .get(start..)
            .and_then(|r| r.find(|c: char| !c.is_ascii_digit()))
            .unwrap_or(rest.len() - start);
        let (before, tail) = rest.split_at(start);
        let (run, after) = tail.split_at(run_len);
        out.push_str(before);
        let digits = run.as_bytes();
        if (detect::MIN_LEN..=detect::MAX_LEN).contains(&digits.len())
            && crate::card::luhn_valid(digits)
            && crate::card::issued_brand(digits).is_some()
        {
            out.push_str(&crate::card::mask(digits));
            count = count.saturating_add(1);
        } else {
            out.push_str(run);
        }
        rest = after;
    }
    out.push_str(rest);
    (out, count)
}

/// Parses a size: digits with an optional K, M, G or T suffix (powers of 1024;
/// `KB`, `KiB`, `MB`… read the same), as `panvault scan --max-file-size` and the dev
/// tools take it.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("not a size: {text:?}"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("unknown size unit in {text:?} (use K, M, G or T)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size too large: {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_masks_numbers_in_names() {
        assert_eq!(
            redact("dump-4242424242424242.txt"),
            "dump-424242******4242.txt"
        );
        assert_eq!(
            redact("/data/4242 4242 4242 4242/x"),
            "/data/424242******4242/x"
        );
        assert_eq!(redact("plain.log"), "plain.log");
        assert_eq!(
            redact("/data/4242.4242.4242.4242/x"),
            "/data/424242******4242/x"
        );
        assert_eq!(
            redact(
                "a \u{FF14}\u{FF12}\u{FF14}\u{FF12}\u{FF14}\u{FF12}\u{FF14}\u{FF12}\u{FF14}\u{FF12}\u{FF14}\u{FF12}\u{FF14}\u{FF12}\u{FF14}\u{FF12} b"
            ),
            "a 424242******4242 b"
        );
    }

    #[test]
    fn scan_bytes_reports_lines_and_columns() {
        let m = scan_bytes(b"a\nbb\ncard 4242424242424242\n", false);
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].line, m[0].column, m[0].offset), (3, 6, 10));
        assert_eq!(m[0].brand, Brand::Visa);
        assert_eq!(m[0].masked, "424242******4242");
    }

    /// Columns count characters, as the SARIF report declares
    /// (`columnKind: unicodeCodePoints`), not bytes.
    #[test]
    fn columns_count_characters_not_bytes() {
        let m = scan_bytes(
            "x\ncaf\u{e9} na\u{ef}ve \u{2192} 4111 1111 1111 1111\n".as_bytes(),
            false,
        );
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].line, m[0].column), (2, 14));
    }
}

#[cfg(test)]
mod database_test {
    use super::{ScanOptions, Scanner};

    /// What the vault's request filter refuses in a free-text field is what the
    /// scanner finds in a database holding it: a SQLite file laid out as the
    /// vault's `cards` table, with such values in `subject` and `metadata`.
    #[test]
    fn a_sqlite_database_with_separated_or_wide_digits_is_found() {
        let wide: String = "4111111111111111"
            .chars()
            .map(|c| char::from_u32(0xFF10 + c.to_digit(10).unwrap()).unwrap())
            .collect();
        let rows = [
            (
                "4111.1111.1111.1111".to_owned(),
                "{\"n\":\"4111.1111.1111.1111\"}".to_owned(),
            ),
            (
                "4111  1111  1111  1111".to_owned(),
                "{\"n\":[4111,1111,1111,1111]}".to_owned(),
            ),
            (
                "4111_1111_1111_1111".to_owned(),
                "{\"n\":[\"4111\",\"1111\",\"1111\",\"1111\"]}".to_owned(),
            ),
            (
                "4111\t1111\t1111\t1111".to_owned(),
                format!("{{\"n\":\"{wide}\"}}"),
            ),
            (wide.clone(), "{\"n\":\"4111_1111_1111_1111\"}".to_owned()),
        ];
        for (k, (subject, metadata)) in rows.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("vault.db");
            let conn = rusqlite::Connection::open(&db).unwrap();
            conn.execute_batch(
                "CREATE TABLE cards (id INTEGER PRIMARY KEY, last4 TEXT NOT NULL,
                     exp_month INTEGER NOT NULL, exp_year INTEGER NOT NULL, subject TEXT,
                     metadata TEXT, created_at INTEGER NOT NULL) STRICT;",
            )
            .unwrap();
            conn.execute(
                "INSERT INTO cards (last4, exp_month, exp_year, subject, metadata, created_at)
                 VALUES ('4444', 12, 2030, ?1, ?2, 1764900000)",
                [subject, metadata],
            )
            .unwrap();
            drop(conn);
            let report = Scanner::new(ScanOptions::default())
                .unwrap()
                .scan(&[&db])
                .unwrap();
            assert_eq!(report.findings.len(), 2, "row {k}");
            for f in &report.findings {
                assert_eq!(f.masked, "411111******1111", "row {k}");
            }
        }
    }
}

#[cfg(test)]
mod redact_regression {
    #[test]
    fn a_long_grouped_run_leaves_no_card_after_redaction() {
        // fuzz/artifacts/scanner/redact-long-run-leaves-card
        let input = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fuzz/artifacts/scanner/redact-long-run-leaves-card"
        ))
        .unwrap_or_else(|_| b"4242 4242 4242 4242 4442 4242 4242 4242 4242".to_vec());
        let text = String::from_utf8_lossy(&input);
        let red = super::redact(&text);
        assert!(
            super::scan_bytes(red.as_bytes(), false).is_empty(),
            "redacted text still holds a card number"
        );
    }
}

#[cfg(test)]
mod size_tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("600MB"), Ok(600 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size(" 2 g "), Ok(2 << 30));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
