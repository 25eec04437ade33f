//! `Idempotency-Key`: a request retried with the same key by the same client
//! within 24 hours gets the first request's answer (status, headers, body)
//! without the work being done again; the same key with another request is
//! refused (`idempotency_key_reused`).
//!
//! Stored in the database, so any node answers a retry: per client, the key as
//! a keyed hash (a key is the caller's text, and could be anything), the
//! request as a keyed hash of its method, path and body (which holds a card
//! number: an unkeyed hash of it could be searched), and the answer sealed
//! (AES-256-GCM, associated data naming the client and the key's hash). Both
//! keys are derived from the vault's subject-hash key, which every node holds.
//! Answers stored here never hold a card number: the routes that use it answer
//! tokens and masked card facts (tokenize) or a masked provider answer (relay).
//!
//! A first request is reserved before its work starts: a concurrent retry
//! finds it in progress (`idempotency_key_in_use`) instead of doing the work a
//! second time. Every answer is kept except a 503 (storage or the audit log
//! unavailable: the vault refused before doing anything, and its batch rolled
//! back), whose reservation is released so a retry runs again. A 500 or a
//! relay's 502/504 is kept: the work may have happened (a provider may have
//! charged), and a retry must not do it twice.

use ring::{hkdf, hmac};

use super::Vault;
use super::keyring::Keyring;
use crate::core::envelope::{unwrap_key, wrap_key};
use crate::core::secret::SecretKey32;
use crate::error::VaultError;

/// How long a first answer is kept and replayed, in seconds.
pub const IDEMPOTENCY_WINDOW_SECS: i64 = 86_400;

/// After this many seconds a first request that never stored its answer (its
/// node stopped) no longer holds its key.
const ABANDONED_AFTER_SECS: i64 = 120;

/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// A validated `Idempotency-Key`: 1 to 255 printable ASCII characters, no card
/// number.
#[derive(Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl std::fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdempotencyKey(..)")
    }
}

impl IdempotencyKey {
    /// Checks a header value. The error never repeats it.
    pub fn parse(value: &[u8]) -> Result<IdempotencyKey, VaultError> {
        let bad = || {
            VaultError::invalid(
                "Idempotency-Key",
                format!("must be 1 to {MAX_KEY_LEN} printable ASCII characters"),
            )
        };
        if value.is_empty() || value.len() > MAX_KEY_LEN {
            return Err(bad());
        }
        if !value.iter().all(|b| (0x20..=0x7e).contains(b)) {
            return Err(bad());
        }
        let text = std::str::from_utf8(value).map_err(|_| bad())?;
        if text.trim().is_empty() {
            return Err(bad());
        }
        if super::request::contains_card_number(text) {
            return Err(VaultError::invalid(
                "Idempotency-Key",
                "must not contain a card number",
            ));
        }
        Ok(IdempotencyKey(text.to_owned()))
    }
}

/// An answer as stored and replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// HTTP status.
    pub status: u16,
    /// The headers worth replaying (`content-type`, `location`), lower-case names.
    pub headers: Vec<(String, String)>,
    /// The body (never a card number).
    pub body: Vec<u8>,
}

impl StoredAnswer {
    /// `status ‖ count ‖ (len name ‖ len value)* ‖ body`, lengths big-endian u32.
    fn encode(&self) -> Result<Vec<u8>, VaultError> {
        let len = |n: usize| {
            u32::try_from(n).map_err(|_| VaultError::internal("an answer too large to store"))
        };
        let mut out = Vec::with_capacity(self.body.len() + 64);
        out.extend_from_slice(&self.status.to_be_bytes());
        out.extend_from_slice(&len(self.headers.len())?.to_be_bytes());
        for (name, value) in &self.headers {
            out.extend_from_slice(&len(name.len())?.to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&len(value.len())?.to_be_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out.extend_from_slice(&self.body);
        Ok(out)
    }

    fn decode(bytes: &[u8]) -> Option<StoredAnswer> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = b.split_at_checked(n)?;
            *b = rest;
            Some(head)
        }
        fn take_u32(b: &mut &[u8]) -> Option<usize> {
            let v = u32::from_be_bytes(take(b, 4)?.try_into().ok()?);
            usize::try_from(v).ok()
        }
        fn take_str(b: &mut &[u8]) -> Option<String> {
            let n = take_u32(b)?;
            String::from_utf8(take(b, n)?.to_vec()).ok()
        }
        let mut b = bytes;
        let status = u16::from_be_bytes(take(&mut b, 2)?.try_into().ok()?);
        let count = take_u32(&mut b)?;
        let mut headers = Vec::new();
        for _ in 0..count {
            let name = take_str(&mut b)?;
            let value = take_str(&mut b)?;
            headers.push((name, value));
        }
        Some(StoredAnswer {
            status,
            headers,
            body: b.to_vec(),
        })
    }
}

/// A first request holding its key: finish it with [`Vault::idempotency_finish`]
/// (its answer is kept) or [`Vault::idempotency_release`] (a retry runs afresh).
#[derive(Debug)]
#[must_use = "a reserved key must be finished or released"]
pub struct IdempotencyTicket {
    client: String,
    key_hash: [u8; 32],
    request_hash: [u8; 32],
}

/// What [`Vault::idempotency_begin`] decided.
#[derive(Debug)]
pub enum IdempotencyStart {
    /// The first request with this key: do the work, then finish or release.
    Proceed(IdempotencyTicket),
    /// A retry of a request already answered: send this answer again.
    Replay(StoredAnswer),
}

/// The MAC and sealing keys, derived from the subject-hash key.
struct Secrets {
    mac: hmac::Key,
    seal: SecretKey32,
}

fn secrets(keys: &Keyring) -> Result<Secrets, VaultError> {
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"panvault/idempotency/v1");
    let prk = salt.extract(keys.subject_key.expose_secret());
    let derive = |info: &[u8]| -> Result<SecretKey32, VaultError> {
        let parts = [info];
        let okm = prk
            .expand(&parts, hkdf::HKDF_SHA256)
            .map_err(|_| VaultError::Crypto)?;
        let mut out = [0u8; 32];
        okm.fill(&mut out).map_err(|_| VaultError::Crypto)?;
        Ok(SecretKey32::from_bytes(&mut out))
    };
    let mac = derive(b"mac")?;
    Ok(Secrets {
        mac: hmac::Key::new(hmac::HMAC_SHA256, mac.expose_secret()),
        seal: derive(b"seal")?,
    })
}

fn mac(key: &hmac::Key, parts: &[&[u8]]) -> Result<[u8; 32], VaultError> {
    let mut ctx = hmac::Context::with_key(key);
    for p in parts {
        let len = u64::try_from(p.len()).map_err(|_| VaultError::internal("a length past u64"))?;
        ctx.update(&len.to_be_bytes());
        ctx.update(p);
    }
    ctx.sign()
        .as_ref()
        .try_into()
        .map_err(|_| VaultError::internal("an HMAC-SHA256 tag is not 32 bytes"))
}

/// Equality of two MACs without an early exit.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn answer_label(client: &str, key_hash: &[u8; 32]) -> String {
    format!("panvault/idempotency/v1:{client}:{}", super::hex(key_hash))
}

/// What the writer found for a key.
enum Found {
    Reserved,
    Answered(Vec<u8>),
}

impl Vault {
    /// Starts a request carrying `key` from `client`: `method`, `path` and `body`
    /// identify the request. A retry of an answered request within 24 h is
    /// [`IdempotencyStart::Replay`]; the key used for another request is
    /// [`VaultError::IdempotencyKeyReused`]; a first request still running
    /// [`VaultError::IdempotencyKeyInUse`]. Otherwise the key is reserved (in
    /// the database, through the writer) and the caller proceeds.
    pub async fn idempotency_begin(
        &self,
        client: &str,
        key: &IdempotencyKey,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<IdempotencyStart, VaultError> {
        let keys = self.keys()?;
        let s = secrets(&keys)?;
        let key_hash = mac(&s.mac, &[b"key", client.as_bytes(), key.0.as_bytes()])?;
        let request_hash = mac(
            &s.mac,
            &[b"request", method.as_bytes(), path.as_bytes(), body],
        )?;
        let now = self.now().unix_timestamp();
        let client_s = client.to_owned();
        let found = self
            .write(move |conn, _| {
                let run = || -> Result<Found, VaultError> {
                    let row = conn.idempotency_row(&client_s, &key_hash)?;
                    if let Some(r) = row.filter(|r| r.created_at > now - IDEMPOTENCY_WINDOW_SECS) {
                        if !same(&r.request_hash, &request_hash) {
                            return Err(VaultError::IdempotencyKeyReused);
                        }
                        match (r.status, r.answer) {
                            (Some(_), Some(answer)) => return Ok(Found::Answered(answer)),
                            (None, _) if r.created_at > now - ABANDONED_AFTER_SECS => {
                                return Err(VaultError::IdempotencyKeyInUse);
                            }
                            // Abandoned by a node that stopped: this request takes it.
                            _ => {}
                        }
                    }
                    conn.reserve_idempotency(&client_s, &key_hash, &request_hash, now)?;
                    Ok(Found::Reserved)
                };
                match run() {
                    Ok(f) => (true, Ok(f)),
                    // A refusal changed nothing; storage trouble rolls back.
                    Err(e) if e.is_unavailable() => (false, Err(e)),
                    Err(e) => (true, Err(e)),
                }
            })
            .await?;
        match found {
            Found::Reserved => Ok(IdempotencyStart::Proceed(IdempotencyTicket {
                client: client.to_owned(),
                key_hash,
                request_hash,
            })),
            Found::Answered(sealed) => {
                let plain = unwrap_key(&s.seal, &answer_label(client, &key_hash), &sealed)
                    .map_err(|_| VaultError::Decryption)?;
                StoredAnswer::decode(&plain)
                    .map(IdempotencyStart::Replay)
                    .ok_or(VaultError::Decryption)
            }
        }
    }

    /// Keeps `answer` as the answer of the request `ticket` reserved. A 503 is
    /// not kept (the vault did nothing): the key is released instead, so a
    /// retry runs again.
    pub async fn idempotency_finish(
        &self,
        ticket: IdempotencyTicket,
        answer: &StoredAnswer,
    ) -> Result<(), VaultError> {
        if answer.status == 503 {
            return self.idempotency_release(ticket).await;
        }
        let keys = self.keys()?;
        let s = secrets(&keys)?;
        let sealed = wrap_key(
            &s.seal,
            &answer_label(&ticket.client, &ticket.key_hash),
            &answer.encode()?,
        )?;
        let status = i64::from(answer.status);
        self.write(move |conn, _| {
            let r = conn
                .complete_idempotency(
                    &ticket.client,
                    &ticket.key_hash,
                    &ticket.request_hash,
                    status,
                    &sealed,
                )
                .map(|_| ())
                .map_err(VaultError::Store);
            (r.is_ok(), r)
        })
        .await
    }

    /// Forgets the reservation of `ticket` without an answer: a retry runs afresh.
    pub async fn idempotency_release(&self, ticket: IdempotencyTicket) -> Result<(), VaultError> {
        self.write(move |conn, _| {
            let r = conn
                .release_idempotency(&ticket.client, &ticket.key_hash, &ticket.request_hash)
                .map_err(VaultError::Store);
            (r.is_ok(), r)
        })
        .await
    }

    /// Deletes stored answers older than 24 hours; how many.
    pub async fn purge_idempotency(&self) -> Result<u64, VaultError> {
        let cutoff = self.now().unix_timestamp() - IDEMPOTENCY_WINDOW_SECS;
        self.write(move |conn, _| {
            let r = conn.purge_idempotency(cutoff).map_err(VaultError::Store);
            (r.is_ok(), r)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_printable_and_never_a_card() {
        assert!(IdempotencyKey::parse(b"order-1234").is_ok());
        assert!(IdempotencyKey::parse(&[b'a'; MAX_KEY_LEN]).is_ok());
        for bad in [
            &b""[..],
            b"   ",
            &[b'a'; MAX_KEY_LEN + 1],
            b"tab\there",
            b"nl\n",
            "caf\u{e9}".as_bytes(),
            b"4111111111111111",
        ] {
            let e = IdempotencyKey::parse(bad).unwrap_err();
            assert!(!e.to_string().contains("4111"), "{e}");
        }
    }

    #[test]
    fn answers_round_trip() {
        let a = StoredAnswer {
            status: 201,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("location".into(), "/v1/tokens/tok_x".into()),
            ],
            body: br#"{"token":"tok_x"}"#.to_vec(),
        };
        assert_eq!(StoredAnswer::decode(&a.encode().unwrap()), Some(a.clone()));
        let enc = a.encode().unwrap();
        assert!(StoredAnswer::decode(&enc[..5]).is_none());
    }
}
