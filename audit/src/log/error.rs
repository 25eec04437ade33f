//! The one error type of the audit log.
/// Everything that can go wrong in the audit log.
///
/// Messages never contain key material, card data, event contents or SQL
/// parameters: at most a sequence number, a field name or a fixed reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The database refused or failed an operation (busy, full, I/O, constraint…).
    #[error("audit database error")]
    Database(#[source] rusqlite::Error),
    /// A storage engine other than SQLite (an implementation of
    /// [`super::LogTx`] outside this crate) refused or failed an operation.
    #[error("audit storage error")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// Reading or writing a file (public key, checkpoint, export target) failed.
    #[error("audit I/O error")]
    Io(#[source] std::io::Error),
    /// The audit tables were written by a newer version of panvault.
    #[error("audit schema version {found} is newer than this program supports ({supported})")]
    SchemaTooNew {
        /// Version found in the database.
        found: i64,
        /// Newest version this build understands.
        supported: i64,
    },
    /// An event to append is not acceptable (a field too long, empty, or badly formed).
    #[error("invalid audit event: {field} {reason}")]
    InvalidEvent {
        /// The offending field.
        field: &'static str,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A timestamp lies outside what the log can store (years 1677–2262).
    #[error("timestamp out of range for the audit log")]
    TimeOutOfRange,
    /// A text form (public key, checkpoint, receipt) could not be parsed.
    #[error("cannot parse {what}")]
    Parse {
        /// What was being parsed.
        what: &'static str,
    },
    /// A stored event cannot be decoded (wrong type or value in a column); run `verify`.
    #[error("audit event at seq {seq} cannot be decoded")]
    CorruptEvent {
        /// Sequence number of the row.
        seq: i64,
    },
    /// A signature did not verify with the given public key.
    #[error("signature does not verify")]
    BadSignature,
    /// A signing key could not be built or generated (opaque on purpose).
    #[error("invalid or unusable signing key")]
    Key,
    /// Another writer kept appending to the log at the same time; retry.
    #[error("the audit log was changed concurrently; retry")]
    Conflict,
    /// The database has no audit tables (not a panvault vault, or not initialised).
    #[error("the database has no audit log")]
    NotAnAuditLog,
    /// A step of verification failed unexpectedly (a bug; nothing about the log).
    #[error("internal error during audit verification")]
    Internal,
    /// The sequence counter or a count overflowed.
    #[error("audit sequence number overflow")]
    Overflow,
    /// The requested retention is shorter than the minimum allowed.
    #[error("retention of {days} days is shorter than the minimum of {min_days} days")]
    RetentionTooShort {
        /// Requested retention in whole days.
        days: i64,
        /// Minimum retention in days.
        min_days: i64,
    },
    /// This node is not in the registry of a shared log (register it first).
    #[error("this node is not registered in the shared audit log")]
    NodeNotRegistered,
    /// The operation is not available on this kind of log.
    #[error("{what} is not available on this audit log")]
    Unsupported {
        /// What was asked.
        what: &'static str,
    },
    /// A file given as an export is not a well-formed export (it is refused
    /// before anything in it is verified).
    #[error("line {line} of the export: {reason}")]
    BadExport {
        /// Line number (1-based).
        line: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Pruning refused: the events it would delete fail verification (kept as evidence).
    #[error("refusing to prune: the audit log fails verification at seq {seq} ({kind})")]
    Tampered {
        /// First sequence number where the log breaks.
        seq: u64,
        /// How it breaks.
        kind: super::BreakKind,
    },
}

impl From<rusqlite::Error> for AuditError {
    fn from(e: rusqlite::Error) -> Self {
        AuditError::Database(e)
    }
}

impl From<std::io::Error> for AuditError {
    fn from(e: std::io::Error) -> Self {
        AuditError::Io(e)
    }
}
