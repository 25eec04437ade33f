//! Signatures a provider wants over the resolved request (which the shop cannot
//! compute: it never sees the card number that goes into the body).
//!
//! - HMAC-SHA256 / HMAC-SHA512 (`ring::hmac`), keyed with the secret;
//! - SHA-384 (`ring::digest`) of the signed bytes followed by the secret.
//!
//! The signed bytes are the whole resolved body, or the values of the listed
//! JSON fields (strings as they are, numbers and booleans as written) joined by
//! the separator. The result goes into a header or a top-level JSON string field
//! (inserted first in the object). The secret is read once, kept in a buffer
//! that is wiped on drop, and never printed.

use std::collections::HashMap;
use std::path::Path;

use axum::http::{HeaderName, HeaderValue};
use base64::Engine as _;
use ring::{digest, hmac};
use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

use super::{BodyKind, RelayError};
use crate::config::{SigningAlgorithm, SigningEncoding, SigningRule};
use crate::error::VaultError;

/// Where the signature goes.
#[derive(Debug, Clone)]
enum Placement {
    Header(HeaderName),
    Field(String),
}

/// A destination's signing rule with its secret loaded.
pub struct Signer {
    algorithm: SigningAlgorithm,
    secret: Zeroizing<Vec<u8>>,
    fields: Vec<String>,
    separator: String,
    placement: Placement,
    encoding: SigningEncoding,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("algorithm", &self.algorithm)
            .field("secret", &"[REDACTED]")
            .field("fields", &self.fields)
            .field("placement", &self.placement)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Reads the rule's secret file (its bytes; one final newline is dropped).
    pub fn load(rule: &SigningRule) -> Result<Signer, VaultError> {
        let path: &Path = &rule.secret_file;
        let mut secret = Zeroizing::new(std::fs::read(path).map_err(|e| VaultError::io(path, e))?);
        if secret.last() == Some(&b'\n') {
            secret.pop();
            if secret.last() == Some(&b'\r') {
                secret.pop();
            }
        }
        if secret.is_empty() {
            return Err(VaultError::io(path, "the signing secret is empty"));
        }
        Signer::with_secret(rule, secret)
    }

    /// The signer of `rule` with `secret`.
    pub fn with_secret(
        rule: &SigningRule,
        secret: Zeroizing<Vec<u8>>,
    ) -> Result<Signer, VaultError> {
        let placement = match (&rule.header, &rule.field) {
            (Some(h), None) => Placement::Header(
                HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                    .map_err(|e| VaultError::internal_from("a checked header name", e))?,
            ),
            (None, Some(f)) => Placement::Field(f.clone()),
            _ => return Err(VaultError::internal("a signing rule names one placement")),
        };
        Ok(Signer {
            algorithm: rule.algorithm,
            secret,
            fields: rule.fields.clone(),
            separator: rule.separator.clone(),
            placement,
            encoding: rule.encoding,
        })
    }

    /// Signs the resolved `body` (of `kind`): adds the signature header to
    /// `headers` (replacing a caller's header of that name) or the signature field
    /// to the body, and gives back the body to send.
    pub fn apply(
        &self,
        kind: BodyKind,
        body: Zeroizing<String>,
        headers: &mut Vec<(HeaderName, HeaderValue)>,
    ) -> Result<Zeroizing<String>, RelayError> {
        let needs_json = !self.fields.is_empty() || matches!(self.placement, Placement::Field(_));
        if needs_json && kind != BodyKind::Json {
            return Err(RelayError::template(
                "bad_template",
                "this destination signs JSON fields: the body must be application/json",
            ));
        }
        let signature = if self.fields.is_empty() {
            self.sign(body.as_bytes())
        } else {
            let signed = self.canonical(&body)?;
            self.sign(signed.as_bytes())
        };
        match &self.placement {
            Placement::Header(name) => {
                let value = HeaderValue::from_str(&signature).map_err(|_| {
                    RelayError::template("bad_template", "the signature is not a header value")
                })?;
                headers.retain(|(n, _)| n != name);
                headers.push((name.clone(), value));
                Ok(body)
            }
            Placement::Field(field) => insert_field(&body, field, &signature),
        }
    }

    /// The listed fields' values joined by the separator.
    fn canonical(&self, body: &str) -> Result<Zeroizing<String>, RelayError> {
        let mut doc: Value = serde_json::from_str(body).map_err(|_| {
            RelayError::template("bad_template", "the resolved body is not valid JSON")
        })?;
        let mut out = Zeroizing::new(String::with_capacity(
            body.len() + 64 * self.separator.len(),
        ));
        let mut result = Ok(());
        for (i, path) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push_str(&self.separator);
            }
            let found = path.split('.').try_fold(&doc, |v, key| v.get(key));
            match found {
                Some(Value::String(s)) => out.push_str(s),
                Some(Value::Number(n)) => out.push_str(&n.to_string()),
                Some(Value::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
                Some(Value::Null) | None => {
                    result = Err(RelayError::template(
                        "bad_template",
                        format!("the destination signs field {path:?}, which the body lacks"),
                    ));
                    break;
                }
                Some(Value::Array(_) | Value::Object(_)) => {
                    result = Err(RelayError::template(
                        "bad_template",
                        format!(
                            "the destination signs field {path:?}, which must be a string, number or boolean"
                        ),
                    ));
                    break;
                }
            }
        }
        wipe(&mut doc);
        result.map(|()| out)
    }

    fn sign(&self, data: &[u8]) -> String {
        let tag: Vec<u8> = match self.algorithm {
            SigningAlgorithm::HmacSha256 => {
                let key = hmac::Key::new(hmac::HMAC_SHA256, &self.secret);
                hmac::sign(&key, data).as_ref().to_vec()
            }
            SigningAlgorithm::HmacSha512 => {
                let key = hmac::Key::new(hmac::HMAC_SHA512, &self.secret);
                hmac::sign(&key, data).as_ref().to_vec()
            }
            SigningAlgorithm::Sha384 => {
                let mut ctx = digest::Context::new(&digest::SHA384);
                ctx.update(data);
                ctx.update(&self.secret);
                ctx.finish().as_ref().to_vec()
            }
        };
        match self.encoding {
            SigningEncoding::Hex => crate::service::hex(&tag),
            SigningEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(&tag),
        }
    }
}

/// Wipes every string of a parsed body (card data) before it is dropped.
fn wipe(v: &mut Value) {
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(a) => a.iter_mut().for_each(wipe),
        Value::Object(m) => m.values_mut().for_each(wipe),
        _ => {}
    }
}

/// `body` (a JSON object) with `"field":"signature"` first.
fn insert_field(body: &str, field: &str, signature: &str) -> Result<Zeroizing<String>, RelayError> {
    let keys: HashMap<String, serde::de::IgnoredAny> =
        serde_json::from_str(body).map_err(|_| {
            RelayError::template(
                "bad_template",
                "this destination signs into a field: the body must be a JSON object",
            )
        })?;
    if keys.contains_key(field) {
        return Err(RelayError::template(
            "bad_template",
            format!("the body must not set {field:?}: the vault computes it"),
        ));
    }
    let open = body
        .find('{')
        .ok_or_else(|| RelayError::template("bad_template", "the body must be a JSON object"))?;
    let (head, rest) = body
        .split_at_checked(open + 1)
        .ok_or_else(|| RelayError::template("bad_template", "the body must be a JSON object"))?;
    let mut out = Zeroizing::new(String::with_capacity(
        body.len() + field.len() + signature.len() + 8,
    ));
    out.push_str(head);
    out.push('"');
    super::template::json_escape_into(field, &mut out);
    out.push_str("\":\"");
    out.push_str(signature);
    out.push('"');
    if !keys.is_empty() {
        out.push(',');
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests;
