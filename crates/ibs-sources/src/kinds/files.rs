//! The `files` kind: folders or files of the host. Each path becomes one engine source, named by the
//! component ([`crate::component::Component::source_names`]); with `exclude` patterns the source is a
//! filtered tree (an excluded folder is skipped whole), otherwise the plain path.

use ibs_engine::{SourceOrigin, SourceSpec};

/// The engine sources of a `files` component: `names[i]` backs up `paths[i]`. Refuses (naming
/// them) when any path cannot be read, so no source of the component is backed up half.
pub fn sources(
    names: Vec<String>,
    paths: &[String],
    exclude: &[String],
) -> Result<Vec<SourceSpec>, String> {
    let missing: Vec<&str> = paths
        .iter()
        .filter(|p| std::fs::symlink_metadata(p).is_err())
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(format!("path(s) cannot be read: {}", missing.join(", ")));
    }
    Ok(names
        .into_iter()
        .zip(paths)
        .map(|(name, p)| {
            let origin = if exclude.is_empty() {
                SourceOrigin::Path(p.into())
            } else {
                SourceOrigin::Tree {
                    root: p.into(),
                    exclude: exclude.to_vec(),
                }
            };
            SourceSpec { name, origin }
        })
        .collect())
}
