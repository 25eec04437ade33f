//! How a [`KeyState`] is stored in the `data_keys.state` column of either engine:
//! its name as text; an unknown name is an error, never a default. SQLite reads and
//! writes it through rusqlite's traits; PostgreSQL reads it through the driver's
//! `FromSql` (below) and is written its name ([`KeyState::as_str`]).
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::key_state::KeyState;

impl ToSql for KeyState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for KeyState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value
            .as_str()?
            .parse()
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

/// PostgreSQL: a `text` column holding the state's name.
impl<'a> postgres::types::FromSql<'a> for KeyState {
    fn from_sql(
        ty: &postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let name = <&str as postgres::types::FromSql>::from_sql(ty, raw)?;
        Ok(name.parse::<KeyState>()?)
    }

    fn accepts(ty: &postgres::types::Type) -> bool {
        <&str as postgres::types::FromSql>::accepts(ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    #[test]
    fn names_round_trip_through_sql() {
        let conn = Connection::open_in_memory().unwrap();
        for s in KeyState::ALL {
            let back: KeyState = conn.query_row("SELECT ?1", [s], |r| r.get(0)).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn an_unknown_stored_state_is_an_error_not_a_default() {
        let conn = Connection::open_in_memory().unwrap();
        let res: rusqlite::Result<KeyState> = conn.query_row("SELECT 'activ'", [], |r| r.get(0));
        let err = res.unwrap_err();
        assert!(matches!(err, rusqlite::Error::FromSqlConversionFailure(..)));
        // The stored bytes are not echoed.
        assert!(!err.to_string().contains("activ"), "{err}");
        let res: rusqlite::Result<KeyState> = conn.query_row("SELECT 1", [], |r| r.get(0));
        assert!(res.is_err());
    }
}
