//! Stage 2 of a backup: each component's pre-hook, then the engine sources it contributes
//! (`ibs_sources::mapping::engine_sources`: `files` paths with their excludes, a `command`'s stdout,
//! a service kind's streamed exports).
//! A component whose pre-hook or source fails is marked Failed here and contributes nothing.

use super::report::fail;
use crate::model::Job;
use ibs_engine::SourceSpec;
use ibs_sources::component::{run_hook, Component};
use ibs_sources::kinds::SharedLog;
use std::collections::BTreeMap;
use std::path::Path;

/// What stage 2 produced.
pub(super) struct Staged {
    pub sources: Vec<SourceSpec>,
    /// Components whose pre-hook ran (successfully or not): their post-hooks run.
    pub hooked: Vec<usize>,
    /// Service kinds' export logs, by component index.
    pub logs: Vec<(usize, SharedLog)>,
    /// The server version each service source reads from, by source name.
    pub server_versions: BTreeMap<String, String>,
}

pub(super) fn hook_env(component: &str, job: &str) -> Vec<(String, String)> {
    vec![
        ("IBS_COMPONENT".into(), component.into()),
        ("IBS_JOB_ID".into(), job.into()),
    ]
}

/// Whether engine source `source` belongs to component `component`: a component's sources are
/// named NAME, NAME-<n> or NAME.<part>.
pub(super) fn is_source_of(source: &str, component: &str) -> bool {
    source == component
        || source
            .strip_prefix(component)
            .is_some_and(|rest| rest.starts_with('-') || rest.starts_with('.'))
}

/// Runs the pre-hooks and builds the sources; service exports stage under `tmp_dir`.
/// A cancel of `cancel` kills the `command` exports started here.
pub(super) async fn build(
    job: &mut Job,
    components: &[Component],
    tmp_dir: &Path,
    cancel: &ibs_engine::CancelToken,
) -> Staged {
    let env_job = job.id.clone();
    let mut staged = Staged {
        sources: Vec::new(),
        hooked: Vec::new(),
        logs: Vec::new(),
        server_versions: BTreeMap::new(),
    };
    for (i, c) in components.iter().enumerate() {
        if cancel.is_cancelled() {
            break;
        }
        let r = &mut job.components[i];
        staged.hooked.push(i);
        if let Some(h) = &c.pre_hook {
            if let Err(e) =
                run_hook("pre hook", h, c.hook_timeout, hook_env(&c.name, &env_job)).await
            {
                fail(r, e);
                continue;
            }
        }
        match ibs_sources::mapping::engine_sources(c, &env_job, tmp_dir, Some(cancel)) {
            Ok(m) => {
                // Recorded in the catalog; an export that cannot reach its server fails on its
                // own, with the cause, so a version query failing here only goes to the log.
                match ibs_sources::mapping::server_version(c) {
                    Some(Ok(v)) => {
                        r.server_version = Some(v.clone());
                        for s in &m.sources {
                            staged.server_versions.insert(s.name.clone(), v.clone());
                        }
                    }
                    Some(Err(e)) => tracing::warn!("server version of component {}: {e}", c.name),
                    None => {}
                }
                if let Some(log) = m.exports {
                    r.sources = m.sources.iter().map(|s| s.name.clone()).collect();
                    staged.logs.push((i, log));
                }
                staged.sources.extend(m.sources);
            }
            Err(f) => {
                if f.cause.is_some() {
                    r.cause = f.cause;
                }
                fail(r, f.message);
            }
        }
    }
    staged
}
