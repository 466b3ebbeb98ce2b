//! Row counting inside a dump while it streams, so the counts recorded at backup time come from the
//! very snapshot that was stored (a count query run beside the dump would see other transactions).
//! The [`Scanner`] trait, and the MariaDB scanner (PostgreSQL's is in `pgscan.rs`).
//!
//! Keys are matching keys only, never SQL: MariaDB's are the backticked identifiers as the dump
//! writes them (`` `accounts` ``, `` `db`.`accounts` ``, backticks doubled inside), which equal
//! `mariadb::ident` of the names the restore lists from `information_schema`.
//!
//! Memory stays bounded: only the first bytes of each line are kept.

use std::collections::BTreeMap;

const PREFIX_CAP: usize = 4096;

/// Counts rows in a stream of dump bytes.
pub trait Scanner: Send {
    fn feed(&mut self, data: &[u8]);
    fn finish(self: Box<Self>) -> BTreeMap<String, u64>;
}

/// mariadb-dump: `CREATE TABLE` lines register a table (0 rows), `INSERT INTO ... VALUES (..),(..);`
/// statements add one row per top-level tuple up to the closing `;` (strings are single-quoted with
/// backslash escapes; tuples may sit on one line or one per line, as MariaDB 10.x writes them), `USE`
/// switches the database (all-databases dumps), and view stand-in tables are dropped at the end.
#[derive(Default)]
pub struct MysqlInsertScanner {
    prefix: Vec<u8>,
    /// Inside the tuples of an INSERT line: (table key, in string, escaped, depth).
    tuples: Option<(String, bool, bool, u32)>,
    db: Option<String>,
    counts: BTreeMap<String, u64>,
    views: Vec<String>,
    /// Between `DELIMITER ;;` and `DELIMITER ;`: routine, trigger and event bodies, whose lines
    /// are the users' text and register nothing.
    in_body: bool,
}

/// The first backticked identifier in `s`, with its backticks (`` ` `` doubled inside).
fn backticked(s: &str) -> Option<&str> {
    let start = s.find('`')?;
    let b = s.as_bytes();
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == b'`' {
            if b.get(i + 1) == Some(&b'`') {
                i += 2;
                continue;
            }
            return Some(&s[start..=i]);
        }
        i += 1;
    }
    None
}

/// Whether `line` is one whose name is parsed (`CREATE TABLE`, `INSERT INTO`, `USE`, a view
/// stand-in) and its backticked name is still open: a newline there belongs to the name.
fn name_open(line: &[u8]) -> bool {
    const KEYWORDS: [&[u8]; 4] = [
        b"CREATE TABLE ",
        b"INSERT INTO ",
        b"USE ",
        b"-- Temporary table structure for view ",
    ];
    let Some(rest) = KEYWORDS.iter().find_map(|k| line.strip_prefix(*k)) else {
        return false;
    };
    let Some(mut rest) = rest.strip_prefix(b"`") else {
        return false;
    };
    loop {
        match rest {
            [] => return true,
            [b'`', b'`', r @ ..] => rest = r,
            [b'`', ..] => return false,
            [_, r @ ..] => rest = r,
        }
    }
}

impl MysqlInsertScanner {
    fn key(&self, table: &str) -> String {
        match &self.db {
            Some(db) => format!("{db}.{table}"),
            None => table.to_string(),
        }
    }

    fn end_prefix_line(&mut self) {
        let line = std::mem::take(&mut self.prefix);
        let Ok(text) = std::str::from_utf8(&line) else {
            return;
        };
        if let Some(rest) = text.strip_prefix("DELIMITER ") {
            self.in_body = rest.trim() != ";";
        } else if self.in_body {
        } else if let Some(rest) = text.strip_prefix("CREATE TABLE ") {
            if let Some(t) = backticked(rest) {
                let k = self.key(t);
                self.counts.entry(k).or_insert(0);
            }
        } else if let Some(rest) = text.strip_prefix("USE ") {
            self.db = backticked(rest).map(String::from);
        } else if let Some(rest) = text.strip_prefix("-- Temporary table structure for view ") {
            if let Some(t) = backticked(rest) {
                let k = self.key(t);
                self.views.push(k);
            }
        }
    }
}

impl Scanner for MysqlInsertScanner {
    fn feed(&mut self, data: &[u8]) {
        for &b in data {
            if let Some((table, in_str, esc, depth)) = self.tuples.as_mut() {
                if *in_str {
                    if *esc {
                        *esc = false;
                    } else if b == b'\\' {
                        *esc = true;
                    } else if b == b'\'' {
                        *in_str = false;
                    }
                    continue;
                }
                match b {
                    b'\'' => *in_str = true,
                    b'(' => {
                        if *depth == 0 {
                            *self.counts.entry(table.clone()).or_insert(0) += 1;
                        }
                        *depth += 1;
                    }
                    b')' => *depth = depth.saturating_sub(1),
                    b';' if *depth == 0 => self.tuples = None,
                    _ => {}
                }
                continue;
            }
            if b == b'\n' {
                // MariaDB 10.x writes `INSERT INTO `t` VALUES` alone, then one tuple per line.
                if self.prefix.starts_with(b"INSERT INTO ") && self.prefix.ends_with(b" VALUES") {
                    self.prefix.push(b' ');
                } else if self.prefix.len() < PREFIX_CAP && name_open(&self.prefix) {
                    self.prefix.push(b);
                } else {
                    self.end_prefix_line();
                    continue;
                }
            } else if self.prefix.len() < PREFIX_CAP {
                self.prefix.push(b);
            }
            if !self.in_body
                && self.prefix.ends_with(b" VALUES ")
                && self.prefix.starts_with(b"INSERT INTO ")
            {
                let text = String::from_utf8_lossy(&self.prefix).into_owned();
                if let Some(t) = backticked(&text["INSERT INTO ".len()..]) {
                    let k = self.key(t);
                    self.tuples = Some((k, false, false, 0));
                }
                self.prefix.clear();
            }
        }
    }
    fn finish(self: Box<Self>) -> BTreeMap<String, u64> {
        let mut c = self.counts;
        for v in &self.views {
            c.remove(v);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(mut s: Box<dyn Scanner>, text: &str, step: usize) -> BTreeMap<String, u64> {
        for c in text.as_bytes().chunks(step) {
            s.feed(c);
        }
        s.finish()
    }

    #[test]
    fn mysql_inserts() {
        let dump = "CREATE TABLE `a` (\n  `id` int\n);\nCREATE TABLE `empty` (\n);\n\
            INSERT INTO `a` VALUES (1,'x),(y'),(2,'it\\'s ('),(3,NULL);\n\
            INSERT INTO `empty2` VALUES\n(1,'a;b'),\n(2,'\n');\n\
            -- Temporary table structure for view `v`\nCREATE TABLE `v` (\n);\n\
            USE `other`;\nINSERT INTO `b` VALUES (1);\n\
            CREATE TABLE `new\nline` (\n);\nINSERT INTO `new\nline` VALUES (1),(2);\n\
            DELIMITER ;;\nCREATE PROCEDURE p() BEGIN\nCREATE TABLE `decoy` (a int);\n\
            INSERT INTO `b` VALUES (9),(9);\nUSE `x`;\nEND ;;\nDELIMITER ;\nINSERT INTO `c` VALUES (1);\n";
        for step in [1, 5, 1000] {
            let c = scan(Box::<MysqlInsertScanner>::default(), dump, step);
            assert_eq!(c.get("`a`"), Some(&3), "{c:?}");
            assert_eq!(c.get("`empty`"), Some(&0));
            assert_eq!(c.get("`empty2`"), Some(&2), "{c:?}");
            assert_eq!(c.get("`other`.`b`"), Some(&1));
            assert!(!c.contains_key("`v`"));
            assert!(!c.contains_key("`other`.`decoy`"), "{c:?}");
            assert_eq!(c.get("`other`.`c`"), Some(&1), "{c:?}");
            assert_eq!(c.get("`other`.`new\nline`"), Some(&2), "{c:?}");
        }
    }
}
