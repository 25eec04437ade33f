//! Requests and responses of the vault's operations, and the parsing of a tokenize
//! request from JSON (shared by the HTTP API and the library's callers).

use serde::Serialize;
use serde_json::{Map, Value};

use panvault_audit::card::{CardFinder, Class, Mode};

use crate::core::cvc::Cvc;
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
    /// The card's security code, held (sealed) for the relay until its first use
    /// or deadline; only when the vault holds codes ([`crate::Vault::cvc_ttl`]).
    pub cvc: Option<Cvc>,
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
            cvc: None,
        })
    }

    /// Parses the JSON body of `POST /v1/tokens` (one item of a batch).
    ///
    /// Shape: `{"card":{"number","exp_month","exp_year","name"?},"subject"?,"format"?,
    /// "metadata"?,"force_new"?,"ttl_seconds"?,"expires_at"?}`. A CVV anywhere in the
    /// request is refused; unknown fields are refused.
    pub fn from_json(v: &Value, today: time::Date) -> Result<Self, VaultError> {
        TokenizeRequest::from_json_with(v, today, false)
    }

    /// [`TokenizeRequest::from_json`], taking `card.cvc` (3 digits, 4 for American
    /// Express) when `accept_cvc` (the vault holds codes for a relay). Any other
    /// field naming a verification code, anywhere, is still refused, and so is
    /// `card.cvc` when not `accept_cvc`.
    pub fn from_json_with(
        v: &Value,
        today: time::Date,
        accept_cvc: bool,
    ) -> Result<Self, VaultError> {
        if contains_cvv_besides_card_cvc(v, accept_cvc) {
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
            let known = matches!(k.as_str(), "number" | "exp_month" | "exp_year" | "name")
                || (accept_cvc && k == "cvc");
            if !known {
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
        let cvc = match card.get("cvc") {
            None => None,
            Some(Value::String(s)) => Some(Cvc::parse(s, pan.brand())?),
            Some(_) => return Err(CardError::InvalidCvc.into()),
        };
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
            cvc,
        })
    }
}

/// A caller's object key as named in an error: errors never hold a card number, so
/// a key that contains one is not echoed (found by the `tokenize_request` fuzz
/// target), nor one with any run of 12 or more digits (a number of a length no
/// network issues can still be the card of this very request).
fn field_name(key: &str) -> String {
    let longest_run = key
        .split(|c: char| panvault_audit::card::digit_value(c).is_none())
        .map(|run| run.chars().count())
        .max()
        .unwrap_or(0);
    if longest_run >= 12 || contains_card_number(key) {
        "(a field named with a card number)".to_owned()
    } else {
        key.to_owned()
    }
}

/// Appends the digits of `s` (of any script, as ASCII) to `out`.
fn push_digits(s: &str, out: &mut String) {
    out.extend(
        s.chars()
            .filter_map(panvault_audit::card::digit_value)
            .map(|d| char::from(b'0' + d)),
    );
}

/// Whether the digits of `s` (of any script), everything else dropped, contain
/// `pan` (the card's digits): the card being tokenized, spelled any way, inside
/// another field. Linear: `str::contains` is a two-way search.
fn mentions(s: &str, pan: &str) -> bool {
    let mut digits = zeroize::Zeroizing::new(String::with_capacity(s.len()));
    push_digits(s, &mut digits);
    digits.contains(pan)
}

/// [`mentions`] for every key, string and number of a JSON value; an array's
/// strings and numbers count as one run of digits (`["4242","4242",…]`).
fn json_mentions(v: &Value, pan: &str) -> bool {
    match v {
        Value::String(s) => mentions(s, pan),
        Value::Number(n) => mentions(&n.to_string(), pan),
        Value::Array(a) => {
            let mut digits = zeroize::Zeroizing::new(String::new());
            array_digits(a, &mut digits);
            digits.contains(pan) || a.iter().any(|x| x.is_object() && json_mentions(x, pan))
        }
        Value::Object(m) => m
            .iter()
            .any(|(k, x)| mentions(k, pan) || json_mentions(x, pan)),
        Value::Bool(_) | Value::Null => false,
    }
}

/// The digits of an array's strings and numbers, nested arrays included.
fn array_digits(a: &[Value], out: &mut String) {
    for x in a {
        match x {
            Value::String(s) => push_digits(s, out),
            Value::Number(n) => push_digits(&n.to_string(), out),
            Value::Array(inner) => array_digits(inner, out),
            Value::Object(_) | Value::Bool(_) | Value::Null => {}
        }
    }
}

/// Whether any key, string or number of a JSON value holds a card number
/// ([`contains_card_number`]), the elements of an array read as digit groups of
/// one number (`[4111,1111,1111,1111]`, `["4111","1111",…]`). Walks the values,
/// not their JSON text, in which escapes such as `\t` would split a number.
pub fn json_contains_card_number(v: &Value) -> bool {
    let mut finder = CardFinder::new(Mode::Filter);
    json_feed(v, &mut finder)
}

/// Feeds `s` to `finder`; whether it found a card.
fn feed_str(s: &str, finder: &mut CardFinder) -> bool {
    s.chars().any(|c| finder.push_char(c, 0, 1).is_some())
}

/// Feeds a JSON value to `finder`: each key and scalar on its own, an array's
/// scalars joined by one separator.
fn json_feed(v: &Value, finder: &mut CardFinder) -> bool {
    let end = |f: &mut CardFinder| f.push(Class::Break, 0, 0).is_some();
    match v {
        Value::String(s) => end(finder) || feed_str(s, finder) || end(finder),
        Value::Number(n) => end(finder) || feed_str(&n.to_string(), finder) || end(finder),
        Value::Array(a) => end(finder) || array_feed(a, finder) || end(finder),
        Value::Object(m) => m
            .iter()
            .any(|(k, x)| end(finder) || feed_str(k, finder) || json_feed(x, finder)),
        Value::Bool(_) | Value::Null => end(finder),
    }
}

/// The elements of an array, its scalars (and those of nested arrays) one run.
fn array_feed(a: &[Value], finder: &mut CardFinder) -> bool {
    for x in a {
        let found = match x {
            Value::String(s) => feed_str(s, finder),
            Value::Number(n) => feed_str(&n.to_string(), finder),
            Value::Array(inner) => array_feed(inner, finder),
            Value::Object(_) | Value::Bool(_) | Value::Null => json_feed(x, finder),
        };
        if found || finder.push(Class::Separator(','), 0, 0).is_some() {
            return true;
        }
    }
    false
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
    // The values as the caller meant them (escapes undone, arrays as digit runs)
    // and the JSON text as it is stored, where a key and its value are adjacent.
    if contains_card_number(&text)
        || m.iter()
            .any(|(k, v)| contains_card_number(k) || json_contains_card_number(v))
    {
        return Err(VaultError::invalid(
            "metadata",
            "must not contain a card number",
        ));
    }
    Ok(m.clone())
}

/// [`contains_cvv`], except for `card.cvc` of a request when `accept_cvc`.
fn contains_cvv_besides_card_cvc(v: &Value, accept_cvc: bool) -> bool {
    let Value::Object(top) = v else {
        return contains_cvv(v);
    };
    top.iter().any(|(k, x)| {
        if CVV_FIELDS.iter().any(|c| k.eq_ignore_ascii_case(c)) {
            return true;
        }
        match (k.as_str(), x) {
            ("card", Value::Object(card)) if accept_cvc => card.iter().any(|(ck, cx)| {
                (ck != "cvc" && CVV_FIELDS.iter().any(|c| ck.eq_ignore_ascii_case(c)))
                    || contains_cvv(cx)
            }),
            _ => contains_cvv(x),
        }
    })
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

/// Whether `s` holds a card number where none belongs: 12–19 digits of any script
/// that pass Luhn and whose IIN issues that length, in any run of digit groups
/// joined by up to three characters that are not letters or digits
/// (`4111.1111.1111.1111`, `4111  1111…`, `4111_1111…`, full-width digits). The
/// one detector of the vault and the scanner
/// ([`panvault_audit::card::contains_card_number`]), linear in the length of `s`.
pub fn contains_card_number(s: &str) -> bool {
    panvault_audit::card::contains_card_number(s)
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
    /// Whether a security code is held for the relay, and until when (never
    /// the code): always in `GET /v1/tokens/{token}`, and in a tokenize answer
    /// that held one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cvc: Option<super::cvc::CvcStatus>,
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
mod tests;
