use proptest::prelude::*;
use serde_json::Value;

use super::*;

const VISA: &str = "4111111111111111";

fn card<'a>(name: Option<&'a str>, cvc: Option<&'a str>) -> CardValues<'a> {
    CardValues {
        number: VISA,
        exp_month: 3,
        exp_year: 2031,
        cvc,
        name,
    }
}

const ISSUE_BODY: &str = r#"{"amount":1999,"card":{"number":"{{card.number}}","exp_month":"{{card.exp_month}}","exp_year":"{{card.exp_year}}","cvc":"{{card.cvc}}"}}"#;

#[test]
fn the_issue_example_resolves() {
    let out = resolve(BodyKind::Json, ISSUE_BODY, &card(None, Some("737"))).unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["card"]["number"], VISA);
    assert_eq!(v["card"]["exp_month"], "03");
    assert_eq!(v["card"]["exp_year"], "2031");
    assert_eq!(v["card"]["cvc"], "737");
    assert_eq!(v["amount"], 1999);
}

#[test]
fn placeholders_are_listed() {
    let p = placeholders(ISSUE_BODY).unwrap();
    assert!(p.contains(&Placeholder::Cvc));
    assert_eq!(p.len(), 4);
    assert_eq!(placeholders("no placeholders").unwrap(), []);
    assert_eq!(
        placeholders("{{ card.name }}").unwrap(),
        [Placeholder::Name]
    );
}

#[test]
fn the_cvc_must_be_held() {
    let e = resolve(BodyKind::Json, ISSUE_BODY, &card(None, None)).unwrap_err();
    assert!(matches!(e, RelayError::CvcUnavailable), "{e}");
}

#[test]
fn unknown_placeholders_are_refused_without_echoing_digits() {
    for t in [
        r#"{"a":"{{card.pin}}"}"#,
        r#"{"a":"{{4111111111111111}}"}"#,
        r#"{"a":"{{card.number"}"#,
    ] {
        let e = resolve(BodyKind::Json, t, &card(None, None)).unwrap_err();
        assert!(
            matches!(e.code(), "unknown_placeholder" | "bad_template"),
            "{t}: {e}"
        );
        assert!(!e.to_string().contains("4111"), "{e}");
    }
}

#[test]
fn placeholders_only_inside_json_string_values() {
    for t in [
        r#"{"amount":{{card.exp_month}}}"#,
        r#"{"{{card.number}}":"x"}"#,
        r#"{"a":"x"}{{card.number}}"#,
        r#"not json "{{card.number}}""#,
    ] {
        let e = resolve(BodyKind::Json, t, &card(None, None)).unwrap_err();
        assert_eq!(e.code(), "bad_template", "{t}: {e}");
    }
    // In arrays and nested objects, and after an escaped quote, it is a value.
    let t = r#"{"list":["{{card.number}}"],"o":{"k":"a\"b {{card.exp_year}}"}}"#;
    let v: Value =
        serde_json::from_str(&resolve(BodyKind::Json, t, &card(None, None)).unwrap()).unwrap();
    assert_eq!(v["list"][0], VISA);
    assert_eq!(v["o"]["k"], "a\"b 2031");
}

#[test]
fn content_types() {
    assert_eq!(
        BodyKind::of(Some("application/json; charset=utf-8"), "{}").unwrap(),
        BodyKind::Json
    );
    assert_eq!(
        BodyKind::of(Some("application/vnd.psp+json"), "{}").unwrap(),
        BodyKind::Json
    );
    assert_eq!(
        BodyKind::of(Some("Application/X-WWW-Form-Urlencoded"), "a=1").unwrap(),
        BodyKind::Form
    );
    assert_eq!(BodyKind::of(None, "").unwrap(), BodyKind::Empty);
    for (ct, body) in [
        (Some("text/plain"), "x"),
        (Some("application/xml"), "<a/>"),
        (None, "x"),
    ] {
        let e = BodyKind::of(ct, body).unwrap_err();
        assert_eq!(e.code(), "unsupported_content_type");
    }
}

#[test]
fn form_values_are_percent_encoded() {
    let out = resolve(
        BodyKind::Form,
        "amount=1999&name={{card.name}}&number={{card.number}}",
        &card(Some("A&B=C+D %"), None),
    )
    .unwrap();
    assert_eq!(
        &*out,
        &format!("amount=1999&name=A%26B%3DC%2BD%20%25&number={VISA}")
    );
}

/// A form body split into its fields (names and values as written).
fn form_fields(s: &str) -> Vec<(&str, &str)> {
    s.split('&')
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        .collect()
}

/// Percent-decoding, for the round trip.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

proptest! {
    /// Whatever the name holds, the JSON body keeps its shape: the same keys, and
    /// the value reads back exactly.
    #[test]
    fn json_substitution_never_escapes_its_string(name in "\\PC{0,40}|[\"\\\\\\x00-\\x1f\u{2028}{}:,]{0,20}") {
        let t = r#"{"holder":"{{card.name}}","amount":1999,"tail":"end"}"#;
        let out = resolve(BodyKind::Json, t, &card(Some(&name), None)).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        let obj = v.as_object().unwrap();
        prop_assert_eq!(obj.len(), 3);
        prop_assert_eq!(obj["holder"].as_str().unwrap(), name.as_str());
        prop_assert_eq!(&obj["amount"], &Value::from(1999));
        prop_assert_eq!(obj["tail"].as_str().unwrap(), "end");
    }

    /// Whatever the name holds, the form body keeps its fields, and the value
    /// reads back exactly.
    #[test]
    fn form_substitution_never_adds_a_field(name in "\\PC{0,40}|[&=+%;\\x00-\\x1f ]{0,20}") {
        let t = "amount=1999&holder={{card.name}}&tail=end";
        let out = resolve(BodyKind::Form, t, &card(Some(&name), None)).unwrap();
        let fields = form_fields(&out);
        prop_assert_eq!(fields.len(), 3);
        prop_assert_eq!(fields[0], ("amount", "1999"));
        prop_assert_eq!(fields[1].0, "holder");
        prop_assert_eq!(percent_decode(fields[1].1), name.as_bytes().to_vec());
        prop_assert_eq!(fields[2], ("tail", "end"));
    }

    /// A placeholder outside a string value is refused wherever it stands.
    #[test]
    fn placeholders_outside_strings_are_refused(prefix in "[ \\[\\]{},:0-9]{0,8}") {
        let t = format!(r#"{{"a":{prefix}{{{{card.number}}}}}}"#);
        prop_assert!(resolve(BodyKind::Json, &t, &card(None, None)).is_err());
    }
}
