//! API tokens: a name, a role and the hash of the secret (the secret itself is never kept);
//! the store's own secrets.

use rand::RngExt;
use rusqlite::{OptionalExtension, params};

use super::{StorageError, Store};

/// A token as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Who or what holds it, unique for ever.
    pub name: String,
    /// Its role, as text.
    pub role: String,
    /// When it was created, Unix ms.
    pub created: i64,
    /// When it was revoked, Unix ms.
    pub revoked: Option<i64>,
}

impl Store {
    /// Adds a token; false when the name was ever used.
    pub fn add_token(
        &mut self,
        name: &str,
        role: &str,
        hash: &str,
        now: i64,
    ) -> Result<bool, StorageError> {
        let writer = self.write()?;
        let added = writer
            .tx
            .prepare_cached(
                "INSERT OR IGNORE INTO api_tokens (name, role, hash, created) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![name, role, hash, now])?;
        writer.commit()?;
        Ok(added == 1)
    }

    /// Revokes the token `name` at `now`; false when there is no such token in use.
    pub fn revoke_token(&mut self, name: &str, now: i64) -> Result<bool, StorageError> {
        let writer = self.write()?;
        let changed = writer
            .tx
            .prepare_cached(
                "UPDATE api_tokens SET revoked = ?2 WHERE name = ?1 AND revoked IS NULL",
            )?
            .execute(params![name, now])?;
        writer.commit()?;
        Ok(changed == 1)
    }

    /// The token in use whose secret hashes to `hash`: its name and role.
    pub fn token_by_hash(&self, hash: &str) -> Result<Option<(String, String)>, StorageError> {
        Ok(self
            .connection
            .prepare_cached(
                "SELECT name, role FROM api_tokens WHERE hash = ?1 AND revoked IS NULL",
            )?
            .query_row([hash], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?)
    }

    /// The store's secret `name`, 32 random bytes made on first use and kept for ever
    /// (it keys what is told of the store's data, so whoever reads the store could read
    /// that data anyway).
    pub fn secret(&mut self, name: &str) -> Result<Vec<u8>, StorageError> {
        let fresh: [u8; 32] = rand::rng().random();
        let writer = self.write()?;
        writer
            .tx
            .prepare_cached("INSERT OR IGNORE INTO secrets (name, value) VALUES (?1, ?2)")?
            .execute(params![name, &fresh[..]])?;
        let value = writer
            .tx
            .prepare_cached("SELECT value FROM secrets WHERE name = ?1")?
            .query_row([name], |row| row.get(0))?;
        writer.commit()?;
        Ok(value)
    }

    /// Every token ever created, by name.
    pub fn tokens(&self) -> Result<Vec<TokenRow>, StorageError> {
        let mut statement = self
            .connection
            .prepare_cached("SELECT name, role, created, revoked FROM api_tokens ORDER BY name")?;
        let rows = statement.query_map([], |row| {
            Ok(TokenRow {
                name: row.get(0)?,
                role: row.get(1)?,
                created: row.get(2)?,
                revoked: row.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_made_once_and_kept_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path(), 10).unwrap().secret("a").unwrap();
        let mut store = Store::open(dir.path(), 10).unwrap();
        assert_eq!(first.len(), 32);
        assert_eq!(store.secret("a").unwrap(), first);
        assert_ne!(store.secret("b").unwrap(), first);
    }
}
