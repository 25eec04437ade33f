//! Public test card numbers (never real cards).

pub const VISA: &str = "4242424242424242";
pub const VISA_SPACED: &str = "4242 4242 4242 4242";
pub const MASTERCARD: &str = "5555555555554444";
pub const AMEX: &str = "378282246310005";
pub const VISA_DEBIT: &str = "4000056655665556";
pub const DISCOVER: &str = "6011111111111117";

/// A random Luhn-valid 16-digit test number starting with 4, so that tests do
/// not see each other's cards.
pub fn fresh() -> String {
    let mut b = [0u8; 8];
    panvault_vault::core::rng::fill(&mut b).unwrap();
    panvault_audit::card::testing::card(u64::from_le_bytes(b))
}

/// `4242…4242` style: first 6 and last 4 only, for assertion messages.
pub fn masked(n: &str) -> String {
    let d: String = n.chars().filter(char::is_ascii_digit).collect();
    format!("{}…{}", &d[..6], &d[d.len() - 4..])
}
