//! The life cycle of a data key, as stored in `data_keys.state`: one definition
//! for the store, the service, the CLI and the compliance facts.

use std::fmt;
use std::str::FromStr;

/// The state of a data key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Encrypts new records (at most one key is active).
    Active,
    /// Superseded by a rotation: decrypts old records until they are re-wrapped.
    DecryptOnly,
    /// No longer protects any record; its key material is still stored.
    Retired,
    /// Key material deleted.
    Destroyed,
}

impl KeyState {
    /// Every state, in life-cycle order.
    pub const ALL: [KeyState; 4] = [
        KeyState::Active,
        KeyState::DecryptOnly,
        KeyState::Retired,
        KeyState::Destroyed,
    ];

    /// The name stored in the database and shown to users.
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::DecryptOnly => "decrypt_only",
            KeyState::Retired => "retired",
            KeyState::Destroyed => "destroyed",
        }
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so a table's width and alignment apply.
        f.pad(self.as_str())
    }
}

/// A stored key state this build does not know: a corrupted row, never a default.
/// The value itself is not kept (a corrupted column may hold anything).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("data_keys.state holds an unknown key state")]
pub struct UnknownKeyState;

impl FromStr for KeyState {
    type Err = UnknownKeyState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyState::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(UnknownKeyState)
    }
}

impl TryFrom<&str> for KeyState {
    type Error = UnknownKeyState;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// The compliance checks' view of the same state (the audit crate does not depend
/// on the vault, so it has its own type; this is the one place they are mapped).
impl From<KeyState> for panvault_audit::compliance::KeyState {
    fn from(s: KeyState) -> Self {
        use panvault_audit::compliance::KeyState as Fact;
        match s {
            KeyState::Active => Fact::Active,
            KeyState::DecryptOnly => Fact::DecryptOnly,
            KeyState::Retired => Fact::Retired,
            KeyState::Destroyed => Fact::Destroyed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text() {
        for s in KeyState::ALL {
            assert_eq!(s.as_str().parse::<KeyState>(), Ok(s));
            assert_eq!(KeyState::try_from(s.as_str()), Ok(s));
            assert_eq!(format!("{s:<12}|").len(), 13);
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
    }

    #[test]
    fn an_unknown_stored_state_is_an_error_not_a_default() {
        assert_eq!("Active".parse::<KeyState>(), Err(UnknownKeyState));
        assert_eq!("".parse::<KeyState>(), Err(UnknownKeyState));
    }

    #[test]
    fn maps_to_the_compliance_fact() {
        use panvault_audit::compliance::KeyState as Fact;
        for s in KeyState::ALL {
            assert_eq!(Fact::from(s).as_str(), s.as_str());
        }
    }
}
