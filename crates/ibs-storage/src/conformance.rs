//! The storage conformance suite. Every backend (local folder, SMB share, memory, and any future one)
//! runs [`run_all`] against a fresh, empty location in CI. Each check panics with a message naming the
//! contract clause it tests.

use crate::{ErrorKind, ObjectKey, Storage};
use bytes::Bytes;
use rand::{RngCore, SeedableRng};

fn key(s: &str) -> ObjectKey {
    ObjectKey::new(s).expect("valid test key")
}

fn random_bytes(len: usize, seed: u64) -> Bytes {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    Bytes::from(v)
}

/// Runs every check in order against an empty storage. `large` is the size of the big-object check
/// (at least a few MiB exercises request splitting on network backends).
pub async fn run_all(s: &dyn Storage, large: usize) {
    assert!(
        s.list("").await.expect("list of an empty store").is_empty(),
        "the store must start empty"
    );
    put_get_roundtrip(s).await;
    overwrite_replaces(s).await;
    missing_objects_are_not_found(s).await;
    ranged_reads(s).await;
    listing(s).await;
    object_ages(s).await;
    empty_object(s).await;
    large_object(s, large).await;
    concurrent_puts(s).await;
    renames(s).await;
    space_is_sane(s).await;
    delete_all(s).await;
}

/// The foreign-file clause (`list_foreign`, `delete_foreign`), for backends that can hold names that
/// are not object keys. `make(path, bytes)` creates a file at a root-relative path behind the
/// backend's back (as an operator or another program would). Run on an empty store.
pub async fn foreign_files(s: &dyn Storage, make: &dyn Fn(&str, &[u8])) {
    let foreign = [
        "Notes 2026.docx",
        "switch configs/tor-1#a.cfg",
        "MASBackup-old/h\u{e4}lle.txt",
    ];
    for f in foreign {
        make(f, b"operator data");
    }
    s.put(&key("packs/ab/keep"), Bytes::from_static(b"object"))
        .await
        .expect("put");
    let mut listed: Vec<String> = s
        .list_foreign()
        .await
        .expect("list_foreign")
        .into_iter()
        .map(|f| f.path)
        .collect();
    listed.sort();
    let mut want: Vec<String> = foreign.iter().map(|f| f.to_string()).collect();
    want.sort();
    assert_eq!(listed, want, "list_foreign lists exactly the non-key files");
    assert_eq!(
        s.list("").await.expect("list").len(),
        1,
        "list never returns foreign names"
    );
    for bad in ["packs/ab/keep", "../escape.txt", "a//b c", "x/./y z"] {
        assert_eq!(
            s.delete_foreign(bad)
                .await
                .expect_err("delete_foreign of a key or unsafe path")
                .kind,
            ErrorKind::Invalid,
            "delete_foreign refuses {bad:?}"
        );
    }
    for f in foreign {
        s.delete_foreign(f).await.expect("delete_foreign");
    }
    assert!(
        s.list_foreign().await.expect("list_foreign").is_empty(),
        "deleted foreign files are gone"
    );
    assert_eq!(
        s.delete_foreign(foreign[0])
            .await
            .expect_err("second delete")
            .kind,
        ErrorKind::NotFound,
        "deleting a missing foreign file is NotFound"
    );
    assert_eq!(
        s.get(&key("packs/ab/keep")).await.expect("object kept"),
        Bytes::from_static(b"object"),
        "objects survive foreign-file deletion"
    );
    s.delete(&key("packs/ab/keep")).await.expect("delete");
}

async fn put_get_roundtrip(s: &dyn Storage) {
    let data = random_bytes(1000, 1);
    s.put(&key("a/b/obj1"), data.clone()).await.expect("put");
    assert_eq!(
        s.get(&key("a/b/obj1")).await.expect("get"),
        data,
        "get returns exactly what put stored"
    );
    assert_eq!(
        s.stat(&key("a/b/obj1")).await.expect("stat").size,
        1000,
        "stat reports the stored size"
    );
}

/// `rename` moves an object into a folder that does not exist yet, replaces an existing target,
/// and answers a missing source with `NotFound` without touching the target.
async fn renames(s: &dyn Storage) {
    let data = random_bytes(70_000, 9);
    s.put(&key("mv/src"), data.clone()).await.expect("put");
    let to = key("mv/new/deeper/dst");
    s.rename(&key("mv/src"), &to)
        .await
        .expect("rename into a new folder");
    assert_eq!(
        s.get(&to).await.expect("get renamed"),
        data,
        "the bytes move"
    );
    assert_eq!(
        s.stat(&key("mv/src")).await.expect_err("source gone").kind,
        ErrorKind::NotFound,
        "the source is gone after a rename"
    );
    let other = random_bytes(10, 10);
    s.put(&key("mv/src2"), other.clone()).await.expect("put");
    s.rename(&key("mv/src2"), &to)
        .await
        .expect("rename over an object");
    assert_eq!(
        s.get(&to).await.expect("get"),
        other,
        "rename replaces the target"
    );
    assert_eq!(
        s.rename(&key("mv/none"), &to)
            .await
            .expect_err("missing source")
            .kind,
        ErrorKind::NotFound,
        "renaming a missing object is NotFound"
    );
    assert_eq!(s.get(&to).await.expect("target intact"), other);
    let names: Vec<String> = s
        .list("mv/")
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key.as_str().to_owned())
        .collect();
    assert_eq!(
        names,
        vec!["mv/new/deeper/dst".to_owned()],
        "only the target is listed"
    );
    s.delete(&to).await.expect("delete");
}

async fn overwrite_replaces(s: &dyn Storage) {
    s.put(&key("over"), random_bytes(5000, 2))
        .await
        .expect("put");
    let small = random_bytes(10, 3);
    s.put(&key("over"), small.clone()).await.expect("overwrite");
    assert_eq!(
        s.get(&key("over")).await.expect("get"),
        small,
        "a put replaces the whole object, no tail remains"
    );
}

async fn missing_objects_are_not_found(s: &dyn Storage) {
    let k = key("no/such/object");
    assert_eq!(
        s.get(&k).await.expect_err("get of missing").kind,
        ErrorKind::NotFound,
        "get of a missing object"
    );
    assert_eq!(
        s.get_reusable(&k)
            .await
            .expect_err("get_reusable of missing")
            .kind,
        ErrorKind::NotFound,
        "get_reusable of a missing object"
    );
    assert_eq!(
        s.stat(&k).await.expect_err("stat of missing").kind,
        ErrorKind::NotFound,
        "stat of a missing object"
    );
    assert_eq!(
        s.delete(&k).await.expect_err("delete of missing").kind,
        ErrorKind::NotFound,
        "delete of a missing object"
    );
}

async fn ranged_reads(s: &dyn Storage) {
    let data = random_bytes(100_000, 4);
    s.put(&key("range"), data.clone()).await.expect("put");
    let got = s
        .get_range(&key("range"), 12_345, 50_000)
        .await
        .expect("get_range");
    assert_eq!(
        got,
        data.slice(12_345..62_345),
        "get_range returns the requested slice"
    );
    let tail = s
        .get_range(&key("range"), 99_990, 10)
        .await
        .expect("get_range at the end");
    assert_eq!(
        tail,
        data.slice(99_990..),
        "a range ending exactly at the end is valid"
    );
    let err = s
        .get_range(&key("range"), 99_990, 11)
        .await
        .expect_err("range past the end");
    assert_eq!(
        err.kind,
        ErrorKind::Invalid,
        "a range past the end is Invalid, never a short read"
    );
    blocking_reads_agree(s, &data).await;
    // Ranged reads see an overwrite and a delete at once (a backend may keep read handles open).
    let newer = random_bytes(100_000, 5);
    s.put(&key("range"), newer.clone())
        .await
        .expect("overwrite");
    assert_eq!(
        s.get_range(&key("range"), 12_345, 50_000)
            .await
            .expect("get_range after overwrite"),
        newer.slice(12_345..62_345),
        "a ranged read after an overwrite returns the new bytes"
    );
    s.delete(&key("range")).await.expect("delete");
    assert_eq!(
        s.get_range(&key("range"), 0, 10)
            .await
            .expect_err("ranged read of a deleted object")
            .kind,
        ErrorKind::NotFound,
        "a ranged read after a delete is NotFound"
    );
    s.put(&key("range"), data.clone())
        .await
        .expect("put again after delete");
    assert_eq!(
        s.get_range(&key("range"), 0, 100)
            .await
            .expect("get_range after re-put"),
        data.slice(0..100),
        "the name is reusable at once after a delete"
    );
}

/// A backend's blocking ranged read (if it has one) returns what `get_range` does, bytes and
/// error kinds alike.
async fn blocking_reads_agree(s: &dyn Storage, data: &Bytes) {
    let got = (
        s.get_range_blocking(&key("range"), 12_345, 50_000),
        s.get_range_blocking(&key("range"), 99_990, 11),
        s.get_range_blocking(&key("no-such-object"), 0, 1),
    );
    match got {
        (None, None, None) => {}
        (Some(slice), Some(past_end), Some(missing)) => {
            assert_eq!(
                slice.expect("blocking get_range"),
                data.slice(12_345..62_345),
                "a blocking ranged read returns the requested slice"
            );
            assert_eq!(
                past_end.expect_err("blocking range past the end").kind,
                ErrorKind::Invalid,
                "a blocking range past the end is Invalid"
            );
            assert_eq!(
                missing.expect_err("blocking read of a missing object").kind,
                ErrorKind::NotFound,
                "a blocking read of a missing object is NotFound"
            );
        }
        _ => panic!("a backend offers its blocking ranged read for every call or for none"),
    }
}

async fn listing(s: &dyn Storage) {
    for name in ["lst/x/1", "lst/x/2", "lst/y/3", "lstz"] {
        s.put(&key(name), Bytes::from_static(b"v"))
            .await
            .expect("put");
    }
    let mut names: Vec<String> = s
        .list("lst/")
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key.to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["lst/x/1", "lst/x/2", "lst/y/3"],
        "list returns every object under the prefix, recursively"
    );
    let mut names: Vec<String> = s
        .list("lst/x/")
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key.to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["lst/x/1", "lst/x/2"],
        "a deeper prefix narrows the listing"
    );
    s.delete(&key("lst/x/1")).await.expect("delete");
    let names: Vec<String> = s
        .list("lst/x/")
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key.to_string())
        .collect();
    assert_eq!(names, ["lst/x/2"], "a deleted object is no longer listed");
    let all = s.list("").await.expect("list all");
    assert!(
        all.iter().any(|o| o.key.as_str() == "lstz"),
        "the empty prefix lists everything"
    );
    assert!(
        all.iter().all(|o| ObjectKey::is_valid(o.key.as_str())),
        "temporaries are never listed"
    );
    let sized = s.list("a/").await.expect("list");
    assert_eq!(sized.len(), 1);
    assert_eq!(sized[0].size, 1000, "list reports object sizes");
}

/// `list` and `stat` report when an object was written (prune's grace period reads it); the test
/// servers run on this host, so their clock is this one.
async fn object_ages(s: &dyn Storage) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    s.put(&key("age/a"), Bytes::from_static(b"v"))
        .await
        .expect("put");
    let listed = s.list("age/").await.expect("list");
    let stat = s.stat(&key("age/a")).await.expect("stat");
    for (what, m) in [("list", listed[0].modified), ("stat", stat.modified)] {
        let m = m.unwrap_or_else(|| panic!("{what} reports no modification time"));
        assert!(
            (now - 300..=now + 300).contains(&m),
            "{what} reports modification time {m}, written at about {now}"
        );
    }
    s.delete(&key("age/a")).await.expect("delete");
}

async fn empty_object(s: &dyn Storage) {
    s.put(&key("empty"), Bytes::new()).await.expect("put empty");
    assert!(
        s.get(&key("empty")).await.expect("get empty").is_empty(),
        "an empty object round-trips"
    );
    assert_eq!(s.stat(&key("empty")).await.expect("stat").size, 0);
}

async fn large_object(s: &dyn Storage, size: usize) {
    let data = random_bytes(size, 5);
    s.put(&key("large/obj"), data.clone())
        .await
        .expect("put large");
    let got = s.get(&key("large/obj")).await.expect("get large");
    assert_eq!(got.len(), data.len(), "a large object keeps its length");
    assert!(got == data, "a large object keeps its bytes");
    // Reusable reads: the same bytes, and a buffer handed back is never one still referenced.
    let other_data = random_bytes(size, 6);
    s.put(&key("large/other"), other_data.clone())
        .await
        .expect("put second large");
    let held = s
        .get_reusable(&key("large/obj"))
        .await
        .expect("get_reusable");
    for _ in 0..3 {
        let other = s
            .get_reusable(&key("large/other"))
            .await
            .expect("get_reusable of another object");
        assert!(
            other == other_data,
            "get_reusable returns the object's bytes"
        );
    }
    assert!(
        held == data,
        "bytes held from get_reusable are not overwritten by later reads"
    );
    drop(held);
    let again = s
        .get_reusable(&key("large/obj"))
        .await
        .expect("get_reusable again");
    assert!(again == data, "get_reusable after a buffer came back");
    s.delete(&key("large/other"))
        .await
        .expect("delete second large");
    let mid = size / 2;
    let part = s
        .get_range(&key("large/obj"), mid as u64, 4096.min((size - mid) as u64))
        .await
        .expect("range");
    assert_eq!(
        part,
        data.slice(mid..mid + part.len()),
        "a range inside a large object"
    );
}

async fn concurrent_puts(s: &dyn Storage) {
    let futs = (0..16u64).map(|i| async move {
        let k = key(&format!("conc/{i:02}"));
        s.put(&k, random_bytes(64 * 1024, 100 + i)).await.map(|_| k)
    });
    let keys = futures::future::join_all(futs).await;
    for (i, k) in keys.into_iter().enumerate() {
        let k = k.expect("concurrent put");
        assert_eq!(
            s.get(&k).await.expect("get"),
            random_bytes(64 * 1024, 100 + i as u64),
            "concurrent puts do not mix"
        );
    }
}

async fn space_is_sane(s: &dyn Storage) {
    if let Some(sp) = s.space().await.expect("space") {
        assert!(
            sp.total > 0 && sp.available <= sp.total,
            "available space never exceeds total: {sp:?}"
        );
    }
}

async fn delete_all(s: &dyn Storage) {
    for o in s.list("").await.expect("list") {
        s.delete(&o.key).await.expect("delete");
    }
    assert!(
        s.list("").await.expect("list").is_empty(),
        "after deleting everything the store lists empty"
    );
}

/// The object-lock clause (ADR 0035), for a location that enforces object lock (an S3 bucket
/// created with it). `hold` is how long the lock of the test object lasts at first, in seconds
/// (a few: the check waits for it to expire); `mode` the lock mode (ibs never bypasses a
/// GOVERNANCE lock, so both modes refuse its deletes). Uses keys under `lock/`; leaves none behind.
pub async fn object_lock(s: &dyn Storage, hold: i64, mode: crate::LockMode) {
    use crate::{now_unix, Retention};
    assert!(
        s.object_lock_enabled().await.expect("object_lock_enabled"),
        "object lock: the location must report object lock"
    );
    let k = key("lock/a");
    let data = random_bytes(1000, 41);
    let start = now_unix();
    let lock = |until| Retention { mode, until };
    s.put_locked(&k, data.clone(), lock(start + hold))
        .await
        .expect("put_locked");
    assert_eq!(s.get(&k).await.expect("get a locked object"), data);
    let until = s
        .lock_until(&k)
        .await
        .expect("lock_until")
        .expect("object lock: put_locked must lock the object");
    assert!(
        until >= start + hold - 1,
        "object lock: locked until {until}, asked for {}",
        start + hold
    );
    let e = s
        .delete(&k)
        .await
        .expect_err("a locked object must not delete");
    assert_eq!(
        e.kind,
        ErrorKind::Locked,
        "object lock: refused delete kind: {e}"
    );
    assert_eq!(s.get(&k).await.expect("still there"), data);
    // Extending never shortens.
    s.extend_lock(&k, lock(start + 1))
        .await
        .expect("extend_lock to an earlier date is a no-op");
    assert_eq!(s.lock_until(&k).await.unwrap(), Some(until));
    s.extend_lock(&k, lock(start + hold + 2))
        .await
        .expect("extend_lock");
    let longer = s.lock_until(&k).await.unwrap().unwrap();
    assert!(longer > start + hold, "object lock: extended to {longer}");
    let missing = key("lock/missing");
    assert_eq!(
        s.lock_until(&missing).await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        s.extend_lock(&missing, lock(start + hold))
            .await
            .unwrap_err()
            .kind,
        ErrorKind::NotFound
    );
    // An unlocked object on the same location deletes as usual.
    let free = key("lock/free");
    s.put(&free, Bytes::from_static(b"free")).await.unwrap();
    s.delete(&free).await.expect("an unlocked object deletes");
    assert_eq!(s.get(&free).await.unwrap_err().kind, ErrorKind::NotFound);
    // Once the lock expired the object deletes, and is gone.
    let deadline = longer + 30;
    loop {
        match s.delete(&k).await {
            Ok(()) => break,
            Err(e) if e.kind == ErrorKind::Locked && now_unix() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await
            }
            Err(e) => panic!("object lock: delete after the lock expired: {e}"),
        }
    }
    assert_eq!(s.get(&k).await.unwrap_err().kind, ErrorKind::NotFound);
    assert!(s.list("lock/").await.unwrap().is_empty());
}

/// The object-lock clause for a backend or location without object lock: it says so, and every
/// lock operation is `Unsupported` (never a silent success).
pub async fn no_object_lock(s: &dyn Storage) {
    use crate::{LockMode, Retention};
    assert!(!s.object_lock_enabled().await.expect("object_lock_enabled"));
    assert!(s.lock_policy().is_none());
    let k = key("nolock/a");
    let r = Retention {
        mode: LockMode::Compliance,
        until: i64::MAX / 2,
    };
    let e = s
        .put_locked(&k, Bytes::from_static(b"x"), r)
        .await
        .expect_err("put_locked without object lock");
    assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
    assert_eq!(
        s.get(&k).await.unwrap_err().kind,
        ErrorKind::NotFound,
        "a refused put_locked writes nothing"
    );
    s.put(&k, Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(
        s.extend_lock(&k, r).await.unwrap_err().kind,
        ErrorKind::Unsupported
    );
    assert_eq!(
        s.lock_until(&k).await.unwrap_err().kind,
        ErrorKind::Unsupported
    );
    assert!(s.rewritten("").await.unwrap().is_empty());
    s.delete(&k).await.unwrap();
}
