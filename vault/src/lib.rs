//! # panvault-vault
//!
//! The card vault: validated card numbers ([`Pan`]), tokens, AES-256-GCM envelope
//! encryption under versioned data keys wrapped by a root key, a durable SQLite
//! store with a group-commit writer, and the [`Vault`] service the HTTP API is
//! thin on top of.
//!
//! The module `core` sees card numbers and key bytes and does no I/O; `store`
//! does the I/O and sees only sealed records; `service` ties them together.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod core;

pub use crate::core::CryptoError;
pub use crate::core::cvc::Cvc;
pub use crate::core::pan::{CardError, CardSecret, CardholderName, Expiry, Pan};
pub use crate::core::secret::{SecretKey32, SecretText};
pub use crate::core::token::{Token, TokenFormat};
pub mod data_dir;
mod error;
mod key_state;
pub mod service;
pub mod store;

pub use crate::data_dir::DataDir;
pub use crate::error::VaultError;
pub use crate::key_state::{KeyState, UnknownKeyState};
pub use crate::service::keyring::{SealSpec, Unlock};
pub use crate::service::request::{
    AccessContext, CardFacts, Detokenized, TokenInfo, TokenizeRequest,
};
pub use crate::service::{Admin, Clock, KeyInfo, Vault, VaultOptions, system_clock};
pub mod compliance;
pub mod config;
pub mod http;
pub mod hygiene;
pub mod relay;
pub mod tls;

// The API server: configuration, HTTP API, mTLS (re-exported so a host program
// can embed the server without naming modules).
pub use crate::config::{Config, ConfigError, Permission};
pub use crate::http::{RunningServer, StartError, start};
pub use crate::tls::ClientIdentity;
