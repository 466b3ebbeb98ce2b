//! Stage 2 of a backup: each component's pre-hook, then the engine sources it contributes —
//! `files` paths (with their excludes), a `command`'s stdout, a service kind's streamed exports.
//! A component whose pre-hook or source fails is marked Failed here and contributes nothing.

use super::report::fail;
use crate::component::{run_hook, Component, ComponentKind};
use crate::kinds::SharedLog;
use crate::model::Job;
use ibs_engine::{SourceOrigin, SourceSpec};
use std::path::Path;
use std::process::Stdio;

/// What stage 2 produced.
pub(super) struct Staged {
    pub sources: Vec<SourceSpec>,
    /// Components whose pre-hook ran (successfully or not): their post-hooks run.
    pub hooked: Vec<usize>,
    /// Service kinds' export logs, by component index.
    pub logs: Vec<(usize, SharedLog)>,
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
pub(super) async fn build(job: &mut Job, components: &[Component], tmp_dir: &Path) -> Staged {
    let env_job = job.id.clone();
    let mut staged = Staged {
        sources: Vec::new(),
        hooked: Vec::new(),
        logs: Vec::new(),
    };
    for (i, c) in components.iter().enumerate() {
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
        match &c.kind {
            ComponentKind::Files { paths, exclude } => {
                let missing: Vec<_> = paths
                    .iter()
                    .filter(|p| std::fs::symlink_metadata(p).is_err())
                    .map(|p| p.as_str())
                    .collect();
                if !missing.is_empty() {
                    fail(r, format!("path(s) cannot be read: {}", missing.join(", ")));
                    continue;
                }
                for (name, p) in c.source_names().into_iter().zip(paths) {
                    let origin = if exclude.is_empty() {
                        SourceOrigin::Path(p.into())
                    } else {
                        SourceOrigin::Tree {
                            root: p.into(),
                            exclude: exclude.clone(),
                        }
                    };
                    staged.sources.push(SourceSpec { name, origin });
                }
            }
            ComponentKind::Command { backup, .. } => {
                let spawned = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(backup)
                    .env("IBS_COMPONENT", &c.name)
                    .env("IBS_JOB_ID", &env_job)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn();
                match spawned {
                    Ok(mut child) => {
                        let out = child.stdout.take().expect("piped stdout");
                        staged.sources.push(SourceSpec {
                            name: c.name.clone(),
                            origin: SourceOrigin::Stream {
                                reader: Box::new(CommandOutput {
                                    child,
                                    out,
                                    done: false,
                                }),
                                file_name: c.stream_file_name(),
                            },
                        });
                    }
                    Err(e) => fail(r, format!("cannot start the backup command: {e}")),
                }
            }
            _ => match crate::kinds::plan(c, tmp_dir) {
                Some(Ok(plan)) => {
                    r.sources = plan.exports.iter().map(|e| e.source.clone()).collect();
                    for e in plan.exports {
                        staged.sources.push(SourceSpec {
                            name: e.source,
                            origin: SourceOrigin::Stream {
                                reader: e.reader,
                                file_name: e.file,
                            },
                        });
                    }
                    staged.logs.push((i, plan.log));
                }
                Some(Err(e)) => {
                    r.cause = Some(e.cause);
                    fail(r, e.to_string());
                }
                None => fail(r, "unsupported component kind".into()),
            },
        }
    }
    staged
}

/// The stdout of a `command` component's export. At end of stream it waits for the command and
/// turns a nonzero exit into a read error, so the engine records that source as Failed in the
/// manifest too (the manifest and the job agree). Dropped early (the backup failed), it kills the
/// command.
struct CommandOutput {
    child: std::process::Child,
    out: std::process::ChildStdout,
    done: bool,
}

impl std::io::Read for CommandOutput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.out.read(buf)?;
        if n == 0 && !buf.is_empty() && !self.done {
            self.done = true;
            let status = self.child.wait()?;
            if !status.success() {
                return Err(std::io::Error::other(format!(
                    "backup command exited with {status}"
                )));
            }
        }
        Ok(n)
    }
}

impl Drop for CommandOutput {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
