//! Card numbers (PANs), expiry dates and cardholder names.
//!
//! A [`Pan`] is only ever built by [`Pan::parse`], which checks length and Luhn and
//! finds the brand. It is zeroized on drop, prints masked (first 6 / last 4 at
//! most), and implements no `Serialize`: the only way to its digits is
//! [`Pan::expose_digits`], used by the envelope and the detokenize response.

use std::fmt;

use panvault_audit::card::{self, Brand};
use zeroize::Zeroizing;

/// Why a card was refused. Messages never contain the number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CardError {
    /// The number holds a character other than digits and single spaces or dashes
    /// between digit groups.
    #[error("card number may contain only digits, with single spaces or dashes between groups")]
    InvalidCharacters,
    /// The number has fewer than 12 or more than 19 digits.
    #[error("card number must have 12 to 19 digits, got {0}")]
    InvalidLength(usize),
    /// The Luhn check digit is wrong.
    #[error("card number fails the Luhn check")]
    LuhnFailed,
    /// The expiry month is not 1–12.
    #[error("exp_month must be 1 to 12")]
    InvalidExpiryMonth,
    /// The expiry year is not a plausible four-digit year.
    #[error("exp_year must be a four-digit year no more than 50 years ahead")]
    InvalidExpiryYear,
    /// The card expired before the current month.
    #[error("card expired")]
    Expired,
    /// The request carried a card verification code, which is never stored (PCI DSS 3.3.1).
    #[error("card verification codes (CVV/CVC) are not accepted and never stored (PCI DSS 3.3.1)")]
    CvvNotAccepted,
    /// The security code is not 3 digits (4 for American Express), or was given
    /// where the vault holds none.
    #[error("card.cvc must be a string of 3 digits (4 for American Express)")]
    InvalidCvc,
    /// The cardholder name is empty, too long (over 128 characters) or has control characters.
    #[error("cardholder name must be 1 to 128 printable characters")]
    InvalidName,
}

/// A validated primary account number.
pub struct Pan {
    digits: Zeroizing<String>,
    brand: Brand,
}

impl Pan {
    /// Parses a card number: 12–19 digits, optionally grouped by single spaces or
    /// dashes, passing Luhn. An unknown IIN gives brand `unknown`, not an error.
    pub fn parse(input: &str) -> Result<Pan, CardError> {
        let input = input.trim();
        let mut digits = Zeroizing::new(String::with_capacity(19));
        let mut prev_sep = true; // a separator may not lead
        for c in input.chars() {
            match c {
                '0'..='9' => {
                    if digits.len() >= 19 {
                        // keep counting without storing more than we need
                        return Err(CardError::InvalidLength(count_digits(input)));
                    }
                    digits.push(c);
                    prev_sep = false;
                }
                ' ' | '-' if !prev_sep => prev_sep = true,
                _ => return Err(CardError::InvalidCharacters),
            }
        }
        if prev_sep && !digits.is_empty() {
            return Err(CardError::InvalidCharacters);
        }
        if digits.len() < 12 {
            return Err(CardError::InvalidLength(digits.len()));
        }
        if !card::luhn_valid(digits.as_bytes()) {
            return Err(CardError::LuhnFailed);
        }
        let brand = card::brand_of(digits.as_bytes());
        Ok(Pan { digits, brand })
    }

    /// The network found from the IIN.
    pub fn brand(&self) -> Brand {
        self.brand
    }

    /// The first six digits (the BIN), stored in the clear.
    pub fn bin(&self) -> &str {
        self.digits.get(..6).unwrap_or_default()
    }

    /// The last four digits, stored in the clear.
    pub fn last4(&self) -> &str {
        let n = self.digits.len();
        self.digits.get(n.saturating_sub(4)..).unwrap_or_default()
    }

    /// Number of digits.
    pub fn len(&self) -> usize {
        self.digits.len()
    }

    /// Always false: a parsed PAN has at least 12 digits.
    pub fn is_empty(&self) -> bool {
        self.digits.is_empty()
    }

    /// The number masked: at most first 6 and last 4.
    pub fn masked(&self) -> String {
        card::mask(self.digits.as_bytes())
    }

    /// The full digits. Used only to encrypt, fingerprint, and answer detokenize.
    pub fn expose_digits(&self) -> &str {
        &self.digits
    }
}

fn count_digits(s: &str) -> usize {
    s.bytes().filter(u8::is_ascii_digit).count()
}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pan({}, {})", self.masked(), self.brand)
    }
}

impl fmt::Display for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// A card's expiry month.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Expiry {
    year: u16,
    month: u8,
}

impl Expiry {
    /// Validates month 1–12 and a year from 2000 to 50 years after `today`; a card
    /// whose expiry month ended before `today`'s month is refused.
    pub fn new(month: i64, year: i64, today: time::Date) -> Result<Expiry, CardError> {
        let month = u8::try_from(month)
            .ok()
            .filter(|m| (1..=12).contains(m))
            .ok_or(CardError::InvalidExpiryMonth)?;
        let now_year = i64::from(today.year());
        if !(2000..=now_year + 50).contains(&year) {
            return Err(CardError::InvalidExpiryYear);
        }
        let year = u16::try_from(year).map_err(|_| CardError::InvalidExpiryYear)?;
        let exp = Expiry { year, month };
        let now = Expiry {
            year: u16::try_from(today.year()).map_err(|_| CardError::InvalidExpiryYear)?,
            month: u8::from(today.month()),
        };
        if exp < now {
            return Err(CardError::Expired);
        }
        Ok(exp)
    }

    /// Rebuilds a stored expiry without the "not expired" check.
    pub fn from_stored(month: i64, year: i64) -> Option<Expiry> {
        let month = u8::try_from(month).ok().filter(|m| (1..=12).contains(m))?;
        let year = u16::try_from(year).ok()?;
        Some(Expiry { year, month })
    }

    /// Month, 1–12.
    pub fn month(&self) -> u8 {
        self.month
    }

    /// Four-digit year.
    pub fn year(&self) -> u16 {
        self.year
    }
}

/// A cardholder name: personal data, so it travels inside the ciphertext.
pub struct CardholderName(Zeroizing<String>);

impl CardholderName {
    /// 1–128 characters, no control characters.
    pub fn parse(name: &str) -> Result<Self, CardError> {
        let name = name.trim();
        let n = name.chars().count();
        if n == 0 || n > 128 || name.chars().any(char::is_control) {
            return Err(CardError::InvalidName);
        }
        Ok(CardholderName(Zeroizing::new(name.to_owned())))
    }

    /// The name.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CardholderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CardholderName([REDACTED])")
    }
}

/// Everything about a card that is sealed: the number and the cardholder name.
#[derive(Debug)]
pub struct CardSecret {
    /// The card number.
    pub pan: Pan,
    /// The cardholder name, if given.
    pub name: Option<CardholderName>,
}

impl CardSecret {
    /// Plaintext encoding sealed in a record: version 1, PAN length, PAN, name.
    pub(crate) fn encode(&self) -> Zeroizing<Vec<u8>> {
        let pan = self.pan.expose_digits().as_bytes();
        let name = self.name.as_ref().map_or("", |n| n.expose()).as_bytes();
        let mut out = Zeroizing::new(Vec::with_capacity(2 + pan.len() + name.len()));
        out.push(1u8);
        out.push(u8::try_from(pan.len()).unwrap_or(0));
        out.extend_from_slice(pan);
        out.extend_from_slice(name);
        out
    }

    /// Inverse of [`CardSecret::encode`].
    pub(crate) fn decode(bytes: &[u8]) -> Option<CardSecret> {
        let (&version, rest) = bytes.split_first()?;
        let (&len, rest) = rest.split_first()?;
        if version != 1 {
            return None;
        }
        let (pan, name) = rest.split_at_checked(usize::from(len))?;
        let pan = Pan::parse(std::str::from_utf8(pan).ok()?).ok()?;
        let name = if name.is_empty() {
            None
        } else {
            Some(CardholderName::parse(std::str::from_utf8(name).ok()?).ok()?)
        };
        Some(CardSecret { pan, name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TODAY: time::Date = time::macros::date!(2026 - 11 - 23);

    #[test]
    fn networks_published_test_numbers() {
        let cases = [
            ("4242424242424242", Brand::Visa),
            ("4000 0566 5566 5556", Brand::Visa),
            ("4111-1111-1111-1111", Brand::Visa),
            ("5555555555554444", Brand::Mastercard),
            ("2223003122003222", Brand::Mastercard),
            ("5105105105105100", Brand::Mastercard),
            ("378282246310005", Brand::Amex),
            ("3714 496353 98431", Brand::Amex),
            ("6011111111111117", Brand::Discover),
            ("6011000990139424", Brand::Discover),
            ("6445644564456445", Brand::Discover),
            ("3566002020360505", Brand::Jcb),
            ("3056930009020004", Brand::Diners),
            ("36227206271667", Brand::Diners),
            ("6200000000000005", Brand::Unionpay),
            ("6759649826438453", Brand::Maestro),
            ("2200000000000004", Brand::Mir),
            ("4917610000000000003", Brand::Visa),
        ];
        for (n, b) in cases {
            let pan = Pan::parse(n).unwrap_or_else(|e| panic!("{}: {e}", card::mask(n.as_bytes())));
            assert_eq!(pan.brand(), b);
        }
        // An unknown IIN is not an error.
        assert_eq!(
            Pan::parse("9999999999999995").unwrap().brand(),
            Brand::Unknown
        );
    }

    #[test]
    fn rejections() {
        assert_eq!(
            Pan::parse("4242a24242424242").unwrap_err(),
            CardError::InvalidCharacters
        );
        assert_eq!(
            Pan::parse("42424242424").unwrap_err(),
            CardError::InvalidLength(11)
        );
        assert_eq!(
            Pan::parse("42424242424242424242").unwrap_err(),
            CardError::InvalidLength(20)
        );
        assert_eq!(
            Pan::parse("4242424242424241").unwrap_err(),
            CardError::LuhnFailed
        );
        assert_eq!(
            Pan::parse("4242  4242 4242 4242").unwrap_err(),
            CardError::InvalidCharacters
        );
        assert_eq!(
            Pan::parse("-4242424242424242").unwrap_err(),
            CardError::InvalidCharacters
        );
        assert_eq!(
            Pan::parse("4242424242424242-").unwrap_err(),
            CardError::InvalidCharacters
        );
        assert_eq!(Pan::parse("").unwrap_err(), CardError::InvalidLength(0));
        assert_eq!(
            Pan::parse("４２４２424242424242").unwrap_err(),
            CardError::InvalidCharacters
        );
    }

    #[test]
    fn errors_never_echo_the_number() {
        for bad in [
            "4242424242424241",
            "4242a24242424242",
            "42424242424242424242",
        ] {
            let msg = Pan::parse(bad).unwrap_err().to_string();
            assert!(!msg.contains("4242"), "{msg}");
        }
    }

    #[test]
    fn masked_display_and_parts() {
        let p = Pan::parse("4242 4242 4242 4242").unwrap();
        assert_eq!(format!("{p}"), "424242******4242");
        assert_eq!(format!("{p:?}"), "Pan(424242******4242, visa)");
        assert_eq!(p.bin(), "424242");
        assert_eq!(p.last4(), "4242");
    }

    #[test]
    fn expiry_rules() {
        assert!(Expiry::new(11, 2026, TODAY).is_ok());
        assert_eq!(
            Expiry::new(10, 2026, TODAY).unwrap_err(),
            CardError::Expired
        );
        assert_eq!(
            Expiry::new(13, 2030, TODAY).unwrap_err(),
            CardError::InvalidExpiryMonth
        );
        assert_eq!(
            Expiry::new(0, 2030, TODAY).unwrap_err(),
            CardError::InvalidExpiryMonth
        );
        assert_eq!(
            Expiry::new(1, 30, TODAY).unwrap_err(),
            CardError::InvalidExpiryYear
        );
        assert_eq!(
            Expiry::new(1, 2090, TODAY).unwrap_err(),
            CardError::InvalidExpiryYear
        );
    }

    #[test]
    fn secret_round_trip() {
        let s = CardSecret {
            pan: Pan::parse("378282246310005").unwrap(),
            name: Some(CardholderName::parse("Jane Doe").unwrap()),
        };
        let enc = s.encode();
        let back = CardSecret::decode(&enc).unwrap();
        assert_eq!(back.pan.expose_digits(), "378282246310005");
        assert_eq!(back.name.unwrap().expose(), "Jane Doe");
        assert!(!format!("{s:?}").contains("Jane"));
        assert!(!format!("{s:?}").contains("378282246310005"));
    }
}
