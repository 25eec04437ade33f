//! What an audit event says: who did what to which tenant's data, and how it ended.
use std::borrow::Cow;
use std::fmt;

use time::OffsetDateTime;

use super::encoding::{self, ChainHash};
use super::error::AuditError;

/// Longest accepted text field, in bytes (all fields but `details`).
pub const MAX_FIELD_LEN: usize = 1024;
/// Longest accepted `details` field, in bytes.
pub const MAX_DETAILS_LEN: usize = 16 * 1024;
/// Longest action name or outcome code, in bytes.
pub const MAX_CODE_LEN: usize = 64;

/// Who acted.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Actor {
    /// The client certificate's common name, `admin:<os user>` for the CLI,
    /// or `unauthenticated` when no identity was established.
    pub name: String,
    /// SHA-256 fingerprint of the client certificate (hex), when there was one.
    pub fingerprint: Option<String>,
}

impl Actor {
    /// An API client identified by its certificate.
    pub fn client(common_name: impl Into<String>, fingerprint: impl Into<String>) -> Actor {
        Actor {
            name: common_name.into(),
            fingerprint: Some(fingerprint.into()),
        }
    }

    /// An administrator using the CLI as OS user `os_user`.
    pub fn admin(os_user: &str) -> Actor {
        Actor {
            name: format!("admin:{os_user}"),
            fingerprint: None,
        }
    }

    /// A request whose authentication failed (no verified identity).
    pub fn unauthenticated(fingerprint: Option<String>) -> Actor {
        Actor {
            name: "unauthenticated".to_owned(),
            fingerprint,
        }
    }
}

/// Every action panvault records: the one place their names are written. The
/// vault emits exactly these; the compliance checks classify exactly these (an
/// exhaustive match each, so a new action cannot go unclassified).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// API: tokenize a card (`POST /v1/tokens`).
    Tokenize,
    /// API: read a token's masked facts (`GET /v1/tokens/{token}`).
    Read,
    /// API: detokenize (reveal a card), always with a purpose.
    Detokenize,
    /// API: delete a token.
    Delete,
    /// Admin or API: a data subject's (or a token's) card data was erased.
    Erase,
    /// Admin or server: old card data or audit events were purged under the
    /// retention policy.
    RetentionPurge,
    /// API: a request refused before reaching an operation (authentication,
    /// authorization, validation).
    Denied,
    /// Admin: a vault was created.
    Init,
    /// Admin: the server started.
    ServeStart,
    /// Admin: the server stopped.
    ServeStop,
    /// Admin: a new data key became active.
    KeyRotate,
    /// Admin: records were re-encrypted under the active key (one event per batch).
    KeyRewrap,
    /// Admin: a data key was retired (decrypt only).
    KeyRetire,
    /// Admin: a data key was destroyed.
    KeyDestroy,
    /// Admin: the root key was rotated (wrapped keys re-wrapped).
    MasterRotate,
    /// Admin: the unsealing passphrase was changed.
    MasterChangePassphrase,
    /// Admin: the unsealing secret was split into (new) custodian shares.
    MasterReshare,
    /// Admin: the audit log was verified.
    AuditVerify,
    /// Admin: the audit log was exported.
    AuditExport,
    /// Admin: a checkpoint was signed and printed for off-host keeping.
    AuditCheckpoint,
    /// Admin: a compliance check run.
    ComplianceRun,
    /// Admin: the server started despite failing compliance checks.
    ServeNoncompliant,
    /// Server: a vault node joined a log shared by several nodes (the first
    /// event of its chain).
    NodeRegister,
    /// API: a card was sent to a payment provider (relay), always with a purpose;
    /// recorded before any byte leaves for the provider.
    Relay,
    /// API: how a relay ended (the provider's status, bytes, card numbers masked
    /// in its answer), recorded after the answer.
    RelayResult,
}

/// What an event of an [`Action`] must name besides who acted and how it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// Nothing: an administrative or refused action.
    None,
    /// The tenant whose card data it touched (an erasure by data subject).
    Tenant,
    /// The tenant and the token whose card data it touched.
    Token,
}

impl Action {
    /// Every action, in declaration order.
    pub const ALL: [Action; 25] = [
        Action::Tokenize,
        Action::Read,
        Action::Detokenize,
        Action::Delete,
        Action::Erase,
        Action::RetentionPurge,
        Action::Denied,
        Action::Init,
        Action::ServeStart,
        Action::ServeStop,
        Action::KeyRotate,
        Action::KeyRewrap,
        Action::KeyRetire,
        Action::KeyDestroy,
        Action::MasterRotate,
        Action::MasterChangePassphrase,
        Action::MasterReshare,
        Action::AuditVerify,
        Action::AuditExport,
        Action::AuditCheckpoint,
        Action::ComplianceRun,
        Action::ServeNoncompliant,
        Action::NodeRegister,
        Action::Relay,
        Action::RelayResult,
    ];

    /// The name stored in the log.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Tokenize => "tokenize",
            Action::Read => "token.read",
            Action::Detokenize => "detokenize",
            Action::Delete => "token.delete",
            Action::Erase => "erase",
            Action::RetentionPurge => "retention.purge",
            Action::Denied => "auth.failed",
            Action::Init => "init",
            Action::ServeStart => "serve.start",
            Action::ServeStop => "serve.stop",
            Action::KeyRotate => "key.rotate",
            Action::KeyRewrap => "key.rewrap",
            Action::KeyRetire => "key.retire",
            Action::KeyDestroy => "key.destroy",
            Action::MasterRotate => "master_key.rotate",
            Action::MasterChangePassphrase => "master_key.change_passphrase",
            Action::MasterReshare => "master_key.split",
            Action::AuditVerify => "audit.verify",
            Action::AuditExport => "audit.export",
            Action::AuditCheckpoint => "audit.checkpoint",
            Action::ComplianceRun => "compliance.run",
            Action::ServeNoncompliant => "serve.noncompliant",
            Action::NodeRegister => "node.register",
            Action::Relay => "relay",
            Action::RelayResult => "relay.result",
        }
    }

    /// The action stored under `name`, if it is one of ours.
    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// What a successful event of this action must name (PCI DSS 10.2.2: the
    /// affected data): card-data actions name their tenant, and their token
    /// unless they erase a whole data subject.
    pub const fn resource(self) -> Resource {
        match self {
            Action::Tokenize
            | Action::Read
            | Action::Detokenize
            | Action::Delete
            | Action::Relay
            | Action::RelayResult => Resource::Token,
            Action::Erase => Resource::Tenant,
            Action::RetentionPurge
            | Action::Denied
            | Action::Init
            | Action::ServeStart
            | Action::ServeStop
            | Action::KeyRotate
            | Action::KeyRewrap
            | Action::KeyRetire
            | Action::KeyDestroy
            | Action::MasterRotate
            | Action::MasterChangePassphrase
            | Action::MasterReshare
            | Action::AuditVerify
            | Action::AuditExport
            | Action::AuditCheckpoint
            | Action::ComplianceRun
            | Action::ServeNoncompliant
            | Action::NodeRegister => Resource::None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An action's name as stored: one of [`Action`], or a custom name made of
/// `a-z 0-9 . _ -` (at most [`MAX_CODE_LEN`] bytes) given to [`ActionName::new`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ActionName(Cow<'static, str>);

impl ActionName {
    /// A custom action name: 1 to [`MAX_CODE_LEN`] bytes of `a-z 0-9 . _ -`.
    pub fn new(name: impl Into<String>) -> Result<ActionName, AuditError> {
        let name = name.into();
        check_code("action", &name)?;
        Ok(ActionName(Cow::Owned(name)))
    }

    /// A name read back from the database, taken as it is.
    pub(crate) fn stored(name: String) -> ActionName {
        ActionName(Cow::Owned(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The [`Action`] of this name, if it is one of ours.
    pub fn action(&self) -> Option<Action> {
        Action::from_name(self.as_str())
    }
}

impl From<Action> for ActionName {
    fn from(a: Action) -> Self {
        ActionName(Cow::Borrowed(a.as_str()))
    }
}

impl PartialEq<Action> for ActionName {
    fn eq(&self, other: &Action) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Debug for ActionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActionName({})", self.as_str())
    }
}

impl fmt::Display for ActionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the operation ended. Codes are short machine names (`forbidden`,
/// `audit_unavailable`, …): 1 to [`MAX_CODE_LEN`] bytes of `a-z 0-9 . _ -`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Outcome {
    /// Done.
    Success,
    /// Refused (authentication, authorization, validation, policy), with its code.
    Denied(String),
    /// Failed, with its error code.
    Error(String),
}

impl Outcome {
    /// The stored `outcome` column: `success`, `denied` or `error`.
    pub fn kind_str(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied(_) => "denied",
            Outcome::Error(_) => "error",
        }
    }

    /// The stored `code` column.
    pub fn code(&self) -> Option<&str> {
        match self {
            Outcome::Success => None,
            Outcome::Denied(c) | Outcome::Error(c) => Some(c),
        }
    }

    fn from_stored(kind: &str, code: Option<String>) -> Option<Outcome> {
        match (kind, code) {
            ("success", None) => Some(Outcome::Success),
            ("denied", Some(c)) => Some(Outcome::Denied(c)),
            ("error", Some(c)) => Some(Outcome::Error(c)),
            _ => None,
        }
    }
}

/// An event as the caller builds it, before it gets its sequence number and hash.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NewEvent {
    /// When it happened (stored in UTC with nanosecond precision).
    pub time: OffsetDateTime,
    /// Who acted.
    pub actor: Actor,
    /// What was done.
    pub action: ActionName,
    /// The tenant whose data was concerned, if any.
    pub tenant: Option<String>,
    /// The token concerned, if any (never a card number).
    pub token: Option<String>,
    /// The declared purpose of a detokenize.
    pub purpose: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// The request id (from the API, or generated by the CLI).
    pub request_id: Option<String>,
    /// The peer address (`ip:port`).
    pub peer: Option<String>,
    /// Extra facts: counts, key versions, share numbers, a report's SHA-256 — never
    /// secrets, card numbers or raw subject ids (use [`super::subject_hash`]).
    pub details: Option<String>,
}

impl NewEvent {
    /// An event with the required fields; add the others with the `with_*` methods.
    pub fn new(
        time: OffsetDateTime,
        actor: Actor,
        action: impl Into<ActionName>,
        outcome: Outcome,
    ) -> NewEvent {
        NewEvent {
            time,
            actor,
            action: action.into(),
            tenant: None,
            token: None,
            purpose: None,
            outcome,
            request_id: None,
            peer: None,
            details: None,
        }
    }

    /// Sets the tenant.
    pub fn with_tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Sets the token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sets the purpose.
    pub fn with_purpose(mut self, purpose: impl Into<String>) -> Self {
        self.purpose = Some(purpose.into());
        self
    }

    /// Sets the request id.
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    /// Sets the peer address.
    pub fn with_peer(mut self, peer: impl Into<String>) -> Self {
        self.peer = Some(peer.into());
        self
    }

    /// Sets the details.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    /// Checks field lengths and codes, so a caller can refuse bad input (400)
    /// before it reaches the writer. [`super::AuditChain::append`] checks again.
    pub fn validate(&self) -> Result<(), AuditError> {
        check_len("actor", Some(&self.actor.name), MAX_FIELD_LEN)?;
        if self.actor.name.is_empty() {
            return Err(AuditError::InvalidEvent {
                field: "actor",
                reason: "is empty",
            });
        }
        check_len("actor_fp", self.actor.fingerprint.as_deref(), MAX_FIELD_LEN)?;
        check_code("action", self.action.as_str())?;
        check_len("tenant", self.tenant.as_deref(), MAX_FIELD_LEN)?;
        check_len("token", self.token.as_deref(), MAX_FIELD_LEN)?;
        check_len("purpose", self.purpose.as_deref(), MAX_FIELD_LEN)?;
        if let Some(code) = self.outcome.code() {
            check_code("code", code)?;
        }
        check_len("request_id", self.request_id.as_deref(), MAX_FIELD_LEN)?;
        check_len("peer", self.peer.as_deref(), MAX_FIELD_LEN)?;
        check_len("details", self.details.as_deref(), MAX_DETAILS_LEN)?;
        time_ns(self.time)?;
        Ok(())
    }

    /// The eleven text columns in canonical order.
    pub(crate) fn text_columns(&self) -> [Option<&str>; 11] {
        [
            Some(self.actor.name.as_str()),
            self.actor.fingerprint.as_deref(),
            Some(self.action.as_str()),
            self.tenant.as_deref(),
            self.token.as_deref(),
            self.purpose.as_deref(),
            Some(self.outcome.kind_str()),
            self.outcome.code(),
            self.request_id.as_deref(),
            self.peer.as_deref(),
            self.details.as_deref(),
        ]
    }

    /// The canonical encoding of this event as event number `seq` (into `buf`).
    pub(crate) fn encode(&self, seq: u64, buf: &mut Vec<u8>) -> Result<(), AuditError> {
        buf.clear();
        encoding::begin(buf, seq, time_ns(self.time)?);
        for col in self.text_columns() {
            encoding::push_text(buf, col.map(str::as_bytes));
        }
        Ok(())
    }
}

/// A stored event, as read back from the log.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Event {
    /// Its sequence number (1, 2, 3 …).
    pub seq: u64,
    /// Everything the caller said.
    pub event: NewEvent,
    /// Hash of the previous event ([`ChainHash::GENESIS`] for seq 1).
    pub prev_hash: ChainHash,
    /// `SHA-256(prev_hash ‖ canonical encoding)`.
    pub hash: ChainHash,
}

impl Event {
    /// Builds an event from the stored columns (see [`super::SCHEMA_SQL`] for the order).
    pub(crate) fn from_row(row: &rusqlite::Row<'_>) -> Result<Event, AuditError> {
        let seq_raw: i64 = row.get(0)?;
        let bad = || AuditError::CorruptEvent { seq: seq_raw };
        let seq = u64::try_from(seq_raw).map_err(|_| bad())?;
        let time_ns: i64 = row.get(1).map_err(|_| bad())?;
        let text = |i: usize| -> Result<Option<String>, AuditError> {
            row.get::<_, Option<String>>(i).map_err(|_| bad())
        };
        let time =
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(time_ns)).map_err(|_| bad())?;
        let actor = Actor {
            name: text(2)?.ok_or_else(bad)?,
            fingerprint: text(3)?,
        };
        let action = ActionName::stored(text(4)?.ok_or_else(bad)?);
        let outcome_kind = text(8)?.ok_or_else(bad)?;
        let outcome = Outcome::from_stored(&outcome_kind, text(9)?).ok_or_else(bad)?;
        let blob = |i: usize| -> Result<ChainHash, AuditError> {
            let v: Vec<u8> = row.get(i).map_err(|_| bad())?;
            ChainHash::from_slice(&v).ok_or_else(bad)
        };
        Ok(Event {
            seq,
            event: NewEvent {
                time,
                actor,
                action,
                tenant: text(5)?,
                token: text(6)?,
                purpose: text(7)?,
                outcome,
                request_id: text(10)?,
                peer: text(11)?,
                details: text(12)?,
            },
            prev_hash: blob(13)?,
            hash: blob(14)?,
        })
    }
}

/// The same instant in UTC (refused if that falls outside the representable range).
pub(crate) fn utc(t: OffsetDateTime) -> Result<OffsetDateTime, AuditError> {
    t.checked_to_offset(time::UtcOffset::UTC)
        .ok_or(AuditError::TimeOutOfRange)
}

/// Unix nanoseconds of a time, as stored (the `time_ns` columns).
pub fn time_ns(t: OffsetDateTime) -> Result<i64, AuditError> {
    i64::try_from(t.unix_timestamp_nanos()).map_err(|_| AuditError::TimeOutOfRange)
}

/// The time of stored Unix nanoseconds.
pub(crate) fn from_time_ns(ns: i64) -> Result<OffsetDateTime, AuditError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .map_err(|_| AuditError::TimeOutOfRange)
}

fn check_len(field: &'static str, value: Option<&str>, max: usize) -> Result<(), AuditError> {
    match value {
        Some(v) if v.len() > max => Err(AuditError::InvalidEvent {
            field,
            reason: "is too long",
        }),
        _ => Ok(()),
    }
}

fn check_code(field: &'static str, code: &str) -> Result<(), AuditError> {
    if code.is_empty() || code.len() > MAX_CODE_LEN {
        return Err(AuditError::InvalidEvent {
            field,
            reason: "must be 1 to 64 bytes",
        });
    }
    if !code
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(AuditError::InvalidEvent {
            field,
            reason: "may only contain a-z 0-9 . _ -",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
