//! Server versions: what a service reports (recorded per source in the backup's catalog) and the
//! rule that compares a backup's server with a restore target's.
//!
//! Major versions, by kind:
//! - `postgres`: the first number from PostgreSQL 10 on (`16.4` is 16), the first two before
//!   (`9.6.24` is 9.6). A plain dump of a newer major uses syntax and catalogs an older server may
//!   not have; minor releases of one major are compatible.
//! - `mariadb`: the first two numbers (`10.11.6-MariaDB` is 10.11): MariaDB and MySQL add SQL,
//!   collations and system tables in every `major.minor` series.
//! - `redis`: the first number (an RDB file names its own format version; newer majors write
//!   versions older servers refuse to load).
//! - `sqlite`: the first number (3 since 2004; the file format is stable within it).
//!
//! Restoring into an *older* major than the backup's warns before the restore starts
//! ([`older_server_warning`]); it does not refuse: the restore itself says whether it worked, and
//! its verification compares counts.

use super::{Cause, ComponentError};
use std::cmp::Ordering;

/// Longest version text kept (a server's banner is short; a hostile one is cut).
const MAX_LEN: usize = 200;

/// The version a client tool printed: its first non-empty line, trimmed; an error naming the
/// component when there is none.
pub(crate) fn reported(comp: &str, out: &str) -> Result<String, ComponentError> {
    let line = out.lines().map(str::trim).find(|l| !l.is_empty());
    match line {
        Some(v) => Ok(v.chars().take(MAX_LEN).collect()),
        None => Err(ComponentError::new(
            comp,
            Cause::Other,
            "the server reported no version",
        )),
    }
}

/// A major version: one or two numbers, compared in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Major(pub u32, pub Option<u32>);

impl std::fmt::Display for Major {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            Some(m) => write!(f, "{}.{m}", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

/// The leading numbers of `v` (`"16.4 (Debian …)"` gives 16 and 4).
fn leading_numbers(v: &str) -> (Option<u32>, Option<u32>) {
    let mut it = v
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    let first = it.next().flatten();
    // The second number must follow the first after a single dot.
    let second = v
        .trim()
        .split_once('.')
        .filter(|(a, _)| a.chars().all(|c| c.is_ascii_digit()))
        .and_then(|(_, rest)| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        });
    (first, second)
}

/// The major version of `version` for component kind `kind` (see the module docs); `None` for a
/// kind without server versions or a version that does not start with a number.
pub fn major(kind: &str, version: &str) -> Option<Major> {
    let (first, second) = leading_numbers(version);
    let first = first?;
    match kind {
        "postgres" if first >= 10 => Some(Major(first, None)),
        "postgres" | "mariadb" => Some(Major(first, Some(second?))),
        "redis" | "sqlite" => Some(Major(first, None)),
        _ => None,
    }
}

fn product(kind: &str) -> &'static str {
    match kind {
        "postgres" => "PostgreSQL",
        "mariadb" => "MariaDB/MySQL",
        "redis" => "Redis",
        "sqlite" => "SQLite",
        _ => "server",
    }
}

/// The warning for restoring component `component` (kind `kind`), backed up from a server that
/// reported `backed_up`, into one that reports `target`: `Some` when the target's major version
/// is older. Versions that do not parse compare as unknown (no warning).
pub fn older_server_warning(
    component: &str,
    kind: &str,
    backed_up: &str,
    target: &str,
) -> Option<String> {
    let (b, t) = (major(kind, backed_up)?, major(kind, target)?);
    (t.cmp(&b) == Ordering::Less).then(|| {
        format!(
            "component {component}: the backup was taken from {p} {b} (server {backed_up}) and the target runs the older major version {t} (server {target}); the export may use features {p} {t} lacks, so the restore may fail or lose objects",
            p = product(kind)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majors_by_kind() {
        assert_eq!(
            major("postgres", "16.4 (Debian 16.4-1.pgdg120+1)"),
            Some(Major(16, None))
        );
        assert_eq!(major("postgres", "9.6.24"), Some(Major(9, Some(6))));
        assert_eq!(
            major("mariadb", "10.11.6-MariaDB-0+deb12u1"),
            Some(Major(10, Some(11)))
        );
        assert_eq!(major("mariadb", "8.0.36"), Some(Major(8, Some(0))));
        assert_eq!(major("redis", "7.0.15"), Some(Major(7, None)));
        assert_eq!(major("files", "1.0"), None);
        assert_eq!(major("postgres", "devel"), None);
        assert!(Major(10, Some(11)) > Major(10, Some(6)));
    }

    #[test]
    fn warns_only_for_an_older_major() {
        let w = older_server_warning("pg", "postgres", "99.1", "16.4").unwrap();
        assert!(w.contains("PostgreSQL 99") && w.contains("16"), "{w}");
        assert!(older_server_warning("pg", "postgres", "16.1", "16.4").is_none());
        assert!(older_server_warning("pg", "postgres", "16.9", "16.4").is_none());
        assert!(older_server_warning("pg", "postgres", "15.2", "16.4").is_none());
        assert!(
            older_server_warning("db", "mariadb", "10.11.6-MariaDB", "10.6.2-MariaDB").is_some()
        );
        assert!(older_server_warning("db", "mariadb", "10.6.9", "10.6.2").is_none());
        assert!(older_server_warning("pg", "postgres", "garbage", "16.4").is_none());
        assert_eq!(reported("c", "\n  16.4 \n").unwrap(), "16.4");
        assert!(reported("c", " \n").is_err());
    }
}
