//! Attacks on retention through the share: a listing that hides the manifests (a lying server, a
//! man in the middle, an eventually consistent store), fresh unreferenced data, and a catalog
//! whose times or hostname were edited on the share.

mod common;

use common::*;
use ibs_engine::check::{check, CheckOptions};
use ibs_engine::retention::{prune, Expected, PruneOptions};
use ibs_engine::EngineError;
use ibs_repo::clock::{Clock, ManualClock, SystemClock};
use ibs_repo::Repository;
use ibs_storage::faulty::FaultyStorage;
use ibs_storage::{DynStorage, LocalStorage};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const H: i64 = 3600;

/// Every object under `packs/` and `keys/data/`, by relative path.
fn data_objects(env: &Env) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for sub in ["packs", "keys/data"] {
        for f in walk(&env.repo_dir().join(sub)) {
            out.insert(
                f.strip_prefix(env.repo_dir())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The repository through a decorator whose listings can lie, on the given clock.
async fn lying(env: &Env, clock: Arc<dyn Clock>) -> (Arc<FaultyStorage>, Repository) {
    let local: DynStorage = Arc::new(LocalStorage::open(env.repo_dir()).unwrap());
    let faulty = Arc::new(FaultyStorage::new(local));
    let repo = Repository::open(faulty.clone(), clock).await.unwrap();
    (faulty, repo)
}

fn source(env: &Env, name: &str, seed: u64) -> std::path::PathBuf {
    let src = env.path(name);
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("a.txt"), format!("{name}\n")).unwrap();
    std::fs::write(src.join("d/b.bin"), bytes(seed, 3 << 20)).unwrap();
    src
}

fn opts(expected: Expected, grace: Duration) -> PruneOptions {
    PruneOptions {
        dry_run: false,
        lock_wait: Duration::ZERO,
        expected,
        grace,
        delete_delay: ibs_engine::trash::DEFAULT_DELETE_DELAY,
        max_unused_percent: ibs_engine::retention::DEFAULT_MAX_UNUSED_PERCENT,
    }
}

fn known(ids: &[&str]) -> Expected {
    Expected::Backups(ids.iter().map(|s| s.to_string()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_refuses_when_the_listing_hides_the_manifests() {
    let env = env().await;
    let src = source(&env, "src", 1);
    let id = backup(&env, &[("data", &src)]).await.catalog.backup_id;
    let before = data_objects(&env);
    assert!(before.iter().any(|k| k.starts_with("packs/")), "{before:?}");

    let (faulty, repo) = lying(&env, Arc::new(SystemClock)).await;
    faulty.hide_prefix("backups/");
    // Even with no grace period at all, a listing that lacks a backup the caller knows of stops
    // prune before it deletes anything.
    let r = prune(&repo, &env.state, opts(known(&[&id]), Duration::ZERO)).await;
    match &r {
        Err(EngineError::ListingIncomplete { missing, listed }) => {
            assert_eq!(missing, &vec![id.clone()]);
            assert_eq!(*listed, 0);
        }
        other => panic!(
            "prune over a listing without manifests must refuse, it returned {:?}",
            other
                .as_ref()
                .map(|p| (p.delete.len(), p.delete_keys.len()))
        ),
    }
    assert!(r.unwrap_err().to_string().contains(&id));
    assert_eq!(data_objects(&env), before, "prune deleted objects");
    let t = env.path("t");
    restore(&env, &id, &t, None).await.unwrap();
    assert_same_tree(&src, &t.join("data"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_keeps_fresh_unreferenced_data_for_the_grace_period() {
    let env = env().await;
    let kept = backup(&env, &[("data", &source(&env, "one", 2))])
        .await
        .catalog
        .backup_id;
    let gone = backup(&env, &[("data", &source(&env, "two", 3))])
        .await
        .catalog;
    let with_both = data_objects(&env);
    // The second backup is forgotten: its packs and its data-key envelope are unreferenced, and
    // a minute old.
    env.repo
        .storage()
        .delete(&ibs_repo::layout::backup(&gone.backup_id))
        .await
        .unwrap();
    let envelope =
        ibs_repo::layout::data_key(&ibs_repo::ids::KeyId::from_hex(&gone.data_key_id).unwrap())
            .to_string();
    assert!(with_both.contains(&envelope), "{with_both:?}");

    let now = SystemClock.now_unix();
    let clock = Arc::new(ManualClock::new(now + 23 * H));
    let (_, repo) = lying(&env, clock.clone()).await;
    let day = Duration::from_secs(24 * 3600);
    let plan = prune(&repo, &env.state, opts(known(&[&kept]), day))
        .await
        .unwrap();
    assert_eq!(
        data_objects(&env),
        with_both,
        "prune 23 h after the writes deleted fresh data: {plan:?}"
    );
    // The forgotten backup's pack is young, so it stays whole, and so does the key its chunks need.
    assert_eq!(plan.young_packs.len(), 1, "{plan:?}");
    assert!(
        plan.delete.is_empty() && plan.delete_keys.is_empty(),
        "{plan:?}"
    );

    clock.set(now + 25 * H);
    prune(&repo, &env.state, opts(known(&[&kept]), day))
        .await
        .unwrap();
    let after = data_objects(&env);
    assert!(
        !after.contains(&envelope),
        "the forgotten backup's envelope outlived the grace period"
    );
    assert!(
        after.len() < with_both.len() - 1,
        "the forgotten backup's packs outlived the grace period: {} -> {}",
        with_both.len(),
        after.len()
    );
    let t = env.path("t");
    restore(&env, &kept, &t, None).await.unwrap();
    assert_same_tree(&env.path("one"), &t.join("data"));
}

/// Rewrites the catalog of a manifest on disk (the JSON and its length field).
fn edit_catalog(env: &Env, id: &str, edit: impl Fn(&mut serde_json::Value)) {
    let path = env.repo_dir().join("backups").join(id);
    let b = std::fs::read(&path).unwrap();
    let len = u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize;
    let mut cat: serde_json::Value = serde_json::from_slice(&b[12..12 + len]).unwrap();
    edit(&mut cat);
    let cat = serde_json::to_vec(&cat).unwrap();
    let mut out = b[..8].to_vec();
    out.extend_from_slice(&(cat.len() as u32).to_le_bytes());
    out.extend_from_slice(&cat);
    out.extend_from_slice(&b[12 + len..]);
    std::fs::write(&path, out).unwrap();
}

async fn check_problems(env: &Env, pfx: bool, state: bool) -> Vec<(String, String)> {
    let r = check(
        env.reopen().await,
        CheckOptions {
            read_data: true,
            unlock: pfx.then(|| env.unlock()),
            state: state.then(|| env.state.clone()),
            progress: Default::default(),
            lock_wait: Duration::ZERO,
        },
    )
    .await
    .unwrap();
    r.problems
        .into_iter()
        .map(|p| (p.object, p.detail))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_detects_edited_catalog_times_and_hostname() {
    let env = env().await;
    let id = backup(&env, &[("data", &source(&env, "src", 4))])
        .await
        .catalog
        .backup_id;
    let other = backup(&env, &[("data", &source(&env, "src2", 5))])
        .await
        .catalog
        .backup_id;
    assert!(check_problems(&env, true, true).await.is_empty());
    for (field, value) in [
        ("started", "2020-01-01T00:00:00Z"),
        ("finished", "2020-01-01T00:00:01Z"),
        ("hostname", "elsewhere"),
    ] {
        let original = std::fs::read(env.repo_dir().join("backups").join(&id)).unwrap();
        edit_catalog(&env, &id, |c| c[field] = value.into());
        for (pfx, state) in [(true, false), (false, true), (true, true)] {
            let p = check_problems(&env, pfx, state).await;
            assert!(
                p.iter().any(|(o, _)| o == &format!("backups/{id}")),
                "check (pfx {pfx}, writer state {state}) missed an edited `{field}`: {p:?}"
            );
            assert!(
                !p.iter().any(|(o, _)| o == &format!("backups/{other}")),
                "{p:?}"
            );
        }
        std::fs::write(env.repo_dir().join("backups").join(&id), original).unwrap();
    }
    assert!(check_problems(&env, true, true).await.is_empty());
}
