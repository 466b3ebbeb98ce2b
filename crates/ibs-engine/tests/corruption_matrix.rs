//! The corruption matrix: every kind of repository object × {flip a byte, truncate, delete, replace
//! with another valid object of the same kind}. Each case must be detected, naming the object (and,
//! where the object maps to backups, those backups); none may pass silently. A deleted manifest is
//! the one exception by design: it is indistinguishable from `forget`, so the case asserts that the
//! backup is gone and everything else still checks clean.

mod common;
use common::*;
use ibs_engine::check::{check, CheckOptions, CheckReport};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug)]
enum Damage {
    Flip,
    Truncate,
    Delete,
    Replace,
}

const ALL: [Damage; 4] = [
    Damage::Flip,
    Damage::Truncate,
    Damage::Delete,
    Damage::Replace,
];

fn apply(d: Damage, victim: &Path, other: &Path) {
    match d {
        Damage::Flip => {
            let mut b = std::fs::read(victim).unwrap();
            let i = b.len() / 2;
            b[i] ^= 0x5a;
            std::fs::write(victim, b).unwrap();
        }
        Damage::Truncate => {
            let b = std::fs::read(victim).unwrap();
            std::fs::write(victim, &b[..b.len() / 3]).unwrap();
        }
        Damage::Delete => std::fs::remove_file(victim).unwrap(),
        Damage::Replace => {
            std::fs::copy(other, victim).unwrap();
        }
    }
}

async fn fixture() -> (Env, Vec<String>) {
    let env = env().await;
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        std::fs::write(src.join(format!("f{i}")), bytes(i, 5 << 20)).unwrap();
    }
    let a = backup(&env, &[("s", &src)]).await.catalog.backup_id;
    std::fs::write(src.join("g"), bytes(77, 5 << 20)).unwrap();
    let b = backup(&env, &[("s", &src)]).await.catalog.backup_id;
    (env, vec![a, b])
}

fn files(env: &Env, prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![env.repo_dir().join(prefix)];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p.exists() {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn rel(env: &Env, p: &Path) -> String {
    p.strip_prefix(env.repo_dir())
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

async fn run(env: &Env, read_data: bool, pfx: bool) -> Result<CheckReport, String> {
    let storage: ibs_storage::DynStorage =
        std::sync::Arc::new(ibs_storage::LocalStorage::open(env.repo_dir()).unwrap());
    let repo =
        ibs_repo::Repository::open(storage, std::sync::Arc::new(ibs_repo::clock::SystemClock))
            .await
            .map_err(|e| e.to_string())?;
    check(
        std::sync::Arc::new(repo),
        CheckOptions {
            read_data,
            unlock: pfx.then(|| env.unlock()),
            state: Some(env.state.clone()),
            progress: Default::default(),
            lock_wait: Default::default(),
        },
    )
    .await
    .map_err(|e| e.to_string())
}

/// The outcome names `object`: an error mentioning it, or a problem on it (or mentioning it).
fn names(outcome: &Result<CheckReport, String>, object: &str) -> bool {
    match outcome {
        Err(e) => e.contains(object),
        Ok(r) => r
            .problems
            .iter()
            .any(|p| p.object == object || p.detail.contains(object)),
    }
}

#[tokio::test]
async fn every_object_kind_and_every_damage_is_detected() {
    let mut detected = 0;
    let mut cases = 0;
    for kind in [
        "pack",
        "index",
        "manifest",
        "data-key",
        "repo-key",
        "config",
        "certificate",
    ] {
        for damage in ALL {
            cases += 1;
            let (env, ids) = fixture().await;
            let other_env = if matches!(kind, "repo-key" | "config") {
                Some(env_other().await)
            } else {
                None
            };
            let (victim, other) = match kind {
                "pack" => {
                    let p = files(&env, "packs");
                    (p[0].clone(), p[1].clone())
                }
                "index" => {
                    let p = files(&env, "index");
                    (p[0].clone(), p[1].clone())
                }
                "manifest" => (
                    env.repo_dir().join(format!("backups/{}", ids[0])),
                    env.repo_dir().join(format!("backups/{}", ids[1])),
                ),
                "data-key" => {
                    let p = files(&env, "keys/data");
                    (p[0].clone(), p[1].clone())
                }
                "repo-key" => {
                    let name = format!("keys/repo-{}.p7m", env.ident.certificate().thumbprint());
                    (
                        env.repo_dir().join(&name),
                        other_env.as_ref().unwrap().repo_dir().join(&name),
                    )
                }
                "config" => (
                    env.repo_dir().join("config"),
                    other_env.as_ref().unwrap().repo_dir().join("config"),
                ),
                "certificate" => {
                    let t = env.ident.certificate().thumbprint().to_owned();
                    let other = env.path("other.cer");
                    std::fs::write(&other, other_identity().certificate().der()).unwrap();
                    (env.repo_dir().join(format!("keys/certs/{t}.cer")), other)
                }
                _ => unreachable!(),
            };
            let object = rel(&env, &victim);
            apply(damage, &victim, &other);
            let ok = match (kind, damage) {
                // Indistinguishable from `forget`: the backup is gone, the rest checks clean.
                ("manifest", Damage::Delete) => {
                    let r = run(&env, true, true).await.expect("check runs");
                    !env.reopen()
                        .await
                        .list_backup_ids()
                        .await
                        .unwrap()
                        .contains(&ids[0])
                        && r.problems.is_empty()
                }
                // A lost index segment: its chunks are no longer indexed, so the backups that need
                // them are named (the segment's name is gone with it).
                ("index", Damage::Delete) => {
                    let r = run(&env, false, false).await.expect("check runs");
                    r.problems
                        .iter()
                        .any(|p| !p.backups.is_empty() && p.object.starts_with("backups/"))
                }
                ("config", _) => {
                    // The config is read at open; a damaged or foreign one never opens silently.
                    match run(&env, false, false).await {
                        Err(e) => {
                            e.contains("config") || e.contains("repository") || e.contains("state")
                        }
                        Ok(_) => false,
                    }
                }
                ("repo-key", Damage::Delete) => names(&run(&env, false, false).await, &object),
                ("repo-key", _) => names(&run(&env, false, true).await, &object),
                ("data-key", Damage::Delete) => names(&run(&env, false, false).await, &object),
                ("data-key", _) => names(&run(&env, false, true).await, &object),
                ("pack", _) => {
                    let r = run(&env, true, false).await;
                    names(&r, &object)
                        && r.as_ref()
                            .unwrap()
                            .problems
                            .iter()
                            .any(|p| p.object == object && !p.backups.is_empty())
                }
                // The tree part is sealed under the backup's data key: damage there shows with the .pfx.
                ("manifest", _) => {
                    let r = run(&env, false, true).await;
                    names(&r, &object)
                }
                _ => names(&run(&env, true, false).await, &object),
            };
            assert!(ok, "{kind} × {damage:?} ({object}) was not detected");
            if !(kind == "manifest" && matches!(damage, Damage::Delete)) {
                detected += 1;
            }
        }
    }
    eprintln!("corruption matrix: {detected} of {cases} cases detected and named; 1 (a deleted manifest) equals forget by design");
    assert_eq!((detected, cases), (27, 28));
}

async fn env_other() -> Env {
    env().await
}
