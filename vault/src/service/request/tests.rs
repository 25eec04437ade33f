use super::*;
use serde_json::json;

const TODAY: time::Date = time::macros::date!(2026 - 11 - 23);

#[test]
fn parses_full_request() {
    let v = json!({"card":{"number":"4242 4242 4242 4242","exp_month":12,"exp_year":2030,"name":"Jane Doe"},
        "subject":"cust_42","format":"bin_last4","metadata":{"order":"1234"}});
    let r = TokenizeRequest::from_json(&v, TODAY).unwrap();
    assert_eq!(r.format, TokenFormat::BinLast4);
    assert_eq!(r.subject.as_deref(), Some("cust_42"));
}

/// With a relay, `card.cvc` (and only that field, spelled so) is taken, checked
/// against the brand; every other verification-code field is still refused.
#[test]
fn takes_card_cvc_only_when_codes_are_held() {
    let card = |cvc: Value| json!({"card":{"number":"378282246310005","exp_month":12,"exp_year":2030,"cvc":cvc}});
    let r = TokenizeRequest::from_json_with(&card(json!("7391")), TODAY, true).unwrap();
    assert_eq!(r.cvc.as_ref().map(Cvc::expose), Some("7391"));
    assert!(!format!("{r:?}").contains("7391"));
    for (v, want) in [
        (card(json!("739")), CardError::InvalidCvc),
        (card(json!(7391)), CardError::InvalidCvc),
        (card(json!(null)), CardError::InvalidCvc),
        (
            json!({"card":{"number":"4242424242424242","exp_month":12,"exp_year":2030,"CVC":"123"}}),
            CardError::CvvNotAccepted,
        ),
        (
            json!({"card":{"number":"4242424242424242","exp_month":12,"exp_year":2030,"cvc":"123","cvv":"123"}}),
            CardError::CvvNotAccepted,
        ),
        (
            json!({"card":{"number":"4242424242424242","exp_month":12,"exp_year":2030},"cvc":"123"}),
            CardError::CvvNotAccepted,
        ),
        (
            json!({"card":{"number":"4242424242424242","exp_month":12,"exp_year":2030,"cvc":{"cvv":"1"}}}),
            CardError::CvvNotAccepted,
        ),
    ] {
        let e = TokenizeRequest::from_json_with(&v, TODAY, true).unwrap_err();
        assert!(matches!(&e, VaultError::Card(c) if *c == want), "{v}: {e}");
    }
    let e = TokenizeRequest::from_json_with(&card(json!("7391")), TODAY, false).unwrap_err();
    assert!(
        matches!(e, VaultError::Card(CardError::CvvNotAccepted)),
        "{e}"
    );
}

#[test]
fn refuses_cvv_anywhere() {
    for v in [
        json!({"card":{"number":"4242424242424242","exp_month":12,"exp_year":2030,"cvc":"123"}}),
        json!({"card":{"number":"4242424242424242","exp_month":12,"exp_year":2030},"CVV":"123"}),
        json!({"card":{"number":"4242424242424242","exp_month":12,"exp_year":2030},"metadata":{"x":{"security_code":"1"}}}),
    ] {
        let e = TokenizeRequest::from_json(&v, TODAY).unwrap_err();
        assert!(
            matches!(e, VaultError::Card(CardError::CvvNotAccepted)),
            "{e}"
        );
    }
}

#[test]
fn unknown_field_named_with_a_card_number_is_not_echoed() {
    // Found by fuzz/fuzz_targets/tokenize_request.rs.
    for v in [
        json!({"card":{"number":"4242424242424242","exp_month":12,"exp_year":2030},"x4111111111111111":1}),
        json!({"card":{"number":"4242424242424242","exp_month":12,"exp_year":2030,"5555 5555 5555 4444":1}}),
    ] {
        let e = TokenizeRequest::from_json(&v, TODAY)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown field") && !contains_card_number(&e),
            "{e}"
        );
    }
    let v = json!({"card":{"number":"4242424242424242","exp_month":12,"exp_year":2030},"colour":1});
    let e = TokenizeRequest::from_json(&v, TODAY)
        .unwrap_err()
        .to_string();
    assert!(e.contains("colour"), "{e}");
}

#[test]
fn refuses_this_card_in_metadata_subject_and_name_whatever_its_length() {
    // The fuzz finding: a 14-digit card (Visa prefix, no issued length) inside a
    // 16-digit run of metadata; `contains_card_number` does not know it as a card.
    let card = json!({"number":"42424242424242","exp_month":12,"exp_year":2030});
    let today = time::Date::from_calendar_date(2026, time::Month::June, 15).unwrap();
    for (extra, field) in [
        (json!({"metadata":{"n":"4242424242424241"}}), "metadata"),
        (
            json!({"metadata":{"a":[{"b":"42 4242-4242 4242 4x"}]}}),
            "metadata",
        ),
        (json!({"metadata":{"n":424242424242421_u64}}), "metadata"),
        (json!({"metadata":{"k42424242424242":1}}), "metadata"),
        (json!({"subject":"cust-42424242424242-9"}), "subject"),
    ] {
        let mut v = json!({"card": card.clone()});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        let e = TokenizeRequest::from_json(&v, today).unwrap_err();
        let text = e.to_string();
        assert!(text.contains(field), "{text}");
        assert!(!text.contains("42424242424242"), "{text}");
    }
    let mut named = card.clone();
    named["name"] = json!("J 42424242424242");
    let e = TokenizeRequest::from_json(&json!({"card": named}), today).unwrap_err();
    assert!(e.to_string().contains("card.name"));
    // Other digits are fine.
    let ok = json!({"card": card, "metadata":{"order":"4242424242","n":42}, "subject":"c-4242"});
    assert!(TokenizeRequest::from_json(&ok, today).is_ok());
    // An unknown key with a long digit run is not echoed.
    let odd = json!({"card":{"number":"4242424242424242","exp_month":12,"exp_year":2030},"x424242424242":1});
    let e = TokenizeRequest::from_json(&odd, today)
        .unwrap_err()
        .to_string();
    assert!(!e.contains("424242424242"), "{e}");
}

#[test]
fn refuses_card_numbers_in_metadata_and_subject() {
    let v = json!({"card":{"number":"4242424242424242","exp_month":12,"exp_year":2030},"metadata":{"note":"card 5555-5555-5555-4444"}});
    let e = TokenizeRequest::from_json(&v, TODAY)
        .unwrap_err()
        .to_string();
    assert!(e.contains("metadata") && !e.contains("5555"));
    let v = json!({"card":{"number":"4242424242424242","exp_month":12,"exp_year":2030},"subject":"4111111111111111"});
    assert!(TokenizeRequest::from_json(&v, TODAY).is_err());
    assert!(!contains_card_number("order 1234567890123 ok"));
}

/// `card` (16 ASCII digits) spelled in the ways the filter once let through.
fn bypass_spellings(card: &str) -> Vec<(&'static str, Value)> {
    let groups: Vec<&str> = (0..4).map(|k| &card[4 * k..4 * k + 4]).collect();
    let wide = |s: &str| -> String {
        s.chars()
            .map(|c| match c.to_digit(10) {
                Some(d) => char::from_u32(0xFF10 + d).unwrap(),
                None => c,
            })
            .collect()
    };
    let arabic: String = card
        .chars()
        .map(|c| char::from_u32(0x0660 + c.to_digit(10).unwrap()).unwrap())
        .collect();
    vec![
        ("dots", json!(groups.join("."))),
        ("double spaces", json!(groups.join("  "))),
        ("underscores", json!(groups.join("_"))),
        ("tabs", json!(groups.join("\t"))),
        ("slashes", json!(groups.join(" / "))),
        ("full-width", json!(wide(card))),
        ("full-width grouped", json!(wide(&groups.join(" ")))),
        ("arabic-indic", json!(arabic)),
        (
            "array of numbers",
            json!(
                groups
                    .iter()
                    .map(|g| g.parse::<u64>().unwrap())
                    .collect::<Vec<_>>()
            ),
        ),
        ("array of strings", json!(groups)),
        (
            "nested arrays",
            json!([[groups[0], groups[1]], [groups[2], groups[3]]]),
        ),
    ]
}

/// Another card than the one tokenized (`contains_card_number`) and the card
/// itself (`mentions`), in every free-text field: refused, the field named,
/// the value not echoed.
#[test]
fn refuses_card_numbers_spelled_with_other_separators_and_digits() {
    let own = "4242424242424242";
    for other in ["4111111111111111", own] {
        for (how, value) in bypass_spellings(other) {
            let text = value.as_str().map(str::to_owned);
            let mut cases: Vec<(Value, &str)> = vec![
                (json!({"metadata": {"note": value.clone()}}), "metadata"),
                (
                    json!({"metadata": {"a": {"b": [value.clone()]}}}),
                    "metadata",
                ),
            ];
            if let Some(t) = &text {
                cases.push((json!({"metadata": {t.clone(): 1}}), "metadata"));
                cases.push((json!({"subject": t}), "subject"));
                cases.push((json!({"card": {"name": t}}), "card.name"));
                assert!(contains_card_number(t) || other == own, "{how}");
            }
            for (extra, field) in cases {
                let mut v = json!({"card":{"number":own,"exp_month":12,"exp_year":2030}});
                for (k, x) in extra.as_object().unwrap() {
                    if k == "card" {
                        v["card"]["name"] = x["name"].clone();
                    } else {
                        v[k] = x.clone();
                    }
                }
                let Err(e) = TokenizeRequest::from_json(&v, TODAY) else {
                    panic!("{how} in {field} accepted");
                };
                let msg = e.to_string();
                // A name with a tab is refused as a name before it is searched.
                let control = text.as_deref().is_some_and(|t| t.contains('\t'));
                assert!(
                    msg.contains(field) || (control && field == "card.name"),
                    "{how} in {field}: wrong field"
                );
                assert!(
                    !contains_card_number(&msg) && !msg.contains(&other[..8]),
                    "{how} in {field}: value echoed"
                );
            }
        }
    }
    // A key and its value, adjacent in the stored JSON text.
    let v = json!({"card":{"number":own,"exp_month":12,"exp_year":2030},
        "metadata":{"5555":"5555 5555 4444"}});
    assert!(TokenizeRequest::from_json(&v, TODAY).is_err());
    // Digits that are no card still pass.
    let ok = json!({"card":{"number":own,"exp_month":12,"exp_year":2030},
        "subject":"cust_0042", "metadata":{"order":[1234, 5678], "when":"2026-11-23 12:00",
        "amount":"1.234,56", "ids":["12","34"]}});
    assert!(TokenizeRequest::from_json(&ok, TODAY).is_ok());
}

#[test]
fn the_filter_is_linear_on_long_digit_runs() {
    // 2 MB of digit runs in a batch used to cost seconds of a worker; each item
    // here is the largest metadata allowed.
    let zeros = "0".repeat(MAX_METADATA_BYTES - 64);
    let runs: Vec<&str> = std::iter::repeat_n("0", (MAX_METADATA_BYTES - 64) / 4).collect();
    for metadata in [json!({ "z": zeros }), json!({ "z": runs })] {
        let v = json!({"card":{"number":"4242424242424242","exp_month":12,"exp_year":2030},
            "metadata": metadata});
        assert!(TokenizeRequest::from_json(&v, TODAY).is_ok());
    }
    assert!(!json_contains_card_number(&json!(vec!["0"; 1 << 19])));
    assert!(!contains_card_number(&"0".repeat(2 << 20)));
}

#[test]
fn field_errors_name_the_field() {
    let v = json!({"card":{"number":4242424242424242u64,"exp_month":12,"exp_year":2030}});
    assert!(
        TokenizeRequest::from_json(&v, TODAY)
            .unwrap_err()
            .to_string()
            .contains("card.number")
    );
    let v = json!({"card":{"number":"4242424242424242","exp_year":2030}});
    assert!(
        TokenizeRequest::from_json(&v, TODAY)
            .unwrap_err()
            .to_string()
            .contains("card.exp_month")
    );
    let v =
        json!({"card":{"number":"4242424242424242","exp_month":12,"exp_year":2030},"colour":"red"});
    assert!(
        TokenizeRequest::from_json(&v, TODAY)
            .unwrap_err()
            .to_string()
            .contains("colour")
    );
}
