//! API bearer tokens. A token is `ibs_` followed by 32 random bytes in base64url; only its BLAKE3 hash
//! is stored, with a role and a label. Verification hashes the presented token and compares it with
//! every stored hash using `blake3::Hash`'s constant-time equality, without stopping at a match, so
//! timing reveals neither which token matched nor how much of a hash agreed. A token may carry an
//! expiry time; from then on it is rejected like an unknown token.

use crate::db::Db;
use crate::model::Role;
use crate::paging::{Page, PageKey, PageRequest};
use crate::Result;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use rusqlite::params;
use serde::Serialize;

pub use ibs_types::admin::TokenInfo;

/// Who presented a valid token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenIdentity {
    pub id: i64,
    pub role: Role,
    pub label: String,
}

impl TokenIdentity {
    /// The name used in audit records: `token#ID (label, role)`.
    pub fn actor(&self) -> String {
        format!("token#{} ({}, {})", self.id, self.label, self.role.as_str())
    }
}

fn hash(token: &str) -> blake3::Hash {
    blake3::hash(token.as_bytes())
}

impl Db {
    /// Creates a token and returns it; it is never stored or retrievable again.
    pub fn create_token(&self, role: Role, label: &str, now: i64) -> Result<String> {
        self.create_token_expiring(role, label, now, None)
    }

    /// Creates a token valid until `expires_at` (Unix seconds; `None`: no expiry).
    pub fn create_token_expiring(
        &self,
        role: Role,
        label: &str,
        now: i64,
        expires_at: Option<i64>,
    ) -> Result<String> {
        let mut raw = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
        let token = format!("ibs_{}", B64URL.encode(raw));
        self.conn().execute(
            "INSERT INTO tokens (hash, role, label, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![hash(&token).to_hex().as_str(), role.as_str(), label, now, expires_at],
        )?;
        Ok(token)
    }

    /// The identity of a presented token at time `now`, or `None` (unknown or expired).
    pub fn verify_token(&self, presented: &str, now: i64) -> Result<Option<TokenIdentity>> {
        let h = hash(presented);
        type Row = (i64, String, String, String, Option<i64>);
        let rows: Vec<Row> = {
            let conn = self.conn();
            let mut st = conn.prepare("SELECT id, hash, role, label, expires_at FROM tokens")?;
            let rows = st.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let mut found = None;
        for (id, stored, role, label, expires_at) in rows {
            let Ok(stored) = blake3::Hash::from_hex(stored.as_str()) else {
                continue;
            };
            // blake3::Hash's PartialEq is constant-time.
            if stored == h && found.is_none() && expires_at.is_none_or(|t| now < t) {
                found = Role::parse(&role).map(|role| TokenIdentity { id, role, label });
            }
        }
        Ok(found)
    }

    /// Every stored token, oldest first; `expired` is evaluated at `now`.
    pub fn list_tokens(&self, now: i64) -> Result<Vec<TokenInfo>> {
        let conn = self.conn();
        let mut st =
            conn.prepare("SELECT id, role, label, created_at, expires_at FROM tokens ORDER BY id")?;
        let rows = st.query_map([], |r| {
            let expires_at: Option<i64> = r.get(4)?;
            Ok(TokenInfo {
                id: r.get(0)?,
                role: r.get(1)?,
                label: r.get(2)?,
                created_at: r.get(3)?,
                expires_at,
                expired: expires_at.is_some_and(|t| now >= t),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One page of the stored tokens, oldest first. Key: `id`.
    pub fn tokens_page(&self, now: i64, req: &PageRequest) -> Result<Page<TokenInfo>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT id, role, label, created_at, expires_at FROM tokens
             WHERE (?1 IS NULL OR id > ?1) ORDER BY id LIMIT ?2",
        )?;
        let rows = st.query_map(params![req.after.as_ref().map(|k| k.a), req.fetch()], |r| {
            let expires_at: Option<i64> = r.get(4)?;
            let id: i64 = r.get(0)?;
            Ok((
                PageKey::nums(id, 0),
                TokenInfo {
                    id,
                    role: r.get(1)?,
                    label: r.get(2)?,
                    created_at: r.get(3)?,
                    expires_at,
                    expired: expires_at.is_some_and(|t| now >= t),
                },
            ))
        })?;
        Ok(Page::from_rows(rows.collect::<Result<_, _>>()?, req.limit))
    }

    /// Deletes a token; from then on it is refused like an unknown one. False when no token has
    /// that id.
    pub fn revoke_token(&self, id: i64) -> Result<bool> {
        Ok(self
            .conn()
            .execute("DELETE FROM tokens WHERE id = ?1", [id])?
            > 0)
    }

    pub fn token_count(&self) -> Result<u64> {
        Ok(self
            .conn()
            .query_row("SELECT COUNT(*) FROM tokens", [], |r| r.get::<_, i64>(0))?
            as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_verify_and_hashing() {
        let db = Db::open_in_memory().unwrap();
        let t = db.create_token(Role::Operator, "ci", 1).unwrap();
        assert!(t.starts_with("ibs_"));
        let id = db.verify_token(&t, 1).unwrap().unwrap();
        assert_eq!(id.role, Role::Operator);
        assert!(db.verify_token("ibs_wrong", 1).unwrap().is_none());
        let e = db
            .create_token_expiring(Role::Admin, "short", 1, Some(100))
            .unwrap();
        assert!(db.verify_token(&e, 99).unwrap().is_some());
        assert!(db.verify_token(&e, 100).unwrap().is_none(), "expired");
        assert!(
            db.verify_token(&t, 1_000_000).unwrap().is_some(),
            "no expiry"
        );
        let stored: String = db
            .conn()
            .query_row("SELECT hash FROM tokens", [], |r| r.get(0))
            .unwrap();
        assert!(!stored.contains(&t[4..]));
    }

    #[test]
    fn list_and_revoke() {
        let db = Db::open_in_memory().unwrap();
        let a = db.create_token(Role::Admin, "a", 1).unwrap();
        let r = db
            .create_token_expiring(Role::Reader, "r", 1, Some(50))
            .unwrap();
        let list = db.list_tokens(60).unwrap();
        assert_eq!(list.len(), 2);
        assert!(!list[0].expired && list[1].expired);
        let text = format!("{list:?}");
        assert!(!text.contains(&a[4..]) && !text.contains(&r[4..]));
        assert!(db.revoke_token(list[0].id).unwrap());
        assert!(db.verify_token(&a, 2).unwrap().is_none(), "revoked");
        assert!(!db.revoke_token(list[0].id).unwrap());
    }
}
