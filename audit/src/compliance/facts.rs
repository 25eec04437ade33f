//! The facts the checks read: plain data, collected by the vault
//! (`panvault_vault::compliance`: its inventory, the server configuration,
//! certificate files) and by this crate (the audit log, file modes, the scanner
//! and live probes), or built by hand in tests.
//!
//! Every group is a [`Fact`]: known, unknown (the check is skipped and says why)
//! or failed to collect (the check reports an error). Nothing here holds a card
//! number (only masked ones) or key bytes.
//!
//! One file of plain type definitions (about 700 lines, mostly doc comments): the
//! whole contract between the collectors and the checks, read in one place.
use std::collections::BTreeMap;

use serde::Serialize;
use time::OffsetDateTime;

/// A fact that may be missing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "value", rename_all = "lowercase")]
pub enum Fact<T> {
    /// Collected.
    Known(T),
    /// Not known, and not an error (e.g. the vault does not track it yet); checks
    /// that need it are skipped with this reason.
    Unknown(String),
    /// Collecting it failed; checks that need it report an error with this reason.
    Failed(String),
}

impl<T> Default for Fact<T> {
    fn default() -> Self {
        Fact::Unknown("not collected".to_owned())
    }
}

impl<T> Fact<T> {
    /// The value, if known.
    pub fn known(&self) -> Option<&T> {
        match self {
            Fact::Known(v) => Some(v),
            _ => None,
        }
    }

    /// `Known` from `Ok`, `Failed` from `Err`.
    pub fn from_result<E: std::fmt::Display>(r: Result<T, E>) -> Fact<T> {
        match r {
            Ok(v) => Fact::Known(v),
            Err(e) => Fact::Failed(e.to_string()),
        }
    }
}

/// Everything a run knows.
#[derive(Clone, Debug, Serialize)]
pub struct Facts {
    /// The time the checks are evaluated at.
    #[serde(with = "crate::compliance::facts::rfc3339")]
    pub now: OffsetDateTime,
    /// Keys and seal.
    pub keys: Fact<KeyFacts>,
    /// Stored card data.
    pub data: Fact<DataFacts>,
    /// What the PAN scanner found in the data directory, database, WAL and logs.
    pub scan: Fact<ScanFacts>,
    /// The configured TLS server.
    pub tls: Fact<TlsConfigFacts>,
    /// Certificates named by the configuration (server chain, client CA).
    pub certificates: Fact<Vec<CertSource>>,
    /// Private key files named by the configuration.
    pub key_files: Fact<Vec<KeyFileFacts>>,
    /// Live endpoints probed (empty: none given).
    pub endpoints: Vec<EndpointFacts>,
    /// The audit log.
    pub audit_log: Fact<AuditLogFacts>,
    /// API clients and their permissions.
    pub access: Fact<AccessFacts>,
    /// Modes of the files that protect keys and card data.
    pub files: Fact<Vec<FileFacts>>,
    /// Data subjects' erasure requests (GDPR Art. 17).
    pub erasure: Fact<ErasureFacts>,
    /// Digits of the stored cards kept in the clear, per card-number length.
    pub masking: Fact<Vec<MaskingRow>>,
    /// Card security codes held for the relay, and their keys.
    pub cvc: Fact<CvcFacts>,
    /// When collection started (the report gives the run's real duration).
    #[serde(skip)]
    pub started: std::time::Instant,
}

impl Facts {
    /// Facts where everything is unknown, evaluated at `now`.
    pub fn unknown(now: OffsetDateTime) -> Facts {
        Facts {
            now,
            keys: Fact::default(),
            data: Fact::default(),
            scan: Fact::default(),
            tls: Fact::default(),
            certificates: Fact::default(),
            key_files: Fact::default(),
            endpoints: Vec::new(),
            audit_log: Fact::default(),
            access: Fact::default(),
            files: Fact::default(),
            erasure: Fact::default(),
            masking: Fact::default(),
            cvc: Fact::default(),
            started: std::time::Instant::now(),
        }
    }
}

// ---------------------------------------------------------------- keys

/// Key states as the vault names them. The vault owns the life cycle (its
/// `KeyState`, mapped here in one place); this crate cannot depend on it, so the
/// checks see this copy. There is no "unknown" state: a state the vault cannot
/// read is a collection error, never a value a check could pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Encrypts new records.
    Active,
    /// Superseded: decrypts old records until they are re-wrapped.
    DecryptOnly,
    /// No longer used; should protect no records.
    Retired,
    /// Key material destroyed.
    Destroyed,
}

impl KeyState {
    /// The vault's name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::DecryptOnly => "decrypt_only",
            KeyState::Retired => "retired",
            KeyState::Destroyed => "destroyed",
        }
    }
}

/// One data-encryption key (no key bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DataKeyFacts {
    /// Version.
    pub version: u32,
    /// State.
    pub state: KeyState,
    /// Whole days since it was made.
    pub age_days: i64,
    /// Whole days since a newer key replaced it as the active key (`None` for the
    /// newest key).
    pub superseded_days: Option<i64>,
    /// Records currently sealed under it.
    pub records: i64,
    /// Encryptions ever made with it (AES-GCM random-nonce budget).
    pub encryptions: i64,
}

/// How the root key is sealed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum SealFacts {
    /// One passphrase (Argon2id) unseals the root key.
    Passphrase {
        /// Argon2id memory in KiB.
        memory_kib: u32,
        /// Argon2id passes.
        passes: u32,
        /// Argon2id lanes.
        lanes: u32,
    },
    /// M of N custodian shares reconstruct the unsealing secret.
    Shares {
        /// N.
        total: u8,
        /// M.
        threshold: u8,
    },
    /// A seal method this build does not know.
    Other {
        /// Its name.
        name: String,
    },
}

/// How card fingerprints (the dedup index) are computed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FingerprintFacts {
    /// The algorithm as documented by the vault, e.g. `HMAC-SHA-256/128, per-tenant key (HKDF)`.
    pub algorithm: String,
    /// Whether a secret key is involved (a keyed hash, not a bare hash).
    pub keyed: bool,
    /// Whether the fingerprint key is stored wrapped under the root key.
    pub key_wrapped: bool,
    /// Stored fingerprint length in bytes (largest seen), when there are records.
    pub stored_len: Option<u32>,
}

/// Keys and seal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyFacts {
    /// Data keys, by version.
    pub data_keys: Vec<DataKeyFacts>,
    /// Root key age in whole days.
    pub root_age_days: i64,
    /// How the root key is sealed.
    pub seal: SealFacts,
    /// Card fingerprints.
    pub fingerprint: FingerprintFacts,
}

// ---------------------------------------------------------------- data

/// Stored card data (no card numbers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DataFacts {
    /// Cards stored.
    pub records: i64,
    /// Cards kept longer than the retention period.
    pub records_past_retention: i64,
    /// The retention used for `records_past_retention`: days after the end of the
    /// card's expiry month.
    pub retention_days_after_expiry: i64,
    /// Column names of the cards table (to find stored CVV, track or PIN data).
    pub card_columns: Vec<String>,
    /// Largest number of leading PAN digits stored in the clear (the BIN column).
    pub max_leading_digits: u32,
    /// Largest number of trailing PAN digits stored in the clear (the last-four column).
    pub max_trailing_digits: u32,
}

/// Card security codes held until a card's first relay (PCI DSS 3.3.1.2,
/// 3.3.2), read from the vault's tables without unsealing anything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CvcFacts {
    /// Columns of the table of held codes.
    pub columns: Vec<String>,
    /// The columns a held code is stored in, sealed (what the vault writes).
    pub sealed_layout: Vec<String>,
    /// Codes held.
    pub held: u64,
    /// Codes still stored past their deadline.
    pub past_deadline: u64,
    /// How far past its deadline the most overdue code is (seconds).
    pub most_overdue_secs: Option<i64>,
    /// The longest lifetime a held code was given (seconds).
    pub longest_lifetime_secs: Option<i64>,
    /// Shortest and longest stored (sealed) code, in bytes.
    pub sealed_len: Option<(i64, i64)>,
    /// Codes whose key is already destroyed (unreadable; the sweep deletes them).
    pub orphaned: u64,
    /// Window keys stored.
    pub keys: u64,
    /// Age of the oldest window key (seconds).
    pub oldest_key_age_secs: Option<i64>,
    /// The longest life a window key was given (creation to destruction, seconds).
    pub longest_key_life_secs: Option<i64>,
    /// How far past its destruction time the most overdue key is (seconds).
    pub key_overdue_secs: Option<i64>,
}

/// Stored cards of one card-number length (when it can be read without
/// unsealing) and the digits they keep in the clear.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MaskingRow {
    /// Digits in the card number; `None` when the clear columns do not tell
    /// (an opaque token): only the sealed record knows.
    pub pan_len: Option<u32>,
    /// Cards in this row.
    pub cards: u64,
    /// The most leading digits kept in the clear (the BIN column, and a
    /// format-preserving token).
    pub leading: u32,
    /// The most trailing digits kept in the clear (the last-four column, and a
    /// format-preserving token).
    pub trailing: u32,
}

/// What kind of card data the scanner found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HitKind {
    /// A primary account number.
    Pan,
    /// Magnetic-stripe track 1.
    Track1,
    /// Magnetic-stripe track 2.
    Track2,
}

/// One card number the scanner found (masked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScanHit {
    /// The file (and archive member, `file!member`).
    pub path: String,
    /// Line, from 1.
    pub line: u64,
    /// The number masked (first 6, last 4 at most).
    pub masked: String,
    /// PAN or track data.
    pub kind: HitKind,
    /// One of the networks' published test numbers.
    pub test_card: bool,
}

/// What the scanner looked at and found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScanFacts {
    /// Paths scanned (data directory, extra log paths).
    pub roots: Vec<String>,
    /// Files (and archive members) scanned.
    pub files: u64,
    /// Bytes scanned.
    pub bytes: u64,
    /// Card numbers found.
    pub hits: Vec<ScanHit>,
    /// Files that could not be read completely.
    pub warnings: Vec<String>,
}

// ---------------------------------------------------------------- TLS

/// Whether the server demands client certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// A verified client certificate is mandatory.
    Required,
    /// Asked for but not required.
    Optional,
    /// Not asked for.
    None,
}

/// The TLS server as configured (not probed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TlsConfigFacts {
    /// The configuration file.
    pub source: String,
    /// Protocol versions the server accepts, e.g. `["1.2", "1.3"]`.
    pub versions: Vec<String>,
    /// Cipher suites the server accepts (IANA names).
    pub cipher_suites: Vec<String>,
    /// Client certificates.
    pub client_auth: ClientAuth,
    /// The client CA file.
    pub client_ca: Option<String>,
    /// CRLs configured.
    pub crls: usize,
    /// Why the server itself would refuse this configuration, if it would.
    pub config_error: Option<String>,
}

/// The role of a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CertRole {
    /// The server's own certificate (leaf).
    ServerLeaf,
    /// An intermediate sent with the server certificate.
    ServerChain,
    /// A CA that client certificates must chain to.
    ClientCa,
    /// A certificate presented by a live endpoint.
    Endpoint,
}

impl CertRole {
    /// A short name for reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            CertRole::ServerLeaf => "server",
            CertRole::ServerChain => "server chain",
            CertRole::ClientCa => "client CA",
            CertRole::Endpoint => "endpoint",
        }
    }
}

/// A certificate's public key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum KeyAlgorithm {
    /// RSA with this modulus size.
    Rsa {
        /// Bits.
        bits: u32,
    },
    /// ECDSA on a named curve (`P-256`, `P-384`, `P-521`, or the curve's OID).
    Ec {
        /// Curve name.
        curve: String,
    },
    /// Ed25519.
    Ed25519,
    /// Ed448.
    Ed448,
    /// Anything else (DSA, GOST …), by OID.
    Other {
        /// The algorithm OID.
        oid: String,
    },
}

impl std::fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyAlgorithm::Rsa { bits } => write!(f, "RSA-{bits}"),
            KeyAlgorithm::Ec { curve } => write!(f, "ECDSA {curve}"),
            KeyAlgorithm::Ed25519 => f.write_str("Ed25519"),
            KeyAlgorithm::Ed448 => f.write_str("Ed448"),
            KeyAlgorithm::Other { oid } => write!(f, "key algorithm {oid}"),
        }
    }
}

/// One certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertFacts {
    /// Subject DN.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Serial number (hex).
    pub serial: String,
    /// Validity start.
    #[serde(with = "crate::compliance::facts::rfc3339")]
    pub not_before: OffsetDateTime,
    /// Validity end.
    #[serde(with = "crate::compliance::facts::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Public key.
    pub key: KeyAlgorithm,
    /// Signature algorithm name, e.g. `ecdsa-with-SHA256`.
    pub signature: String,
    /// Hash of the signature algorithm, e.g. `SHA-256` (`SHA-1`, `MD5` are weak).
    pub signature_hash: String,
    /// Subject and issuer are the same (a root).
    pub self_signed: bool,
    /// Basic constraints say CA.
    pub is_ca: bool,
    /// DNS, IP and URI subject alternative names.
    pub sans: Vec<String>,
    /// SHA-256 of the DER (hex).
    pub sha256: String,
}

/// The certificates of one file (or endpoint).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertSource {
    /// What they are for.
    pub role: CertRole,
    /// The file (or `host:port`).
    pub source: String,
    /// The certificates, in file order (leaf first for a chain).
    pub certs: Vec<CertFacts>,
    /// Why the file could not be read or parsed, if so.
    pub error: Option<String>,
}

/// A private key file (its bytes are never read into facts).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyFileFacts {
    /// What it is for, e.g. `tls.key`.
    pub role: String,
    /// The file.
    pub path: String,
    /// The PEM label, e.g. `PRIVATE KEY`, `EC PRIVATE KEY`.
    pub label: Option<String>,
    /// Why it could not be read, if so.
    pub error: Option<String>,
}

/// How a server answered a ClientHello.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum HelloReply {
    /// A ServerHello: the server accepted the offer.
    ServerHello {
        /// The version it chose, e.g. `TLS 1.0`.
        version: String,
        /// The cipher suite it chose (IANA name or hex code).
        suite: String,
    },
    /// An alert: refused.
    Alert {
        /// The alert description, e.g. `protocol_version`.
        description: String,
    },
    /// The connection was closed or reset without an answer: refused.
    Closed,
    /// No answer in time: inconclusive.
    Timeout,
    /// Bytes that are not TLS.
    Unexpected {
        /// What came back (hex of the first bytes).
        detail: String,
    },
}

impl HelloReply {
    /// Whether the server accepted the ClientHello.
    pub fn accepted(&self) -> bool {
        matches!(self, HelloReply::ServerHello { .. })
    }
}

/// A hand-built ClientHello and the server's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HelloProbe {
    /// What was offered, e.g. `TLS 1.0` or `TLS 1.2 with CBC suites only`.
    pub offered: String,
    /// How the server answered.
    pub reply: HelloReply,
}

/// What a live endpoint negotiated with a modern client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Negotiated {
    /// `TLS 1.3` or `TLS 1.2`.
    pub version: String,
    /// IANA suite name.
    pub suite: String,
    /// ALPN protocol, if any.
    pub alpn: Option<String>,
}

/// One live endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointFacts {
    /// `host:port` as given.
    pub endpoint: String,
    /// The address connected to.
    pub address: Option<String>,
    /// Why the probe could not run at all (no connection), if so.
    pub error: Option<String>,
    /// Version and suite a TLS 1.2/1.3 client negotiated.
    pub negotiated: Option<Negotiated>,
    /// Why the modern handshake failed, if it did (for a server that requires a
    /// client certificate, TLS 1.2 handshakes end here).
    pub handshake_error: Option<String>,
    /// The certificates the server presented (leaf first).
    pub chain: Vec<CertFacts>,
    /// The server asked for a client certificate.
    pub client_cert_requested: bool,
    /// The server refused the probe, which had no client certificate.
    pub anonymous_refused: bool,
    /// Hand-built legacy and weak-suite ClientHellos and the answers.
    pub legacy: Vec<HelloProbe>,
}

// ---------------------------------------------------------------- audit log

/// The result of verifying the audit log (see [`crate::log::verify`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditVerifyFacts {
    /// Events verified.
    pub events: u64,
    /// First kept sequence number (greater than 1 after pruning).
    pub first_seq: u64,
    /// Last verified sequence number.
    pub last_seq: u64,
    /// Checkpoints whose signatures verified.
    pub checkpoints: u64,
    /// Prune records whose signatures verified.
    pub prunes: u64,
    /// Events after the latest checkpoint (chained, not yet signed).
    pub unsigned_tail: u64,
    /// The first break: kind (`modified`, `missing`, …) and description.
    pub problem: Option<(String, String)>,
}

/// Counts over the 10.2.2 fields of the events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FieldStats {
    /// Events examined.
    pub examined: u64,
    /// Events without an actor (user identification).
    pub missing_actor: u64,
    /// API events (not `admin:`) without a peer address (origination).
    pub missing_origin: u64,
    /// Card-data events without a tenant or token (affected resource).
    pub missing_resource: u64,
    /// Denied or failed events without an outcome code.
    pub missing_code: u64,
    /// Detokenize events without a declared purpose.
    pub missing_purpose: u64,
}

/// The audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditLogFacts {
    /// The database holding it.
    pub database: String,
    /// Whether the audit tables exist.
    pub present: bool,
    /// Verification, or why it could not run (no public key, unreadable database).
    pub verify: Result<AuditVerifyFacts, String>,
    /// The configured retention of audit events, in days, if set.
    pub retention_days: Option<i64>,
    /// Where `retention_days` comes from (a config key, or the built-in default).
    pub retention_source: String,
    /// For each signed prune record: the retention it applied (`time - cutoff`), in days.
    pub prune_retention_days: Vec<i64>,
    /// The oldest kept event.
    #[serde(with = "crate::compliance::facts::rfc3339::option")]
    pub oldest_event: Option<OffsetDateTime>,
    /// Events per action name.
    pub actions: BTreeMap<String, u64>,
    /// Events by `admin:` actors.
    pub admin_events: u64,
    /// Events whose outcome is `denied`.
    pub denied_events: u64,
    /// 10.2.2 fields.
    pub fields: FieldStats,
}

// ---------------------------------------------------------------- access

/// One API client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClientFacts {
    /// Its label.
    pub name: String,
    /// Certificate common name it matches.
    pub common_name: Option<String>,
    /// URI SAN it matches.
    pub uri_san: Option<String>,
    /// Its tenant.
    pub tenant: String,
    /// What it may do.
    pub permissions: Vec<String>,
}

/// Who may do what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccessFacts {
    /// The configuration file.
    pub source: String,
    /// Every client.
    pub clients: Vec<ClientFacts>,
    /// Every permission that exists.
    pub all_permissions: Vec<String>,
}

/// What a file protects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileRole {
    /// The data directory.
    DataDir,
    /// The database (sealed root key, wrapped keys, records).
    Database,
    /// SQLite's write-ahead log or shared memory file.
    DatabaseWal,
    /// Another file in the data directory.
    DataFile,
    /// A custodian share.
    Share,
    /// A TLS private key.
    TlsKey,
    /// A directory below the data directory.
    Subdir,
    /// Another private key (a PEM file holding one, or a `*.key` file), such as
    /// a CA key that can mint client certificates.
    PrivateKey,
    /// A certificate or public key: may be world-readable, never writable by
    /// others.
    Public,
}

/// The passphrase file `panvault quickstart` writes into a development vault's
/// data directory (one name for the CLI that writes it and the checks that
/// recognise a development vault by it).
pub const DEV_PASSPHRASE_FILE: &str = "dev-passphrase";

impl FileRole {
    /// A short name for reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            FileRole::DataDir => "data directory",
            FileRole::Database => "database (seal)",
            FileRole::DatabaseWal => "database WAL/SHM",
            FileRole::DataFile => "data file",
            FileRole::Share => "custodian share",
            FileRole::TlsKey => "TLS private key",
            FileRole::Subdir => "directory",
            FileRole::PrivateKey => "private key",
            FileRole::Public => "certificate or public key",
        }
    }
}

/// A file's mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileFacts {
    /// The file.
    pub path: String,
    /// What it protects.
    pub role: FileRole,
    /// Permission bits (`st_mode & 0o7777`), `None` if it could not be read.
    pub mode: Option<u32>,
    /// Why it could not be read.
    pub error: Option<String>,
}

// ---------------------------------------------------------------- GDPR

/// An open erasure request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErasureRequest {
    /// Its id (or the keyed subject hash), never a raw subject id.
    pub id: String,
    /// Days since it was received.
    pub age_days: i64,
}

/// Erasure requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErasureFacts {
    /// Requests not completed yet.
    pub open: Vec<ErasureRequest>,
    /// Requests completed.
    pub completed: u64,
}

/// RFC 3339 serialization of times (the `time` crate's `serde` feature is off).
pub(crate) mod rfc3339 {
    use serde::Serializer;
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    pub(crate) fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        let text = t.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub(crate) mod option {
        use serde::Serializer;
        use time::OffsetDateTime;

        pub(crate) fn serialize<S: Serializer>(
            t: &Option<OffsetDateTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }
    }
}
