//! Prune's per-pack outcomes on a real repository, as it streams the index segments instead of
//! holding every record (issue 18): a partly used pack is repacked to exactly its live chunks, a
//! second copy of a chunk in another pack is dead, and a young pack is listed again whole.

mod common;

use common::prune::{check_data, prune_at_once};
use common::*;
use ibs_engine::retention::{forget_backups, Expected, PrunePlan};
use ibs_repo::ids::{ChunkId, PackId};
use ibs_repo::index::PackRecord;
use ibs_repo::layout;
use ibs_repo::pack::PackBuilder;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

/// A source with a small note, a 1 MiB file that stays and a 2 MiB file that a later backup no
/// longer has.
fn source(env: &Env) -> PathBuf {
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"note\n").unwrap();
    std::fs::write(src.join("keep.bin"), bytes(1, 1 << 20)).unwrap();
    std::fs::write(src.join("gone.bin"), bytes(2, 2 << 20)).unwrap();
    src
}

async fn prune_with(env: &Env, keep: &[&str], grace: Duration) -> PrunePlan {
    let keep = keep.iter().map(|s| s.to_string()).collect();
    prune_at_once(env, Expected::Backups(keep), grace).await
}

/// Every chunk id the index lists, asserting that none is listed twice.
fn indexed_once(records: &[PackRecord]) -> Vec<ChunkId> {
    let all: Vec<ChunkId> = records
        .iter()
        .flat_map(|r| r.entries.iter().map(|e| e.id))
        .collect();
    let distinct: BTreeSet<ChunkId> = all.iter().copied().collect();
    assert_eq!(all.len(), distinct.len(), "a chunk indexed twice");
    all
}

/// Every record of every index segment on storage.
async fn records(env: &Env) -> Vec<PackRecord> {
    env.repo
        .load_segments(&env.state.keys.metadata)
        .await
        .unwrap()
        .into_iter()
        .flat_map(|(_, r)| r)
        .collect()
}

async fn stored_packs(env: &Env) -> BTreeSet<PackId> {
    env.repo.list_packs().await.unwrap().into_keys().collect()
}

fn ids(rec: &PackRecord) -> BTreeSet<ChunkId> {
    rec.entries.iter().map(|e| e.id).collect()
}

/// Two backups, the first of which has `gone.bin`; the first is forgotten. Returns the second's id
/// and the first backup's records.
async fn two_backups_first_forgotten(env: &Env) -> (String, Vec<PackRecord>) {
    let src = source(env);
    let b1 = backup(env, &[("data", &src)]).await.catalog.backup_id;
    let first = records(env).await;
    std::fs::remove_file(src.join("gone.bin")).unwrap();
    let b2 = backup(env, &[("data", &src)]).await.catalog.backup_id;
    forget_backups(&env.repo, std::slice::from_ref(&b1), Duration::ZERO)
        .await
        .unwrap();
    (b2, first)
}

async fn restores_like_source(env: &Env, id: &str) {
    let out = env.path(&format!("restored-{id}"));
    let r = restore(env, id, &out, None).await.unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_same_tree(&env.path("src"), &out.join("data"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_used_pack_is_repacked_to_exactly_its_live_chunks() {
    let env = env().await;
    let (b2, first) = two_backups_first_forgotten(&env).await;
    let before: HashMap<PackId, PackRecord> =
        records(&env).await.into_iter().map(|r| (r.id, r)).collect();
    let plan = prune_with(&env, &[&b2], Duration::ZERO).await;
    // The first backup's pack held gone.bin (two thirds of its bytes): repacked.
    assert!(!first.is_empty());
    assert!(
        first.iter().all(|r| plan.repack.contains(&r.id)),
        "{plan:?}"
    );
    let after = records(&env).await;
    let packs = stored_packs(&env).await;
    for p in &plan.repack {
        assert!(!packs.contains(p), "repacked pack {p} still stored");
        assert!(
            after.iter().all(|r| r.id != *p),
            "repacked pack {p} still indexed"
        );
    }
    // What the new packs hold is what stayed live of the repacked ones: each chunk indexed once,
    // and the index now counts exactly the chunks the plan found used.
    let new: Vec<&PackRecord> = after
        .iter()
        .filter(|r| !before.contains_key(&r.id))
        .collect();
    assert!(!new.is_empty());
    let all = indexed_once(&after);
    assert_eq!(all.len(), plan.chunks_used);
    assert!(plan.chunks_unused > 0);
    let copied: BTreeSet<ChunkId> = new.iter().flat_map(|r| ids(r)).collect();
    let repacked: BTreeSet<ChunkId> = plan.repack.iter().flat_map(|p| ids(&before[p])).collect();
    assert!(copied.is_subset(&repacked));
    assert!(copied.len() < repacked.len(), "dead chunks were copied");
    assert!(check_data(&env).await.problems.is_empty());
    restores_like_source(&env, &b2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_copy_of_every_chunk_in_another_pack_is_dead_and_deleted() {
    let env = env().await;
    let src = source(&env);
    let b1 = backup(&env, &[("data", &src)]).await.catalog.backup_id;
    let original = records(&env).await;
    // Copy every chunk of every pack into one new pack listed by its own segment (what a crash
    // between a repack's new segment and the old segment's deletion leaves, or a heal).
    let mk = &env.state.keys.metadata;
    let mut builder = PackBuilder::new(8 << 20);
    for rec in &original {
        let bytes = env
            .repo
            .storage()
            .get(&layout::pack(&rec.id))
            .await
            .unwrap();
        for e in &rec.entries {
            let sealed = &bytes[e.offset as usize..(e.offset + e.length) as usize];
            builder.add(e.id, e.encoding, e.raw_length, e.key_id, sealed);
        }
    }
    let (id, data, entries) = builder.finish(mk);
    let length = data.len() as u64;
    env.repo.put_pack(&id, data).await.unwrap();
    let copy = PackRecord {
        id,
        length,
        entries,
    };
    env.repo
        .write_index(std::slice::from_ref(&copy), mk)
        .await
        .unwrap();
    let plan = prune_with(&env, &[&b1], Duration::ZERO).await;
    // Whichever copy the index located each chunk in is live, the other one dead; here every
    // chunk of a pack has its copies in the same two packs, so one side is deleted whole.
    let copies: BTreeSet<PackId> = original.iter().map(|r| r.id).chain([copy.id]).collect();
    let deleted: BTreeSet<PackId> = plan.delete.iter().copied().collect();
    assert!(
        !deleted.is_empty() && deleted.is_subset(&copies),
        "{plan:?}"
    );
    assert!(plan.repack.is_empty(), "{plan:?}");
    let stored = stored_packs(&env).await;
    assert!(deleted.iter().all(|p| !stored.contains(p)));
    let after = records(&env).await;
    let distinct: BTreeSet<ChunkId> = indexed_once(&after).into_iter().collect();
    assert_eq!(distinct, original.iter().flat_map(ids).collect());
    assert_eq!(plan.chunks_unused, copy.entries.len());
    assert!(check_data(&env).await.problems.is_empty());
    restores_like_source(&env, &b1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_young_partly_used_pack_is_listed_again_whole() {
    let env = env().await;
    let (b2, first) = two_backups_first_forgotten(&env).await;
    let plan = prune_with(&env, &[&b2], Duration::from_secs(24 * 3600)).await;
    assert!(plan.repack.is_empty() && plan.delete.is_empty(), "{plan:?}");
    assert!(plan.chunks_unused > 0, "{plan:?}");
    let after = records(&env).await;
    let stored = stored_packs(&env).await;
    for rec in &first {
        assert!(plan.young_packs.contains(&rec.id), "{plan:?}");
        assert!(stored.contains(&rec.id));
        // Every entry, dead ones included, is still indexed, in one record.
        let listed: Vec<&PackRecord> = after.iter().filter(|r| r.id == rec.id).collect();
        assert_eq!(listed.len(), 1);
        assert_eq!(ids(listed[0]), ids(rec));
        assert_eq!(listed[0].entries.len(), rec.entries.len());
    }
    assert!(check_data(&env).await.problems.is_empty());
    restores_like_source(&env, &b2).await;
}
