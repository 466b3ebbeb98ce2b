//! Certificate rotation through the controller (`ibs location set --cert`, backup, restore with the
//! new .pfx alone) and the privacy of the controller's data folder.

mod common;

use common::daemon::{free_port, last_line, statuses, tree, Server};
use std::path::Path;

/// Every file under `root` (not following symlinks), with the folders on the way.
fn walk_all(root: &Path) -> (Vec<std::path::PathBuf>, Vec<std::path::PathBuf>) {
    let (mut files, mut dirs) = (Vec::new(), vec![root.to_path_buf()]);
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                dirs.push(p.clone());
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    (files, dirs)
}

/// Issue 13 findings 14 and 9 through the daemon. After `ibs location set --cert new.cer` and
/// `ibs backup start --wait`, `ibs restore ID --pfx new.pfx` restores the new backup with the new
/// .pfx alone; the backup from before the rotation, with the new .pfx alone, is refused naming
/// the OLD certificate; with both `--pfx` (each its own password file) it restores. Then no byte
/// of the controller's data folder (database, settings, writer state, repository) names a backed
/// up file, and every file of it is 0600 in 0700 folders.
#[test]
fn certificate_rotation_through_the_controller_and_a_private_data_folder() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let sample = tmp.path().join("sample");
    let secret_name = "Merger-Target-Acme-Q7.docx";
    std::fs::create_dir_all(sample.join("board-minutes-private")).unwrap();
    std::fs::write(
        sample.join("board-minutes-private").join(secret_name),
        b"draft\n",
    )
    .unwrap();
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(sample.join("big.bin"), &big).unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&data, free_port(), &["--sample", sample.to_str().unwrap()]);
    let list = s.wait_for("the first backup", |v| {
        statuses(v).iter().any(|x| x == "Succeeded")
    });
    let before = list[0]["id"].as_str().unwrap().to_string();
    let old_pfx = data.join("certs/ibs-backup.pfx");
    let old_pw_file = data.join("certs/ibs-backup.pfx.password");
    let old_thumb = common::thumbprint(&data.join("certs/ibs-backup.cer"));

    // A new certificate, with another password.
    let new_cer = tmp.path().join("new.cer");
    let new_pfx = tmp.path().join("new.pfx");
    let new_pw_file = tmp.path().join("new.pw");
    std::fs::write(&new_pw_file, "the new certificate's password\n").unwrap();
    let out = s.ibs(
        &[
            "cert",
            "new",
            "--subject",
            "ibs e2e rotated",
            "--cer",
            new_cer.to_str().unwrap(),
            "--pfx",
            new_pfx.to_str().unwrap(),
            "--bits",
            "2048",
        ],
        &[("IBS_PFX_PASSWORD", "the new certificate's password")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.ibs(
        &["location", "set", "--cert", new_cer.to_str().unwrap()],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.ibs(&["backup", "start", "--wait"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = last_line(&out);

    let restore = |id: &str, target: &Path, keys: &[(&Path, &Path)]| {
        let mut args = vec![
            "restore".to_string(),
            id.to_string(),
            "--component".into(),
            "sample".into(),
            "--target".into(),
            target.display().to_string(),
        ];
        for (pfx, _) in keys {
            args.push("--pfx".into());
            args.push(pfx.display().to_string());
        }
        for (_, pw) in keys {
            args.push("--pfx-password-file".into());
            args.push(pw.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        s.ibs(&args, &[])
    };
    let t_after = tmp.path().join("r-after");
    let out = restore(&after, &t_after, &[(&new_pfx, &new_pw_file)]);
    assert!(
        out.status.success(),
        "the backup after the rotation, with the new .pfx alone: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree(&t_after), tree(&sample));

    let out = restore(
        &before,
        &tmp.path().join("r-x"),
        &[(&new_pfx, &new_pw_file)],
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&old_thumb) && said.contains("ibs backup"),
        "names the old certificate by thumbprint and subject: {said}"
    );
    let t_before = tmp.path().join("r-before");
    let out = restore(
        &before,
        &t_before,
        &[(&new_pfx, &new_pw_file), (&old_pfx, &old_pw_file)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree(&t_before), tree(&sample));

    // The data folder: no backed-up name anywhere, owner-only modes.
    let (files, dirs) = walk_all(&data);
    for f in &files {
        let b = std::fs::read(f).unwrap();
        for needle in [secret_name, "Merger-Target", "board-minutes-private"] {
            assert!(
                !b.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} holds {needle:?}",
                f.display()
            );
        }
    }
    let repo = data.join("backups");
    for f in files.iter().filter(|f| !f.starts_with(&repo)) {
        let mode = std::fs::symlink_metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", f.display());
    }
    for d in dirs.iter().filter(|d| !d.starts_with(&repo)) {
        let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} has mode {mode:o}", d.display());
    }
    drop(s);
}
