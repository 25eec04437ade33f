//! Certificate identity: `ClientIdentity::from_der` (x509-parser) on any DER bytes,
//! plus the compliance checks' certificate readers (`cert_facts`, `pem_certificates`).
//!
//! Invariants: no panic; an identity's fingerprint is the SHA-256 of the input in
//! lowercase hex; its common name and SANs are non-empty, printable, at most 1024
//! bytes and hold no card number (they go into audit events and logs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use panvault_audit::compliance::x509::{cert_facts, pem_certificates};
use panvault_vault::ClientIdentity;
use panvault_vault::service::request::contains_card_number;

fn check_name(s: &str) {
    assert!(!s.is_empty() && s.len() <= 1024);
    assert!(
        !s.chars().any(char::is_control),
        "control character in a name"
    );
    assert!(!contains_card_number(s), "card number in a name");
}

fuzz_target!(|data: &[u8]| {
    if let Some(id) = ClientIdentity::from_der(data) {
        let fp = id.fingerprint();
        assert_eq!(fp.len(), 64);
        assert!(fp.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        if let Some(cn) = id.common_name() {
            check_name(cn);
        }
        for s in id.uri_sans().iter().chain(id.dns_sans()) {
            check_name(s);
        }
        let _ = format!("{id:?}");
    }
    let _ = cert_facts(data);
    if let Ok(ders) = pem_certificates(data) {
        for der in ders {
            let _ = ClientIdentity::from_der(&der);
            let _ = cert_facts(&der);
        }
    }
});
