//! A backup reads its source and changes nothing in it: the access times of the files it reads and
//! of the folders it lists stay as they were (`O_NOATIME`, as restic, Borg and rsync's
//! `--open-noatime` do), so a backup of a million fresh files does not dirty a million inodes, and
//! tools that go by access times (tmpwatch-style cleaners, "last used" reports) see no change.
//!
//! The access times are set before the files' modification times, which is exactly when a
//! `relatime` mount (the default) updates them on a read. A control file, read plainly, proves
//! that the file system under the test updates access times at all: on a `noatime` mount the test
//! fails and says so instead of passing without having tested anything.

mod common;

use common::*;
use std::fs::{File, FileTimes};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// Sets `p`'s access time an hour before its modification time.
fn age_atime(p: &Path) {
    let m = std::fs::metadata(p).unwrap();
    let old = m.modified().unwrap() - Duration::from_secs(3600);
    File::open(p)
        .unwrap()
        .set_times(FileTimes::new().set_accessed(old))
        .unwrap();
}

fn atime(p: &Path) -> (i64, i64) {
    let m = std::fs::metadata(p).unwrap();
    (m.atime(), m.atime_nsec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_leaves_the_access_times_of_what_it_reads_unchanged() {
    let env = env().await;
    let src = env.path("src");
    let deep = src.join("etc/app");
    std::fs::create_dir_all(&deep).unwrap();
    let files = [
        src.join("top.conf"),
        deep.join("app.conf"),
        deep.join("big.bin"),
    ];
    std::fs::write(&files[0], b"listen 0.0.0.0:443\n").unwrap();
    std::fs::write(&files[1], b"workers = 4\n").unwrap();
    std::fs::write(&files[2], bytes(7, 3 << 20)).unwrap();
    let folders = [src.clone(), src.join("etc"), deep.clone()];
    let control = env.path("control");
    std::fs::write(&control, b"read plainly").unwrap();
    for p in files.iter().chain(&folders).chain([&control]) {
        age_atime(p);
    }
    let before: Vec<_> = files.iter().chain(&folders).map(|p| atime(p)).collect();

    // The control: a plain read on this file system updates an access time older than the
    // modification time.
    let control_before = atime(&control);
    std::fs::read(&control).unwrap();
    assert_ne!(
        atime(&control),
        control_before,
        "the file system under {} did not update an access time on a plain read (mounted \
         noatime?): this test cannot tell whether the backup keeps them",
        control.display()
    );

    let report = backup(&env, &[("s", &src)]).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.catalog.sources[0].files, 3);
    let after: Vec<_> = files.iter().chain(&folders).map(|p| atime(p)).collect();
    for ((p, b), a) in files.iter().chain(&folders).zip(&before).zip(&after) {
        assert_eq!(a, b, "{}: access time changed by the backup", p.display());
    }

    // What was read is what was stored: the restore holds the same bytes.
    let target = env.path("restored");
    let r = restore(&env, &report.catalog.backup_id, &target, None)
        .await
        .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_same_tree(&src, &target.join("s"));
}
