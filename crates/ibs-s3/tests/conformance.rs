//! The storage conformance suite against the real Ceph RADOS Gateway (`scripts/ceph-rgw.sh`), in a
//! fresh bucket per test, under a prefix and at the bucket's root, with uploads large enough to go
//! multipart; and the error classes of a wrong secret, a missing bucket and a dead endpoint.

use bytes::Bytes;
use ibs_s3::{S3Config, S3Credentials, S3Storage};
use ibs_storage::conformance::{foreign_files, no_object_lock, object_lock, run_all};
use ibs_storage::{AlertClass, ErrorKind, ObjectKey, Storage};
use ibs_testing::rgw;

fn writer() -> S3Credentials {
    let gw = rgw::gateway();
    S3Credentials::new(&gw.writer.access_key, &gw.writer.secret_key)
}

async fn storage(tag: &str, prefix: &str) -> (S3Storage, String) {
    let bucket = rgw::bucket(tag).await;
    let mut config = S3Config::new(&rgw::gateway().endpoint, &bucket, prefix);
    // Multipart from 16 MiB on (the default is 64 MiB), so the suite's large object takes it.
    config.multipart_threshold = 16 << 20;
    let s = S3Storage::new(config, &writer());
    s.probe().await.expect("probe a fresh bucket");
    (s, bucket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rgw_bucket_with_a_prefix_passes_conformance() {
    let (s, bucket) = storage("conf", "region-1/MASBackup").await;
    // 40 MiB: above the 16 MiB multipart threshold set above, three parts.
    run_all(&s, 40 << 20).await;
    // Foreign files are written behind ibs's back with the SDK, as another tool would.
    let gw = rgw::gateway();
    let client = rgw::client(gw, &gw.writer);
    let handle = tokio::runtime::Handle::current();
    foreign_files(&s, &|rel, data| {
        let (client, bucket, data) = (client.clone(), bucket.clone(), data.to_vec());
        let key = format!("region-1/MASBackup/{rel}");
        tokio::task::block_in_place(|| {
            handle.block_on(async move {
                client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(data.into())
                    .send()
                    .await
                    .expect("put a foreign object")
            })
        });
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rgw_bucket_root_passes_conformance() {
    let (s, _) = storage("root", "").await;
    run_all(&s, 2 << 20).await;
    no_object_lock(&s).await;
}

/// A bucket with object lock is versioned: deletes remove versions and the contract still holds;
/// the lock clause holds with a lock of a few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rgw_object_lock_bucket_passes_conformance_and_the_lock_clause() {
    let bucket = rgw::lock_bucket("worm").await;
    let s = S3Storage::new(
        S3Config::new(&rgw::gateway().endpoint, &bucket, "r/MASBackup"),
        &writer(),
    );
    run_all(&s, 20 << 20).await;
    object_lock(&s, 3, ibs_storage::LockMode::Compliance).await;
    object_lock(&s, 2, ibs_storage::LockMode::Governance).await;
}

/// On an object-lock bucket an overwrite adds a version on top; reads of write-once keys keep
/// taking the first version and `rewritten` names the key. Other keys read their newest version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_once_keys_read_their_first_version_after_an_overwrite() {
    let bucket = rgw::lock_bucket("first").await;
    let mut config = S3Config::new(&rgw::gateway().endpoint, &bucket, "r");
    config.write_once = vec!["packs/".into()];
    let s = S3Storage::new(config, &writer());
    let pack = ObjectKey::new("packs/ab/abcd").unwrap();
    let other = ObjectKey::new("config").unwrap();
    s.put(&pack, Bytes::from_static(b"the pack ibs wrote"))
        .await
        .unwrap();
    s.put(&other, Bytes::from_static(b"config v1"))
        .await
        .unwrap();
    assert!(s.rewritten("").await.unwrap().is_empty());
    // The same bytes again (a retried put) is no rewrite.
    s.put(&pack, Bytes::from_static(b"the pack ibs wrote"))
        .await
        .unwrap();
    assert!(s.rewritten("packs/").await.unwrap().is_empty());
    let gw = rgw::gateway();
    let raw = rgw::client(gw, &gw.writer);
    for (k, body) in [("r/packs/ab/abcd", "evil"), ("r/config", "config v2")] {
        raw.put_object()
            .bucket(&bucket)
            .key(k)
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    }
    assert_eq!(&s.get(&pack).await.unwrap()[..], b"the pack ibs wrote");
    assert_eq!(&s.get_range(&pack, 4, 4).await.unwrap()[..], b"pack");
    assert_eq!(s.stat(&pack).await.unwrap().size, 18);
    assert_eq!(&s.get(&other).await.unwrap()[..], b"config v2");
    assert_eq!(s.rewritten("packs/").await.unwrap(), vec![pack.clone()]);
    // The history reads every version, oldest first.
    let history: Vec<Option<Vec<u8>>> = s
        .history(&pack)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.map(|b| b.to_vec()))
        .collect();
    assert_eq!(
        history,
        vec![
            Some(b"the pack ibs wrote".to_vec()),
            Some(b"the pack ibs wrote".to_vec()),
            Some(b"evil".to_vec())
        ]
    );
    // A delete removes every version.
    s.delete(&pack).await.unwrap();
    assert_eq!(s.get(&pack).await.unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(
        s.history(&pack).await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert!(s.rewritten("packs/").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_prefixes_in_one_bucket_do_not_see_each_other() {
    let (a, bucket) = storage("iso", "a").await;
    let b = S3Storage::new(
        S3Config::new(&rgw::gateway().endpoint, &bucket, "ab"),
        &writer(),
    );
    let k = ObjectKey::new("x").unwrap();
    a.put(&k, Bytes::from_static(b"in a")).await.unwrap();
    assert!(
        b.list("").await.unwrap().is_empty(),
        "prefix ab must not list a/x"
    );
    assert_eq!(b.get(&k).await.unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(a.list("").await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_authentication_and_never_echoed() {
    let (_, bucket) = storage("auth", "p").await;
    let gw = rgw::gateway();
    let wrong = "Wr0ngSecretThatMustNotLeak0000000000000";
    let s = S3Storage::new(
        S3Config::new(&gw.endpoint, &bucket, "p"),
        &S3Credentials::new(&gw.writer.access_key, wrong),
    );
    let e = s.probe().await.expect_err("a wrong secret is refused");
    assert_eq!(e.kind, ErrorKind::Authentication, "{e}");
    assert_eq!(e.class(), AlertClass::Authentication);
    let k = ObjectKey::new("k").unwrap();
    let e = s.put(&k, Bytes::from_static(b"x")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Authentication, "{e}");
    assert!(!e.to_string().contains(wrong), "the secret leaked: {e}");
    assert!(!e.to_string().contains(&gw.writer.secret_key), "{e}");
    let unknown = S3Storage::new(
        S3Config::new(&gw.endpoint, &bucket, "p"),
        &S3Credentials::new("NOSUCHACCESSKEY00000", wrong),
    );
    let e = unknown.probe().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Authentication, "unknown access key: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_a_path_error() {
    let gw = rgw::gateway();
    let s = S3Storage::new(
        S3Config::new(&gw.endpoint, "ibs-no-such-bucket-here", "p"),
        &writer(),
    );
    let e = s.probe().await.expect_err("a missing bucket");
    assert_eq!(e.kind, ErrorKind::Path, "{e}");
    assert_eq!(e.class(), AlertClass::Path);
    assert!(!e.transient);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_a_transient_connectivity_error() {
    let port = ibs_testing::free_port();
    let s = S3Storage::new(
        S3Config::new(format!("http://127.0.0.1:{port}"), "b", "p"),
        &writer(),
    );
    let e = s.probe().await.expect_err("nothing listens");
    assert_eq!(e.kind, ErrorKind::Connectivity, "{e}");
    assert!(e.transient, "a refused connection is worth retrying");
    assert_eq!(e.class(), AlertClass::Connectivity);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_multipart_uploads_are_aborted() {
    let (s, bucket) = storage("mpu", "r").await;
    let gw = rgw::gateway();
    let client = rgw::client(gw, &gw.writer);
    client
        .create_multipart_upload()
        .bucket(&bucket)
        .key("r/packs/ab/killed-writer")
        .send()
        .await
        .unwrap();
    client
        .create_multipart_upload()
        .bucket(&bucket)
        .key("other/not-ours")
        .send()
        .await
        .unwrap();
    assert_eq!(
        s.remove_stale_temporaries(std::time::Duration::from_secs(3600))
            .await
            .unwrap(),
        0,
        "a fresh upload is not stale"
    );
    assert_eq!(
        s.remove_stale_temporaries(std::time::Duration::ZERO)
            .await
            .unwrap(),
        1,
        "only the upload under the prefix is aborted"
    );
    let left = client
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = left.uploads().iter().filter_map(|u| u.key()).collect();
    assert_eq!(keys, ["other/not-ours"]);
}
