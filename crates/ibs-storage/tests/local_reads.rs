//! The local folder keeps pack files open between ranged reads (ADR 0060). What another process
//! does to a file this one holds open must never come back as wrong bytes:
//! - truncated in place: the next read reports an object that shrank, and the read after it sees
//!   the file's new size;
//! - replaced by another file under the same name (a new inode): reads go on through the
//!   descriptor, so they return the bytes the object had, which for a pack (named by the hash of
//!   its bytes) are the only bytes it can have;
//! - deleted: reads go on returning the old bytes until the storage drops the descriptor, and a
//!   delete through this storage forgets it, so its own reads then find nothing.

use ibs_storage::{ErrorKind, LocalStorage, ObjectKey, Storage};

fn pack(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 131 % 251) as u8).collect()
}

#[tokio::test]
async fn a_file_truncated_in_place_behind_an_open_descriptor_is_reported_never_read_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStorage::open(dir.path()).unwrap();
    let key = ObjectKey::new("data/ab/abcdef").unwrap();
    let data = pack(64 << 10);
    s.put(&key, data.clone().into()).await.unwrap();
    let got = s.get_range(&key, 4096, 8192).await.unwrap();
    assert_eq!(&got[..], &data[4096..4096 + 8192]);

    // Another process truncates the file in place; this storage still holds its descriptor.
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join(key.as_str()))
        .unwrap()
        .set_len(10_000)
        .unwrap();
    let err = s.get_range(&key, 8192, 8192).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Invalid, "{err}");
    assert!(err.to_string().contains("shrank"), "{err}");
    // The shrunken file is opened afresh: its new size is known, the range is past it.
    let err = s.get_range(&key, 8192, 8192).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Invalid, "{err}");
    assert!(err.to_string().contains("past the end"), "{err}");
    // What is still there reads as it is.
    let got = s.get_range(&key, 0, 10_000).await.unwrap();
    assert_eq!(&got[..], &data[..10_000]);
}

#[tokio::test]
async fn a_file_replaced_or_deleted_by_another_process_reads_as_the_object_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStorage::open(dir.path()).unwrap();
    let key = ObjectKey::new("data/cd/cdef01").unwrap();
    let data = pack(32 << 10);
    s.put(&key, data.clone().into()).await.unwrap();
    let path = dir.path().join(key.as_str());
    assert_eq!(&s.get_range(&key, 0, 100).await.unwrap()[..], &data[..100]);

    // Replaced by a new file under the same name (write a temporary, rename over).
    let tmp = dir.path().join("replacement");
    std::fs::write(&tmp, vec![0xEEu8; 32 << 10]).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    assert_eq!(
        &s.get_range(&key, 100, 1000).await.unwrap()[..],
        &data[100..1100],
        "reads through the open descriptor: the object's own bytes"
    );

    // Deleted by another process: still the old bytes through the descriptor.
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        &s.get_range(&key, 2000, 1000).await.unwrap()[..],
        &data[2000..3000]
    );
    // Written again and deleted through this storage: its descriptor is forgotten, reads find
    // nothing.
    s.put(&key, data.clone().into()).await.unwrap();
    assert_eq!(&s.get_range(&key, 0, 10).await.unwrap()[..], &data[..10]);
    s.delete(&key).await.unwrap();
    let err = s.get_range(&key, 0, 10).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
}
