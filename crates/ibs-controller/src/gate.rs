//! The job gate: at most one job (backup, restore, verification, validation, retention cleanup,
//! store prune) runs at a time. Taking it names the holder ([`GateKind`] and job id) so a refusal
//! can say who runs; the [`GateGuard`] releases it when the job's task ends, however it ends. The
//! gate also keeps each running job's live [`Progress`] for the API and, for a job that can be
//! stopped, its [`JobStop`] (cancel, timeout).
//!
//! Who waits, who is deferred to the next tick, and who gets 409 or a Skipped record: see the
//! locking table in `docs/design/controller.md` ("The gate").

use crate::model::GateKind;
use crate::stop::JobStop;
use crate::{ControllerError, Result};
use ibs_engine::{Progress, ProgressSnapshot};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, Clone)]
struct Busy {
    id: String,
    kind: GateKind,
}

struct Live {
    progress: Arc<Progress>,
    started: i64,
    stop: Arc<JobStop>,
}

#[derive(Default)]
pub(crate) struct Gate {
    busy: Mutex<Option<Busy>>,
    live: Mutex<HashMap<String, Live>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Gate {
    /// Takes the gate for job `id`, or says who holds it (409).
    pub fn take(self: &Arc<Self>, id: &str, kind: GateKind) -> Result<GateGuard> {
        let mut g = lock(&self.busy);
        if let Some(b) = g.as_ref() {
            return Err(ControllerError::Conflict {
                message: format!("{} {} is running", b.kind, b.id),
                details: Some(serde_json::json!({ "running_job": b.id, "running_kind": b.kind })),
            });
        }
        *g = Some(Busy {
            id: id.into(),
            kind,
        });
        Ok(GateGuard {
            gate: self.clone(),
            id: id.into(),
        })
    }

    /// The id and kind of the job holding the gate.
    pub fn holder(&self) -> Option<(String, GateKind)> {
        lock(&self.busy).as_ref().map(|b| (b.id.clone(), b.kind))
    }

    /// Registers a job's live progress (shown by the API while the job runs).
    pub fn track_live(&self, job_id: &str, started: i64, stop: Arc<JobStop>) -> Arc<Progress> {
        let progress = Arc::new(Progress::default());
        lock(&self.live).insert(
            job_id.into(),
            Live {
                progress: progress.clone(),
                started,
                stop,
            },
        );
        progress
    }

    /// A running job's stop signal: `None` when the job is not running here.
    pub fn stop_of(&self, job_id: &str) -> Option<Arc<JobStop>> {
        lock(&self.live).get(job_id).map(|l| l.stop.clone())
    }

    /// A running job's progress and start time.
    pub fn live(&self, job_id: &str) -> Option<(ProgressSnapshot, i64)> {
        lock(&self.live)
            .get(job_id)
            .map(|l| (l.progress.snapshot(), l.started))
    }
}

/// Releases the gate (and forgets the job's live progress) when dropped.
pub(crate) struct GateGuard {
    gate: Arc<Gate>,
    id: String,
}

impl Drop for GateGuard {
    fn drop(&mut self) {
        let mut g = lock(&self.gate.busy);
        if g.as_ref().is_some_and(|b| b.id == self.id) {
            *g = None;
        }
        drop(g);
        lock(&self.gate.live).remove(&self.id);
    }
}

/// Runs a job's future to completion on a blocking-pool thread. Job futures borrow across awaits
/// in ways rustc cannot prove `Send` for (higher-ranked lifetimes through the engine), and a job
/// is long-running anyway, so it gets its own thread driving it with `Handle::block_on`.
/// The future is created on that thread, so it never has to be `Send`.
pub(crate) fn spawn_job<M, F>(make: M) -> tokio::task::JoinHandle<()>
where
    M: FnOnce() -> F + Send + 'static,
    F: std::future::Future<Output = ()>,
{
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || rt.block_on(make()))
}
