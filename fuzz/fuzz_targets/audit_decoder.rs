//! The audit side's parsers of untrusted text: checkpoint lines, the audit public
//! key, erasure receipts (JSON) and custodian share files.
//!
//! Invariants: no panic; whatever parses prints back to text that parses to the
//! same value (checkpoint, public key, receipt, share file); verifying a parsed
//! checkpoint or receipt against a parsed key returns, without panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use panvault_audit::log::{Checkpoint, ErasureReceipt, PublicKey, verify_receipt};
use panvault_vault::service::shamir::ShareFile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    // The whole input as each format.
    let cp = text.parse::<Checkpoint>().ok();
    if let Some(cp) = &cp {
        let back: Checkpoint = cp
            .to_string()
            .parse()
            .expect("checkpoint text must parse back");
        assert_eq!(&back, cp);
    }
    let pk = text.parse::<PublicKey>().ok();
    if let Some(pk) = &pk {
        let back: PublicKey = pk
            .to_string()
            .parse()
            .expect("public key text must parse back");
        assert_eq!(&back, pk);
    }
    let receipt = ErasureReceipt::from_json(text).ok();
    if let Some(r) = &receipt {
        let json = r.to_json().expect("a parsed receipt must serialize");
        let back = ErasureReceipt::from_json(&json).expect("receipt JSON must parse back");
        assert_eq!(&back, r);
    }
    if let Ok(share) = ShareFile::parse(text) {
        let again = ShareFile::parse(&share.to_text()).expect("share text must parse back");
        assert_eq!(again.vault_id, share.vault_id);
        assert_eq!(again.generation, share.generation);
        assert_eq!(again.number, share.number);
        assert_eq!(again.total, share.total);
        assert_eq!(again.threshold, share.threshold);
        assert_eq!(*again.to_text(), *share.to_text());
        assert!(format!("{share:?}").contains("REDACTED"));
    }

    // A key on the first line and a checkpoint or receipt after it: the shape of
    // `panvault audit verify --key … --checkpoint …`.
    if let Some((first, rest)) = text.split_once('\n')
        && let Ok(key) = first.parse::<PublicKey>()
    {
        if let Ok(cp) = rest.parse::<Checkpoint>() {
            let _ = cp.verify(&key);
        }
        if let Ok(r) = ErasureReceipt::from_json(rest) {
            let _ = verify_receipt(&r, &key);
        }
    }
});
