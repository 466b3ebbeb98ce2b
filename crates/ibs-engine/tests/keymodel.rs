//! The key model: a writer can fill the repository but cannot read any finished backup; restore needs
//! the .pfx; a wrong .pfx or password gets a specific error.

mod common;
use common::*;
use ibs_repo::ids::KeyId;
use ibs_repo::keyring::Unlock;
use ibs_repo::{layout, RepoError, Repository};
use std::path::Path;
use std::sync::Arc;

fn all_files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let e = e.unwrap().path();
            if e.is_dir() {
                stack.push(e);
            } else {
                out.push(e);
            }
        }
    }
    out
}

#[tokio::test]
async fn writer_state_and_repository_without_the_pfx_cannot_restore_contents() {
    let env = env().await;
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("secret.txt"), b"the launch codes").unwrap();
    let report = backup(&env, &[("s", &src)]).await;
    let id = report.catalog.backup_id.clone();

    // Everything the writer has: its state (repository keys, certificate) and the whole repository.
    let err = ibs_engine::restore(
        env.repo.clone(),
        Arc::new(Unlock::Identities(vec![])),
        ibs_engine::RestoreOptions {
            backup_id: id.clone(),
            target: env.path("out"),
            source: None,
            threads: 1,
            progress: Default::default(),
            lock_wait: Default::default(),
            cancel: None,
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("needs the .pfx"), "{err}");
    assert!(!env.path("out").exists(), "nothing was written");

    // The repository keys in the state do not open the manifest's tree part.
    let m = env.repo.read_manifest(&id).await.unwrap();
    assert!(m.open_tree(&env.state.keys.metadata).is_err());
    assert!(m.open_tree(&env.state.keys.dedup).is_err());

    // The data key (recovered here with the .pfx, as an auditor would) appears nowhere in the state
    // or the repository except inside its envelope.
    let key_id = KeyId::from_hex(&m.catalog.data_key_id).unwrap();
    let data_key = env
        .repo
        .open_data_key(&key_id, &env.unlock(), None)
        .await
        .unwrap();
    let needle = data_key.bytes();
    let envelope = env.repo_dir().join(layout::data_key(&key_id).as_str());
    let mut scanned = 0;
    for f in all_files(&env.repo_dir())
        .into_iter()
        .chain(all_files(&env.state_dir()))
    {
        if f == envelope {
            continue;
        }
        let b = std::fs::read(&f).unwrap();
        scanned += 1;
        assert!(
            !b.windows(32).any(|w| w == needle),
            "data key bytes found in {}",
            f.display()
        );
    }
    assert!(scanned >= 6, "scanned {scanned} files");
    // The envelope holds it only encrypted.
    let env_bytes = std::fs::read(&envelope).unwrap();
    assert!(!env_bytes.windows(32).any(|w| w == needle));
    // The secret's plaintext is nowhere either.
    for f in all_files(&env.repo_dir())
        .into_iter()
        .chain(all_files(&env.state_dir()))
    {
        let b = std::fs::read(&f).unwrap();
        assert!(
            !b.windows(16).any(|w| w == b"the launch codes"),
            "plaintext in {}",
            f.display()
        );
    }
    // With the .pfx it restores.
    restore(&env, &id, &env.path("out2"), None).await.unwrap();
    assert_eq!(
        std::fs::read(env.path("out2/s/secret.txt")).unwrap(),
        b"the launch codes"
    );
}

#[tokio::test]
async fn wrong_pfx_names_both_thumbprints() {
    let env = env().await;
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let id = backup(&env, &[("s", &src)]).await.catalog.backup_id;
    let other = other_identity();
    let err = ibs_engine::restore(
        env.repo.clone(),
        Arc::new(Unlock::Identities(vec![other.clone()])),
        ibs_engine::RestoreOptions {
            backup_id: id,
            target: env.path("out"),
            source: None,
            threads: 1,
            progress: Default::default(),
            lock_wait: Default::default(),
            cancel: None,
        },
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            ibs_engine::EngineError::Repo(RepoError::WrongCertificate { .. })
        ),
        "{msg}"
    );
    assert!(msg.contains(env.ident.certificate().thumbprint()), "{msg}");
    assert!(msg.contains(other.certificate().thumbprint()), "{msg}");
}

#[test]
fn wrong_pfx_password_says_so() {
    let pfx = identity().to_pfx("right").unwrap();
    let err = ibs_keys::PrivateIdentity::from_pfx(&pfx, "wrong").unwrap_err();
    assert!(matches!(err, ibs_keys::KeyError::WrongPfxPassword), "{err}");
    assert!(err.to_string().contains("password"), "{err}");
}

#[tokio::test]
async fn each_backup_gets_a_fresh_data_key() {
    let env = env().await;
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let a = backup(&env, &[("s", &src)]).await.catalog;
    let b = backup(&env, &[("s", &src)]).await.catalog;
    assert_ne!(a.data_key_id, b.data_key_id);
    let ka = env
        .repo
        .open_data_key(
            &KeyId::from_hex(&a.data_key_id).unwrap(),
            &env.unlock(),
            None,
        )
        .await
        .unwrap();
    let kb = env
        .repo
        .open_data_key(
            &KeyId::from_hex(&b.data_key_id).unwrap(),
            &env.unlock(),
            None,
        )
        .await
        .unwrap();
    assert_ne!(ka.bytes(), kb.bytes());
}

async fn restore_with(
    env: &Env,
    who: &[&ibs_keys::PrivateIdentity],
    id: &str,
    target: &Path,
) -> Result<ibs_engine::RestoreReport, ibs_engine::EngineError> {
    ibs_engine::restore(
        env.repo.clone(),
        Arc::new(Unlock::Identities(
            who.iter().map(|i| (*i).clone()).collect(),
        )),
        ibs_engine::RestoreOptions {
            backup_id: id.into(),
            target: target.into(),
            source: None,
            threads: 2,
            progress: Default::default(),
            lock_wait: Default::default(),
            cancel: None,
        },
    )
    .await
}

/// An export-like stream: `rows` lines, the ones `changed(i)` picks with another balance.
fn rows(n: usize, changed: impl Fn(usize) -> bool) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let bal = if changed(i) { 7 } else { 0 };
        out.extend_from_slice(format!("{i}\t{}\t{bal}\t{:>60}\n", i / 100, "").as_bytes());
    }
    out
}

async fn backup_tree_and_stream(
    env: &Env,
    src: &Path,
    stream: Vec<u8>,
) -> ibs_engine::BackupReport {
    ibs_engine::backup(
        env.repo.clone(),
        &env.state,
        ibs_engine::BackupOptions {
            sources: vec![
                ibs_engine::SourceSpec {
                    name: "files".into(),
                    origin: ibs_engine::SourceOrigin::Path(src.to_path_buf()),
                },
                ibs_engine::SourceSpec {
                    name: "db".into(),
                    origin: ibs_engine::SourceOrigin::Stream {
                        reader: Box::new(std::io::Cursor::new(stream)),
                        file_name: "db.sql".into(),
                    },
                },
            ],
            threads: 2,
            lock_wait: std::time::Duration::ZERO,
            progress: Default::default(),
        },
    )
    .await
    .unwrap()
}

/// Issue 13 finding 14: after `set-cert`, a backup that deduplicates against chunks (and delta
/// bases, of a dump or of a tree) sealed under keys wrapped only for the old certificate cannot be
/// restored with the new .pfx alone. Each backup must restore with its own certificate's .pfx alone, before and after
/// a prune, and a missing key must name the certificate it is wrapped for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_set_cert_each_backup_restores_with_its_own_pfx_alone() {
    let mut env = env().await;
    let old = env.ident.clone();
    let new = other_identity();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("big.bin"), bytes(5, 3 << 20)).unwrap();
    std::fs::write(src.join("etc/app.conf"), b"mode = one\n".repeat(300)).unwrap();
    // Enough small files that a day's edits would store the tree as a recipe (ADR 0049).
    let fleet = |i: usize, v: u32| {
        let dir = src.join(format!("fleet/h{}", i / 100));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i}.conf")), format!("value = {v}\n")).unwrap();
    };
    (0..800).for_each(|i| fleet(i, 0));
    let b1 = backup_tree_and_stream(&env, &src, rows(60_000, |_| false)).await;

    let mut repo = Repository::open(env.repo.storage().clone(), env.repo.clock().clone())
        .await
        .unwrap();
    ibs_engine::keyops::set_cert(
        &mut repo,
        &mut env.state,
        new.certificate(),
        Default::default(),
    )
    .await
    .unwrap();
    env.repo = Arc::new(repo);
    std::fs::write(src.join("etc/app.conf"), b"mode = two\n".repeat(300)).unwrap();
    (7..800).step_by(100).for_each(|i| fleet(i, 1));
    // One row in a hundred and one file in a hundred changed: without care, the dump and the tree
    // would be stored as delta recipes against old bases.
    let b2 = backup_tree_and_stream(&env, &src, rows(60_000, |i| i % 100 == 0)).await;
    assert_eq!(
        b2.catalog.certificate_thumbprint.as_deref(),
        Some(new.certificate().thumbprint())
    );

    for round in ["before prune", "after prune"] {
        let out = env.path(&format!("b2-{round}"));
        let r = restore_with(&env, &[&new], &b2.catalog.backup_id, &out)
            .await
            .unwrap_or_else(|e| panic!("{round}: b2 with the new .pfx alone: {e}"));
        assert!(
            r.errors.is_empty(),
            "{round}: b2 with the new .pfx alone: {:?}",
            r.errors
        );
        assert_same_tree(&src, &out.join("files"));
        assert_eq!(
            std::fs::read(out.join("db/db.sql")).unwrap(),
            rows(60_000, |i| i % 100 == 0),
            "{round}"
        );
        // The older backup with the new .pfx alone: refused, naming the OLD certificate by
        // thumbprint and subject.
        let err = restore_with(&env, &[&new], &b1.catalog.backup_id, &env.path("no"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(old.certificate().thumbprint())
                && err.contains(old.certificate().subject()),
            "{round}: {err}"
        );
        // Both .pfx files restore the older backup.
        let out1 = env.path(&format!("b1-{round}"));
        restore_with(&env, &[&new, &old], &b1.catalog.backup_id, &out1)
            .await
            .unwrap_or_else(|e| panic!("{round}: b1 with both: {e}"));
        assert_eq!(
            std::fs::read(out1.join("db/db.sql")).unwrap(),
            rows(60_000, |_| false)
        );
        ibs_engine::retention::prune(
            &env.repo,
            &env.state,
            ibs_engine::retention::PruneOptions {
                dry_run: false,
                lock_wait: Default::default(),
                expected: ibs_engine::retention::Expected::TrustListing,
                grace: Default::default(),
                delete_delay: Default::default(),
                max_unused_percent: ibs_engine::retention::DEFAULT_MAX_UNUSED_PERCENT,
            },
        )
        .await
        .unwrap();
    }
    // The next backup deduplicates again (it depends only on keys wrapped for the new cert).
    let b3 = backup_tree_and_stream(&env, &src, rows(60_000, |i| i % 100 == 0)).await;
    assert!(
        b3.catalog.bytes_new < 64 * 1024,
        "the backup after the re-sealing one stored {} new bytes",
        b3.catalog.bytes_new
    );
    restore_with(&env, &[&new], &b3.catalog.backup_id, &env.path("b3"))
        .await
        .unwrap();
}

/// Issue 13 finding 9: the writer state names no file and is private to its owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_state_holds_no_file_name_and_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let env = env().await;
    let name = "Quarterly-Layoffs-Plan-ZX81.xlsx";
    let src = env.path("src");
    std::fs::create_dir_all(src.join("hr-confidential-dir")).unwrap();
    std::fs::write(src.join("hr-confidential-dir").join(name), b"names").unwrap();
    backup_tree_and_stream(&env, &src, rows(2_000, |_| false)).await;
    backup_tree_and_stream(&env, &src, rows(2_000, |i| i == 5)).await;
    let mut dirs = vec![env.state_dir()];
    let (mut files, mut all_dirs) = (Vec::new(), Vec::new());
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
        all_dirs.push(d);
    }
    let seen = files.len();
    for p in &files {
        let b = std::fs::read(p).unwrap();
        for needle in [name.as_bytes(), b"Layoffs", b"hr-confidential-dir"] {
            assert!(
                !b.windows(needle.len()).any(|w| w == needle),
                "{} holds {:?}",
                p.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
    for p in &files {
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", p.display());
    }
    for d in &all_dirs {
        let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} has mode {mode:o}", d.display());
    }
    assert!(seen >= 3, "only {seen} state files");
}

/// A writer state an older ibs left with default modes is made owner-only when it is loaded.
#[tokio::test]
async fn loading_an_old_writer_state_tightens_its_modes() {
    use std::os::unix::fs::PermissionsExt;
    let env = env().await;
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    backup(&env, &[("s", &src)]).await;
    let dir = env.state.dir.clone();
    let set =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    set(&dir.join("files-cache.sqlite"), 0o644);
    set(&dir.join("writer.json"), 0o644);
    set(&dir, 0o755);
    set(&env.state_dir(), 0o755);
    ibs_engine::WriterState::load(&env.state_dir(), &env.state.repo_id).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join("files-cache.sqlite")), 0o600);
    assert_eq!(mode(&dir.join("writer.json")), 0o600);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&env.state_dir()), 0o700);
}
