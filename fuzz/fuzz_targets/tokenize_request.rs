//! Request bodies: any bytes through `serde_json`, then `TokenizeRequest::from_json`,
//! as the HTTP layer does for `POST /v1/tokens` (and each item of a batch).
//!
//! Invariants: no panic; an error's `Display` (it goes back to the caller and into
//! logs) never holds a card number; an accepted request's `Debug` never holds its
//! card number, and its subject, name and metadata hold no card number.
#![no_main]

use libfuzzer_sys::fuzz_target;
use panvault_vault::TokenizeRequest;
use panvault_vault::service::request::{contains_card_number, contains_cvv};

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let today = time::Date::from_calendar_date(2026, time::Month::June, 15).unwrap();
    let items: Vec<&serde_json::Value> = match &v {
        // A batch body: each item is parsed on its own.
        serde_json::Value::Object(o) if o.contains_key("items") => o
            .get("items")
            .and_then(serde_json::Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        other => vec![other],
    };
    for item in items {
        match TokenizeRequest::from_json(item, today) {
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    !contains_card_number(&msg),
                    "error message holds a card number: {msg:?}"
                );
            }
            Ok(req) => {
                assert!(!contains_cvv(item), "CVV accepted");
                let digits = req.card.pan.expose_digits();
                let dbg = format!("{req:?}");
                assert!(
                    !dbg.contains(digits),
                    "Debug of a request prints its card number"
                );
                if let Some(s) = &req.subject {
                    assert!(!contains_card_number(s));
                }
                if let Some(n) = &req.card.name {
                    assert!(!contains_card_number(n.expose()));
                }
                if let Some(m) = &req.metadata {
                    let text = serde_json::to_string(m).unwrap();
                    assert!(!contains_card_number(&text));
                    assert!(text.len() <= panvault_vault::service::request::MAX_METADATA_BYTES);
                }
                if let Some(t) = req.ttl_seconds {
                    assert!(t > 0);
                }
            }
        }
    }
});
