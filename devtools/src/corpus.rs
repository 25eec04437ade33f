//! Labelled corpora for measuring the scanner: realistic files with card numbers
//! planted in every accepted format, decoys that are not cards, and a ground-truth
//! manifest to score findings against.
//!
//! Long on purpose: a developer tool (never shipped) whose generators, file formats
//! and scorer share one random stream and one manifest model; the tests are in
//! `corpus/tests.rs`.
//!
//! [`generate`] writes `DIR/files/…` (logs, NDJSON, CSV, XML, mail; some gzipped,
//! zipped, in office files or in UTF-16) and `DIR/manifest.jsonl`, one [`Entry`]
//! per planted card or decoy, with its offset. The manifest holds masked numbers
//! only. [`score`] matches findings to entries by path, member and offset and gives
//! precision and recall, per layout, per file format and per decoy class.
//!
//! Cards: every brand of the IIN table, every issued length, and the published test
//! numbers; written contiguously, 4-4-4-4 with spaces or dashes, 4-4-4-4-3, 4-6-5
//! (Amex), 4-6-4 (Diners), as track 1 and track 2, and broken by a line break
//! (found only with `join_lines`). Decoys, one class each ([`DecoyClass`]): a card
//! inside a longer digit run, Luhn-valid numbers with unissued IINs or lengths, Luhn
//! failures, random 16-digit order ids, UUIDs whose digit groups join into a card,
//! card digits glued to letters, 13-digit epoch milliseconds, phone numbers, card
//! digits inside base64 and inside hex.
//!
//! One choice to know when reading the figures: a random 16-digit order id that
//! happens to pass Luhn with an issued IIN (about 4 % of draws) *is* a card number
//! by content, for any scanner and for an assessor alike; the generator draws again
//! in that case, so the order-id class measures the Luhn and IIN filters.
//! Everything else in the files (timestamps, ids, amounts, hex, UUIDs) is built so
//! that it cannot form a card number, and a finding that matches no entry is
//! counted as a false positive ("background").

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use panvault_audit::card::{self, Brand};
use panvault_audit::scan::{Finding, Kind};

/// How a planted card number is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Layout {
    /// All digits together.
    Contiguous,
    /// 4-4-4-4 with spaces.
    Spaced,
    /// 4-4-4-4 with dashes.
    Dashed,
    /// 4-4-4-4-3 with spaces (19 digits).
    Spaced19,
    /// 4-4-4-4-3 with dashes (19 digits).
    Dashed19,
    /// 4-6-5 (Amex, 15 digits), space or dash.
    Amex,
    /// 4-6-4 (Diners, 14 digits), space or dash.
    Diners,
    /// Magnetic-stripe track 1.
    Track1,
    /// Magnetic-stripe track 2.
    Track2,
    /// Broken by a line break (contiguous or 4-4-4-4); found only with `join_lines`.
    LineBroken,
}

impl Layout {
    const ALL: [Layout; 10] = [
        Layout::Contiguous,
        Layout::Spaced,
        Layout::Dashed,
        Layout::Spaced19,
        Layout::Dashed19,
        Layout::Amex,
        Layout::Diners,
        Layout::Track1,
        Layout::Track2,
        Layout::LineBroken,
    ];

    /// Name used in the manifest and reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            Layout::Contiguous => "contiguous",
            Layout::Spaced => "spaced",
            Layout::Dashed => "dashed",
            Layout::Spaced19 => "spaced19",
            Layout::Dashed19 => "dashed19",
            Layout::Amex => "amex",
            Layout::Diners => "diners",
            Layout::Track1 => "track1",
            Layout::Track2 => "track2",
            Layout::LineBroken => "line_broken",
        }
    }
}

/// A kind of text that must not be reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DecoyClass {
    /// A valid card number inside a longer digit run (20+ digits).
    LongerRun,
    /// Luhn-valid, but the IIN is unknown or the length is not issued under it.
    UnissuedIin,
    /// Known IIN and length, wrong check digit.
    LuhnFailure,
    /// A random 16-digit order id (not Luhn-valid with an issued IIN, see module docs).
    OrderId,
    /// A UUID whose digit groups join into a valid card number.
    UuidDigits,
    /// Valid card digits glued to letters or an underscore (identifiers, `0x…`).
    Glued,
    /// A 13-digit epoch-milliseconds timestamp.
    EpochMillis,
    /// A phone number.
    Phone,
    /// Valid card digits inside base64 (some next to `/` or `+`).
    Base64,
    /// Valid card digits inside a hex string.
    Hex,
}

impl DecoyClass {
    const ALL: [DecoyClass; 10] = [
        DecoyClass::LongerRun,
        DecoyClass::UnissuedIin,
        DecoyClass::LuhnFailure,
        DecoyClass::OrderId,
        DecoyClass::UuidDigits,
        DecoyClass::Glued,
        DecoyClass::EpochMillis,
        DecoyClass::Phone,
        DecoyClass::Base64,
        DecoyClass::Hex,
    ];

    /// Name used in the manifest and reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            DecoyClass::LongerRun => "longer_run",
            DecoyClass::UnissuedIin => "unissued_iin",
            DecoyClass::LuhnFailure => "luhn_failure",
            DecoyClass::OrderId => "order_id",
            DecoyClass::UuidDigits => "uuid_digits",
            DecoyClass::Glued => "glued",
            DecoyClass::EpochMillis => "epoch_millis",
            DecoyClass::Phone => "phone",
            DecoyClass::Base64 => "base64",
            DecoyClass::Hex => "hex",
        }
    }
}

/// What an [`Entry`] marks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "label", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Label {
    /// A card number the scanner must report.
    Card {
        /// How it is written.
        layout: Layout,
        /// The kind a finding must have.
        kind: Kind,
        /// Network name.
        brand: String,
        /// Masked number (first 6, last 4).
        masked: String,
        /// Number of digits.
        length: u8,
        /// One of the published test numbers.
        test_card: bool,
        /// Only found with `join_lines`.
        needs_join: bool,
    },
    /// Text that must not be reported.
    Decoy {
        /// Which kind of decoy.
        class: DecoyClass,
    },
}

/// One planted card or decoy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// File, relative to the corpus's `files` directory, `/`-separated.
    pub path: String,
    /// Archive member, as the scanner names it.
    pub member: Option<String>,
    /// Offset of the first digit (cards) or of the decoy text, in the file's or
    /// member's bytes.
    pub offset: u64,
    /// Bytes the planted text covers from `offset`.
    pub span: u64,
    /// Text format: `log`, `ndjson`, `csv`, `xml`, `mail`, `docx`, `xlsx`.
    pub format: String,
    /// Container: `plain`, `gz`, `zip`, `zip+gz`, `office`, `utf16le`, `utf16be`,
    /// `utf16le-nobom`.
    pub container: String,
    /// What it is.
    #[serde(flatten)]
    pub label: Label,
}

/// The ground truth of a corpus.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Planted cards and decoys, sorted by path, member and offset.
    pub entries: Vec<Entry>,
    /// Files written.
    pub files: u64,
    /// Their bytes on disk.
    pub bytes: u64,
}

impl Manifest {
    /// Number of planted cards (all, or only those found without `join_lines`).
    pub fn cards(&self, join_lines: bool) -> usize {
        self.entries
            .iter()
            .filter(
                |e| matches!(&e.label, Label::Card { needs_join, .. } if join_lines || !needs_join),
            )
            .count()
    }

    /// Number of decoys.
    pub fn decoys(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e.label, Label::Decoy { .. }))
            .count()
    }

    /// Writes the manifest as JSON lines.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let mut w = BufWriter::new(File::create(path)?);
        for e in &self.entries {
            serde_json::to_writer(&mut w, e).map_err(io::Error::other)?;
            w.write_all(b"\n")?;
        }
        w.flush()
    }

    /// Reads a manifest written by [`Manifest::write`].
    pub fn read(path: &Path) -> io::Result<Manifest> {
        let mut m = Manifest::default();
        let mut files = std::collections::BTreeSet::new();
        for line in BufReader::new(File::open(path)?).lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let e: Entry = serde_json::from_str(&line).map_err(io::Error::other)?;
            files.insert(e.path.clone());
            m.entries.push(e);
        }
        m.files = u64::try_from(files.len()).unwrap_or(u64::MAX);
        Ok(m)
    }
}

/// What to generate.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CorpusSpec {
    /// Approximate bytes on disk in all.
    pub size: u64,
    /// Seed: the same seed and sizes give the same corpus.
    pub seed: u64,
    /// Typical size of one text file (varies ±50 %).
    pub file_size: u64,
    /// Threads writing files (0: one per core).
    pub threads: usize,
}

impl CorpusSpec {
    /// A corpus of about `size` bytes from `seed`, with 4 MiB files.
    pub fn new(size: u64, seed: u64) -> CorpusSpec {
        CorpusSpec {
            size,
            seed,
            file_size: 4 << 20,
            threads: 0,
        }
    }
}

// ---------------------------------------------------------------------------
// Random numbers (SplitMix64: small, fast, reproducible; not for secrets).

#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn below_usize(&mut self, n: usize) -> usize {
        usize::try_from(self.below(u64::try_from(n).unwrap_or(u64::MAX))).unwrap_or(0)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items
            .get(self.below_usize(items.len()))
            .copied()
            .unwrap_or("")
    }

    fn pick_of<T: Copy>(&mut self, items: &[T], fallback: T) -> T {
        items
            .get(self.below_usize(items.len()))
            .copied()
            .unwrap_or(fallback)
    }

    fn digit(&mut self) -> u8 {
        b'0' + u8::try_from(self.below(10)).unwrap_or(0)
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(self.digit())).collect()
    }

    fn hex_char(&mut self) -> char {
        char::from(
            *b"0123456789abcdef"
                .get(self.below_usize(16))
                .unwrap_or(&b'0'),
        )
    }

    /// Lower-case hex that starts with a letter (so no digit run in it is bounded).
    fn hex(&mut self, n: usize) -> String {
        let mut s = String::with_capacity(n);
        s.push(char::from(
            *b"abcdef".get(self.below_usize(6)).unwrap_or(&b'a'),
        ));
        for _ in 1..n {
            s.push(self.hex_char());
        }
        s
    }

    fn b64_char(&mut self) -> char {
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        char::from(*B64.get(self.below_usize(64)).unwrap_or(&b'A'))
    }

    fn letter(&mut self) -> char {
        char::from(
            *b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                .get(self.below_usize(52))
                .unwrap_or(&b'x'),
        )
    }
}

// ---------------------------------------------------------------------------
// Card numbers.

/// A card number made up for the corpus.
#[derive(Debug, Clone)]
struct Card {
    digits: Vec<u8>,
    brand: Brand,
    test: bool,
}

impl Card {
    fn text(&self) -> String {
        self.digits.iter().map(|&d| char::from(d)).collect()
    }

    fn len(&self) -> usize {
        self.digits.len()
    }

    /// The digits grouped by `groups`, joined by `sep`.
    fn grouped(&self, groups: &[usize], sep: &str) -> String {
        let mut out = String::new();
        let mut at = 0;
        for (k, g) in groups.iter().enumerate() {
            if k > 0 {
                out.push_str(sep);
            }
            for &d in self.digits.get(at..at + g).unwrap_or(&[]) {
                out.push(char::from(d));
            }
            at += g;
        }
        out
    }
}

/// Whether `digits` would be reported as a card on its own.
fn is_card(digits: &[u8]) -> bool {
    card::luhn_valid(digits) && card::issued_brand(digits).is_some()
}

/// Adds the Luhn check digit to `payload`.
fn with_check(mut payload: Vec<u8>) -> Vec<u8> {
    let check = card::luhn_check_digit(&payload).unwrap_or(b'0');
    payload.push(check);
    payload
}

/// A valid card of a random row of the IIN table (or a published test number),
/// with `len` digits if given and of `brand` if given.
fn make_card(rng: &mut Rng, len: Option<usize>, brand: Option<Brand>) -> Card {
    let fits = |b: Brand, n: usize| brand.is_none_or(|w| w == b) && len.is_none_or(|l| l == n);
    if rng.percent(6) {
        let tests: Vec<&str> = card::TEST_CARDS
            .iter()
            .copied()
            .filter(|t| card::issued_brand(t.as_bytes()).is_some_and(|b| fits(b, t.len())))
            .collect();
        if !tests.is_empty() {
            let t = rng.pick(&tests);
            if let Some(b) = card::issued_brand(t.as_bytes()) {
                return Card {
                    digits: t.as_bytes().to_vec(),
                    brand: b,
                    test: true,
                };
            }
        }
    }
    // Brands by a rough share of cards in circulation (every brand appears).
    const SHARES: &[(Brand, u64)] = &[
        (Brand::Visa, 34),
        (Brand::Mastercard, 24),
        (Brand::Amex, 8),
        (Brand::Discover, 6),
        (Brand::Jcb, 5),
        (Brand::Diners, 4),
        (Brand::Unionpay, 6),
        (Brand::Maestro, 5),
        (Brand::Mir, 4),
        (Brand::Rupay, 4),
    ];
    let shares: Vec<(Brand, u64)> = SHARES
        .iter()
        .copied()
        .filter(|(b, _)| {
            card::IIN_TABLE
                .iter()
                .any(|r| r.brand == *b && r.lengths.iter().any(|&n| fits(*b, usize::from(n))))
        })
        .collect();
    let total: u64 = shares.iter().map(|(_, w)| w).sum();
    for _ in 0..1000 {
        let mut roll = rng.below(total);
        let mut chosen = None;
        for (b, w) in &shares {
            if roll < *w {
                chosen = Some(*b);
                break;
            }
            roll -= w;
        }
        let rows: Vec<&card::IinRange> = card::IIN_TABLE
            .iter()
            .filter(|r| {
                Some(r.brand) == chosen && r.lengths.iter().any(|&n| fits(r.brand, usize::from(n)))
            })
            .collect();
        let Some(row) = rows.get(rng.below_usize(rows.len())).copied() else {
            break;
        };
        let lengths: Vec<usize> = row
            .lengths
            .iter()
            .map(|&n| usize::from(n))
            .filter(|&n| len.is_none_or(|l| l == n))
            .collect();
        let n = rng.pick_of(&lengths, 16);
        let prefix = rng.range(u64::from(row.low), u64::from(row.high));
        let mut payload = format!("{prefix:0width$}", width = usize::from(row.digits)).into_bytes();
        while payload.len() < n - 1 {
            payload.push(rng.digit());
        }
        let digits = with_check(payload);
        if card::issued_brand(&digits) == Some(row.brand) && card::luhn_valid(&digits) {
            let test = card::is_test_card(&digits);
            return Card {
                digits,
                brand: row.brand,
                test,
            };
        }
    }
    // Unreachable in practice (every row yields cards); a fixed test number.
    Card {
        digits: b"4242424242424242".to_vec(),
        brand: Brand::Visa,
        test: true,
    }
}

// ---------------------------------------------------------------------------
// Documents with marks.

#[derive(Debug, Clone)]
struct Mark {
    offset: usize,
    span: usize,
    label: Label,
}

/// Text being generated, with the marks planted in it.
#[derive(Debug)]
struct Doc {
    text: String,
    marks: Vec<Mark>,
    crlf: bool,
}

impl Doc {
    fn new(crlf: bool) -> Doc {
        Doc {
            text: String::new(),
            marks: Vec::new(),
            crlf,
        }
    }

    fn s(&mut self, part: &str) {
        self.text.push_str(part);
    }

    fn nl(&mut self) {
        self.text.push_str(if self.crlf { "\r\n" } else { "\n" });
    }

    fn len(&self) -> usize {
        self.text.len()
    }

    /// Plants a card number written with `layout`.
    fn card(&mut self, rng: &mut Rng, layout: Layout) {
        let (text, first, card, kind) = render_card(rng, layout, self.crlf);
        let at = self.text.len();
        self.text.push_str(&text);
        self.marks.push(Mark {
            offset: at + first,
            span: text.len() - first,
            label: Label::Card {
                layout,
                kind,
                brand: card.brand.as_str().to_string(),
                masked: card::mask(&card.digits),
                length: u8::try_from(card.len()).unwrap_or(0),
                test_card: card.test,
                needs_join: layout == Layout::LineBroken,
            },
        });
    }

    /// Plants a decoy of `class`.
    fn decoy(&mut self, rng: &mut Rng, class: DecoyClass) {
        let text = render_decoy(rng, class);
        let at = self.text.len();
        self.text.push_str(&text);
        self.marks.push(Mark {
            offset: at,
            span: text.len(),
            label: Label::Decoy { class },
        });
    }
}

/// Renders a card: the text, index of the first digit, the card and the kind.
fn render_card(rng: &mut Rng, layout: Layout, crlf: bool) -> (String, usize, Card, Kind) {
    let sep = if rng.percent(50) { " " } else { "-" };
    let nl = if crlf { "\r\n" } else { "\n" };
    match layout {
        Layout::Contiguous => {
            let c = make_card(rng, None, None);
            (c.text(), 0, c, Kind::Pan)
        }
        Layout::Spaced | Layout::Dashed => {
            let c = make_card(rng, Some(16), None);
            let s = if layout == Layout::Spaced { " " } else { "-" };
            (c.grouped(&[4, 4, 4, 4], s), 0, c, Kind::Pan)
        }
        Layout::Spaced19 | Layout::Dashed19 => {
            let c = make_card(rng, Some(19), None);
            let s = if layout == Layout::Spaced19 { " " } else { "-" };
            (c.grouped(&[4, 4, 4, 4, 3], s), 0, c, Kind::Pan)
        }
        Layout::Amex => {
            let c = make_card(rng, Some(15), Some(Brand::Amex));
            (c.grouped(&[4, 6, 5], sep), 0, c, Kind::Pan)
        }
        Layout::Diners => {
            let c = make_card(rng, Some(14), Some(Brand::Diners));
            (c.grouped(&[4, 6, 4], sep), 0, c, Kind::Pan)
        }
        Layout::Track1 => {
            let c = make_card(rng, None, None);
            let surname = rng.pick(SURNAMES).to_uppercase();
            let first = rng.pick(FIRST_NAMES).to_uppercase();
            let dd_len = usize::try_from(rng.range(10, 20)).unwrap_or(10);
            let text = format!(
                "%B{}^{surname}/{first}^{}{}{}{}?",
                c.text(),
                rng.range(25, 31),
                rng.pick(&["01", "03", "06", "09", "12"]),
                rng.pick(&["101", "201", "121"]),
                rng.digits(dd_len),
            );
            (text, 2, c, Kind::Track1)
        }
        Layout::Track2 => {
            let c = make_card(rng, None, None);
            let dd_len = usize::try_from(rng.range(6, 12)).unwrap_or(8);
            let text = format!(
                ";{}={}{}{}{}?",
                c.text(),
                rng.range(25, 31),
                rng.pick(&["01", "04", "08", "11"]),
                rng.pick(&["101", "201", "121"]),
                rng.digits(dd_len),
            );
            (text, 1, c, Kind::Track2)
        }
        Layout::LineBroken => {
            if rng.percent(50) {
                let c = make_card(rng, None, None);
                let cut = rng.range(2, u64::try_from(c.len() - 2).unwrap_or(2));
                let cut = usize::try_from(cut).unwrap_or(2);
                let t = c.text();
                let (a, b) = t.split_at(cut.min(t.len()));
                (format!("{a}{nl}{b}"), 0, c, Kind::Pan)
            } else {
                let c = make_card(rng, Some(16), None);
                // Wrapped at one of the spaces (the space dropped or kept).
                let k = rng.range(1, 3);
                let keep = if rng.percent(30) { " " } else { "" };
                let mut out = String::new();
                for (i, d) in c.digits.iter().enumerate() {
                    if i > 0 && i % 4 == 0 {
                        if u64::try_from(i / 4).unwrap_or(0) == k {
                            out.push_str(keep);
                            out.push_str(nl);
                        } else {
                            out.push(' ');
                        }
                    }
                    out.push(char::from(*d));
                }
                (out, 0, c, Kind::Pan)
            }
        }
    }
}

/// Random digits of `n` digits that are not a card number by themselves.
fn non_card_digits(rng: &mut Rng, n: usize, first_nonzero: bool) -> String {
    loop {
        let mut d: Vec<u8> = (0..n).map(|_| rng.digit()).collect();
        if first_nonzero && let Some(f) = d.first_mut() {
            *f = b'1' + u8::try_from(rng.below(9)).unwrap_or(0);
        }
        if !is_card(&d) {
            return d.iter().map(|&c| char::from(c)).collect();
        }
    }
}

/// Renders a decoy of `class`.
fn render_decoy(rng: &mut Rng, class: DecoyClass) -> String {
    match class {
        DecoyClass::LongerRun => {
            let c = make_card(rng, Some(16), None).text();
            let total = usize::try_from(rng.range(20, 32)).unwrap_or(20);
            let before = rng.below_usize(total - 16 + 1);
            let after = total - 16 - before;
            format!("{}{c}{}", rng.digits(before), rng.digits(after))
        }
        DecoyClass::UnissuedIin => loop {
            let (prefix, len): (String, usize) = match rng.below(4) {
                0 => (rng.pick(&["1", "7", "9", "0"]).to_string(), 16),
                1 => (rng.pick(&["31", "32", "33", "84", "85"]).to_string(), 16),
                2 => (rng.pick(&["34", "37"]).to_string(), 16), // amex prefix, 16 digits
                _ => ("4".to_string(), rng.pick_of(&[14usize, 15, 17, 18], 15)), // visa, unissued length
            };
            let mut payload = prefix.into_bytes();
            while payload.len() < len - 1 {
                payload.push(rng.digit());
            }
            let d = with_check(payload);
            if card::issued_brand(&d).is_none() {
                let c = Card {
                    digits: d,
                    brand: Brand::Unknown,
                    test: false,
                };
                return if c.len() == 16 && rng.percent(30) {
                    c.grouped(&[4, 4, 4, 4], " ")
                } else {
                    c.text()
                };
            }
        },
        DecoyClass::LuhnFailure => {
            let mut c = make_card(rng, Some(16), None);
            if let Some(last) = c.digits.last_mut() {
                *last = b'0' + (*last - b'0' + 1 + u8::try_from(rng.below(9)).unwrap_or(0)) % 10;
            }
            match rng.below(3) {
                0 => c.text(),
                1 => c.grouped(&[4, 4, 4, 4], " "),
                _ => c.grouped(&[4, 4, 4, 4], "-"),
            }
        }
        DecoyClass::OrderId => non_card_digits(rng, 16, true),
        DecoyClass::UuidDigits => {
            match rng.below(3) {
                // 8-4-4 digits join into a card.
                0 => {
                    let c = make_card(rng, Some(16), None).text();
                    let (a, rest) = c.split_at(8);
                    let (b, d) = rest.split_at(4);
                    format!("{a}-{b}-{d}-{}-{}", rng.hex(4), rng.hex(12))
                }
                // 4-4-4 and the head of the last group join into a card.
                1 => {
                    let c = make_card(rng, Some(16), None).text();
                    let (a, rest) = c.split_at(4);
                    let (b, rest) = rest.split_at(4);
                    let (d, e) = rest.split_at(4);
                    format!("{}-{a}-{b}-{d}-{e}{}", rng.hex(8), rng.hex(8))
                }
                // The last group is a valid 12-digit (Maestro) number.
                _ => {
                    let c = make_card(rng, Some(12), Some(Brand::Maestro)).text();
                    format!(
                        "{}-{}-{}-{}-{c}",
                        rng.hex(8),
                        rng.hex(4),
                        rng.hex(4),
                        rng.hex(4)
                    )
                }
            }
        }
        DecoyClass::Glued => {
            let c = make_card(rng, None, None).text();
            match rng.below(6) {
                0 => format!("ID{c}"),
                1 => format!("{c}ms"),
                2 => format!("user_{c}"),
                3 => format!("0x{c}"),
                4 => format!("v{c}b"),
                _ => format!("tok{c}"),
            }
        }
        DecoyClass::EpochMillis => format!("{}", rng.range(1_600_000_000_000, 1_799_999_999_999)),
        DecoyClass::Phone => phone(rng),
        DecoyClass::Base64 => {
            let c = make_card(rng, Some(16), None).text();
            let len = usize::try_from(rng.range(60, 76)).unwrap_or(64);
            let at = 1 + rng.below_usize(len - 18);
            let slashes = rng.percent(25);
            let mut out = String::with_capacity(len);
            while out.len() < at - 1 {
                out.push(rng.b64_char());
            }
            out.push(if slashes {
                if rng.percent(50) { '/' } else { '+' }
            } else {
                rng.letter()
            });
            out.push_str(&c);
            out.push(if slashes {
                if rng.percent(50) { '/' } else { '+' }
            } else {
                rng.letter()
            });
            while out.len() < len {
                out.push(rng.b64_char());
            }
            out
        }
        DecoyClass::Hex => {
            let c = make_card(rng, Some(16), None).text();
            let at = 1 + rng.below_usize(64 - 18);
            let mut out = rng.hex(at - 1);
            out.push(char::from(
                *b"abcdef".get(rng.below_usize(6)).unwrap_or(&b'a'),
            ));
            out.push_str(&c);
            out.push(char::from(
                *b"abcdef".get(rng.below_usize(6)).unwrap_or(&b'a'),
            ));
            while out.len() < 64 {
                out.push(rng.hex_char());
            }
            out
        }
    }
}

fn phone(rng: &mut Rng) -> String {
    match rng.below(8) {
        0 => format!("+1 {} 555 {}", rng.range(201, 989), rng.digits(4)),
        1 => format!("+44 20 {} {}", rng.digits(4), rng.digits(4)),
        2 => format!("+49 15{} {}", rng.digits(2), rng.digits(7)),
        3 => format!("({}) 555-{}", rng.range(201, 989), rng.digits(4)),
        4 => format!("+49{}", rng.digits(11)),
        5 => format!(
            "+33 6 {} {} {} {}",
            rng.digits(2),
            rng.digits(2),
            rng.digits(2),
            rng.digits(2)
        ),
        6 => format!("{}-555-{}", rng.range(201, 989), rng.digits(4)),
        _ => format!("+{}{}", rng.pick(&["4", "3", "5", "6"]), rng.digits(12)),
    }
}

// ---------------------------------------------------------------------------
// Filler.

const WORDS: &[&str] = &[
    "the",
    "order",
    "was",
    "shipped",
    "to",
    "customer",
    "please",
    "confirm",
    "payment",
    "invoice",
    "attached",
    "thanks",
    "regards",
    "team",
    "account",
    "update",
    "refund",
    "delivery",
    "address",
    "meeting",
    "tomorrow",
    "report",
    "quarterly",
    "numbers",
    "review",
    "service",
    "support",
    "ticket",
    "issue",
    "resolved",
    "pending",
    "approval",
    "contract",
    "signed",
    "balance",
    "transfer",
    "we",
    "have",
    "received",
    "your",
    "request",
    "and",
    "will",
    "process",
    "it",
    "shortly",
    "a",
    "for",
    "with",
    "from",
    "about",
    "store",
    "checkout",
    "mobile",
    "app",
    "version",
    "release",
    "notes",
];
const FIRST_NAMES: &[&str] = &[
    "john", "maria", "li", "ahmed", "anna", "pierre", "sofia", "kenji", "olga", "david",
];
const SURNAMES: &[&str] = &[
    "doe", "garcia", "wang", "khan", "schmidt", "dubois", "rossi", "tanaka", "ivanova", "smith",
];
const LEVELS: &[&str] = &["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"];
const SERVICES: &[&str] = &[
    "PaymentService",
    "OrderService",
    "AuthFilter",
    "CartController",
    "PosGateway",
    "Scheduler",
];
const CURRENCIES: &[&str] = &["EUR", "USD", "GBP", "JPY", "CHF"];

fn timestamp(rng: &mut Rng) -> String {
    format!(
        "2024-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        rng.range(1, 12),
        rng.range(1, 28),
        rng.below(24),
        rng.below(60),
        rng.below(60),
        rng.below(1000)
    )
}

fn uuid(rng: &mut Rng) -> String {
    format!(
        "{}-{}-4{}-{}-{}",
        rng.hex(8),
        rng.hex(4),
        rng.hex(3),
        rng.hex(4),
        rng.hex(12)
    )
}

fn ip(rng: &mut Rng) -> String {
    format!(
        "10.{}.{}.{}",
        rng.below(256),
        rng.below(256),
        rng.range(1, 254)
    )
}

fn email(rng: &mut Rng) -> String {
    format!(
        "{}.{}@example.com",
        rng.pick(FIRST_NAMES),
        rng.pick(SURNAMES)
    )
}

fn amount(rng: &mut Rng) -> String {
    format!("{}.{:02}", rng.range(1, 2500), rng.below(100))
}

fn sentence(rng: &mut Rng, words: usize) -> String {
    let mut s = String::new();
    for k in 0..words {
        if k > 0 {
            s.push(' ');
        }
        s.push_str(rng.pick(WORDS));
    }
    s
}

/// A masked card as stored legitimately (never a full number).
fn masked_card(rng: &mut Rng) -> String {
    format!("************{}", rng.digits(4))
}

/// What to put in a slot: nothing special, a card, or a decoy.
#[derive(Debug, Clone, Copy)]
enum Plant {
    Card(Layout),
    Decoy(DecoyClass),
}

/// How often records carry a plant (percent) and which.
fn choose(rng: &mut Rng, allow_broken: bool) -> Option<Plant> {
    let roll = rng.below(1000);
    if roll < 30 {
        let mut layout = match rng.below(100) {
            0..=34 => Layout::Contiguous,
            35..=46 => Layout::Spaced,
            47..=56 => Layout::Dashed,
            57..=61 => Layout::Spaced19,
            62..=66 => Layout::Dashed19,
            67..=72 => Layout::Amex,
            73..=78 => Layout::Diners,
            79..=85 => Layout::Track1,
            86..=92 => Layout::Track2,
            _ => Layout::LineBroken,
        };
        if layout == Layout::LineBroken && !allow_broken {
            layout = Layout::Contiguous;
        }
        Some(Plant::Card(layout))
    } else if roll < 80 {
        Some(Plant::Decoy(
            rng.pick_of(&DecoyClass::ALL, DecoyClass::OrderId),
        ))
    } else {
        None
    }
}

fn plant(doc: &mut Doc, rng: &mut Rng, p: Plant) {
    match p {
        Plant::Card(l) => doc.card(rng, l),
        Plant::Decoy(c) => doc.decoy(rng, c),
    }
}

// ---------------------------------------------------------------------------
// Text formats.

/// Text formats of the corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Log,
    Ndjson,
    Csv,
    Xml,
    Mail,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Log => "log",
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
            Format::Xml => "xml",
            Format::Mail => "mail",
        }
    }
}

fn gen_text(rng: &mut Rng, format: Format, target: usize) -> Doc {
    match format {
        Format::Log => gen_log(rng, target),
        Format::Ndjson => gen_ndjson(rng, target),
        Format::Csv => gen_csv(rng, target),
        Format::Xml => gen_xml(rng, target),
        Format::Mail => gen_mail(rng, target),
    }
}

fn gen_log(rng: &mut Rng, target: usize) -> Doc {
    let mut d = Doc::new(false);
    while d.len() < target {
        let ts = timestamp(rng);
        let _ = write!(
            d.text,
            "{ts} {:5} [worker-{}] {} - ",
            rng.pick(LEVELS),
            rng.below(16),
            rng.pick(SERVICES)
        );
        match choose(rng, false) {
            Some(Plant::Card(l)) => {
                match l {
                    Layout::Track1 => d.s("swipe track1="),
                    Layout::Track2 => d.s("swipe track2="),
                    _ => {
                        let _ = write!(
                            d.text,
                            "charge request order={} card=",
                            rng.range(10_000, 9_999_999)
                        );
                    }
                }
                d.card(rng, l);
                let _ = write!(d.text, " amount={} {}", amount(rng), rng.pick(CURRENCIES));
            }
            Some(Plant::Decoy(c)) => {
                let key = match c {
                    DecoyClass::OrderId => "order_id=",
                    DecoyClass::EpochMillis => "created_ms=",
                    DecoyClass::Phone => "callback phone=",
                    DecoyClass::Base64 => "sig=",
                    DecoyClass::Hex => "sha256=",
                    DecoyClass::UuidDigits => "device=",
                    _ => "ref=",
                };
                let _ = write!(d.text, "processed {key}");
                d.decoy(rng, c);
                let _ = write!(d.text, " took={}ms", rng.range(1, 900));
            }
            None => {
                let line = match rng.below(6) {
                    0 => format!(
                        "GET /api/v1/orders/{} {} {}ms rid={} ip={}",
                        rng.range(1, 999_999),
                        rng.pick(&["200", "201", "404", "500"]),
                        rng.range(1, 999),
                        rng.hex(16),
                        ip(rng)
                    ),
                    1 => format!("user {} logged in session={}", email(rng), uuid(rng)),
                    2 => format!(
                        "cache ratio=0.{} keys={} evicted={}",
                        rng.digits(3),
                        rng.range(1, 99_999),
                        rng.below(500)
                    ),
                    3 => format!("trace_id={} span_id={} sampled=1", rng.hex(32), rng.hex(16)),
                    4 => format!(
                        "job {} finished processed={} failed={} at={}",
                        rng.pick(WORDS),
                        rng.below(100_000),
                        rng.below(20),
                        rng.range(1_600_000_000_000, 1_799_999_999_999)
                    ),
                    _ => format!("{} {}", sentence(rng, 6), amount(rng)),
                };
                d.s(&line);
            }
        }
        d.nl();
    }
    d
}

fn gen_ndjson(rng: &mut Rng, target: usize) -> Doc {
    let mut d = Doc::new(false);
    while d.len() < target {
        let _ = write!(
            d.text,
            "{{\"ts\":\"{}\",\"ts_ms\":{},\"level\":\"{}\",\"service\":\"checkout\",\"request_id\":\"{}\",\"event\":\"payment.{}\",\"amount\":{},\"currency\":\"{}\",",
            timestamp(rng),
            rng.range(1_600_000_000_000, 1_799_999_999_999),
            rng.pick(&["info", "debug", "warn"]),
            uuid(rng),
            rng.pick(&["authorized", "captured", "refunded", "declined"]),
            rng.range(100, 250_000),
            rng.pick(CURRENCIES)
        );
        match choose(rng, false) {
            Some(Plant::Card(l)) => {
                let key = match l {
                    Layout::Track1 => "track1",
                    Layout::Track2 => "track2",
                    _ => "pan",
                };
                let _ = write!(d.text, "\"card\":{{\"{key}\":\"");
                d.card(rng, l);
                let _ = write!(
                    d.text,
                    "\",\"exp\":\"{:02}/{}\"}},",
                    rng.range(1, 12),
                    rng.range(25, 31)
                );
            }
            Some(Plant::Decoy(c)) => {
                let key = match c {
                    DecoyClass::OrderId => "order_id",
                    DecoyClass::EpochMillis => "created_ms",
                    DecoyClass::Phone => "phone",
                    DecoyClass::Base64 => "blob",
                    DecoyClass::Hex => "hash",
                    DecoyClass::UuidDigits => "device_id",
                    _ => "reference",
                };
                let _ = write!(d.text, "\"{key}\":\"");
                d.decoy(rng, c);
                d.s("\",");
            }
            None => {
                let _ = write!(
                    d.text,
                    "\"card\":{{\"last4\":\"{}\",\"brand\":\"visa\"}},",
                    rng.digits(4)
                );
            }
        }
        let _ = write!(
            d.text,
            "\"user\":{{\"id\":\"u_{}\",\"email\":\"{}\"}},\"latency\":0.{}}}",
            rng.hex(8),
            email(rng),
            rng.digits(4)
        );
        d.nl();
    }
    d
}

fn gen_csv(rng: &mut Rng, target: usize) -> Doc {
    let mut d = Doc::new(rng.percent(30));
    d.s("id,created_at,customer,email,phone,card_number,expiry,amount,order_ref,note");
    d.nl();
    let mut id = rng.range(1000, 90_000);
    while d.len() < target {
        id += 1;
        let _ = write!(
            d.text,
            "{id},{},{} {},{},{},",
            timestamp(rng),
            rng.pick(FIRST_NAMES),
            rng.pick(SURNAMES),
            email(rng),
            phone(rng)
        );
        let p = choose(rng, false);
        match p {
            Some(Plant::Card(l)) => d.card(rng, l),
            _ => d.s(&masked_card(rng)),
        }
        let _ = write!(
            d.text,
            ",{:02}/{},{},",
            rng.range(1, 12),
            rng.range(25, 31),
            amount(rng)
        );
        match p {
            Some(Plant::Decoy(c)) => d.decoy(rng, c),
            _ => {
                let _ = write!(d.text, "R{}", rng.range(100_000, 999_999));
            }
        }
        let _ = write!(d.text, ",{}", sentence(rng, 4));
        d.nl();
    }
    d
}

fn gen_xml(rng: &mut Rng, target: usize) -> Doc {
    let mut d = Doc::new(false);
    d.s("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    d.nl();
    d.s("<transactions>");
    d.nl();
    while d.len() < target {
        let _ = write!(
            d.text,
            "  <transaction id=\"{}\" created=\"{}\">\n    <customer><name>{} {}</name><phone>{}</phone></customer>\n    <card><number>",
            rng.range(1, 9_999_999),
            timestamp(rng),
            rng.pick(FIRST_NAMES),
            rng.pick(SURNAMES),
            phone(rng)
        );
        let p = choose(rng, false);
        match p {
            Some(Plant::Card(l)) => plant(&mut d, rng, Plant::Card(l)),
            _ => d.s(&masked_card(rng)),
        }
        let _ = write!(
            d.text,
            "</number><expiry>{:02}/{}</expiry></card>\n    <reference>",
            rng.range(1, 12),
            rng.range(25, 31)
        );
        match p {
            Some(Plant::Decoy(c)) => d.decoy(rng, c),
            _ => d.s(&rng.hex(24)),
        }
        let _ = write!(
            d.text,
            "</reference>\n    <amount currency=\"{}\">{}</amount>\n  </transaction>",
            rng.pick(CURRENCIES),
            amount(rng)
        );
        d.nl();
    }
    d.s("</transactions>");
    d.nl();
    d
}

fn gen_mail(rng: &mut Rng, target: usize) -> Doc {
    let mut d = Doc::new(true);
    while d.len() < target {
        let boundary = rng.hex(24);
        let _ = write!(
            d.text,
            "From: {}\r\nTo: billing@example.com\r\nSubject: {}\r\nDate: Sat, 15 Jun 2024 {:02}:{:02}:00 +0000\r\nMessage-ID: <{}@mail.example.com>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
            email(rng),
            sentence(rng, 4),
            rng.below(24),
            rng.below(60),
            rng.hex(20)
        );
        for _ in 0..rng.range(4, 14) {
            match choose(rng, true) {
                Some(Plant::Card(l)) => {
                    let _ = write!(d.text, "{} my card number is ", sentence(rng, 5));
                    d.card(rng, l);
                    let _ = write!(
                        d.text,
                        " expiring {:02}/{} thanks",
                        rng.range(1, 12),
                        rng.range(25, 31)
                    );
                }
                Some(Plant::Decoy(c)) if c != DecoyClass::Base64 => {
                    let _ = write!(d.text, "{} reference ", sentence(rng, 4));
                    d.decoy(rng, c);
                    d.s(" ok");
                }
                _ => {
                    let n = usize::try_from(rng.range(6, 12)).unwrap_or(8);
                    d.s(&sentence(rng, n));
                }
            }
            d.nl();
        }
        let _ = write!(
            d.text,
            "\r\n--{boundary}\r\nContent-Type: application/pdf; name=\"invoice.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        );
        for _ in 0..rng.range(8, 40) {
            if rng.percent(10) {
                d.decoy(rng, DecoyClass::Base64);
            } else {
                let line: String = (0..76).map(|_| rng.b64_char()).collect();
                d.s(&line);
            }
            d.nl();
        }
        let _ = write!(d.text, "--{boundary}--\r\n\r\n");
    }
    d
}

// ---------------------------------------------------------------------------
// Containers and files.

/// A generated member or file: its text format, the bytes and the marks in them.
#[derive(Debug)]
struct Blob {
    format: &'static str,
    bytes: Vec<u8>,
    marks: Vec<Mark>,
}

fn blob(format: Format, doc: Doc) -> Blob {
    Blob {
        format: format.as_str(),
        bytes: doc.text.into_bytes(),
        marks: doc.marks,
    }
}

fn utf16(b: Blob, big_endian: bool, bom: bool) -> Blob {
    let base = if bom { 2 } else { 0 };
    let mut bytes = Vec::with_capacity(b.bytes.len() * 2 + 2);
    if bom {
        bytes.extend_from_slice(if big_endian {
            &[0xFE, 0xFF]
        } else {
            &[0xFF, 0xFE]
        });
    }
    for &c in &b.bytes {
        let unit = u16::from(c);
        bytes.extend_from_slice(&if big_endian {
            unit.to_be_bytes()
        } else {
            unit.to_le_bytes()
        });
    }
    let marks = b
        .marks
        .into_iter()
        .map(|m| Mark {
            offset: base + 2 * m.offset,
            span: 2 * m.span,
            label: m.label,
        })
        .collect();
    Blob {
        format: b.format,
        bytes,
        marks,
    }
}

fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    gz.write_all(data)?;
    gz.finish()
}

/// A member of a zip being built, with the member name the scanner reports.
#[derive(Debug)]
struct Member {
    name: String,
    reported: String,
    container: &'static str,
    blob: Blob,
    /// Stored bytes (gzipped for nested `.gz`).
    stored: Vec<u8>,
}

fn zip_bytes(members: &[Member]) -> io::Result<Vec<u8>> {
    let mut zw = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1));
    for m in members {
        zw.start_file(m.name.as_str(), opts)
            .map_err(io::Error::other)?;
        zw.write_all(&m.stored)?;
    }
    Ok(zw.finish().map_err(io::Error::other)?.into_inner())
}

/// Kinds of files in the corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Plain(Format),
    Gz,
    Zip,
    Docx,
    Xlsx,
    Utf16 { big_endian: bool, bom: bool },
}

/// One file to write.
#[derive(Debug, Clone)]
struct FilePlan {
    rel: String,
    kind: FileKind,
    text_size: usize,
    seed: u64,
}

/// The file kinds, each with a weight (share of files).
const KINDS: &[(FileKind, u64)] = &[
    (FileKind::Plain(Format::Log), 30),
    (FileKind::Plain(Format::Ndjson), 24),
    (FileKind::Plain(Format::Csv), 14),
    (FileKind::Plain(Format::Xml), 10),
    (FileKind::Plain(Format::Mail), 8),
    (FileKind::Gz, 4),
    (FileKind::Zip, 3),
    (FileKind::Docx, 1),
    (FileKind::Xlsx, 1),
    (
        FileKind::Utf16 {
            big_endian: false,
            bom: true,
        },
        2,
    ),
    (
        FileKind::Utf16 {
            big_endian: true,
            bom: true,
        },
        1,
    ),
    (
        FileKind::Utf16 {
            big_endian: false,
            bom: false,
        },
        1,
    ),
];

/// Plans the files: every kind once first, then by weight, until `size`.
fn plan(spec: &CorpusSpec) -> Vec<FilePlan> {
    let mut rng = Rng::new(spec.seed);
    let total_weight: u64 = KINDS.iter().map(|(_, w)| w).sum();
    let mut plans = Vec::new();
    let mut disk = 0u64;
    let mut n = 0usize;
    while disk < spec.size || n < KINDS.len() {
        let kind = match KINDS.get(n) {
            Some((k, _)) => *k,
            None => {
                let mut roll = rng.below(total_weight);
                let mut chosen = FileKind::Plain(Format::Log);
                for (k, w) in KINDS {
                    if roll < *w {
                        chosen = *k;
                        break;
                    }
                    roll -= w;
                }
                chosen
            }
        };
        let base = spec.file_size.max(4096);
        let mut text = rng.range(base / 2, base + base / 2);
        let (rel, est) = match kind {
            FileKind::Plain(f) => {
                let (dir, ext) = match f {
                    Format::Log => ("logs", "log"),
                    Format::Ndjson => ("events", "ndjson"),
                    Format::Csv => ("exports", "csv"),
                    Format::Xml => ("exports", "xml"),
                    Format::Mail => ("mail", "eml"),
                };
                (format!("{dir}/{}-{n:05}.{ext}", f.as_str()), text)
            }
            FileKind::Gz => (format!("archive/app-{n:05}.log.gz"), text / 5),
            FileKind::Zip => (format!("archive/export-{n:05}.zip"), text / 5),
            FileKind::Docx => {
                text = text.min(1 << 20);
                (format!("docs/letter-{n:05}.docx"), text / 5)
            }
            FileKind::Xlsx => {
                text = text.min(1 << 20);
                (format!("docs/sheet-{n:05}.xlsx"), text / 5)
            }
            FileKind::Utf16 { big_endian, bom } => {
                let tag = match (big_endian, bom) {
                    (false, true) => "le",
                    (true, _) => "be",
                    (false, false) => "le-nobom",
                };
                text /= 2;
                (format!("windows/report-{n:05}-{tag}.csv"), text * 2)
            }
        };
        disk += est;
        plans.push(FilePlan {
            rel,
            kind,
            text_size: usize::try_from(text).unwrap_or(1 << 20),
            seed: rng.next(),
        });
        n += 1;
    }
    plans
}

fn entries_of(rel: &str, member: Option<&str>, container: &str, b: &Blob) -> Vec<Entry> {
    b.marks
        .iter()
        .map(|m| Entry {
            path: rel.to_string(),
            member: member.map(str::to_string),
            offset: u64::try_from(m.offset).unwrap_or(u64::MAX),
            span: u64::try_from(m.span).unwrap_or(u64::MAX),
            format: b.format.to_string(),
            container: container.to_string(),
            label: m.label.clone(),
        })
        .collect()
}

fn docx(rng: &mut Rng, target: usize) -> Blob {
    let mut d = Doc::new(false);
    d.s("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<w:document xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\"><w:body>");
    while d.len() < target {
        d.s("<w:p><w:r><w:t xml:space=\"preserve\">");
        match choose(rng, false) {
            Some(Plant::Card(l)) if !matches!(l, Layout::Track1 | Layout::Track2) => {
                let _ = write!(d.text, "{} card ", sentence(rng, 6));
                d.card(rng, l);
            }
            Some(Plant::Decoy(c)) => {
                let _ = write!(d.text, "{} ref ", sentence(rng, 5));
                d.decoy(rng, c);
            }
            _ => {
                let n = usize::try_from(rng.range(8, 20)).unwrap_or(10);
                d.s(&sentence(rng, n));
            }
        }
        d.s("</w:t></w:r></w:p>\n");
    }
    d.s("</w:body></w:document>\n");
    Blob {
        format: "docx",
        bytes: d.text.into_bytes(),
        marks: d.marks,
    }
}

fn xlsx_strings(rng: &mut Rng, target: usize) -> Blob {
    let mut d = Doc::new(false);
    d.s("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<sst xmlns=\"http://schemas.openxmlformats.org/spreadsheetml/2006/main\">");
    while d.len() < target {
        d.s("<si><t>");
        match choose(rng, false) {
            Some(Plant::Card(l)) if !matches!(l, Layout::Track1 | Layout::Track2) => d.card(rng, l),
            Some(Plant::Decoy(c)) => d.decoy(rng, c),
            _ => {
                let n = usize::try_from(rng.range(1, 4)).unwrap_or(2);
                d.s(&sentence(rng, n));
            }
        }
        d.s("</t></si>\n");
    }
    d.s("</sst>\n");
    Blob {
        format: "xlsx",
        bytes: d.text.into_bytes(),
        marks: d.marks,
    }
}

fn static_member(name: &str, text: &str) -> Member {
    Member {
        name: name.to_string(),
        reported: name.to_string(),
        container: "office",
        blob: Blob {
            format: "xml",
            bytes: text.as_bytes().to_vec(),
            marks: Vec::new(),
        },
        stored: text.as_bytes().to_vec(),
    }
}

fn office(rng: &mut Rng, target: usize, xlsx: bool) -> Vec<Member> {
    let mut members = Vec::new();
    if xlsx {
        members.push(static_member(
            "[Content_Types].xml",
            "<?xml version=\"1.0\"?><Types xmlns=\"http://schemas.openxmlformats.org/package/2006/content-types\"><Override PartName=\"/xl/workbook.xml\" ContentType=\"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml\"/></Types>",
        ));
        members.push(static_member(
            "xl/workbook.xml",
            "<?xml version=\"1.0\"?><workbook><sheets><sheet name=\"Payments\" sheetId=\"1\"/></sheets></workbook>",
        ));
        let b = xlsx_strings(rng, target);
        members.push(Member {
            name: "xl/sharedStrings.xml".into(),
            reported: "xl/sharedStrings.xml".into(),
            container: "office",
            stored: b.bytes.clone(),
            blob: b,
        });
    } else {
        members.push(static_member(
            "[Content_Types].xml",
            "<?xml version=\"1.0\"?><Types xmlns=\"http://schemas.openxmlformats.org/package/2006/content-types\"><Override PartName=\"/word/document.xml\" ContentType=\"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml\"/></Types>",
        ));
        members.push(static_member(
            "_rels/.rels",
            "<?xml version=\"1.0\"?><Relationships xmlns=\"http://schemas.openxmlformats.org/package/2006/relationships\"/>",
        ));
        let b = docx(rng, target);
        members.push(Member {
            name: "word/document.xml".into(),
            reported: "word/document.xml".into(),
            container: "office",
            stored: b.bytes.clone(),
            blob: b,
        });
    }
    members
}

/// Generates one file: its bytes and its entries.
fn build_file(p: &FilePlan) -> io::Result<(Vec<u8>, Vec<Entry>)> {
    let mut rng = Rng::new(p.seed);
    let name = p.rel.rsplit('/').next().unwrap_or(&p.rel).to_string();
    match p.kind {
        FileKind::Plain(f) => {
            let b = blob(f, gen_text(&mut rng, f, p.text_size));
            let e = entries_of(&p.rel, None, "plain", &b);
            Ok((b.bytes, e))
        }
        FileKind::Utf16 { big_endian, bom } => {
            let f = if rng.percent(50) {
                Format::Csv
            } else {
                Format::Log
            };
            let b = utf16(blob(f, gen_text(&mut rng, f, p.text_size)), big_endian, bom);
            let container = match (big_endian, bom) {
                (false, true) => "utf16le",
                (true, _) => "utf16be",
                (false, false) => "utf16le-nobom",
            };
            let e = entries_of(&p.rel, None, container, &b);
            Ok((b.bytes, e))
        }
        FileKind::Gz => {
            let b = blob(Format::Log, gen_text(&mut rng, Format::Log, p.text_size));
            let inner = name.strip_suffix(".gz").unwrap_or(&name).to_string();
            let e = entries_of(&p.rel, Some(&inner), "gz", &b);
            Ok((gzip(&b.bytes)?, e))
        }
        FileKind::Zip => {
            let mut members = Vec::new();
            for (fname, format) in [
                ("customers.csv", Format::Csv),
                ("events.ndjson", Format::Ndjson),
            ] {
                let b = blob(format, gen_text(&mut rng, format, p.text_size / 3));
                members.push(Member {
                    name: format!("export/{fname}"),
                    reported: format!("export/{fname}"),
                    container: "zip",
                    stored: b.bytes.clone(),
                    blob: b,
                });
            }
            let b = blob(
                Format::Log,
                gen_text(&mut rng, Format::Log, p.text_size / 3),
            );
            members.push(Member {
                name: "logs/app.log.gz".into(),
                reported: "logs/app.log.gz!app.log".into(),
                container: "zip+gz",
                stored: gzip(&b.bytes)?,
                blob: b,
            });
            let bytes = zip_bytes(&members)?;
            let e = members
                .iter()
                .flat_map(|m| entries_of(&p.rel, Some(&m.reported), m.container, &m.blob))
                .collect();
            Ok((bytes, e))
        }
        FileKind::Docx | FileKind::Xlsx => {
            let members = office(&mut rng, p.text_size, p.kind == FileKind::Xlsx);
            let bytes = zip_bytes(&members)?;
            let e = members
                .iter()
                .flat_map(|m| entries_of(&p.rel, Some(&m.reported), m.container, &m.blob))
                .collect();
            Ok((bytes, e))
        }
    }
}

/// Writes a corpus under `dir` (`dir/files/…` and `dir/manifest.jsonl`) and
/// returns its manifest.
pub fn generate(dir: &Path, spec: &CorpusSpec) -> io::Result<Manifest> {
    let plans = plan(spec);
    let files_dir = dir.join("files");
    fs::create_dir_all(&files_dir)?;
    let threads = if spec.threads == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        spec.threads
    };
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(u64, Vec<Entry>)>> = Mutex::new(Vec::new());
    let failure: Mutex<Option<io::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, plans.len().max(1)) {
            s.spawn(|| {
                while let Some(p) = plans.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let written = build_file(p).and_then(|(bytes, entries)| {
                        let path = files_dir.join(&p.rel);
                        if let Some(parent) = path.parent() {
                            fs::create_dir_all(parent)?;
                        }
                        fs::write(&path, &bytes)?;
                        Ok((u64::try_from(bytes.len()).unwrap_or(u64::MAX), entries))
                    });
                    match written {
                        Ok((n, entries)) => {
                            if let Ok(mut r) = results.lock() {
                                r.push((n, entries));
                            }
                        }
                        Err(e) => {
                            if let Ok(mut f) = failure.lock() {
                                f.get_or_insert(e);
                            }
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().ok().flatten() {
        return Err(e);
    }
    let results = results
        .into_inner()
        .map_err(|_| io::Error::other("generator thread panicked"))?;
    let mut manifest = Manifest {
        files: u64::try_from(plans.len()).unwrap_or(u64::MAX),
        ..Manifest::default()
    };
    for (n, entries) in results {
        manifest.bytes += n;
        manifest.entries.extend(entries);
    }
    manifest
        .entries
        .sort_by(|a, b| (&a.path, &a.member, a.offset).cmp(&(&b.path, &b.member, b.offset)));
    manifest.write(&dir.join("manifest.jsonl"))?;
    Ok(manifest)
}

/// About `size` bytes of mixed plain text (logs, NDJSON, CSV, XML, mail) with
/// planted cards and decoys, in memory (for benchmarks).
pub fn sample_text(seed: u64, size: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(size + (1 << 20));
    let formats = [
        Format::Log,
        Format::Ndjson,
        Format::Csv,
        Format::Xml,
        Format::Mail,
    ];
    while out.len() < size {
        let f = rng.pick_of(&formats, Format::Log);
        let part = (size - out.len()).clamp(4096, 1 << 20);
        out.extend_from_slice(gen_text(&mut rng, f, part).text.as_bytes());
    }
    out
}

// ---------------------------------------------------------------------------
// Scoring.

/// Planted and found counts of one group of cards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recall {
    /// Cards planted (that the settings should find).
    pub planted: u64,
    /// Of those, found at the right offset with the right kind.
    pub found: u64,
}

impl Recall {
    /// `found / planted` (1 when nothing was planted).
    pub fn ratio(&self) -> f64 {
        if self.planted == 0 {
            1.0
        } else {
            self.found as f64 / self.planted as f64
        }
    }
}

/// Planted and flagged counts of one decoy class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecoyScore {
    /// Decoys planted.
    pub planted: u64,
    /// Findings inside them (false positives).
    pub flagged: u64,
}

/// Precision and recall of a scan against a manifest.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Score {
    /// Findings that match a planted card (offset, kind).
    pub true_positives: u64,
    /// Findings that match nothing planted, or a decoy.
    pub false_positives: u64,
    /// Planted cards not found.
    pub false_negatives: u64,
    /// Findings matching a card whose brand, length, mask or test flag differ.
    pub wrong_details: u64,
    /// False positives outside every planted entry.
    pub background: u64,
    /// Recall per layout.
    pub by_layout: BTreeMap<String, Recall>,
    /// Recall per text format and container (`csv`, `gz/log`, `utf16be/csv`, …).
    pub by_format: BTreeMap<String, Recall>,
    /// Recall per brand.
    pub by_brand: BTreeMap<String, Recall>,
    /// False positives per decoy class.
    pub decoys: BTreeMap<String, DecoyScore>,
}

impl Score {
    /// TP / (TP + FP).
    pub fn precision(&self) -> f64 {
        let all = self.true_positives + self.false_positives;
        if all == 0 {
            1.0
        } else {
            self.true_positives as f64 / all as f64
        }
    }

    /// TP / (TP + FN).
    pub fn recall(&self) -> f64 {
        let all = self.true_positives + self.false_negatives;
        if all == 0 {
            1.0
        } else {
            self.true_positives as f64 / all as f64
        }
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "precision {:.4}  recall {:.4}  (TP {}, FP {}, FN {}; FP outside any entry {}; wrong details {})",
            self.precision(),
            self.recall(),
            self.true_positives,
            self.false_positives,
            self.false_negatives,
            self.background,
            self.wrong_details
        )?;
        let table = |f: &mut fmt::Formatter<'_>,
                     title: &str,
                     rows: &BTreeMap<String, Recall>|
         -> fmt::Result {
            writeln!(f, "recall by {title}:")?;
            for (k, r) in rows {
                writeln!(
                    f,
                    "  {k:<24} {:>7}/{:<7} {:.4}",
                    r.found,
                    r.planted,
                    r.ratio()
                )?;
            }
            Ok(())
        };
        table(f, "layout", &self.by_layout)?;
        table(f, "format", &self.by_format)?;
        table(f, "brand", &self.by_brand)?;
        writeln!(f, "false positives by decoy class:")?;
        for (k, d) in &self.decoys {
            writeln!(f, "  {k:<24} {:>7} flagged of {:<7}", d.flagged, d.planted)?;
        }
        Ok(())
    }
}

/// The path of a finding relative to `root`, `/`-separated.
fn relative(path: &str, root: &Path) -> String {
    let p = Path::new(path);
    let rel: PathBuf = p
        .strip_prefix(root)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| p.to_path_buf());
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Scores `findings` of a scan of `root` (the corpus's `files` directory) against
/// `manifest`. Cards that need `join_lines` count only when it was on.
pub fn score(manifest: &Manifest, findings: &[Finding], root: &Path, join_lines: bool) -> Score {
    let mut s = Score::default();
    for l in Layout::ALL {
        if join_lines || l != Layout::LineBroken {
            s.by_layout.entry(l.as_str().to_string()).or_default();
        }
    }
    for c in DecoyClass::ALL {
        s.decoys.entry(c.as_str().to_string()).or_default();
    }
    // Entries by (path, member), sorted by offset.
    let mut index: HashMap<(&str, Option<&str>), Vec<usize>> = HashMap::new();
    for (i, e) in manifest.entries.iter().enumerate() {
        index
            .entry((e.path.as_str(), e.member.as_deref()))
            .or_default()
            .push(i);
        if let Label::Decoy { class } = e.label {
            s.decoys
                .entry(class.as_str().to_string())
                .or_default()
                .planted += 1;
        }
    }
    let mut hit = vec![false; manifest.entries.len()];
    let mut decoy_hit = vec![false; manifest.entries.len()];
    for f in findings {
        let rel = relative(&f.path, root);
        let candidates = index.get(&(rel.as_str(), f.member.as_deref()));
        let entries = candidates.map(Vec::as_slice).unwrap_or(&[]);
        // The entry at exactly this offset, else one that covers it.
        let exact = entries.iter().copied().find(|&i| {
            manifest
                .entries
                .get(i)
                .is_some_and(|e| e.offset == f.offset && matches!(e.label, Label::Card { .. }))
        });
        let covering = || {
            entries.iter().copied().find(|&i| {
                manifest
                    .entries
                    .get(i)
                    .is_some_and(|e| f.offset >= e.offset && f.offset < e.offset + e.span.max(1))
            })
        };
        match exact.or_else(covering) {
            Some(i) => match manifest.entries.get(i).map(|e| &e.label) {
                Some(Label::Card {
                    kind,
                    brand,
                    masked,
                    length,
                    test_card,
                    needs_join,
                    ..
                }) if exact.is_some() && *kind == f.kind => {
                    if *needs_join && !join_lines {
                        continue; // not expected, not wrong either
                    }
                    if let Some(h) = hit.get_mut(i) {
                        if *h {
                            s.false_positives += 1; // duplicate report
                            continue;
                        }
                        *h = true;
                    }
                    s.true_positives += 1;
                    if brand != f.brand.as_str()
                        || *masked != f.masked
                        || *length != f.length
                        || *test_card != f.test_card
                    {
                        s.wrong_details += 1;
                    }
                }
                Some(Label::Decoy { class }) => {
                    s.false_positives += 1;
                    if let Some(h) = decoy_hit.get_mut(i)
                        && !*h
                    {
                        *h = true;
                        s.decoys
                            .entry(class.as_str().to_string())
                            .or_default()
                            .flagged += 1;
                    }
                }
                _ => s.false_positives += 1, // inside a card, at the wrong offset or kind
            },
            None => {
                s.false_positives += 1;
                s.background += 1;
            }
        }
    }
    for (i, e) in manifest.entries.iter().enumerate() {
        let Label::Card {
            layout,
            brand,
            needs_join,
            ..
        } = &e.label
        else {
            continue;
        };
        if *needs_join && !join_lines {
            continue;
        }
        let found = hit.get(i).copied().unwrap_or(false);
        if !found {
            s.false_negatives += 1;
        }
        let format = if e.container == "plain" {
            e.format.clone()
        } else {
            format!("{}/{}", e.container, e.format)
        };
        for (map, key) in [
            (&mut s.by_layout, layout.as_str().to_string()),
            (&mut s.by_format, format),
            (&mut s.by_brand, brand.clone()),
        ] {
            let r = map.entry(key).or_default();
            r.planted += 1;
            r.found += u64::from(found);
        }
    }
    s
}

#[cfg(test)]
mod tests;
