//! Tree-stream deltas (ADR 0049): after a day of scattered edits a folder source's tree stream is
//! stored as recipes against the previous backup's tree chunks, not again in full; every backup
//! restores exactly, passes `check` with the .pfx, survives forgetting and pruning the backup that
//! wrote the bases, and a writer whose tree signature store is damaged stores the tree whole and
//! loses nothing.

mod common;
use common::prune::{check_data, prune_at_once};
use common::*;
use std::path::Path;
use std::time::Duration;

const FILES: usize = 6_000;

/// Writes file `i` of the tree (`hosts/hN/etc/fI.conf`) with generation `generation` in it.
fn write_file(root: &Path, i: usize, generation: u32) {
    let dir = root.join(format!("hosts/h{}/etc", i / 100));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("f{i}.conf")),
        format!("# host {} file {i}\nvalue = {generation}\n", i / 100),
    )
    .unwrap();
}

/// Restores source `data` of backup `id` into `target` without errors, identical to `src`.
async fn restores_as(env: &Env, id: &str, target: &Path, src: &Path) {
    let r = restore(env, id, target, Some("data")).await.unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_same_tree(src, target);
}

fn tree_store(env: &Env) -> std::path::PathBuf {
    env.state_dir()
        .join(&env.repo.config().id)
        .join("delta/tree/data.sig")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_of_scattered_edits_stores_the_tree_as_recipes_and_restores_exactly() {
    let (a, b) = (env().await, env().await);
    let src = a.path("src");
    for i in 0..FILES {
        write_file(&src, i, 0);
    }
    let a1 = backup(&a, &[("data", &src)]).await;
    let b1 = backup(&b, &[("data", &src)]).await;
    assert!(
        tree_store(&a).exists(),
        "{} is missing",
        tree_store(&a).display()
    );
    let day0 = a.path("day0");
    restores_as(&a, &a1.catalog.backup_id, &day0, &src).await;

    // A day: 1 % of the files edited, scattered over every host.
    for i in (7..FILES).step_by(100) {
        write_file(&src, i, 1);
    }
    // Writer b's tree store is damaged: it must store its tree whole and lose nothing.
    std::fs::write(tree_store(&b), b"not a signature store").unwrap();
    let a2 = backup(&a, &[("data", &src)]).await;
    let b2 = backup(&b, &[("data", &src)]).await;
    let (sa, sb) = (a2.catalog.bytes_stored, b2.catalog.bytes_stored);
    assert!(
        sa * 10 < sb,
        "with tree deltas the day stored {sa} bytes, without {sb}: the tree was not stored as recipes"
    );
    assert!(
        sb * 2 > b1.catalog.bytes_stored / 4,
        "without a usable store the tree is stored whole ({sb} bytes, first backup {})",
        b1.catalog.bytes_stored
    );
    for (env, id) in [(&a, &a2.catalog.backup_id), (&b, &b2.catalog.backup_id)] {
        let t = env.path(&format!("day1-{id}"));
        restores_as(env, id, &t, &src).await;
    }
    // The first backup still holds the old contents.
    let old = a.path("day0-again");
    restore(&a, &a1.catalog.backup_id, &old, Some("data"))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(old.join("hosts/h0/etc/f7.conf")).unwrap(),
        "# host 0 file 7\nvalue = 0\n"
    );

    // No change since: the same recipes again, nothing new stored.
    let a3 = backup(&a, &[("data", &src)]).await;
    assert!(
        a3.catalog.bytes_stored < 1024,
        "a no-change backup after a delta day stored {} bytes",
        a3.catalog.bytes_stored
    );
    let report = check_data(&a).await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    // Forget the backup that wrote the bases and prune: the later backups reference them.
    a.repo
        .storage()
        .delete(&ibs_repo::layout::backup(&a1.catalog.backup_id))
        .await
        .unwrap();
    prune_at_once(
        &a,
        ibs_engine::retention::Expected::Backups(
            [&a2, &a3]
                .iter()
                .map(|r| r.catalog.backup_id.clone())
                .collect(),
        ),
        Duration::ZERO,
    )
    .await;
    let after = a.path("after-prune");
    restores_as(&a, &a3.catalog.backup_id, &after, &src).await;
    let report = check_data(&a).await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}
