//! Fixtures of the two-phase prune tests (`prune_concurrent`, `prune_plans_rejected`): a small
//! source, a backup paused once its index is loaded, and `check --read-data`.

use super::{bytes, Env};
use ibs_engine::check::{check, CheckOptions, CheckReport};
use ibs_engine::retention::{prune, Expected, PruneOptions, PrunePlan};
use ibs_engine::state::WriterState;
use ibs_engine::{BackupExtras, BackupOptions, BackupReport, Progress, SourceOrigin, SourceSpec};
use ibs_repo::Repository;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Barrier;
use tokio::task::JoinHandle;

/// Prunes `env`'s repository at once (no lock wait, no delete delay), expecting `expected` to be
/// listed and keeping what is younger than `grace`.
pub async fn prune_at_once(env: &Env, expected: Expected, grace: Duration) -> PrunePlan {
    prune(
        &env.repo,
        &env.state,
        PruneOptions {
            dry_run: false,
            lock_wait: Duration::ZERO,
            expected,
            grace,
            delete_delay: Duration::ZERO,
            max_unused_percent: ibs_engine::retention::DEFAULT_MAX_UNUSED_PERCENT,
        },
    )
    .await
    .unwrap()
}

/// A source folder `name` of `env`: a note naming it and 3 MiB of seeded bytes.
pub fn source(env: &Env, name: &str, seed: u64) -> PathBuf {
    let src = env.path(name);
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("a.txt"), format!("{name}\n")).unwrap();
    std::fs::write(src.join("d/b.bin"), bytes(seed, 3 << 20)).unwrap();
    src
}

/// Starts a backup of `src` through `repo` that stops once its index is loaded; returns it and its
/// barrier (after the first `wait` the index is loaded, the second lets it go on).
/// `ignore_plans` is the unsafe switch that makes it ignore prune plans (to show the race).
pub async fn paused_backup(
    repo: Arc<Repository>,
    state: &WriterState,
    src: &Path,
    ignore_plans: bool,
) -> (JoinHandle<BackupReport>, Arc<Barrier>) {
    let barrier = Arc::new(Barrier::new(2));
    let (state, src, b) = (state.clone(), src.to_path_buf(), barrier.clone());
    // Its own thread and runtime: the backup's future holds its sources, which are not `Sync`.
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(ibs_engine::backup_with(
            repo,
            &state,
            BackupOptions {
                sources: vec![SourceSpec {
                    name: "data".into(),
                    origin: SourceOrigin::Path(src),
                }],
                threads: 2,
                lock_wait: Duration::ZERO,
                progress: Arc::new(Progress::default()),
            },
            BackupExtras {
                pause_after_index: Some(b),
                unsafe_ignore_prune_plans: ignore_plans,
                ..Default::default()
            },
        ))
        .unwrap()
    });
    let task = tokio::task::spawn_blocking(move || thread.join().unwrap());
    barrier.wait().await;
    (task, barrier)
}

/// `check --read-data` of `env`'s repository with its .pfx identity and writer state.
pub async fn check_data(env: &Env) -> CheckReport {
    check(
        env.repo.clone(),
        CheckOptions {
            read_data: true,
            unlock: Some(env.unlock()),
            state: Some(env.state.clone()),
            progress: Default::default(),
            lock_wait: Duration::ZERO,
        },
    )
    .await
    .unwrap()
}
