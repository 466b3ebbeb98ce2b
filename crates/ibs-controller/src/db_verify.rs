//! Per-pack verification records in the state database (table `pack_checks`): when each pack
//! on the share was last re-read and what that found. Scheduled verification picks the packs
//! never verified first, then the least recently verified, so repeated runs cover every pack.

use crate::db::Db;
use crate::paging::{Page, PageKey, PageRequest};
use crate::Result;
use rusqlite::params;
use std::collections::{HashMap, HashSet};

pub(crate) const TABLE: &str = "
CREATE TABLE IF NOT EXISTS pack_checks (
    pack TEXT PRIMARY KEY,
    verified_at INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    reason TEXT,
    bytes INTEGER NOT NULL,
    checks INTEGER NOT NULL
);
";

pub use ibs_types::requests::PackCheck;

impl Db {
    /// Every pack record, by hex pack id.
    pub fn pack_checks(&self) -> Result<HashMap<String, PackCheck>> {
        let conn = self.conn();
        let mut st =
            conn.prepare("SELECT pack, verified_at, ok, reason, bytes, checks FROM pack_checks")?;
        let rows = st.query_map([], |r| {
            Ok(PackCheck {
                pack: r.get(0)?,
                verified_at: r.get(1)?,
                ok: r.get::<_, i64>(2)? != 0,
                reason: r.get(3)?,
                bytes: r.get::<_, i64>(4)? as u64,
                checks: r.get::<_, i64>(5)? as u64,
            })
        })?;
        let mut out = HashMap::new();
        for row in rows {
            let c = row?;
            out.insert(c.pack.clone(), c);
        }
        Ok(out)
    }

    /// One page of the pack records, least recently verified first. Key: `(verified_at, pack)`.
    /// A pack verified again between two page fetches moves to the end of the list (its key
    /// changed), so a walk may serve it once more there.
    pub fn pack_checks_page(&self, req: &PageRequest) -> Result<Page<PackCheck>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT pack, verified_at, ok, reason, bytes, checks FROM pack_checks
             WHERE (?1 IS NULL OR (verified_at, pack) > (?1, ?2))
             ORDER BY verified_at, pack LIMIT ?3",
        )?;
        let after = req.after.as_ref();
        let rows = st.query_map(
            params![after.map(|k| k.a), after.map(|k| k.s.clone()), req.fetch()],
            |r| {
                let c = PackCheck {
                    pack: r.get(0)?,
                    verified_at: r.get(1)?,
                    ok: r.get::<_, i64>(2)? != 0,
                    reason: r.get(3)?,
                    bytes: r.get::<_, i64>(4)? as u64,
                    checks: r.get::<_, i64>(5)? as u64,
                };
                let k = PageKey {
                    a: c.verified_at,
                    b: 0,
                    s: c.pack.clone(),
                };
                Ok((k, c))
            },
        )?;
        Ok(Page::from_rows(rows.collect::<Result<_, _>>()?, req.limit))
    }

    pub fn record_pack_check(
        &self,
        pack: &str,
        at: i64,
        ok: bool,
        reason: Option<&str>,
        bytes: u64,
    ) -> Result<()> {
        self.conn().execute(
            "INSERT INTO pack_checks (pack, verified_at, ok, reason, bytes, checks) VALUES (?1, ?2, ?3, ?4, ?5, 1)
             ON CONFLICT(pack) DO UPDATE SET verified_at = excluded.verified_at, ok = excluded.ok,
               reason = excluded.reason, bytes = excluded.bytes, checks = checks + 1",
            params![pack, at, ok as i64, reason, bytes as i64],
        )?;
        Ok(())
    }

    /// Drops the records of packs that are no longer on the share nor indexed (pruned).
    pub fn retain_pack_checks(&self, present: &HashSet<String>) -> Result<usize> {
        let gone: Vec<String> = self
            .pack_checks()?
            .into_keys()
            .filter(|p| !present.contains(p))
            .collect();
        for p in &gone {
            self.conn()
                .execute("DELETE FROM pack_checks WHERE pack = ?1", [p])?;
        }
        Ok(gone.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_update_and_retain() {
        let db = Db::open_in_memory().unwrap();
        db.record_pack_check("aa", 10, true, None, 5).unwrap();
        db.record_pack_check("aa", 20, false, Some("missing"), 0)
            .unwrap();
        db.record_pack_check("bb", 30, true, None, 7).unwrap();
        let m = db.pack_checks().unwrap();
        assert_eq!(
            (m["aa"].verified_at, m["aa"].ok, m["aa"].checks),
            (20, false, 2)
        );
        assert_eq!(db.retain_pack_checks(&["bb".into()].into()).unwrap(), 1);
        assert_eq!(db.pack_checks().unwrap().len(), 1);
    }
}
