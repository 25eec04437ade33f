//! Card-number parsing: `Pan::parse`, `Expiry::new` and the Luhn / IIN / mask helpers.
//!
//! Invariants: no panic; a parsed `Pan` has 12–19 digits and passes Luhn; its masked
//! form, `Debug` and `Display` never contain the full number and show at most 6 + 4
//! digits (4 below 13 digits); `mask` keeps the length; an `Expiry` is a real month.
#![no_main]

use libfuzzer_sys::fuzz_target;
use panvault_audit::card;
use panvault_vault::{Expiry, Pan};

fn shown_digits(s: &str) -> usize {
    s.bytes().filter(u8::is_ascii_digit).count()
}

fuzz_target!(|data: &[u8]| {
    // The helpers take raw bytes: any bytes, not only digits.
    let _ = card::luhn_valid(data);
    let _ = card::brand_of(data);
    let _ = card::issued_brand(data);
    let _ = card::lookup_iin(data);
    let _ = card::luhn_check_digit(data);
    let _ = card::is_test_card(data);
    let m = card::mask(data);
    assert_eq!(m.chars().count(), data.len(), "mask changed the length");
    if data.iter().all(u8::is_ascii_digit) {
        let limit = if data.len() >= 13 { 10 } else { 4 };
        assert!(shown_digits(&m) <= limit, "mask shows too many digits");
    }

    // Expiry from the first 16 bytes as two integers, against a fixed today and a
    // today picked by the input.
    if let (Some(a), Some(b)) = (data.get(0..8), data.get(8..16)) {
        let month = i64::from_le_bytes(a.try_into().unwrap_or_default());
        let year = i64::from_le_bytes(b.try_into().unwrap_or_default());
        let today = time::Date::from_calendar_date(2026, time::Month::June, 15).unwrap();
        let day = data.get(16).copied().map_or(0, i32::from);
        let other = time::Date::from_julian_day(time::Date::MAX.to_julian_day() - day * 10_000)
            .unwrap_or(today);
        for d in [today, other, time::Date::MIN, time::Date::MAX] {
            if let Ok(e) = Expiry::new(month, year, d) {
                assert!((1..=12).contains(&e.month()));
                assert!(i64::from(e.year()) == year && i64::from(e.month()) == month);
                if let Ok(y) = u16::try_from(d.year()) {
                    assert!(
                        (e.year(), e.month()) >= (y, u8::from(d.month())),
                        "expired card accepted"
                    );
                }
            }
        }
        let _ = Expiry::from_stored(month, year);
    }

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(pan) = Pan::parse(text) {
        let digits = pan.expose_digits().to_owned();
        assert!((12..=19).contains(&digits.len()), "bad length accepted");
        assert!(digits.bytes().all(|b| b.is_ascii_digit()));
        assert!(card::luhn_valid(digits.as_bytes()), "Luhn failure accepted");
        assert_eq!(pan.len(), digits.len());
        assert!(!pan.is_empty());
        assert!(digits.starts_with(pan.bin()) && pan.bin().len() == 6);
        assert!(digits.ends_with(pan.last4()) && pan.last4().len() == 4);
        assert_eq!(pan.brand(), card::brand_of(digits.as_bytes()));
        let limit = if digits.len() >= 13 { 10 } else { 4 };
        for shown in [pan.masked(), format!("{pan:?}"), format!("{pan}")] {
            assert!(!shown.contains(digits.as_str()), "full number printed");
            assert!(shown_digits(&shown) <= limit, "too many digits printed");
        }
        // The digits alone parse to the same card.
        let again = Pan::parse(&digits).expect("canonical digits must parse");
        assert_eq!(again.expose_digits(), digits);
    }
});
