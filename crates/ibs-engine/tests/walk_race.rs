//! A backup never reads through a symlink swapped into its source while it walks it (ADR 0061).
//!
//! The attack: someone who may write in a backed-up folder (a tenant's share, an application's
//! data folder) but not read root's files keeps swapping one of its folders for a symlink to a
//! root-only folder and back, while the backup, running as root, walks. A walk by path lists the
//! real folder, then stats and opens `folder/NAME` through whatever `folder` is at that instant:
//! the root-only file's bytes end up in the backup under the attacker's name. A walk by open
//! folder descriptors reaches each entry only through the folder it listed.

mod common;

use common::*;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

const FILES: usize = 300;

/// Every regular file below `dir` (symlinks not followed) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8], found: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            files_containing(&e.path(), needle, found);
        } else if ft.is_file() {
            let bytes = std::fs::read(e.path()).unwrap();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(e.path().display().to_string());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_swapped_for_a_symlink_while_walked_is_never_read_through() {
    let env = env().await;
    let src = env.path("src");
    let folder = src.join("tenant");
    let aside = src.join("tenant.real");
    let outside = env.path("root-only");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    for i in 0..FILES {
        std::fs::write(folder.join(format!("f{i:03}")), format!("decoy {i}\n")).unwrap();
        std::fs::write(outside.join(format!("f{i:03}")), format!("ROOT-ONLY {i}\n")).unwrap();
    }
    std::fs::write(src.join("plain.conf"), b"stays as it is\n").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, swaps) = (stop.clone(), swaps.clone());
        let (folder, aside, outside) = (folder.clone(), aside.clone(), outside.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // Each state lasts long enough for the walk to meet it several times.
                std::fs::rename(&folder, &aside).unwrap();
                std::os::unix::fs::symlink(&outside, &folder).unwrap();
                std::thread::sleep(std::time::Duration::from_micros(300));
                std::fs::remove_file(&folder).unwrap();
                std::fs::rename(&aside, &folder).unwrap();
                std::thread::sleep(std::time::Duration::from_micros(300));
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let mut leaked = Vec::new();
    let mut walked = 0;
    for round in 0..25 {
        // The swaps make entries vanish or turn into symlinks mid-walk: errors are expected, a
        // failed backup is not.
        let report = try_backup(&env, &[("s", &src)]).await.unwrap();
        let target = env.path(&format!("restored-{round}"));
        restore(&env, &report.catalog.backup_id, &target, None)
            .await
            .unwrap();
        files_containing(&target, b"ROOT-ONLY", &mut leaked);
        let mut decoys = Vec::new();
        files_containing(&target, b"decoy", &mut decoys);
        walked += decoys.len();
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    assert!(
        leaked.is_empty(),
        "the backup read through the swapped symlink: {} files hold root-only bytes, e.g. {:?}",
        leaked.len(),
        &leaked[..leaked.len().min(5)]
    );
    // The race was run: the folder was swapped many times and its real files were backed up.
    assert!(swaps.load(Ordering::Relaxed) > 100, "only {swaps:?} swaps");
    assert!(
        walked > 0,
        "no decoy was ever backed up: the walk never met the real folder"
    );
}
