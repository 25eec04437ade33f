//! Card-number recognition shared by the vault's validation and the PAN scanner:
//! the Luhn check, the IIN (issuer identification number) table, masking, and the
//! networks' published test numbers.
//!
//! The IIN table is data ([`IIN_TABLE`]): one row per prefix range, with the card
//! lengths the network issues under it. A number is matched against the row with the
//! longest matching prefix, so `6011` (Discover) wins over `60` (RuPay).

use std::fmt;

/// A card network, as found from a number's IIN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Brand {
    /// Visa (4).
    Visa,
    /// Mastercard (51–55, 2221–2720).
    Mastercard,
    /// American Express (34, 37).
    Amex,
    /// Discover (6011, 644–649, 65).
    Discover,
    /// JCB (3528–3589).
    Jcb,
    /// Diners Club (300–305, 3095, 36, 38–39).
    Diners,
    /// UnionPay (62).
    Unionpay,
    /// Maestro (5018, 5020, 5038, 5893, 6304, 6759, 6761–6763, 56–58).
    Maestro,
    /// Mir (2200–2204).
    Mir,
    /// RuPay (60, 6521–6522, 508, 81–82).
    Rupay,
    /// A number whose IIN is in no known range.
    Unknown,
}

impl Brand {
    /// The lower-case name used in the API, reports and the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            Brand::Visa => "visa",
            Brand::Mastercard => "mastercard",
            Brand::Amex => "amex",
            Brand::Discover => "discover",
            Brand::Jcb => "jcb",
            Brand::Diners => "diners",
            Brand::Unionpay => "unionpay",
            Brand::Maestro => "maestro",
            Brand::Mir => "mir",
            Brand::Rupay => "rupay",
            Brand::Unknown => "unknown",
        }
    }

    /// Parses the name written by [`Brand::as_str`].
    pub fn from_name(name: &str) -> Option<Brand> {
        Some(match name {
            "visa" => Brand::Visa,
            "mastercard" => Brand::Mastercard,
            "amex" => Brand::Amex,
            "discover" => Brand::Discover,
            "jcb" => Brand::Jcb,
            "diners" => Brand::Diners,
            "unionpay" => Brand::Unionpay,
            "maestro" => Brand::Maestro,
            "mir" => Brand::Mir,
            "rupay" => Brand::Rupay,
            "unknown" => Brand::Unknown,
            _ => return None,
        })
    }
}

impl fmt::Display for Brand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the IIN table: numbers whose first `digits` digits lie in `low..=high`
/// belong to `brand` and are issued with one of `lengths` digits.
#[derive(Clone, Copy, Debug)]
pub struct IinRange {
    /// The network.
    pub brand: Brand,
    /// How many leading digits the range compares.
    pub digits: u8,
    /// Lowest prefix, inclusive.
    pub low: u32,
    /// Highest prefix, inclusive.
    pub high: u32,
    /// Card lengths issued in this range.
    pub lengths: &'static [u8],
}

const L16: &[u8] = &[16];
const L16_19: &[u8] = &[16, 17, 18, 19];
const L12_19: &[u8] = &[12, 13, 14, 15, 16, 17, 18, 19];
const L14_19: &[u8] = &[14, 15, 16, 17, 18, 19];

/// The IIN table (public network ranges as of 2024).
pub const IIN_TABLE: &[IinRange] = &[
    IinRange {
        brand: Brand::Visa,
        digits: 1,
        low: 4,
        high: 4,
        lengths: &[13, 16, 19],
    },
    IinRange {
        brand: Brand::Mastercard,
        digits: 2,
        low: 51,
        high: 55,
        lengths: L16,
    },
    IinRange {
        brand: Brand::Mastercard,
        digits: 4,
        low: 2221,
        high: 2720,
        lengths: L16,
    },
    IinRange {
        brand: Brand::Amex,
        digits: 2,
        low: 34,
        high: 34,
        lengths: &[15],
    },
    IinRange {
        brand: Brand::Amex,
        digits: 2,
        low: 37,
        high: 37,
        lengths: &[15],
    },
    IinRange {
        brand: Brand::Discover,
        digits: 4,
        low: 6011,
        high: 6011,
        lengths: L16_19,
    },
    IinRange {
        brand: Brand::Discover,
        digits: 3,
        low: 644,
        high: 649,
        lengths: L16_19,
    },
    IinRange {
        brand: Brand::Discover,
        digits: 2,
        low: 65,
        high: 65,
        lengths: L16_19,
    },
    IinRange {
        brand: Brand::Jcb,
        digits: 4,
        low: 3528,
        high: 3589,
        lengths: L16_19,
    },
    IinRange {
        brand: Brand::Diners,
        digits: 3,
        low: 300,
        high: 305,
        lengths: L14_19,
    },
    IinRange {
        brand: Brand::Diners,
        digits: 4,
        low: 3095,
        high: 3095,
        lengths: L14_19,
    },
    IinRange {
        brand: Brand::Diners,
        digits: 2,
        low: 36,
        high: 36,
        lengths: L14_19,
    },
    IinRange {
        brand: Brand::Diners,
        digits: 2,
        low: 38,
        high: 39,
        lengths: L14_19,
    },
    IinRange {
        brand: Brand::Unionpay,
        digits: 2,
        low: 62,
        high: 62,
        lengths: L16_19,
    },
    IinRange {
        brand: Brand::Maestro,
        digits: 4,
        low: 5018,
        high: 5018,
        lengths: L12_19,
    },
    IinRange {
        brand: Brand::Maestro,
        digits: 4,
        low: 5020,
        high: 5020,
        lengths: L12_19,
    },
    IinRange {
        brand: Brand::Maestro,
        digits: 4,
        low: 5038,
        high: 5038,
        lengths: L12_19,
    },
    IinRange {
        brand: Brand::Maestro,
        digits: 4,
        low: 5893,
        high: 5893,
        lengths: L12_19,
    },
    IinRange {
        brand: Brand::Maestro,
        digits: 4,
        low: 6304,
        high: 6304,
        lengths: L12_19,
    },
    IinRange {
        brand: Brand::Maestro,
        digits: 4,
        low: 6759,
        high: 6759,
        lengths: L12_19,
    },
    IinRange {
        brand: Brand::Maestro,
        digits: 4,
        low: 6761,
        high: 6763,
        lengths: L12_19,
    },
    IinRange {
        brand: Brand::Maestro,
        digits: 2,
        low: 56,
        high: 58,
        lengths: L12_19,
    },
    IinRange {
        brand: Brand::Mir,
        digits: 4,
        low: 2200,
        high: 2204,
        lengths: L16_19,
    },
    IinRange {
        brand: Brand::Rupay,
        digits: 2,
        low: 60,
        high: 60,
        lengths: L16,
    },
    IinRange {
        brand: Brand::Rupay,
        digits: 4,
        low: 6521,
        high: 6522,
        lengths: L16,
    },
    IinRange {
        brand: Brand::Rupay,
        digits: 3,
        low: 508,
        high: 508,
        lengths: L16,
    },
    IinRange {
        brand: Brand::Rupay,
        digits: 2,
        low: 81,
        high: 82,
        lengths: L16,
    },
];

/// Most leading digits any row of [`IIN_TABLE`] compares.
const IIN_DIGITS: u8 = 4;

/// The value of the first `n` ASCII digits of `digits`, or `None` if there are fewer
/// or a byte is not a digit.
fn prefix_value(digits: &[u8], n: u8) -> Option<u32> {
    let mut value: u32 = 0;
    for &d in digits.get(..usize::from(n))? {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u32::from(d - b'0');
    }
    Some(value)
}

/// The IIN row with the longest prefix matching a number whose first `have` digits
/// (at most [`IIN_DIGITS`]) have the value `prefix`.
fn lookup_prefix(prefix: u32, have: u8) -> Option<&'static IinRange> {
    IIN_TABLE.get(lookup_prefix_index(prefix, have)?)
}

/// [`lookup_prefix`] as an index into [`IIN_TABLE`].
fn lookup_prefix_index(prefix: u32, have: u8) -> Option<usize> {
    let mut best: Option<(usize, u8)> = None;
    for (i, row) in IIN_TABLE.iter().enumerate() {
        if row.digits > have {
            continue;
        }
        let v = prefix / 10u32.pow(u32::from(have - row.digits));
        if v >= row.low && v <= row.high && best.is_none_or(|(_, d)| d < row.digits) {
            best = Some((i, row.digits));
        }
    }
    best.map(|(i, _)| i)
}

/// No row: the value of [`IIN_BY_PREFIX`] for a prefix no network issues under.
const NO_ROW: u8 = u8::MAX;

/// The row of [`IIN_TABLE`] for each 4-digit prefix (index into the table, or
/// [`NO_ROW`]): the detector looks a prefix up once per digit.
static IIN_BY_PREFIX: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// The IIN row for the first four digits of a number (their value), in O(1).
fn row_of_prefix4(prefix: u32) -> Option<&'static IinRange> {
    let table = IIN_BY_PREFIX.get_or_init(|| {
        (0..10_000u32)
            .map(|p| {
                lookup_prefix_index(p, IIN_DIGITS)
                    .and_then(|i| u8::try_from(i).ok())
                    .unwrap_or(NO_ROW)
            })
            .collect()
    });
    let index = *table.get(usize::try_from(prefix).ok()?)?;
    IIN_TABLE.get(usize::from(index))
}

/// The IIN row with the longest prefix matching `digits` (ASCII digits), if any.
pub fn lookup_iin(digits: &[u8]) -> Option<&'static IinRange> {
    let leading = digits
        .iter()
        .take(usize::from(IIN_DIGITS))
        .take_while(|d| d.is_ascii_digit())
        .count();
    let have = u8::try_from(leading).ok()?;
    let prefix = prefix_value(digits, have)?;
    if have == IIN_DIGITS {
        row_of_prefix4(prefix)
    } else {
        lookup_prefix(prefix, have)
    }
}

/// The brand of a card number given as ASCII digits (length not checked).
pub fn brand_of(digits: &[u8]) -> Brand {
    lookup_iin(digits).map_or(Brand::Unknown, |r| r.brand)
}

/// The brand of `digits` if its IIN is known *and* the network issues cards of this
/// length under it; the scanner's test for "looks like a real card".
pub fn issued_brand(digits: &[u8]) -> Option<Brand> {
    let row = lookup_iin(digits)?;
    let len = u8::try_from(digits.len()).ok()?;
    row.lengths.contains(&len).then_some(row.brand)
}

/// The Luhn (mod 10) check over ASCII digits. Returns false for an empty slice or
/// any non-digit byte.
pub fn luhn_valid(digits: &[u8]) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum: u32 = 0;
    for (i, &d) in digits.iter().rev().enumerate() {
        if !d.is_ascii_digit() {
            return false;
        }
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// The Luhn check digit (ASCII) that makes `payload` followed by it valid.
pub fn luhn_check_digit(payload: &[u8]) -> Option<u8> {
    let mut sum: u32 = 0;
    for (i, &d) in payload.iter().rev().enumerate() {
        if !d.is_ascii_digit() {
            return None;
        }
        let mut v = u32::from(d - b'0');
        if i % 2 == 0 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    let check = u8::try_from((10 - sum % 10) % 10).ok()?;
    Some(b'0' + check)
}

/// Writes `digits` masked: at most the first 6 and the last 4 shown, `*` between.
/// Numbers shorter than 13 digits show only the last 4 (6 + 4 would reveal too much).
pub fn mask(digits: &[u8]) -> String {
    let n = digits.len();
    let head = if n >= 13 { 6 } else { 0 };
    let tail = 4.min(n);
    let mut out = String::with_capacity(n);
    for (i, &d) in digits.iter().enumerate() {
        if i < head || i >= n - tail {
            out.push(char::from(d));
        } else {
            out.push('*');
        }
    }
    out
}

/// The networks' published test card numbers (Stripe, Adyen, Braintree, network docs).
pub const TEST_CARDS: &[&str] = &[
    "4242424242424242",
    "4000056655665556",
    "4111111111111111",
    "4012888888881881",
    "4222222222222",
    "4000000000000002",
    "4917610000000000003",
    "5555555555554444",
    "2223003122003222",
    "5200828282828210",
    "5105105105105100",
    "2222400010000008",
    "378282246310005",
    "371449635398431",
    "378734493671000",
    "6011111111111117",
    "6011000990139424",
    "6011981111111113",
    "6445644564456445",
    "3056930009020004",
    "30569309025904",
    "38520000023237",
    "36227206271667",
    "3566002020360505",
    "3530111333300000",
    "6200000000000005",
    "6759649826438453",
    "2200000000000004",
];

/// Whether `digits` is one of [`TEST_CARDS`].
pub fn is_test_card(digits: &[u8]) -> bool {
    TEST_CARDS.iter().any(|t| t.as_bytes() == digits)
}

// --- The card-number detector -----------------------------------------------------

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
const ND_ZEROS: &[u32] = &[
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

/// Made-up card numbers for tests, benchmarks and the load generator (`panvault
/// bench`): every number is Luhn-valid and lies in the Visa range (`4…`), the range
/// the project's tests already use. None is a real card; never use them as data.
///
/// One generator for the whole workspace, so that tests do not each carry a copy
/// of the Luhn arithmetic.
pub mod testing {
    /// Numbers below this fit the 14 free digits of [`card`].
    const SPAN: u64 = 100_000_000_000_000;

    /// A 16-digit Luhn-valid number starting with 4, fully determined by `seed`.
    /// Distinct seeds give distinct numbers as long as they differ modulo 10^14
    /// (the seed is spread over the 14 digits by a bijection, so consecutive seeds
    /// do not give numbers that differ in one digit only).
    pub fn card(seed: u64) -> String {
        // 7919 is prime to 10^14, so this is a bijection on seeds modulo 10^14.
        let body = (seed % SPAN).wrapping_mul(7919).wrapping_add(12_345) % SPAN;
        let payload = format!("4{body:014}");
        // Luhn over the payload: from the right, every other digit (starting with
        // the rightmost, as the check digit will follow it) is doubled.
        let sum: u32 = payload
            .bytes()
            .rev()
            .enumerate()
            .map(|(i, b)| {
                let v = u32::from(b - b'0');
                if i % 2 == 0 {
                    let d = v * 2;
                    if d > 9 { d - 9 } else { d }
                } else {
                    v
                }
            })
            .sum();
        let check = (10 - sum % 10) % 10;
        format!("{payload}{check}")
    }

    /// The digit values `payload` (each 0–9) followed by the Luhn check digit that
    /// makes them a valid number, as text; `None` if a value is not a digit. For
    /// property tests that need numbers of every length.
    pub fn complete(payload: &[u8]) -> Option<String> {
        let mut d = Vec::with_capacity(payload.len() + 1);
        for &v in payload {
            if v > 9 {
                return None;
            }
            d.push(b'0' + v);
        }
        d.push(super::luhn_check_digit(&d)?);
        String::from_utf8(d).ok()
    }

    /// A stream of random test numbers from a seed (xorshift64*; not for secrets).
    /// The same seed gives the same numbers.
    #[derive(Debug, Clone)]
    pub struct Cards(u64);

    impl Cards {
        /// A stream starting from `seed` (any value; zero is replaced).
        pub fn new(seed: u64) -> Cards {
            Cards(if seed == 0 {
                0x9E37_79B9_7F4A_7C15
            } else {
                seed
            })
        }
    }

    impl Iterator for Cards {
        type Item = String;

        fn next(&mut self) -> Option<String> {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            Some(card(self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_test_cards_pass_luhn_and_have_brands() {
        for card in TEST_CARDS {
            let d = card.as_bytes();
            assert!(luhn_valid(d), "{card}");
            assert_ne!(brand_of(d), Brand::Unknown, "{card}");
        }
    }

    #[test]
    fn brands_by_prefix() {
        let cases: &[(&str, Brand)] = &[
            ("4242424242424242", Brand::Visa),
            ("5555555555554444", Brand::Mastercard),
            ("2223003122003222", Brand::Mastercard),
            ("2720990000000000", Brand::Mastercard),
            ("378282246310005", Brand::Amex),
            ("341111111111111", Brand::Amex),
            ("6011111111111117", Brand::Discover),
            ("6445644564456445", Brand::Discover),
            ("6500000000000002", Brand::Discover),
            ("3566002020360505", Brand::Jcb),
            ("30569309025904", Brand::Diners),
            ("36227206271667", Brand::Diners),
            ("6200000000000005", Brand::Unionpay),
            ("6759649826438453", Brand::Maestro),
            ("2200000000000004", Brand::Mir),
            ("6000000000000008", Brand::Rupay),
            ("8100000000000000", Brand::Rupay),
            ("9999999999999995", Brand::Unknown),
            ("1234567812345670", Brand::Unknown),
        ];
        for (n, b) in cases {
            assert_eq!(brand_of(n.as_bytes()), *b, "{n}");
        }
    }

    #[test]
    fn test_cards_are_valid_visa_numbers_distinct_per_seed() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..2000 {
            let c = testing::card(i);
            assert_eq!(c.len(), 16);
            assert!(c.starts_with('4'));
            assert!(luhn_valid(c.as_bytes()));
            assert!(seen.insert(c));
        }
        assert_eq!(testing::card(7), testing::card(7));
        let a: Vec<String> = testing::Cards::new(1).take(50).collect();
        assert_eq!(a, testing::Cards::new(1).take(50).collect::<Vec<_>>());
        assert!(a.iter().all(|c| luhn_valid(c.as_bytes())));
        assert_ne!(a[0], a[1]);
        let n = testing::complete(&[4, 2, 4, 2, 4, 2, 4, 2, 4, 2, 4, 2, 4, 2, 4]).unwrap();
        assert_eq!(n, "4242424242424242");
        assert!(testing::complete(&[10]).is_none());
    }

    #[test]
    fn luhn_rejects_bad_check_digit_and_non_digits() {
        assert!(luhn_valid(b"4242424242424242"));
        assert!(!luhn_valid(b"4242424242424241"));
        assert!(!luhn_valid(b"42424242424242a2"));
        assert!(!luhn_valid(b""));
        assert_eq!(luhn_check_digit(b"424242424242424"), Some(b'2'));
        assert_eq!(luhn_check_digit(b"37828224631000"), Some(b'5'));
    }

    #[test]
    fn issued_brand_checks_length() {
        assert_eq!(issued_brand(b"4242424242424242"), Some(Brand::Visa));
        assert_eq!(issued_brand(b"42424242424242"), None);
        assert_eq!(issued_brand(b"378282246310005"), Some(Brand::Amex));
        assert_eq!(issued_brand(b"9999999999999995"), None);
    }

    /// The digits of `s` as written in the script whose zero is `zero`.
    fn in_script(s: &str, zero: u32) -> String {
        s.chars()
            .map(|c| match c.to_digit(10) {
                Some(d) => char::from_u32(zero + d).unwrap(),
                None => c,
            })
            .collect()
    }

    #[test]
    fn unicode_decimal_digits_have_their_values() {
        for &zero in ND_ZEROS {
            for d in 0..10u8 {
                let c = char::from_u32(zero + u32::from(d)).unwrap();
                assert!(
                    c.is_numeric() && !c.is_alphabetic(),
                    "U+{:04X}",
                    u32::from(c)
                );
                assert_eq!(digit_value(c), Some(d), "U+{:04X}", u32::from(c));
            }
            let after = char::from_u32(zero + 10).unwrap();
            assert!(
                digit_value(after).is_none() || ND_ZEROS.contains(&(zero + 10)),
                "U+{:04X}",
                zero + 10
            );
        }
        for &zero in ND_ZEROS {
            for d in 0..10u32 {
                let mut utf8 = [0u8; 4];
                let c = char::from_u32(zero + d).unwrap();
                let lead = c.encode_utf8(&mut utf8).as_bytes()[0];
                assert!(may_start_wide_digit(lead), "U+{:04X}", zero + d);
            }
        }
        assert_eq!(digit_value('7'), Some(7));
        assert_eq!(digit_value('\u{FF17}'), Some(7));
        for c in ['a', ' ', '²', '①', 'Ⅶ', '\u{FF21}', '/', ':'] {
            assert_eq!(digit_value(c), None, "U+{:04X}", u32::from(c));
        }
    }

    #[test]
    fn iin_lookup_by_value_agrees_with_the_table() {
        for p in 0..10_000u32 {
            let text = format!("{p:04}");
            let by_digits = lookup_iin(text.as_bytes()).map(|r| (r.brand, r.digits, r.low));
            let by_value = lookup_prefix(p, 4).map(|r| (r.brand, r.digits, r.low));
            assert_eq!(by_digits, by_value, "{text}");
            let by_table = row_of_prefix4(p).map(|r| (r.brand, r.digits, r.low));
            assert_eq!(by_digits, by_table, "{text}");
        }
        assert_eq!(lookup_iin(b"4").map(|r| r.brand), Some(Brand::Visa));
        assert!(lookup_iin(b"").is_none());
    }

    /// Spellings of a card that the filter and the scanner both find.
    fn spellings(card: &str) -> Vec<String> {
        let g: Vec<String> = card
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect();
        vec![
            g.join("."),
            g.join("  "),
            g.join("_"),
            g.join("\t"),
            g.join(" / "),
            in_script(card, 0xFF10),
            in_script(&g.join(" "), 0xFF10),
            in_script(&g.join("-"), 0x0660),
            in_script(card, 0x0966),
            format!("[{}]", g.join(",")),
            format!("[\"{}\"]", g.join("\",\"")),
            format!("{}{}", &card[..6], in_script(&card[6..], 0xFF10)),
        ]
    }

    fn scan_str(text: &str) -> Vec<CardHit> {
        let mut f = CardFinder::new(Mode::Scan);
        let mut hits: Vec<CardHit> = text
            .char_indices()
            .filter_map(|(pos, c)| f.push_char(c, pos, c.len_utf8()))
            .collect();
        hits.extend(f.finish());
        hits
    }

    #[test]
    fn both_modes_find_separated_and_unicode_spellings() {
        for card in [
            "4111111111111111",
            "5555555555554444",
            "4917610000000000003",
        ] {
            for (k, text) in spellings(card).iter().enumerate() {
                assert!(
                    contains_card_number(text),
                    "filter, spelling {k} of a test card"
                );
                let framed = format!("note: {text} ok");
                assert!(contains_card_number(&framed), "filter, framed spelling {k}");
                let hits = scan_str(&framed);
                assert_eq!(hits.len(), 1, "scan, spelling {k} of a test card");
                assert_eq!(usize::from(hits[0].digits), card.len(), "spelling {k}");
                assert_eq!(hits[0].masked, mask(card.as_bytes()), "spelling {k}");
                assert!(hits[0].test_card, "spelling {k}");
            }
        }
    }

    #[test]
    fn filter_finds_cards_inside_anything_scan_only_bounded_ones() {
        for text in [
            "x4111111111111111",
            "4111111111111111x",
            "14111111111111111",
            "ID-4111.1111.1111.1111",
            "4111.1111.1111.1111-ab",
            "+4111 1111 1111 1111",
        ] {
            assert!(contains_card_number(text), "filter: {}", text.len());
            assert!(scan_str(text).is_empty(), "scan: {}", text.len());
        }
    }

    #[test]
    fn neither_mode_finds_other_numbers() {
        for text in [
            "order 1234567890123 ok",
            "4111.1111.1111.1112",
            "4111....1111.1111.1111",
            "2024-01-05 12:34:56.789 GET /x 200 4521",
            "9999 9999 9999 9995",
            "amount 1,234,567.89 EUR",
            "",
            "4",
        ] {
            assert!(
                !contains_card_number(text),
                "filter: case of {} bytes",
                text.len()
            );
            assert!(
                scan_str(text).is_empty(),
                "scan: case of {} bytes",
                text.len()
            );
        }
        // A lone dot is a decimal point to the scanner (the filter refuses it).
        assert!(scan_str("lat 4.111111111111111 lon").is_empty());
        assert!(contains_card_number("lat 4.111111111111111 lon"));
        // A line break ends a chain in scan mode only.
        assert!(scan_str("4111 1111\n1111 1111").is_empty());
        assert!(contains_card_number("4111 1111\n1111 1111"));
    }

    #[test]
    fn scan_mode_reports_positions_and_looseness() {
        let text = "a 4111.1111.1111.1111 b 4242 4242 4242 4242 c";
        let hits = scan_str(text);
        assert_eq!(hits.len(), 2);
        assert_eq!((hits[0].start, hits[0].end), (2, 21));
        assert!(hits[0].loose);
        assert_eq!((hits[1].start, hits[1].end), (24, 43));
        assert!(!hits[1].loose);
        // Full-width digits are three bytes each.
        let wide = format!("x {} y", in_script("4111111111111111", 0xFF10));
        let hits = scan_str(&wide);
        assert_eq!((hits[0].start, hits[0].end), (2, 2 + 48));
        assert!(hits[0].loose);
        // Gaps that differ are the fields of a record to the scanner, not to the filter.
        assert!(scan_str("4111 1111-1111 1111").is_empty());
        assert!(contains_card_number("4111 1111-1111 1111"));
        assert!(scan_str("**** 4111,12/27,1111.11").is_empty());
        // A card followed by something else is still found.
        assert_eq!(scan_str("4111.1111.1111.1111 123")[0].end, 19);
    }

    #[test]
    fn a_mid_text_start_never_reports_the_first_chain() {
        let mut f = CardFinder::new(Mode::Scan);
        f.reset(true);
        let text = "1111.1111.1111 then 4111.1111.1111.1111";
        let mut hits: Vec<CardHit> = text
            .char_indices()
            .filter_map(|(p, c)| f.push_char(c, p, 1))
            .collect();
        hits.extend(f.finish());
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].start, 20);
    }

    #[test]
    fn long_digit_runs_are_linear() {
        // 2 MB of zeros (all Luhn-valid, no IIN) and of grouped digits: each
        // character is a constant number of steps, so this finishes at test speed.
        let zeros = "0".repeat(2 << 20);
        assert!(!contains_card_number(&zeros));
        assert!(scan_str(zeros.get(..1 << 16).unwrap()).is_empty());
        let runs = "\"0\",".repeat(1 << 14);
        assert!(!contains_card_number(&runs));
        let mut grouped = "1234 5678 ".repeat(1 << 13);
        assert!(!contains_card_number(&grouped));
        grouped.push_str("4111-1111-1111-1111");
        assert!(contains_card_number(&grouped));
    }

    proptest::proptest! {
        #[test]
        fn any_test_card_spelled_any_way_is_found(
            card in proptest::sample::select(TEST_CARDS),
            seps in proptest::collection::vec(
                proptest::sample::select(vec!["", " ", "  ", ".", "-", "_", "\t", ", ", "\",\"", "/", " - "]),
                19,
            ),
            one_sep in proptest::sample::select(vec![" ", "  ", ".", "-", "_", "\t", ",", ", ", "\",\"", "/", " - "]),
            cuts in proptest::collection::vec(proptest::bool::ANY, 19),
            scripts in proptest::collection::vec(
                proptest::sample::select(vec![0x30u32, 0xFF10, 0x0660, 0x06F0, 0x0966, 0x09E6, 0x0E50, 0x1D7CE]),
                19,
            ),
            before in "[a-z ]{0,8}",
            after in "[a-z ]{0,8}",
        ) {
            // The filter: any separator in any gap.
            let spell = |sep: &dyn Fn(usize) -> &'static str| {
                let mut text = before.clone();
                text.push(' ');
                for (k, c) in card.chars().enumerate() {
                    if k > 0 {
                        text.push_str(sep(k));
                    }
                    let d = c.to_digit(10).unwrap();
                    text.push(char::from_u32(scripts[k] + d).unwrap());
                }
                text.push(' ');
                text.push_str(&after);
                text
            };
            let text = spell(&|k| seps[k]);
            proptest::prop_assert!(contains_card_number(&text), "filter missed a spelling");
            // The scanner: one separator, in any gaps (not a lone dot).
            let text = spell(&|k| if cuts[k] { one_sep } else { "" });
            let lone_dot = one_sep == "." && cuts.iter().skip(1).take(card.len() - 1).filter(|c| **c).count() == 1;
            proptest::prop_assert!(contains_card_number(&text), "filter missed a spelling");
            let hits = scan_str(&text);
            if lone_dot {
                proptest::prop_assert!(hits.is_empty());
                return Ok(());
            }
            proptest::prop_assert_eq!(hits.len(), 1, "scan missed a spelling");
            proptest::prop_assert_eq!(&hits[0].masked, &mask(card.as_bytes()));
        }
    }

    #[test]
    fn masking_shows_at_most_six_and_four() {
        assert_eq!(mask(b"4242424242424242"), "424242******4242");
        assert_eq!(mask(b"378282246310005"), "378282*****0005");
        assert_eq!(mask(b"123456789012"), "********9012");
    }
}
