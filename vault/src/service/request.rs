//! Requests and responses of the vault's operations, and the parsing of a tokenize
//! request from JSON (shared by the HTTP API and the library's callers).

use serde::Serialize;
use serde_json::{Map, Value};

use crate::core::pan::{CardError, CardSecret, CardholderName, Expiry, Pan};
use crate::core::token::TokenFormat;
use crate::error::VaultError;

/// Field names that carry a card verification code; a request holding any is refused.
pub const CVV_FIELDS: &[&str] = &[
    "cvv",
    "cvc",
    "cvv2",
    "cvc2",
    "cid",
    "csc",
    "security_code",
    "card_security_code",
    "verification_value",
];

/// Most bytes of metadata (as JSON).
pub const MAX_METADATA_BYTES: usize = 4096;

/// A card to tokenize.
#[derive(Debug)]
pub struct TokenizeRequest {
    /// Number and cardholder name (sealed).
    pub card: CardSecret,
    /// Expiry month (stored in the clear).
    pub expiry: Expiry,
    /// The shop's customer id, for erasure.
    pub subject: Option<String>,
    /// Token format.
    pub format: TokenFormat,
    /// Free-form metadata (a JSON object, no card numbers).
    pub metadata: Option<Map<String, Value>>,
    /// Return a new token even if the card is already stored in this tenant.
    pub force_new: bool,
    /// Token lifetime in seconds (then 404, and purged).
    pub ttl_seconds: Option<i64>,
    /// Absolute expiry (unix seconds); the earlier of this and `ttl_seconds` wins.
    pub expires_at: Option<i64>,
}

impl TokenizeRequest {
    /// A request for `number` expiring `month`/`year`, all else default.
    pub fn new(number: &str, month: i64, year: i64, today: time::Date) -> Result<Self, VaultError> {
        Ok(TokenizeRequest {
            card: CardSecret {
                pan: Pan::parse(number)?,
                name: None,
            },
            expiry: Expiry::new(month, year, today)?,
            subject: None,
            format: TokenFormat::Opaque,
            metadata: None,
            force_new: false,
            ttl_seconds: None,
            expires_at: None,
        })
    }

    /// Parses the JSON body of `POST /v1/tokens` (one item of a batch).
    ///
    /// Shape: `{"card":{"number","exp_month","exp_year","name"?},"subject"?,"format"?,
    /// "metadata"?,"force_new"?,"ttl_seconds"?,"expires_at"?}`. A CVV anywhere in the
    /// request is refused; unknown fields are refused.
    pub fn from_json(v: &Value, today: time::Date) -> Result<Self, VaultError> {
        if contains_cvv(v) {
            return Err(CardError::CvvNotAccepted.into());
        }
        let obj = v
            .as_object()
            .ok_or_else(|| VaultError::invalid("$", "expected a JSON object"))?;
        for k in obj.keys() {
            if !matches!(
                k.as_str(),
                "card"
                    | "subject"
                    | "format"
                    | "metadata"
                    | "force_new"
                    | "ttl_seconds"
                    | "expires_at"
            ) {
                return Err(VaultError::invalid(field_name(k), "unknown field"));
            }
        }
        let card = obj
            .get("card")
            .and_then(Value::as_object)
            .ok_or_else(|| VaultError::invalid("card", "required object"))?;
        for k in card.keys() {
            if !matches!(k.as_str(), "number" | "exp_month" | "exp_year" | "name") {
                return Err(VaultError::invalid(
                    format!("card.{}", field_name(k)),
                    "unknown field",
                ));
            }
        }
        let number = match card.get("number") {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(VaultError::invalid("card.number", "must be a string")),
            None => return Err(VaultError::invalid("card.number", "required")),
        };
        let pan = Pan::parse(number)?;
        let month = card
            .get("exp_month")
            .and_then(Value::as_i64)
            .ok_or_else(|| VaultError::invalid("card.exp_month", "required integer"))?;
        let year = card
            .get("exp_year")
            .and_then(Value::as_i64)
            .ok_or_else(|| VaultError::invalid("card.exp_year", "required integer"))?;
        let expiry = Expiry::new(month, year, today)?;
        let name = match card.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                let n = CardholderName::parse(s)?;
                if contains_card_number(n.expose()) {
                    return Err(VaultError::invalid(
                        "card.name",
                        "must not contain a card number",
                    ));
                }
                Some(n)
            }
            Some(_) => return Err(VaultError::invalid("card.name", "must be a string")),
        };
        let subject = match obj.get("subject") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(validate_subject(s)?),
            Some(_) => return Err(VaultError::invalid("subject", "must be a string")),
        };
        let format = match obj.get("format") {
            None | Some(Value::Null) => TokenFormat::Opaque,
            Some(Value::String(s)) => TokenFormat::from_name(s).ok_or_else(|| {
                VaultError::invalid("format", "must be \"opaque\" or \"bin_last4\"")
            })?,
            Some(_) => return Err(VaultError::invalid("format", "must be a string")),
        };
        let metadata = match obj.get("metadata") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(validate_metadata(m)?),
            Some(_) => return Err(VaultError::invalid("metadata", "must be an object")),
        };
        let force_new = match obj.get("force_new") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(VaultError::invalid("force_new", "must be a boolean")),
        };
        let ttl_seconds = match obj.get("ttl_seconds") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_i64()
                    .filter(|t| *t > 0 && *t <= 100 * 365 * 86_400)
                    .ok_or_else(|| {
                        VaultError::invalid("ttl_seconds", "must be a positive integer (seconds)")
                    })?,
            ),
        };
        let expires_at = match obj.get("expires_at") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| VaultError::invalid("expires_at", "must be an RFC 3339 time"))?
                    .unix_timestamp(),
            ),
            Some(_) => {
                return Err(VaultError::invalid(
                    "expires_at",
                    "must be an RFC 3339 string",
                ));
            }
        };
        // Fields stored in the clear must not carry this very card, however spelled
        // and whatever its length (`contains_card_number` only knows issued lengths;
        // a 14-digit Visa-prefixed number inside a 16-digit run was found by the
        // `tokenize_request` fuzz target).
        let digits = pan.expose_digits();
        if subject.as_deref().is_some_and(|s| mentions(s, digits)) {
            return Err(VaultError::invalid(
                "subject",
                "must not contain the card number",
            ));
        }
        if name.as_ref().is_some_and(|n| mentions(n.expose(), digits)) {
            return Err(VaultError::invalid(
                "card.name",
                "must not contain the card number",
            ));
        }
        if metadata.as_ref().is_some_and(|m| {
            m.iter()
                .any(|(k, v)| mentions(k, digits) || json_mentions(v, digits))
        }) {
            return Err(VaultError::invalid(
                "metadata",
                "must not contain the card number",
            ));
        }
        Ok(TokenizeRequest {
            card: CardSecret { pan, name },
            expiry,
            subject,
            format,
            metadata,
            force_new,
            ttl_seconds,
            expires_at,
        })
    }
}

/// A caller's object key as named in an error: errors never hold a card number, so
/// a key that contains one is not echoed (found by the `tokenize_request` fuzz
/// target), nor one with any run of 12 or more digits (a number of a length no
/// network issues can still be the card of this very request).
fn field_name(key: &str) -> String {
    let longest_run = key
        .split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    if longest_run >= 12 || contains_card_number(key) {
        "(a field named with a card number)".to_owned()
    } else {
        key.to_owned()
    }
}

/// Whether the digits of `s`, everything else dropped, contain `pan` (the card's
/// digits): the card being tokenized, spelled any way, inside another field.
fn mentions(s: &str, pan: &str) -> bool {
    let digits =
        zeroize::Zeroizing::new(s.chars().filter(char::is_ascii_digit).collect::<String>());
    digits.contains(pan)
}

/// [`mentions`] for every key, string and number of a JSON value.
fn json_mentions(v: &Value, pan: &str) -> bool {
    match v {
        Value::String(s) => mentions(s, pan),
        Value::Number(n) => mentions(&n.to_string(), pan),
        Value::Array(a) => a.iter().any(|x| json_mentions(x, pan)),
        Value::Object(m) => m
            .iter()
            .any(|(k, x)| mentions(k, pan) || json_mentions(x, pan)),
        Value::Bool(_) | Value::Null => false,
    }
}

/// 1–128 printable characters, no card number.
pub fn validate_subject(s: &str) -> Result<String, VaultError> {
    let n = s.chars().count();
    if n == 0 || n > 128 || s.chars().any(char::is_control) {
        return Err(VaultError::invalid(
            "subject",
            "must be 1 to 128 printable characters",
        ));
    }
    if contains_card_number(s) {
        return Err(VaultError::invalid(
            "subject",
            "must not contain a card number",
        ));
    }
    Ok(s.to_owned())
}

fn validate_metadata(m: &Map<String, Value>) -> Result<Map<String, Value>, VaultError> {
    let text = serde_json::to_string(m)
        .map_err(|_| VaultError::invalid("metadata", "not serializable"))?;
    if text.len() > MAX_METADATA_BYTES {
        return Err(VaultError::invalid("metadata", "larger than 4096 bytes"));
    }
    if contains_card_number(&text) {
        return Err(VaultError::invalid(
            "metadata",
            "must not contain a card number",
        ));
    }
    Ok(m.clone())
}

/// Whether any object key anywhere in `v` names a card verification code.
pub fn contains_cvv(v: &Value) -> bool {
    match v {
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| CVV_FIELDS.iter().any(|c| k.eq_ignore_ascii_case(c)) || contains_cvv(v)),
        Value::Array(a) => a.iter().any(contains_cvv),
        _ => false,
    }
}

/// Whether `s` holds a run of 12–19 digits (single spaces or dashes allowed between
/// them) that passes Luhn: a card number where none belongs.
pub fn contains_card_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
            continue;
        }
        let mut digits: Vec<u8> = Vec::with_capacity(24);
        let mut j = i;
        while let Some(&c) = b.get(j) {
            if c.is_ascii_digit() {
                digits.push(c);
            } else if (c == b' ' || c == b'-')
                && b.get(j + 1).is_some_and(u8::is_ascii_digit)
                && !digits.is_empty()
            {
            } else {
                break;
            }
            j += 1;
        }
        // any window of 12–19 digits
        let n = digits.len();
        for start in 0..n {
            for len in 12..=19 {
                if let Some(w) = digits.get(start..start + len)
                    && panvault_audit::card::luhn_valid(w)
                    && panvault_audit::card::issued_brand(w).is_some()
                {
                    use zeroize::Zeroize;
                    digits.zeroize();
                    return true;
                }
            }
        }
        use zeroize::Zeroize;
        digits.zeroize();
        i = j.max(i + 1);
    }
    false
}

/// What tokenize returns (never the number).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TokenInfo {
    /// The token.
    pub token: String,
    /// Public card facts.
    pub card: CardFacts,
    /// Keyed fingerprint (hex), stable per card within the tenant.
    pub fingerprint: String,
    /// RFC 3339.
    pub created_at: String,
    /// Data-key version that sealed it.
    pub key_version: u32,
    /// The customer id, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Metadata, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// RFC 3339 expiry of the token itself, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The card was already stored for this subject and its existing token is
    /// returned.
    pub deduplicated: bool,
    /// On a dedup hit, what this request changed in the stored record: `expiry`
    /// (a later one only), `name`, `metadata`, `expires_at`. Empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub updated: Vec<&'static str>,
}

/// The card facts stored in the clear.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CardFacts {
    /// Network.
    pub brand: String,
    /// First six digits.
    pub bin: String,
    /// Last four digits.
    pub last4: String,
    /// Expiry month.
    pub exp_month: u8,
    /// Expiry year.
    pub exp_year: u16,
}

/// A detokenized card. Not `Serialize`: the HTTP layer writes the number
/// explicitly, and only there.
#[derive(Debug)]
pub struct Detokenized {
    /// The token.
    pub token: String,
    /// Number and name.
    pub card: CardSecret,
    /// Expiry.
    pub expiry: Expiry,
}

/// Who is asking, for the audit log.
#[derive(Debug, Clone, Default)]
pub struct AccessContext {
    /// Certificate common name (or URI SAN), or `admin:<user>`.
    pub actor: String,
    /// SHA-256 fingerprint of the client certificate, hex.
    pub actor_fingerprint: Option<String>,
    /// The request id.
    pub request_id: Option<String>,
    /// Peer address.
    pub peer: Option<String>,
}

#[cfg(test)]
mod tests {
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
        let v =
            json!({"card":{"number":"4242424242424242","exp_month":12,"exp_year":2030},"colour":1});
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
        let ok =
            json!({"card": card, "metadata":{"order":"4242424242","n":42}, "subject":"c-4242"});
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
        let v = json!({"card":{"number":"4242424242424242","exp_month":12,"exp_year":2030},"colour":"red"});
        assert!(
            TokenizeRequest::from_json(&v, TODAY)
                .unwrap_err()
                .to_string()
                .contains("colour")
        );
    }
}
