//! The card-number detector: [`CardFinder`] reads text one character at a time and
//! reports runs of 12–19 digits (of any script, in groups joined by a few
//! separators) that pass Luhn and whose IIN issues that length; the vault's request
//! filter ([`contains_card_number`]) and the scanner both use it.

use std::fmt;

use super::{Brand, IinRange, is_test_card, mask, row_of_prefix4};

/// Most separator characters between two digits of one number (`4111 - 1111`).
pub const MAX_SEPARATORS: usize = 3;
/// Fewest digits of a card number the detector reports.
pub const MIN_DIGITS: usize = 12;
/// Most digits of a card number the detector reports.
pub const MAX_DIGITS: usize = 19;

/// The zero of each block of Unicode decimal digits (general category Nd) outside
/// ASCII, sorted: each block holds the digits 0–9 at consecutive code points
/// (Unicode 16.0; Arabic-Indic, Devanagari, …, full-width U+FF10–FF19, the
/// mathematical digits).
pub(super) const ND_ZEROS: &[u32] = &[
    0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66, 0xDE6,
    0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90, 0x1B50,
    0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x10D30, 0x10D40, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0,
    0x11650, 0x116C0, 0x116D0, 0x116DA, 0x11730, 0x118E0, 0x11950, 0x11BF0, 0x11C50, 0x11D50,
    0x11DA0, 0x11F50, 0x16130, 0x16A60, 0x16AC0, 0x16B50, 0x16D70, 0x1CCF0, 0x1D7CE, 0x1D7D8,
    0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E4F0, 0x1E5F1, 0x1E950, 0x1FBF0,
];

/// The value of `c` if it is a decimal digit of any script (Unicode category Nd):
/// `'7'`, full-width `'７'`, Arabic-Indic `'٧'`, Devanagari `'७'`, …
pub fn digit_value(c: char) -> Option<u8> {
    let cp = u32::from(c);
    if c.is_ascii() {
        return if c.is_ascii_digit() {
            u8::try_from(cp - u32::from('0')).ok()
        } else {
            None
        };
    }
    let block = ND_ZEROS.partition_point(|&z| z <= cp).checked_sub(1)?;
    let v = cp - ND_ZEROS.get(block)?;
    if v < 10 { u8::try_from(v).ok() } else { None }
}

/// Whether the UTF-8 lead byte `b` may begin a non-ASCII decimal digit (a cheap
/// test before decoding: Arabic-Indic and N'Ko start with 0xD9–0xDF, the Indic and
/// South-East Asian scripts with 0xE0–0xE1, Vai to Meetei Mayek with 0xEA,
/// full-width digits with 0xEF, the supplementary planes with 0xF0).
pub fn may_start_wide_digit(b: u8) -> bool {
    matches!(b, 0xD9 | 0xDB | 0xDF | 0xE0 | 0xE1 | 0xEA | 0xEF | 0xF0)
}

/// Where the detector looks, which sets what separates digits and what counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// A field that must hold no card number (the vault's request filter): any run of
    /// 1 to [`MAX_SEPARATORS`] characters that are not letters or digits (line breaks
    /// included) joins digit groups, and a card in *any* 12–19-digit window of such a
    /// chain counts, whatever surrounds it. Refusing a field by mistake costs a
    /// retry; letting a card through stores it in the clear.
    Filter,
    /// Files and databases (the scanner): separators as in `Filter` except that a
    /// line break or a control character other than tab ends a chain; the whole
    /// chain must be the number (12–19 digits), bounded by no letter or digit, with
    /// the scanner's glue rules (`ID-4111…`, `v.4111…`, `+4111…` are not cards), the
    /// same separators in every gap (`4111.1111.1111.1111`, but not the fields of a
    /// record such as `1111,12/27,100.00`) and a lone dot read as a decimal point
    /// (`4.123456789012345` is not a card).
    Scan,
}

/// What a character is to the detector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Class {
    /// A decimal digit of any script, with its value, and whether it was ASCII.
    Digit {
        /// 0–9.
        value: u8,
        /// Written as an ASCII digit.
        ascii: bool,
    },
    /// A letter or other alphanumeric character: ends a chain.
    Word,
    /// Anything else: joins digit groups when at most [`MAX_SEPARATORS`] in a row.
    Separator(char),
    /// Ends a chain (in [`Mode::Scan`]: line breaks and control characters).
    Break,
}

impl Mode {
    /// The class of `c` in this mode (the one normalisation of both the request
    /// filter and the scanner).
    pub fn classify(self, c: char) -> Class {
        if let Some(value) = digit_value(c) {
            return Class::Digit {
                value,
                ascii: c.is_ascii(),
            };
        }
        if c.is_alphanumeric() {
            return Class::Word;
        }
        match self {
            Mode::Filter => Class::Separator(c),
            Mode::Scan if c == '\t' => Class::Separator(c),
            Mode::Scan if c.is_control() || c == char::REPLACEMENT_CHARACTER => Class::Break,
            Mode::Scan => Class::Separator(c),
        }
    }
}

/// A card number found by [`CardFinder`]. Holds the masked number only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardHit {
    /// Position (as given to [`CardFinder::push`]) of the first digit.
    pub start: usize,
    /// Position just after the last digit.
    pub end: usize,
    /// Number of digits.
    pub digits: u8,
    /// The network.
    pub brand: Brand,
    /// First 6 and last 4 digits at most ([`mask`]).
    pub masked: String,
    /// One of the networks' published test numbers.
    pub test_card: bool,
    /// Written in a way the scanner's layout parser does not read: a separator
    /// other than one space or one dash (the same one throughout), or a digit
    /// outside ASCII.
    pub loose: bool,
}

/// Ring size for the last digits of a chain (at least `MAX_DIGITS + 1`).
const RING: usize = 32;

/// The Luhn weight of digit `d` when doubled.
const fn doubled(d: u8) -> u8 {
    let v = d * 2;
    if v > 9 { v - 9 } else { v }
}

/// The card-number detector of the vault's request filter and of the scanner: fed
/// one character class at a time ([`Mode::classify`]), it finds card numbers in
/// O(1) per character.
///
/// Digits joined by separator runs form a chain. For each digit the detector keeps
/// two running Luhn sums (odd positions doubled, even positions doubled) modulo 10,
/// so the Luhn sum of any window is a difference of two of them, and the IIN row of
/// each chain position is looked up once, when its fourth digit arrives: checking
/// the eight windows of 12–19 digits that end at a digit is a few compares. The
/// last 32 digits are held in a ring that is wiped on drop.
pub struct CardFinder {
    mode: Mode,
    /// Digits in the current chain (0: none open).
    n: usize,
    /// Separator characters since the last digit (or since the last chain ended).
    seps: usize,
    /// The first of them (up to [`MAX_SEPARATORS`]).
    gap: [char; MAX_SEPARATORS],
    /// Gaps between the digit groups of the current chain.
    gaps: usize,
    /// The first gap of the chain (its separators, `first_gap_len` of them).
    first_gap: [char; MAX_SEPARATORS],
    first_gap_len: usize,
    /// Two gaps of the chain differ (`12/27,123.45`: fields of a record).
    mixed: bool,
    /// The chain is written in a way the scanner's layout parser does not read.
    loose: bool,
    /// The current chain may be reported (scan mode: bounded on its left).
    reportable: bool,
    /// The input began where a chain may already have been open.
    tainted: bool,
    /// End position of the chain's last digit.
    end: usize,
    /// Classes of the last two characters: the left boundary of the next chain.
    prev: Option<Class>,
    prev2: Option<Class>,
    /// The chain's last digits (ASCII), by chain index modulo `RING`.
    digits: [u8; RING],
    /// Their positions.
    at: [usize; RING],
    /// Luhn prefix sums modulo 10 with odd / even chain indices doubled, by prefix
    /// length modulo `RING`.
    odd_doubled: [u8; RING],
    even_doubled: [u8; RING],
    /// The IIN row of the number starting at each chain index.
    rows: [Option<&'static IinRange>; RING],
    /// The value of the chain's last four digits.
    prefix4: u32,
}

impl fmt::Debug for CardFinder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardFinder")
            .field("mode", &self.mode)
            .field("chain_digits", &self.n)
            .finish_non_exhaustive()
    }
}

impl Drop for CardFinder {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl CardFinder {
    /// A detector at the start of a text.
    pub fn new(mode: Mode) -> Self {
        CardFinder {
            mode,
            n: 0,
            seps: 0,
            gap: [' '; MAX_SEPARATORS],
            gaps: 0,
            first_gap: [' '; MAX_SEPARATORS],
            first_gap_len: 0,
            mixed: false,
            loose: false,
            reportable: false,
            tainted: false,
            end: 0,
            prev: None,
            prev2: None,
            digits: [0; RING],
            at: [0; RING],
            odd_doubled: [0; RING],
            even_doubled: [0; RING],
            rows: [None; RING],
            prefix4: 0,
        }
    }

    /// Starts again at a new place. `mid_text`: the place may be inside a chain
    /// that began earlier, so the first chain is never reported (scan mode).
    pub fn reset(&mut self, mid_text: bool) {
        self.n = 0;
        self.seps = 0;
        self.tainted = mid_text;
        self.prev = None;
        self.prev2 = None;
    }

    fn wipe(&mut self) {
        use zeroize::Zeroize;
        self.digits.zeroize();
        self.odd_doubled.zeroize();
        self.even_doubled.zeroize();
        self.rows = [None; RING];
        self.prefix4 = 0;
    }

    /// Whether a chain is open (digits seen, and no more than [`MAX_SEPARATORS`]
    /// separators since the last one).
    pub fn in_chain(&self) -> bool {
        self.n > 0
    }

    /// Feeds the character `c` found at `pos` (positions are the caller's: byte
    /// offsets, say); `len` is its length in the same unit.
    pub fn push_char(&mut self, c: char, pos: usize, len: usize) -> Option<CardHit> {
        self.push(self.mode.classify(c), pos, len)
    }

    /// Feeds one character class at `pos`, `len` long. Returns a card number when
    /// one is complete: in filter mode as soon as its last digit arrives, in scan
    /// mode when its chain ends.
    pub fn push(&mut self, class: Class, pos: usize, len: usize) -> Option<CardHit> {
        let hit = match class {
            Class::Digit { value, ascii } => self.digit(value, ascii, pos, len),
            Class::Separator(c) => {
                if let Some(slot) = self.gap.get_mut(self.seps) {
                    *slot = c;
                }
                self.seps = self.seps.saturating_add(1);
                if self.seps > MAX_SEPARATORS {
                    self.tainted = false;
                    self.close(false)
                } else {
                    None
                }
            }
            Class::Word => {
                let hit = self.close(true);
                self.tainted = false;
                self.seps = 0;
                hit
            }
            Class::Break => {
                let hit = self.close(false);
                self.tainted = false;
                self.seps = 0;
                hit
            }
        };
        self.prev2 = self.prev;
        self.prev = Some(class);
        hit
    }

    /// Ends the input (scan mode reports a chain that ends there).
    pub fn finish(&mut self) -> Option<CardHit> {
        let hit = self.close(false);
        self.seps = 0;
        hit
    }

    /// Whether the chain starting now is bounded on its left (scan mode's glue rules).
    fn left_bounded(&self) -> bool {
        match self.prev {
            Some(Class::Word) | Some(Class::Separator('+')) => false,
            Some(Class::Separator('-' | '.' | '_')) => !matches!(self.prev2, Some(Class::Word)),
            _ => true,
        }
    }

    fn digit(&mut self, value: u8, ascii: bool, pos: usize, len: usize) -> Option<CardHit> {
        let value = value.min(9);
        let mut prefix = None;
        if self.n == 0 {
            self.reportable = match self.mode {
                Mode::Filter => true,
                Mode::Scan => !self.tainted && self.left_bounded(),
            };
            self.tainted = false;
            self.gaps = 0;
            self.first_gap_len = 0;
            self.mixed = false;
            self.loose = false;
            self.prefix4 = 0;
            if let Some(x) = self.odd_doubled.first_mut() {
                *x = 0;
            }
            if let Some(x) = self.even_doubled.first_mut() {
                *x = 0;
            }
        } else if self.seps > 0 {
            let gap = self.gap.get(..self.seps).unwrap_or(&[]);
            if !matches!(gap, [' '] | ['-']) {
                self.loose = true;
            }
            if self.gaps == 0 {
                self.first_gap = self.gap;
                self.first_gap_len = self.seps;
            } else if !self.mixed && self.first_gap.get(..self.first_gap_len) != Some(gap) {
                // Scan mode: the groups so far may be a card followed by something
                // else (`4111.1111.1111.1111 123`, card then code).
                prefix = self.scan_candidate();
                self.mixed = true;
                self.loose = true;
            }
            self.gaps += 1;
        }
        if !ascii {
            self.loose = true;
        }
        self.seps = 0;
        let j = self.n;
        let (slot, next) = (j % RING, (j + 1) % RING);
        let odd = j % 2 == 1;
        let (a, b) = if odd {
            (doubled(value), value)
        } else {
            (value, doubled(value))
        };
        if let (Some(&pa), Some(&pb)) = (self.odd_doubled.get(slot), self.even_doubled.get(slot)) {
            if let Some(x) = self.odd_doubled.get_mut(next) {
                *x = (pa + a) % 10;
            }
            if let Some(x) = self.even_doubled.get_mut(next) {
                *x = (pb + b) % 10;
            }
        }
        if let Some(d) = self.digits.get_mut(slot) {
            *d = b'0' + value;
        }
        if let Some(p) = self.at.get_mut(slot) {
            *p = pos;
        }
        self.n = j + 1;
        self.end = pos.saturating_add(len);
        self.prefix4 = (self.prefix4 * 10 + u32::from(value)) % 10_000;
        if let Some(s) = j.checked_sub(3)
            && let Some(r) = self.rows.get_mut(s % RING)
        {
            *r = row_of_prefix4(self.prefix4);
        }
        if self.mode == Mode::Filter {
            for len in MIN_DIGITS..=MAX_DIGITS.min(self.n) {
                if let Some(hit) = self.window(self.n - len, len) {
                    return Some(hit);
                }
            }
        }
        prefix
    }

    /// Scan mode: the whole chain so far, if it is a bounded card number whose
    /// gaps are all alike (and not one decimal point).
    fn scan_candidate(&self) -> Option<CardHit> {
        let decimal =
            self.gaps == 1 && self.first_gap_len == 1 && self.first_gap.first() == Some(&'.');
        if self.mode == Mode::Scan
            && self.reportable
            && !decimal
            && !self.mixed
            && (MIN_DIGITS..=MAX_DIGITS).contains(&self.n)
        {
            self.window(0, self.n)
        } else {
            None
        }
    }

    /// The card of `len` digits starting at chain index `s` and ending at the last
    /// digit, if it passes Luhn and its IIN issues that length.
    fn window(&self, s: usize, len: usize) -> Option<CardHit> {
        let e = self.n.checked_sub(1)?;
        let sums = if e % 2 == 0 {
            &self.odd_doubled
        } else {
            &self.even_doubled
        };
        if sums.get(self.n % RING)? != sums.get(s % RING)? {
            return None;
        }
        let row = (*self.rows.get(s % RING)?)?;
        let n = u8::try_from(len).ok()?;
        if !row.lengths.contains(&n) {
            return None;
        }
        let mut buf = zeroize::Zeroizing::new([0u8; MAX_DIGITS]);
        for (k, slot) in buf.iter_mut().take(len).enumerate() {
            *slot = *self.digits.get((s + k) % RING)?;
        }
        let digits = buf.get(..len)?;
        Some(CardHit {
            start: *self.at.get(s % RING)?,
            end: self.end,
            digits: n,
            brand: row.brand,
            masked: mask(digits),
            test_card: is_test_card(digits),
            loose: self.loose,
        })
    }

    /// Closes the open chain; `by_word`: a letter or digit of another script ends
    /// it. Scan mode reports the whole chain if it is a bounded card number.
    fn close(&mut self, by_word: bool) -> Option<CardHit> {
        let n = self.n;
        if n == 0 {
            return None;
        }
        let glued_right = by_word
            && (self.seps == 0
                || (self.seps == 1 && matches!(self.gap.first(), Some('-' | '.' | '_'))));
        let hit = if glued_right {
            None
        } else {
            self.scan_candidate()
        };
        self.n = 0;
        hit
    }
}

/// Whether `text` holds a card number ([`Mode::Filter`]): 12–19 digits of any script
/// that pass Luhn and whose IIN issues that length, in any run of digit groups
/// joined by up to [`MAX_SEPARATORS`] non-alphanumeric characters
/// (`4111.1111.1111.1111`, `4111_1111…`, full-width digits, …). Linear in the
/// length of `text`.
pub fn contains_card_number(text: &str) -> bool {
    let mut f = CardFinder::new(Mode::Filter);
    text.char_indices().any(|(pos, c)| {
        // Letters outside a chain change nothing in filter mode: skip them fast.
        (f.in_chain() || !c.is_ascii_alphabetic()) && f.push_char(c, pos, c.len_utf8()).is_some()
    })
}
