//! Token parsing: `Token::parse` and the token generators' output.
//!
//! Invariants: no panic; a parsed token is its input unchanged and is either
//! `tok_` + 22 alphanumerics or 12–19 digits that FAIL Luhn (a token never passes
//! for a card number); an opaque token from any 16 bytes parses; a `bin_last4`
//! token for a parsed card keeps its length, first 6 and last 4, and fails Luhn.
#![no_main]

use libfuzzer_sys::fuzz_target;
use panvault_audit::card;
use panvault_vault::{Pan, Token};

fn luhn_valid_card_shape(s: &str) -> bool {
    (12..=19).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_digit())
        && card::luhn_valid(s.as_bytes())
}

fuzz_target!(|data: &[u8]| {
    if let Some(random) = data.get(..16) {
        let mut r = [0u8; 16];
        r.copy_from_slice(random);
        let t = Token::opaque_from_random(r);
        assert_eq!(
            Token::parse(t.as_str()).as_ref(),
            Some(&t),
            "opaque token does not parse"
        );
    }

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(t) = Token::parse(text) {
        assert_eq!(t.as_str(), text);
        assert_eq!(t.to_string(), text);
        assert!(
            !luhn_valid_card_shape(t.as_str()),
            "a Luhn-valid card number parsed as a token"
        );
        let opaque = t
            .as_str()
            .strip_prefix("tok_")
            .is_some_and(|b| b.len() == 22 && b.bytes().all(|c| c.is_ascii_alphanumeric()));
        let digits = (12..=19).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit());
        assert!(opaque || digits, "token of neither form");
    }

    if let Ok(pan) = Pan::parse(text) {
        assert!(
            Token::parse(pan.expose_digits()).is_none(),
            "a card parsed as a token"
        );
        if let Ok(t) = Token::generate_bin_last4(pan.expose_digits()) {
            let s = t.as_str();
            let d = pan.expose_digits();
            assert_eq!(s.len(), d.len());
            assert_eq!(s.get(..6), d.get(..6));
            assert_eq!(s.get(s.len() - 4..), d.get(d.len() - 4..));
            assert!(
                !card::luhn_valid(s.as_bytes()),
                "bin_last4 token passes Luhn"
            );
            assert!(Token::parse(s).is_some(), "bin_last4 token does not parse");
        }
    }
});
