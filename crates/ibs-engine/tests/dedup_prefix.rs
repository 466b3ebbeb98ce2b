//! The writer's dedup set holds chunk ids by their leading 128 bits only (ADR 0059). Should a new
//! chunk share those bits with a stored one, the backup takes it for stored and references it by
//! its full id, which the index does not hold: the fault must surface as a chunk `check` reports
//! missing, naming the backup, and as a restore error for that file, never as wrong bytes. Such a
//! pair cannot be found by chance or chosen without the repository's id key, so the test plants an
//! index entry with the prefix of a chunk it is about to back up.

mod common;

use common::*;
use ibs_repo::ids::PackId;
use ibs_repo::index::{decode_segment, PackRecord};
use ibs_repo::layout;
use ibs_repo::pack::{encoding, PackEntry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_whose_id_prefix_collides_is_reported_missing_by_check_and_never_restored_wrong() {
    let env = env().await;
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"the first backup's only file").unwrap();
    backup(&env, &[("s", &src)]).await;

    // The data key the writer seals under, from the index the first backup wrote.
    let storage = env.repo.storage();
    let segments = storage.list(layout::INDEX).await.unwrap();
    let seg = &segments[0];
    let name = seg.key.name().to_owned();
    let obj = storage.get(&seg.key).await.unwrap();
    let key_id =
        decode_segment(&name, &obj, &env.state.keys.metadata).unwrap()[0].entries[0].key_id;

    // A planted location for an id that differs from the coming chunk's only past bit 128.
    let content = b"a small file whose chunk id collides in its leading 128 bits".to_vec();
    let id = env.state.keys.dedup.chunk_id(&content);
    let mut twin = id;
    twin.0[16..].iter_mut().for_each(|b| *b ^= 0x5a);
    let planted = PackRecord {
        id: PackId([7; 32]),
        length: 4096,
        entries: vec![PackEntry {
            id: twin,
            offset: 8,
            length: 100,
            raw_length: content.len() as u32,
            encoding: encoding::ZSTD,
            key_id,
        }],
    };
    env.repo
        .write_index(&[planted], &env.state.keys.metadata)
        .await
        .unwrap();

    std::fs::write(src.join("b"), &content).unwrap();
    let second = backup(&env, &[("s", &src)]).await;
    let second_id = second.catalog.backup_id.clone();
    // Only the new tree stream is stored: the writer took the file's chunk for stored (had it
    // stored it, the index would hold its id and check below would find nothing missing).
    assert_eq!(second.chunks_new, 1);

    let problems = check_problems(&env, false).await;
    let missing: Vec<_> = problems
        .iter()
        .filter(|p| p.1.contains("not in the index"))
        .collect();
    assert_eq!(missing.len(), 1, "{problems:?}");
    assert_eq!(missing[0].2, vec![second_id.clone()]);
    assert!(missing[0].1.contains(&id.to_string()), "{:?}", missing[0]);

    let target = env.path("restored");
    let restored = restore(&env, &second_id, &target, Some("s")).await.unwrap();
    assert!(
        restored.errors.len() == 1 && restored.errors[0].contains("restored/b:"),
        "{:?}",
        restored.errors
    );
    assert!(!target.join("b").exists(), "no bytes under the file's name");
    assert_eq!(
        std::fs::read(target.join("a")).unwrap(),
        b"the first backup's only file"
    );
}
