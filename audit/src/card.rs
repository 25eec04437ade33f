//! Card-number recognition shared by the vault's validation and the PAN scanner:
//! the Luhn check, the IIN (issuer identification number) table, masking, and the
//! networks' published test numbers.
//!
//! The IIN table is data ([`IIN_TABLE`]): one row per prefix range, with the card
//! lengths the network issues under it. A number is matched against the row with the
//! longest matching prefix, so `6011` (Discover) wins over `60` (RuPay).

use std::fmt;

mod finder;

pub use self::finder::{
    CardFinder, CardHit, Class, MAX_DIGITS, MAX_SEPARATORS, MIN_DIGITS, Mode, contains_card_number,
    digit_value, may_start_wide_digit,
};

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
mod tests;
