//! Exclude patterns for folder sources (glob syntax, `globset`). A pattern without `/` matches an
//! entry's name at any depth (`*.tmp`, `cache`); a pattern with `/` matches the path relative to the
//! source root (`var/log/*.gz`, `**/node_modules`). An excluded directory is skipped with everything
//! under it.

use crate::SourceError;
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

#[derive(Debug, Clone)]
pub struct Excludes {
    by_name: GlobSet,
    by_path: GlobSet,
    empty: bool,
}

impl Default for Excludes {
    fn default() -> Self {
        Excludes {
            by_name: GlobSet::empty(),
            by_path: GlobSet::empty(),
            empty: true,
        }
    }
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Self, SourceError> {
        let (mut by_name, mut by_path) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        for p in patterns {
            let glob =
                Glob::new(p.trim_start_matches('/')).map_err(|cause| SourceError::BadExclude {
                    pattern: p.clone(),
                    cause,
                })?;
            if p.contains('/') {
                by_path.add(glob);
            } else {
                by_name.add(glob);
            }
        }
        let built = |b: GlobSetBuilder| b.build().map_err(SourceError::Excludes);
        Ok(Excludes {
            by_name: built(by_name)?,
            by_path: built(by_path)?,
            empty: patterns.is_empty(),
        })
    }

    /// True if the entry at `rel` (relative to the source root) named `name` is excluded.
    pub fn matches(&self, rel: &[u8], name: &OsStr) -> bool {
        if self.empty {
            return false;
        }
        self.by_name.is_match(std::path::Path::new(name))
            || self
                .by_path
                .is_match(std::path::Path::new(OsStr::from_bytes(rel)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_and_path_patterns() {
        let e = Excludes::new(&[
            "*.tmp".into(),
            "cache".into(),
            "var/log/*.gz".into(),
            "**/node_modules".into(),
        ])
        .unwrap();
        let m = |rel: &str| e.matches(rel.as_bytes(), OsStr::new(rel.rsplit('/').next().unwrap()));
        assert!(m("a/b/x.tmp"));
        assert!(m("deep/cache"));
        assert!(m("var/log/old.gz"));
        assert!(!m("other/var/log/old.gz"));
        assert!(m("web/app/node_modules"));
        assert!(!m("var/log/current.log"));
        assert!(Excludes::new(&["a[".into()]).is_err());
        assert!(!Excludes::default().matches(b"x", OsStr::new("x")));
    }
}
