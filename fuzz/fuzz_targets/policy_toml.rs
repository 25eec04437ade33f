//! Policy files: `Policy::parse` on any UTF-8 text.
//!
//! Invariants: no panic; an error names at least one problem and prints; a parsed
//! policy has an id, hashes its exact text and parses again from the same text
//! to the same controls.
#![no_main]

use libfuzzer_sys::fuzz_target;
use panvault_audit::compliance::Policy;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Policy::parse(text, "fuzz.toml") {
        Ok(p) => {
            assert_eq!(p.sha256, panvault_audit::log::sha256_hex(text.as_bytes()));
            assert_eq!(p.source, "fuzz.toml");
            let again = Policy::parse(text, "fuzz.toml").expect("same text must parse again");
            assert_eq!(again, p);
            let _ = format!("{p:?}");
        }
        Err(e) => {
            assert!(!e.problems.is_empty(), "an error without problems");
            let _ = e.to_string();
        }
    }
});
