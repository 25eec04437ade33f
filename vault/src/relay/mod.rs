//! The relay to payment providers: a caller's request template with `{{card.*}}`
//! placeholders is resolved with the card's data, optionally signed, sent to a
//! configured destination, and the provider's answer is masked before it goes
//! back.
//!
//! This module is engine-neutral (no SQL): the service opens the card and records
//! the audit event; everything here works on values it is handed.

mod headers;

pub use headers::is_reserved_header;
