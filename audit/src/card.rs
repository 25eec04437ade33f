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

/// The IIN row with the longest prefix matching `digits` (ASCII digits), if any.
pub fn lookup_iin(digits: &[u8]) -> Option<&'static IinRange> {
    let mut best: Option<&'static IinRange> = None;
    for row in IIN_TABLE {
        if let Some(v) = prefix_value(digits, row.digits)
            && v >= row.low
            && v <= row.high
            && best.is_none_or(|b| b.digits < row.digits)
        {
            best = Some(row);
        }
    }
    best
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

    #[test]
    fn masking_shows_at_most_six_and_four() {
        assert_eq!(mask(b"4242424242424242"), "424242******4242");
        assert_eq!(mask(b"378282246310005"), "378282*****0005");
        assert_eq!(mask(b"123456789012"), "********9012");
    }
}
