//! Tokens: what storefronts hold instead of card numbers.
//!
//! * `opaque` (default): `tok_` + 22 base62 characters encoding 128 random bits.
//! * `bin_last4`: as many digits as the card, keeping its first 6 and last 4, random
//!   digits between, and a check digit chosen so the token always *fails* Luhn: no
//!   token can pass for a card number. Only `len - 10` digits are random, so these
//!   tokens are unique but guessable; use them only where a format-preserving value is
//!   required.
//!
//! Tokens are never computed from the PAN.

use std::fmt;

use panvault_audit::card;

use super::{CryptoError, rng};

/// The token formats a caller may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TokenFormat {
    /// `tok_` + 22 base62 characters.
    #[default]
    Opaque,
    /// Same length as the card, first 6 and last 4 kept, fails Luhn.
    BinLast4,
}

impl TokenFormat {
    /// Parses `opaque` or `bin_last4`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "opaque" => Some(TokenFormat::Opaque),
            "bin_last4" => Some(TokenFormat::BinLast4),
            _ => None,
        }
    }

    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenFormat::Opaque => "opaque",
            TokenFormat::BinLast4 => "bin_last4",
        }
    }
}

const PREFIX: &str = "tok_";
const BODY_LEN: usize = 22;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A token, syntactically valid. It reveals nothing secret, so it prints as itself.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Token(String);

impl Token {
    /// An opaque token from 16 random bytes.
    pub fn opaque_from_random(random: [u8; 16]) -> Token {
        let mut v = u128::from_be_bytes(random);
        let mut body = [b'0'; BODY_LEN];
        for slot in body.iter_mut().rev() {
            let idx = usize::try_from(v % 62).unwrap_or(0);
            *slot = BASE62.get(idx).copied().unwrap_or(b'0');
            v /= 62;
        }
        let mut s = String::with_capacity(PREFIX.len() + BODY_LEN);
        s.push_str(PREFIX);
        s.extend(body.iter().map(|&b| char::from(b)));
        Token(s)
    }

    /// A fresh opaque token.
    pub fn generate_opaque() -> Result<Token, CryptoError> {
        let mut r = [0u8; 16];
        rng::fill(&mut r)?;
        Ok(Token::opaque_from_random(r))
    }

    /// A fresh `bin_last4` token for a card with these digits.
    pub fn generate_bin_last4(pan_digits: &str) -> Result<Token, CryptoError> {
        let d = pan_digits.as_bytes();
        let n = d.len();
        if !(12..=19).contains(&n) {
            return Err(CryptoError);
        }
        let mut out: Vec<u8> = Vec::with_capacity(n);
        out.extend_from_slice(d.get(..6).ok_or(CryptoError)?);
        let mut random = [0u8; 16];
        rng::fill(&mut random)?;
        for i in 0..n - 10 {
            // 16 random bytes give at least 9 middle digits' worth of entropy; draw
            // more for longer cards.
            let byte = match random.get(i) {
                Some(b) => *b,
                None => {
                    let mut b = [0u8; 1];
                    rng::fill(&mut b)?;
                    b[0]
                }
            };
            // 250 = 25 * 10: reject above it for uniform digits
            let digit = if byte < 250 {
                byte % 10
            } else {
                u8::try_from(rng::below(10)?).map_err(|_| CryptoError)?
            };
            out.push(b'0' + digit);
        }
        out.extend_from_slice(d.get(n - 4..).ok_or(CryptoError)?);
        if card::luhn_valid(&out) {
            // Changing one digit by one always changes the Luhn sum mod 10.
            let i = n - 5;
            if let Some(x) = out.get_mut(i) {
                *x = b'0' + ((*x - b'0' + 1) % 10);
            }
        }
        let s = String::from_utf8(out).map_err(|_| CryptoError)?;
        Ok(Token(s))
    }

    /// Parses a token string as a caller sends it; `None` if it has neither form.
    pub fn parse(s: &str) -> Option<Token> {
        if let Some(body) = s.strip_prefix(PREFIX) {
            if body.len() == BODY_LEN && body.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Some(Token(s.to_owned()));
            }
            return None;
        }
        let digits = s.as_bytes();
        if (12..=19).contains(&digits.len())
            && digits.iter().all(u8::is_ascii_digit)
            && !card::luhn_valid(digits)
        {
            return Some(Token(s.to_owned()));
        }
        None
    }

    /// The token text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn opaque_shape() {
        let t = Token::generate_opaque().unwrap();
        assert!(t.as_str().starts_with("tok_"));
        assert_eq!(t.as_str().len(), 26);
        assert!(Token::parse(t.as_str()).is_some());
        assert_eq!(
            Token::opaque_from_random([0; 16]).as_str(),
            "tok_0000000000000000000000"
        );
        assert_ne!(Token::generate_opaque().unwrap(), t);
        // 62^22 > 2^128: the encoding is injective on 128-bit values.
        assert_eq!(Token::opaque_from_random([0xff; 16]).as_str().len(), 26);
    }

    #[test]
    fn parse_rejects_card_numbers_and_junk() {
        assert!(Token::parse("4242424242424242").is_none()); // passes Luhn: a card, not a token
        assert!(Token::parse("tok_short").is_none());
        assert!(Token::parse("tok_000000000000000000000!").is_none());
        assert!(Token::parse("").is_none());
    }

    proptest! {
        #[test]
        fn bin_last4_fails_luhn_and_keeps_ends(len in 12usize..=19, seed in proptest::collection::vec(0u8..10, 19)) {
            let pan = card::testing::complete(&seed[..len - 1]).unwrap();
            let t = Token::generate_bin_last4(&pan).unwrap();
            let s = t.as_str();
            prop_assert_eq!(s.len(), len);
            prop_assert!(!card::luhn_valid(s.as_bytes()));
            prop_assert_eq!(&s[..6], &pan[..6]);
            prop_assert_eq!(&s[len - 4..], &pan[len - 4..]);
            prop_assert!(Token::parse(s).is_some());
        }
    }
}
