//! Reading a token back: its metadata, or the card itself, released only after the
//! audit event of the access has committed.

use super::request::{self, AccessContext, Detokenized, TokenInfo};
use super::{
    AuditAction, AuditOutcome, AuditRecord, StoredCard, Vault, audit_hook, audit_unavailable,
    personal,
};
use crate::core::envelope::SealedRecord;
use crate::core::pan::Expiry;
use crate::core::token::Token;
use crate::error::VaultError;
use crate::store::CardRow;

impl Vault {
    /// Reads one row of `tenant` (any other tenant's token is not found).
    async fn read_row(&self, tenant: &str, token: &str) -> Result<CardRow, VaultError> {
        let Some(token) = Token::parse(token) else {
            return Err(VaultError::NotFound);
        };
        // By token and tenant: a bin_last4 token is unique within its tenant only.
        let row = self
            .inner
            .readers
            .card_by_token(token.as_str(), tenant)
            .await?;
        usable(row, tenant, self.now().unix_timestamp())
    }

    /// Opens a PostgreSQL row's sealed subject and metadata (reloading the keys
    /// once if they are sealed under a version made since the last refresh).
    fn open_personal(&self, row: &mut CardRow) -> Result<(), VaultError> {
        let mut keys = self.keys()?;
        if let Some(v) = personal::needs_version(row)
            && !keys.data.contains_key(&v)
        {
            self.refresh_keys()?;
            keys = self.keys()?;
        }
        personal::open(&keys, row)
    }

    /// The stored facts of a token (never the number).
    pub async fn metadata(
        &self,
        tenant: &str,
        token: &str,
        ctx: &AccessContext,
    ) -> Result<TokenInfo, VaultError> {
        let result = self.read_row(tenant, token).await.and_then(|mut r| {
            self.open_personal(&mut r)?;
            let held = self.cvc_status(tenant, &r.token)?;
            let mut info = r.info(false)?;
            info.cvc = Some(held);
            Ok(info)
        });
        self.audit_only(AuditAction::Read, tenant, token, None, &result, ctx)
            .await?;
        result
    }

    /// Decrypts a token's card for `tenant`. The card is released only after the
    /// audit event of this access has committed; if it cannot be, the card is
    /// dropped (zeroized) and the call fails with [`VaultError::AuditUnavailable`].
    pub async fn detokenize(
        &self,
        tenant: &str,
        token: &str,
        purpose: &str,
        ctx: &AccessContext,
    ) -> Result<Detokenized, VaultError> {
        check_purpose(purpose)?;
        if self.is_postgres() {
            return self.detokenize_in_batch(tenant, token, purpose, ctx).await;
        }
        let (result, row_id) = self.open_card(tenant, token).await;
        match (result, row_id) {
            (Ok(card), Some(id)) => {
                // The row was read before this event's transaction: an erasure or
                // delete committed in between must win, so the writer looks again.
                self.audit_release(
                    AuditAction::Detokenize,
                    tenant,
                    id,
                    &card.token,
                    purpose,
                    None,
                    ctx,
                )
                .await?;
                Ok(card)
            }
            (result, _) => {
                self.audit_only(
                    AuditAction::Detokenize,
                    tenant,
                    token,
                    Some(purpose),
                    &result,
                    ctx,
                )
                .await?;
                result
            }
        }
    }

    /// Reads and opens `token`'s card for `tenant`, with the row id it came from
    /// (when there was a row). Records nothing: the caller audits.
    pub(super) async fn open_card(
        &self,
        tenant: &str,
        token: &str,
    ) -> (Result<Detokenized, VaultError>, Option<i64>) {
        let mut row_id = None;
        let result = self.read_row(tenant, token).await.and_then(|mut row| {
            row_id = Some(row.id);
            let mut keys = self.keys()?;
            if !keys.data.contains_key(&row.key_version) {
                // A key made by another process (rotate, then rewrap) since our last
                // refresh: reload once rather than fail.
                self.refresh_keys()?;
                keys = self.keys()?;
            }
            open_row(&keys, tenant, &mut row)
        });
        (result, row_id)
    }

    /// Detokenize on PostgreSQL: the row is read inside the writer batch that
    /// records the access (the batch reads every job's rows with its `BEGIN`,
    /// see `store::pg::session`), opened there, and released once the batch
    /// has committed. Reading it in the event's own transaction makes the
    /// re-check of [`Vault::audit_release`] needless, and saves each request a
    /// read of its own. A row sealed under a key this node has not loaded yet
    /// records nothing: the keys are reloaded and the access is tried once more.
    async fn detokenize_in_batch(
        &self,
        tenant: &str,
        token: &str,
        purpose: &str,
        ctx: &AccessContext,
    ) -> Result<Detokenized, VaultError> {
        let parsed = Token::parse(token).map(|t| t.as_str().to_owned());
        for attempt in 0..2 {
            let keys = self.keys()?;
            let now = self.now().unix_timestamp();
            let hints = crate::store::Hints {
                reads: parsed
                    .iter()
                    .map(|t| (tenant.to_owned(), t.clone()))
                    .collect(),
                ..crate::store::Hints::default()
            };
            let (tenant_s, purpose_s, ctx_c, parsed_c) = (
                tenant.to_owned(),
                purpose.to_owned(),
                ctx.clone(),
                parsed.clone(),
            );
            let step = self
                .write_with(hints, move |conn, state| {
                    let opened = match parsed_c.as_deref() {
                        None => Err(VaultError::NotFound),
                        Some(t) => conn
                            .card_by_token(t, &tenant_s)
                            .map_err(VaultError::Store)
                            .and_then(|row| usable(row, &tenant_s, now))
                            .and_then(|mut r| {
                                if keys.data.contains_key(&r.key_version) {
                                    open_row(&keys, &tenant_s, &mut r).map(Some)
                                } else {
                                    Ok(None)
                                }
                            }),
                    };
                    // A key to load first: nothing is released, nothing recorded.
                    if let Ok(None) = opened {
                        return (true, Ok(None));
                    }
                    let rec = AuditRecord {
                        action: AuditAction::Detokenize,
                        tenant: Some(&tenant_s),
                        token: match &opened {
                            Ok(Some(card)) => Some(card.token.as_str()),
                            _ => parsed_c.as_deref(),
                        },
                        purpose: Some(&purpose_s),
                        subject: None,
                        outcome: match &opened {
                            Ok(_) => AuditOutcome::Success,
                            Err(e) => AuditOutcome::from_error(e),
                        },
                        details: None,
                    };
                    if let Err(e) = state.record(conn, &keys, &ctx_c, &rec, now) {
                        return (false, Err(e));
                    }
                    (true, Ok(Some(opened)))
                })
                .await
                .map_err(audit_unavailable)?;
            match step {
                Some(result) => return result.and_then(|c| c.ok_or(VaultError::Decryption)),
                None if attempt == 0 => {
                    self.refresh_keys()?;
                }
                None => {}
            }
        }
        Err(VaultError::Decryption)
    }

    /// Records the event of a successful detokenize (or relay: `action`) of row `id`, inside a writer
    /// transaction that first checks the row is still there (same token and
    /// tenant, not expired). If it is gone (erased, deleted or expired since it
    /// was read) the event says `not_found` and so does the answer: the caller
    /// drops the card, which zeroizes it. One lookup by rowid in the writer.
    #[expect(
        clippy::too_many_arguments,
        reason = "one event's fields; a struct for one private call adds nothing"
    )]
    pub(super) async fn audit_release(
        &self,
        action: AuditAction,
        tenant: &str,
        id: i64,
        token: &str,
        purpose: &str,
        details: Option<&str>,
        ctx: &AccessContext,
    ) -> Result<(), VaultError> {
        let keys = self.keys()?;
        let now = self.now().unix_timestamp();
        let rec = AuditRecord {
            action,
            tenant: Some(tenant),
            token: Some(token),
            purpose: Some(purpose),
            subject: None,
            outcome: AuditOutcome::Success,
            details,
        };
        // Built here, off the writer thread; the rare refusal is built there.
        let ev = audit_hook::build_event(&keys, ctx, &rec, now)?;
        let (tenant_s, token_s, purpose_s, ctx) = (
            tenant.to_owned(),
            token.to_owned(),
            purpose.to_owned(),
            ctx.clone(),
        );
        let hints = crate::store::Hints {
            live: vec![id],
            ..crate::store::Hints::default()
        };
        let still_held = self
            .write_with(hints, move |conn, state| {
                let alive = conn
                    .card_is_live(id, &token_s, &tenant_s, now)
                    .map_err(VaultError::Store);
                let appended = match alive {
                    Ok(true) => state.audit_mut().append(conn, &ev).map(|_| true),
                    Ok(false) => {
                        let gone = AuditRecord {
                            action,
                            tenant: Some(&tenant_s),
                            token: Some(&token_s),
                            purpose: Some(&purpose_s),
                            subject: None,
                            outcome: AuditOutcome::from_error(&VaultError::NotFound),
                            details: None,
                        };
                        state.record(conn, &keys, &ctx, &gone, now).map(|_| false)
                    }
                    Err(e) => Err(e),
                };
                match appended {
                    Ok(held) => (true, Ok(held)),
                    Err(e) => (false, Err(e)),
                }
            })
            .await
            .map_err(audit_unavailable)?;
        if still_held {
            Ok(())
        } else {
            Err(VaultError::NotFound)
        }
    }
}

/// `row` if it is `tenant`'s and its token has not expired at `now`; any other
/// tenant's token, or none, is not found.
fn usable(row: Option<CardRow>, tenant: &str, now: i64) -> Result<CardRow, VaultError> {
    match row {
        Some(r) if r.tenant == tenant && r.expires_at.is_none_or(|e| e > now) => Ok(r),
        _ => Err(VaultError::NotFound),
    }
}

/// Opens `row`'s sealed card (its ciphertext taken out of it) under its key
/// version in `keys`, bound to `tenant` and the row's token.
fn open_row(
    keys: &super::keyring::Keyring,
    tenant: &str,
    row: &mut CardRow,
) -> Result<Detokenized, VaultError> {
    let key = keys
        .data
        .get(&row.key_version)
        .ok_or(VaultError::Decryption)?;
    let nonce: [u8; 12] = row
        .nonce
        .as_slice()
        .try_into()
        .map_err(|_| VaultError::Decryption)?;
    let sealed = SealedRecord {
        key_version: row.key_version,
        nonce,
        ciphertext: std::mem::take(&mut row.ciphertext),
    };
    let card = key
        .open(tenant, &row.token, &sealed)
        .map_err(|_| VaultError::Decryption)?;
    let expiry = Expiry::from_stored(row.exp_month, row.exp_year).ok_or(VaultError::Decryption)?;
    Ok(Detokenized {
        token: row.token.clone(),
        card,
        expiry,
    })
}

/// A purpose is required: 1 to 256 printable characters, no card number.
pub(super) fn check_purpose(purpose: &str) -> Result<(), VaultError> {
    if purpose.trim().is_empty()
        || purpose.chars().count() > 256
        || purpose.chars().any(char::is_control)
    {
        return Err(VaultError::invalid(
            "purpose",
            "required: 1 to 256 printable characters",
        ));
    }
    if request::contains_card_number(purpose) {
        return Err(VaultError::invalid(
            "purpose",
            "must not contain a card number",
        ));
    }
    Ok(())
}
