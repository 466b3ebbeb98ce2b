//! Delta chunks of stream sources: a database export with one row in a hundred changed is stored as
//! recipes against the previous backup's chunks, restores byte-identical, passes `check` with the
//! .pfx, and keeps restoring after the backup that holds the bases is forgotten and pruned.

mod common;
use common::*;
use ibs_engine::check::{check, CheckOptions};
use ibs_engine::{BackupOptions, BackupReport, Progress, SourceOrigin, SourceSpec};
use std::sync::Arc;
use std::time::Duration;

/// A pgbench-like COPY block: `rows` lines of id, branch, balance, filler; `changed(i)` rows get a
/// new balance.
fn dump(rows: usize, changed: impl Fn(usize) -> bool) -> Vec<u8> {
    let mut out = b"COPY public.accounts (aid, bid, abalance, filler) FROM stdin;\n".to_vec();
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    for i in 0..rows {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bal = if changed(i) {
            (x % 9000) as i64 - 4500
        } else {
            0
        };
        out.extend_from_slice(
            format!("{i}\t{}\t{bal}\t{:016x}{:>40}\n", i / 1000, x, "").as_bytes(),
        );
    }
    out.extend_from_slice(b"\\.\n");
    out
}

async fn backup_stream(env: &Env, data: Vec<u8>) -> BackupReport {
    ibs_engine::backup(
        env.repo.clone(),
        &env.state,
        BackupOptions {
            sources: vec![SourceSpec {
                name: "pg".into(),
                origin: SourceOrigin::Stream {
                    reader: Box::new(std::io::Cursor::new(data)),
                    file_name: "app.sql".into(),
                },
            }],
            threads: 2,
            lock_wait: Duration::ZERO,
            progress: Arc::new(Progress::default()),
        },
    )
    .await
    .unwrap()
}

async fn restored(env: &Env, id: &str) -> Vec<u8> {
    let target = env.path(&format!("restore-{id}"));
    let r = restore(env, id, &target, Some("pg")).await.unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    std::fs::read(target.join("app.sql")).unwrap()
}

async fn check_with_pfx(env: &Env) -> ibs_engine::check::CheckReport {
    check(
        env.reopen().await,
        CheckOptions {
            read_data: true,
            unlock: Some(env.unlock()),
            state: Some(env.state.clone()),
            progress: Default::default(),
            lock_wait: Default::default(),
        },
    )
    .await
    .unwrap()
}

const ROWS: usize = 120_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scattered_row_changes_store_a_small_fraction_and_restore_byte_identical() {
    let env = env().await;
    let v1 = dump(ROWS, |_| false);
    let v2 = dump(ROWS, |i| i % 100 == 0);
    let v3 = dump(ROWS, |i| i % 100 == 0 || i % 100 == 50);
    let first = backup_stream(&env, v1.clone()).await;
    assert!(env.state_dir().exists());
    let second = backup_stream(&env, v2.clone()).await;
    let third = backup_stream(&env, v3.clone()).await;
    let (b1, b2, b3) = (
        first.catalog.bytes_stored,
        second.catalog.bytes_stored,
        third.catalog.bytes_stored,
    );
    assert!(
        b2 * 10 < b1,
        "1 % of the rows changed: the second backup stored {b2} bytes, the first {b1}"
    );
    assert!(
        b3 * 10 < b1,
        "2 % of the rows changed since the bases: the third backup stored {b3} bytes, the first {b1}"
    );
    assert_eq!(restored(&env, &first.catalog.backup_id).await, v1);
    assert_eq!(restored(&env, &second.catalog.backup_id).await, v2);
    assert_eq!(restored(&env, &third.catalog.backup_id).await, v3);

    let report = check_with_pfx(&env).await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.chunks_verified > 0);

    // Forget the backup that wrote the bases, then prune: the later backups reference the bases
    // too, so they stay, and both later backups still restore.
    env.repo
        .storage()
        .delete(&ibs_repo::layout::backup(&first.catalog.backup_id))
        .await
        .unwrap();
    let plan = ibs_engine::retention::prune(&env.repo, &env.state, false, Duration::ZERO)
        .await
        .unwrap();
    assert!(plan.chunks_used > 0);
    assert_eq!(restored(&env, &second.catalog.backup_id).await, v2);
    assert_eq!(restored(&env, &third.catalog.backup_id).await, v3);
    let report = check_with_pfx(&env).await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_usable_signature_store_changed_chunks_are_stored_whole() {
    let env = env().await;
    let v1 = dump(ROWS, |_| false);
    let v2 = dump(ROWS, |i| i % 100 == 0);
    let first = backup_stream(&env, v1).await;
    // The writer state's store is damaged (a lost or foreign state has none at all).
    let store = env
        .state_dir()
        .join(&env.repo.config().id)
        .join("delta/pg.sig");
    assert!(store.exists(), "{} is missing", store.display());
    std::fs::write(&store, b"not a signature store").unwrap();
    let second = backup_stream(&env, v2.clone()).await;
    assert!(
        second.catalog.bytes_stored * 2 > first.catalog.bytes_stored,
        "stored {} after {}: deltas were used without signatures",
        second.catalog.bytes_stored,
        first.catalog.bytes_stored
    );
    assert_eq!(restored(&env, &second.catalog.backup_id).await, v2);
    // The second backup wrote a sound store again: a third backup uses deltas.
    let v3 = dump(ROWS, |i| i % 100 == 1);
    let third = backup_stream(&env, v3.clone()).await;
    assert!(third.catalog.bytes_stored * 10 < first.catalog.bytes_stored);
    assert_eq!(restored(&env, &third.catalog.backup_id).await, v3);
}
