//! Tokenizing: a card becomes a sealed record and a token (or the tenant's
//! existing token for it), answered only once its transaction is durable.

use std::sync::atomic::Ordering;

use super::keyring::Keyring;
use super::request::{AccessContext, CardFacts, TokenInfo, TokenizeRequest};
use super::state::VaultState;
use super::{
    AuditAction, AuditOutcome, AuditRecord, StoredCard, Vault, hex, personal, rfc3339,
    validate_tenant,
};
use crate::core::envelope::SealedRecord;
use crate::core::kdf::FINGERPRINT_LEN;
use crate::core::rng;
use crate::core::token::{Token, TokenFormat};
use crate::error::VaultError;
use crate::store::{CardRow, Hints, Inserted, NewCard, SealedPersonal, Tx};

impl Vault {
    /// Tokenizes a card in `tenant`: the existing token if this tenant already holds
    /// the card (unless `force_new`), else a new sealed record. Answered only once
    /// durable.
    pub async fn tokenize(
        &self,
        tenant: &str,
        req: TokenizeRequest,
        ctx: &AccessContext,
    ) -> Result<TokenInfo, VaultError> {
        let mut out = self.tokenize_batch(tenant, vec![Ok(req)], ctx).await?;
        out.pop().unwrap_or(Err(VaultError::internal(
            "a batch of one card answered nothing",
        )))
    }

    /// Tokenizes many cards in one writer job; results in order. Items are
    /// independent: one bad card fails only its own slot. The outer error is for
    /// the whole batch (storage or audit unavailable).
    pub async fn tokenize_batch(
        &self,
        tenant: &str,
        items: Vec<Result<TokenizeRequest, VaultError>>,
        ctx: &AccessContext,
    ) -> Result<Vec<Result<TokenInfo, VaultError>>, VaultError> {
        validate_tenant(tenant)?;
        if self.inner.reload_wanted.swap(false, Ordering::SeqCst) {
            // The writer found our active key behind the database's: load the
            // keys now, whatever the epoch says.
            let _ = self.reload_keys(true);
        }
        let keys = self.keys()?;
        // Keys that could not be reloaded after a change: refuse every item (each is
        // still audited, as a failure) rather than seal under what may be stale.
        let stale = self.inner.keys_stale.load(Ordering::SeqCst);
        let now = self.now().unix_timestamp();
        let cvc_ttl = self.cvc_ttl_secs();
        let mut prepared = Vec::with_capacity(items.len());
        for item in items {
            prepared.push(item.and_then(|req| {
                // A code is held only for a relay; without one it is refused as
                // any other verification code.
                if req.cvc.is_some() && cvc_ttl.is_none() {
                    return Err(crate::core::pan::CardError::CvvNotAccepted.into());
                }
                if stale {
                    return Err(VaultError::KeysOutOfDate);
                }
                let fp = keys.fingerprint(tenant, req.card.pan.expose_digits())?;
                let expires_at = match (
                    req.ttl_seconds.map(|t| now.saturating_add(t)),
                    req.expires_at,
                ) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                if expires_at.is_some_and(|e| e <= now) {
                    return Err(VaultError::invalid("expires_at", "must be in the future"));
                }
                let metadata = match &req.metadata {
                    Some(m) => Some(
                        serde_json::to_string(m)
                            .map_err(|_| VaultError::invalid("metadata", "not serializable"))?,
                    ),
                    None => None,
                };
                Ok((req, fp, metadata, expires_at))
            }));
        }
        // PostgreSQL looks every card of the batch up at once (see `store::Hints`).
        let hints = Hints {
            cards: prepared
                .iter()
                .filter_map(|item| match item {
                    Ok((req, fp, ..)) if !req.force_new => Some((tenant.to_owned(), fp.to_vec())),
                    _ => None,
                })
                .collect(),
            ..Hints::default()
        };
        let tenant = tenant.to_owned();
        let ctx = ctx.clone();
        let out = self
            .write_with(hints, move |conn, state| {
                let mut results = Vec::with_capacity(prepared.len());
                for item in prepared {
                    let (mut result, subject, cvc) = match item {
                        Ok((req, fp, metadata, expires_at)) => (
                            tokenize_in_tx(
                                conn,
                                state,
                                &keys,
                                &tenant,
                                &req,
                                &fp,
                                metadata.as_deref(),
                                expires_at,
                                now,
                            ),
                            req.subject,
                            req.cvc,
                        ),
                        Err(e) => (Err(e), None, None),
                    };
                    // The code is held for the token answered (new or existing),
                    // in the same transaction as the card; a failure to hold it
                    // fails the batch rather than answer a token without it.
                    if let (Ok(info), Some(cvc), Some(ttl)) = (&mut result, &cvc, cvc_ttl) {
                        match super::cvc::hold_in_tx(
                            conn,
                            &keys,
                            &tenant,
                            &info.token,
                            cvc,
                            now,
                            ttl,
                        )
                        .and_then(super::cvc::CvcStatus::held_until)
                        {
                            Ok(status) => info.cvc = Some(status),
                            Err(e) => return (false, Err(e)),
                        }
                    }
                    drop(cvc);
                    // A dedup hit that changed the stored record says what it changed,
                    // and a held code says so (never its value).
                    let mut notes = Vec::new();
                    if let Ok(i) = &result {
                        if !i.updated.is_empty() {
                            notes.push(format!("updated={}", i.updated.join(",")));
                        }
                        if i.cvc.is_some() {
                            notes.push("cvc=held".to_owned());
                        }
                    }
                    let details = (!notes.is_empty()).then(|| notes.join(" "));
                    let rec = AuditRecord {
                        action: AuditAction::Tokenize,
                        tenant: Some(&tenant),
                        token: result.as_ref().ok().map(|i| i.token.as_str()),
                        purpose: None,
                        subject: subject.as_deref(),
                        outcome: match &result {
                            Ok(_) => AuditOutcome::Success,
                            Err(e) => AuditOutcome::from_error(e),
                        },
                        details: details.as_deref(),
                    };
                    if let Err(e) = state.record(conn, &keys, &ctx, &rec, now) {
                        return (false, Err(e));
                    }
                    results.push(result);
                }
                (true, Ok(results))
            })
            .await;
        if self.inner.reload_wanted.swap(false, Ordering::SeqCst) {
            // The writer sealed under keys newer than ours: take them before
            // answering, so what the caller sees next (metrics, reads) agrees.
            let _ = self.reload_keys(true);
        }
        out
    }
}

#[allow(clippy::too_many_arguments)]
fn tokenize_in_tx(
    conn: &Tx<'_>,
    state: &mut VaultState,
    keys: &Keyring,
    tenant: &str,
    req: &TokenizeRequest,
    fp: &[u8; FINGERPRINT_LEN],
    metadata: Option<&str>,
    expires_at: Option<i64>,
    now: i64,
) -> Result<TokenInfo, VaultError> {
    // A hit is the same card for the same subject: another customer of the tenant
    // holding this card gets a token of their own, which only their erasure removes.
    let subject = state.dedup.tag(req.subject.as_deref());
    let pg = conn.is_postgres();
    if pg {
        // Nodes share the database, not a dedup index: the card's lock makes two
        // nodes tokenizing it at once take turns, and the second finds the first's
        // row (committed before the lock was released).
        if !req.force_new {
            conn.lock_card(&fp[..])?;
            let hash = req
                .subject
                .as_deref()
                .map(|s| personal::subject_hash(keys, tenant, s));
            if let Some(mut row) = conn.dedup_row(tenant, &fp[..], hash.as_deref(), now)? {
                personal::open(keys, &mut row)?;
                return update_on_hit(conn, state, keys, tenant, req, row, metadata, expires_at);
            }
        }
    } else if !req.force_new
        && let Some(id) = state.dedup.get(fp, subject)
    {
        let found = conn.live_dedup_row(id, &fp[..], tenant, req.subject.as_deref(), now)?;
        match found {
            Some(row) => {
                return update_on_hit(conn, state, keys, tenant, req, row, metadata, expires_at);
            }
            None => state.dedup.remove(fp, subject),
        }
    }
    // Formatted before anything is written: a time that cannot be shown is refused
    // rather than stored.
    let created_at = rfc3339("cards.created_at", now)?;
    let expires_at_text = expires_at
        .map(|e| rfc3339("cards.expires_at", e))
        .transpose()?;
    let fresh = state.sealing_keyring(conn, keys)?;
    let key = fresh.as_deref().unwrap_or(keys).active_key()?;
    let pan = &req.card.pan;
    // One draw from the RNG per attempt: token (16) + nonce (12). A bin_last4
    // token is unique within its tenant only (`cards_token` is on token and
    // tenant), so another tenant's tokens of this card leave this one's free.
    for _attempt in 0..32 {
        let mut random = [0u8; 28];
        rng::fill(&mut random)?;
        let (tok_bytes, nonce_bytes) = random.split_at(16);
        let token = match req.format {
            TokenFormat::Opaque => Token::opaque_from_random(
                tok_bytes
                    .try_into()
                    .map_err(|e| VaultError::internal_from("a token draw is not 16 bytes", e))?,
            ),
            TokenFormat::BinLast4 => Token::generate_bin_last4(pan.expose_digits())?,
        };
        let nonce: [u8; 12] = nonce_bytes
            .try_into()
            .map_err(|e| VaultError::internal_from("a nonce draw is not 12 bytes", e))?;
        let sealed = key.seal(tenant, token.as_str(), &req.card, nonce)?;
        let personal = if pg {
            personal::seal(
                keys,
                key,
                tenant,
                token.as_str(),
                req.subject.as_deref(),
                metadata,
            )?
        } else {
            SealedPersonal::default()
        };
        let inserted = conn.insert_card(
            &NewCard {
                token: token.as_str(),
                tenant,
                key_version: sealed.key_version,
                nonce: &sealed.nonce[..],
                ciphertext: &sealed.ciphertext,
                fingerprint: &fp[..],
                brand: pan.brand().as_str(),
                bin: pan.bin(),
                last4: pan.last4(),
                exp_month: req.expiry.month(),
                exp_year: req.expiry.year(),
                subject: req.subject.as_deref(),
                metadata,
                created_at: now,
                expires_at,
            },
            &personal,
            req.format == TokenFormat::Opaque,
        )?;
        match inserted {
            Inserted::Row(_) | Inserted::Queued => {
                state.count_encryption(sealed.key_version);
                if pg {
                    // Dedup is looked up in the database: only the count is kept.
                    state.dedup.counted_insert();
                } else if let Inserted::Row(id) = inserted {
                    state.dedup.insert(*fp, subject, id);
                }
                return Ok(TokenInfo {
                    token: token.as_str().to_owned(),
                    card: CardFacts {
                        brand: pan.brand().as_str().to_owned(),
                        bin: pan.bin().to_owned(),
                        last4: pan.last4().to_owned(),
                        exp_month: req.expiry.month(),
                        exp_year: req.expiry.year(),
                    },
                    fingerprint: hex(fp),
                    created_at,
                    key_version: sealed.key_version,
                    subject: req.subject.clone(),
                    metadata: req.metadata.clone(),
                    expires_at: expires_at_text,
                    deduplicated: false,
                    updated: Vec::new(),
                    cvc: None,
                });
            }
            Inserted::TokenTaken => continue,
        }
    }
    Err(VaultError::invalid(
        "format",
        "no free bin_last4 token left for this card's BIN and last 4; use the opaque format",
    ))
}

/// A dedup hit: the stored row of this card and subject takes what the request
/// brings that it lacks, rather than dropping it. A later card expiry replaces the
/// stored one (an earlier one is ignored: a reissued card keeps its new date when
/// an old request comes back); a cardholder name, metadata or token expiry given
/// in the request replaces the stored one (fields left out keep theirs). A new
/// name is sealed afresh under the active key. The answer lists what changed,
/// and so does the request's audit event.
#[allow(clippy::too_many_arguments)]
fn update_on_hit(
    conn: &Tx<'_>,
    state: &mut VaultState,
    keys: &Keyring,
    tenant: &str,
    req: &TokenizeRequest,
    mut row: CardRow,
    metadata: Option<&str>,
    expires_at: Option<i64>,
) -> Result<TokenInfo, VaultError> {
    // A corrupted row is reported, not overwritten (nor partly updated and then
    // refused).
    row.check()?;
    let mut updated = Vec::new();
    let (month, year) = (i64::from(req.expiry.month()), i64::from(req.expiry.year()));
    if (year, month) > (row.exp_year, row.exp_month) {
        (row.exp_year, row.exp_month) = (year, month);
        updated.push("expiry");
    }
    if let Some(name) = &req.card.name
        && stored_name_differs(keys, tenant, &row, name.expose())?
    {
        updated.push("name");
    }
    if let Some(m) = metadata
        && row.metadata.as_deref() != Some(m)
    {
        row.metadata = Some(m.to_owned());
        updated.push("metadata");
    }
    if let Some(e) = expires_at
        && row.expires_at != Some(e)
    {
        row.expires_at = Some(e);
        updated.push("expires_at");
    }
    // A new name is re-sealed; take the key before changing anything, so a refusal
    // (the key is no longer active in the database) leaves the row as it was. On
    // PostgreSQL every change of terms seals the subject and metadata again, under
    // the active key too.
    let pg = conn.is_postgres();
    let fresh = if updated.contains(&"name") || (pg && !updated.is_empty()) {
        state.sealing_keyring(conn, keys)?
    } else {
        None
    };
    let active = fresh.as_deref().unwrap_or(keys);
    let reseal_key = if updated.contains(&"name") {
        Some(active.active_key()?)
    } else {
        None
    };
    if !updated.is_empty() {
        let personal = if pg {
            personal::seal(
                keys,
                active.active_key()?,
                tenant,
                &row.token,
                row.subject.as_deref(),
                row.metadata.as_deref(),
            )?
        } else {
            SealedPersonal::default()
        };
        conn.update_card_terms(
            row.id,
            row.exp_month,
            row.exp_year,
            row.metadata.as_deref(),
            personal.sealed.as_deref(),
            row.expires_at,
        )?;
    }
    if let Some(key) = reseal_key {
        let mut nonce = [0u8; 12];
        rng::fill(&mut nonce)?;
        let sealed = key.seal(tenant, &row.token, &req.card, nonce)?;
        conn.update_card_sealed(
            row.id,
            sealed.key_version,
            &sealed.nonce[..],
            &sealed.ciphertext,
        )?;
        state.count_encryption(sealed.key_version);
        row.key_version = sealed.key_version;
    }
    let mut info = row.info(true)?;
    info.updated = updated;
    Ok(info)
}

/// Whether the cardholder name sealed in `row` is not `name`. A row sealed under
/// a key this process does not hold yet (rotated and rewrapped by another one)
/// counts as different: it is sealed again under the active key. A row that does
/// not open under its own key is an error, never overwritten.
fn stored_name_differs(
    keys: &Keyring,
    tenant: &str,
    row: &CardRow,
    name: &str,
) -> Result<bool, VaultError> {
    let Some(key) = keys.data.get(&row.key_version) else {
        return Ok(true);
    };
    let sealed = SealedRecord {
        key_version: row.key_version,
        nonce: row
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| VaultError::Decryption)?,
        ciphertext: row.ciphertext.clone(),
    };
    let stored = key
        .open(tenant, &row.token, &sealed)
        .map_err(|_| VaultError::Decryption)?;
    // Not a secret comparison: the answer says whether the name changed anyway,
    // and the caller holds the card number.
    Ok(stored.name.as_ref().map(|n| n.expose()) != Some(name))
}
