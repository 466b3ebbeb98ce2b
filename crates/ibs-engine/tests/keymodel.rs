//! The key model: a writer can fill the repository but cannot read any finished backup; restore needs
//! the .pfx; a wrong .pfx or password gets a specific error.

mod common;
use common::*;
use ibs_repo::ids::KeyId;
use ibs_repo::keyring::Unlock;
use ibs_repo::{layout, RepoError};
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
