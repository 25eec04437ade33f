//! A card row's sealed personal data on PostgreSQL (`cards.metadata_sealed`: the
//! subject and metadata sealed under a data key), read and replaced by a rewrap
//! so it moves to the active key with the card and outlives the old key's
//! destruction. Only sealed bytes pass through.

use postgres::GenericClient;

use super::PgError;

/// The sealed personal data of row `id` (`None`: no such row, or none stored).
pub fn sealed(c: &mut impl GenericClient, id: i64) -> Result<Option<Vec<u8>>, PgError> {
    Ok(
        c.query_opt("SELECT metadata_sealed FROM cards WHERE id = $1", &[&id])?
            .map(|r| r.try_get::<_, Option<Vec<u8>>>(0))
            .transpose()?
            .flatten(),
    )
}

/// Replaces the sealed personal data of row `id`.
pub fn update_sealed(c: &mut impl GenericClient, id: i64, blob: &[u8]) -> Result<(), PgError> {
    c.execute(
        "UPDATE cards SET metadata_sealed = $2 WHERE id = $1",
        &[&id, &blob],
    )?;
    Ok(())
}
