//! The PAN discovery scanner: `scan_bytes` on any bytes (plain text, UTF-16, binary),
//! with and without joining numbers broken across lines, and `redact` on any text.
//!
//! Invariants: no panic; every match shows at most 6 + 4 digits of its number, its
//! length is 12–19 and its position lies inside the input; `redact` leaves no
//! card number that the scanner would report (in text without NUL bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use panvault_audit::scan::{redact, scan_bytes};

fuzz_target!(|data: &[u8]| {
    for join_lines in [false, true] {
        for m in scan_bytes(data, join_lines) {
            let shown = m.masked.bytes().filter(u8::is_ascii_digit).count();
            assert!(
                shown <= 10,
                "masked form shows {shown} digits: {:?}",
                m.masked
            );
            assert!((12..=19).contains(&m.length), "length {}", m.length);
            assert!(
                m.offset < u64::try_from(data.len()).unwrap(),
                "offset past the end"
            );
            assert!(m.line >= 1 && m.column >= 1);
        }
    }
    // Text with NUL bytes is left out: `scan_bytes` reads it as UTF-16, `redact`
    // (for file and member names, which hold no NUL) as UTF-8. (Long digit runs
    // are in again: `redact` now repeats until nothing is left, the fix for
    // artifacts/scanner/redact-long-run-leaves-card.)
    if let Ok(text) = std::str::from_utf8(data)
        && !text.contains('\0')
    {
        let r = redact(text);
        let left = scan_bytes(r.as_bytes(), false);
        assert!(left.is_empty(), "redact left a card number: {left:?}");
    }
});
