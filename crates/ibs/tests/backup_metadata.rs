//! Backup metadata and the version-mismatch rule, end to end through the real binary.
//!
//! - `ibs repo backup` records this host's deployment id (created once in the state directory),
//!   the ibs version and the format revision in the catalog, where `ibs repo list` shows them.
//! - A backup whose authenticated catalog claims a newer ibs (99.0.0) and a newer PostgreSQL
//!   (99.1) is written with the library (the catalog is re-sealed with the real keys, as a newer
//!   build would have written it); `ibs recover` and `ibs repo restore` refuse it (exit 15, both
//!   versions and the override named, nothing written), and with `--allow-newer` `ibs recover`
//!   recovers it into the real local PostgreSQL after warning that the server's major version is
//!   older, and `ibs repo restore` restores its files after the same warning.
//! - The controller (`ibs serve`, real PostgreSQL, MariaDB and Redis components): each
//!   component's server version recorded in the job and in the repository equals what the server
//!   reports; `ibs restore` of the re-sealed backup is refused (exit 15) until `--allow-newer`, and
//!   the older-server warning is shown by the CLI, kept on the restore job and logged.

mod common;

use common::daemon::{free_port, last_line, Server};
use common::{ibs, shared_cert, Fx, PASSWORD};
use ibs_repo::keyring::Unlock;
use ibs_repo::manifest::{Catalog, Manifest, RefsPart};
use ibs_repo::Repository;
use ibs_testing::db::{ensure_services, mysql, pg_dump, psql, redis, MyDrop, PgDrop};
use std::path::Path;
use std::sync::Arc;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Runtime::new().unwrap().block_on(f)
}

/// Rewrites backup `id` of the repository in `mas` (its `MASBackup` folder) with `edit` applied to
/// its catalog, sealed with the real keys (opened with `pfx`): what a writer holding the keys, e.g.
/// a newer ibs build, would have written.
fn reseal(mas: &Path, pfx: &Path, password: &str, id: &str, edit: impl FnOnce(&mut Catalog)) {
    block_on(async {
        let storage: ibs_storage::DynStorage =
            Arc::new(ibs_storage::LocalStorage::open(mas).unwrap());
        let repo = Repository::open(storage, Arc::new(ibs_repo::clock::SystemClock))
            .await
            .unwrap();
        let ident =
            ibs_keys::PrivateIdentity::from_pfx(&std::fs::read(pfx).unwrap(), password).unwrap();
        let unlock = Unlock::Identities(vec![ident]);
        let keys = repo.open_repo_keys(&unlock).await.unwrap();
        let m = repo.read_manifest(id).await.unwrap();
        let key_id = ibs_repo::ids::KeyId::from_hex(&m.catalog.data_key_id).unwrap();
        let data_key = repo
            .open_data_key(
                &key_id,
                &unlock,
                m.catalog.certificate_thumbprint.as_deref(),
            )
            .await
            .unwrap();
        let tree = m.open_tree(&data_key).unwrap();
        let mut catalog = m.catalog.clone();
        edit(&mut catalog);
        // The same reference segments, listed by a manifest sealed around the edited catalog.
        let RefsPart::Segmented(sources) = m.open_refs_part(&keys.metadata).unwrap() else {
            panic!("new backups write manifest version 3")
        };
        let new = Manifest::seal_with_segments(catalog, &tree, &sources, &data_key, &keys.metadata);
        repo.put_manifest(&new).await.unwrap();
    })
}

/// The catalog `ibs repo list --json` shows for backup `id` (read with no key).
fn listed(repo: &Path, id: &str) -> serde_json::Value {
    let out = ibs(["repo", "list", "--json", "--repo"])
        .arg(repo)
        .run()
        .ok();
    out.json()
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["backup_id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} not listed:\n{out}"))
}

fn deployment_file(state: &Path) -> String {
    std::fs::read_to_string(state.join("deployment-id"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn recover_refuses_a_backup_from_a_newer_build_unless_allowed_and_warns_about_older_servers() {
    ensure_services();
    let fx = Fx::new();
    let cert = shared_cert(0);
    fx.init_cert(&cert.cer);
    let db = ibs_testing::db::unique("ibs_meta_src");
    let target_db = ibs_testing::db::unique("ibs_meta_rec");
    let _drop = PgDrop(vec![db.clone(), target_db.clone()]);
    psql("postgres", &format!("CREATE DATABASE {db}"));
    psql(
        &db,
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 321) g",
    );
    let files = fx.path("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("a.txt"), b"metadata\n").unwrap();

    let out = fx
        .backup_cmd(&[("files", &files)])
        .args(["--source", "pg=-"])
        .stdin(pg_dump(&db))
        .run()
        .ok();
    let id = out.last_line();

    // The CLI writer records its deployment id (made once in the state folder), the ibs version
    // and the format revision; the listing (no key) shows them.
    let c = listed(&fx.repo, &id);
    let deployment = deployment_file(&fx.state);
    assert_eq!(deployment.len(), 32);
    assert_eq!(c["deployment_id"], deployment.as_str(), "{c:#}");
    assert_eq!(c["ibs_version"], VERSION);
    assert_eq!(c["format_revision"], ibs_repo::manifest::FORMAT_REVISION);
    assert!(c["sources"][1].get("server_version").is_none(), "{c:#}");
    let human = fx.repo_cmd("list").run().ok();
    assert!(
        human.stdout.contains(&format!(
            "ibs {VERSION} r{} @{}",
            ibs_repo::manifest::FORMAT_REVISION,
            &deployment[..8]
        )),
        "{human}"
    );
    // A second backup keeps the same deployment id.
    let id2 = fx.backup(&[("files", &files)]);
    assert_eq!(listed(&fx.repo, &id2)["deployment_id"], deployment.as_str());

    // A newer build wrote this backup, from a newer PostgreSQL.
    reseal(&fx.mas(), &cert.pfx, PASSWORD, &id, |c| {
        c.ibs_version = "99.0.0".into();
        let pg = c.sources.iter_mut().find(|s| s.name == "pg").unwrap();
        pg.server_version = Some("99.1 (test)".into());
    });
    let c = listed(&fx.repo, &id);
    assert_eq!(c["ibs_version"], "99.0.0");

    let plan = fx.path("plan.toml");
    let restored = fx.path("restored");
    std::fs::write(
        &plan,
        format!(
            "[[component]]\nname = \"pg\"\ntarget = \"postgresql://postgres@127.0.0.1:5432/{target_db}\"\n\n\
             [[component]]\nname = \"files\"\ntarget = \"{}\"\n",
            restored.display()
        ),
    )
    .unwrap();
    let recover = |extra: &[&str]| {
        ibs(["recover", "--backup", &id, "--location"])
            .arg(&fx.repo)
            .arg("--pfx")
            .arg(&cert.pfx)
            .arg("--plan")
            .arg(&plan)
            .arg("--state")
            .arg(fx.path("state-b"))
            .args(extra)
            .pw()
            .run()
    };
    let refused = recover(&[]).code(15);
    for needle in ["ibs 99.0.0", &format!("ibs {VERSION}"), "--allow-newer"] {
        assert!(refused.stderr.contains(needle), "{needle}:\n{refused}");
    }
    assert!(!restored.exists(), "nothing is written when refused");
    assert_eq!(
        psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname = '{target_db}'")
        ),
        "0"
    );

    // `ibs repo restore` applies the same rule, before it writes anything.
    let plain = fx.path("repo-restore");
    let restore = |extra: &[&str]| {
        fx.restore_cmd(&id, &plain, &[&cert.pfx])
            .args(["--source", "files"])
            .args(extra)
            .run()
    };
    let refused = restore(&[]).code(15);
    for needle in [
        "ibs 99.0.0",
        &format!("ibs {VERSION}"),
        "nothing was restored",
        "--allow-newer",
    ] {
        assert!(refused.stderr.contains(needle), "{needle}:\n{refused}");
    }
    assert!(!plain.exists(), "nothing is written when refused");
    let ok = restore(&["--allow-newer"]).ok();
    assert!(
        ok.stderr
            .contains("warning: restoring despite the version rule (--allow-newer)"),
        "{ok}"
    );
    assert_eq!(std::fs::read(plain.join("a.txt")).unwrap(), b"metadata\n");

    let server = psql("postgres", "SHOW server_version");
    let ok = recover(&["--allow-newer"]).ok();
    for needle in [
        "warning: restoring despite the version rule",
        "warning: component pg: the backup was taken from PostgreSQL 99",
        &format!("(server {server})"),
    ] {
        assert!(ok.stderr.contains(needle), "{needle}:\n{ok}");
    }
    assert_eq!(psql(&target_db, "SELECT count(*) FROM t"), "321");
    assert_eq!(
        std::fs::read(restored.join("a.txt")).unwrap(),
        b"metadata\n"
    );

    // The attack: someone with write access to the share (no key) edits the recorded server
    // version down, to silence the warning. The catalog is authenticated: the restore refuses
    // the backup and writes nothing.
    let manifest = fx.mas().join("backups").join(&id);
    let bytes = std::fs::read(&manifest).unwrap();
    let (from, to) = (b"\"99.1 (test)\"", b"\"10.1 (test)\"");
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("the server version is in the cleartext catalog");
    let mut edited = bytes.clone();
    edited[at..at + to.len()].copy_from_slice(to);
    std::fs::write(&manifest, edited).unwrap();
    psql(
        "postgres",
        &format!("DROP DATABASE {target_db} WITH (FORCE)"),
    );
    std::fs::remove_dir_all(&restored).unwrap();
    let attacked = recover(&["--allow-newer"]).code(3);
    assert!(!attacked.stderr.contains("PostgreSQL"), "{attacked}");
    assert!(
        attacked.stderr.contains("catalog was changed"),
        "{attacked}"
    );
    assert_eq!(
        psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname = '{target_db}'")
        ),
        "0",
        "nothing restored from an edited catalog"
    );
}

/// The backup job with repository id `backup_id` as `ibs backup show` prints it.
fn show(s: &Server, id: &str) -> serde_json::Value {
    s.json(&["backup", "show", id])
}

#[test]
fn controller_records_server_versions_and_applies_the_version_rule() {
    ensure_services();
    let pg = ibs_testing::db::unique("ibs_meta_pg");
    let pg_target = ibs_testing::db::unique("ibs_meta_pgr");
    let my = ibs_testing::db::unique("ibs_meta_my");
    let _pg = PgDrop(vec![pg.clone(), pg_target.clone()]);
    let _my = MyDrop(vec![my.clone()]);
    psql("postgres", &format!("CREATE DATABASE {pg}"));
    psql(
        &pg,
        "CREATE TABLE items AS SELECT g AS id FROM generate_series(1, 77) g",
    );
    mysql(None, &format!("CREATE DATABASE {my}"));
    mysql(
        Some(&my),
        "CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1), (2)",
    );

    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("ibs.toml");
    std::fs::write(
        &config,
        format!(
            "[[component]]\nname = \"pg\"\nkind = \"postgres\"\nurl = \"postgresql://postgres@127.0.0.1:5432/{pg}\"\n\n\
             [[component]]\nname = \"my\"\nkind = \"mariadb\"\nurl = \"mysql://root@127.0.0.1:3306/{my}\"\n\n\
             [[component]]\nname = \"kv\"\nkind = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\n"
        ),
    )
    .unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let s = Server::start(&data, port, &["--config", config.to_str().unwrap()]);
    let list = s.wait_for("a finished backup", |v| {
        v.as_array().unwrap().iter().any(|j| {
            j["backup_id"].is_string()
                && ["Succeeded", "PartialSucceeded"].contains(&j["status"].as_str().unwrap_or(""))
        })
    });
    let job = list
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["backup_id"].is_string())
        .unwrap();
    let job_id = job["id"].as_str().unwrap().to_string();
    let backup_id = job["backup_id"].as_str().unwrap().to_string();
    let j = show(&s, &job_id);

    // What each server reports, asked independently of ibs.
    let pg_version = psql("postgres", "SHOW server_version");
    let my_version = mysql(None, "SELECT VERSION()");
    let redis_version = redis(&["INFO", "server"])
        .lines()
        .find_map(|l| l.trim().strip_prefix("redis_version:").map(String::from))
        .unwrap();
    let comp = |name: &str| {
        j["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name}: {j:#}"))
            .clone()
    };
    assert_eq!(comp("pg")["server_version"], pg_version.as_str(), "{j:#}");
    assert_eq!(comp("my")["server_version"], my_version.as_str(), "{j:#}");
    assert_eq!(
        comp("kv")["server_version"],
        redis_version.as_str(),
        "{j:#}"
    );
    let deployment = deployment_file(&data.join("state"));
    assert_eq!(j["metadata"]["deployment_id"], deployment.as_str(), "{j:#}");
    assert_eq!(j["metadata"]["ibs_version"], VERSION);
    assert_eq!(
        j["metadata"]["format_revision"],
        ibs_repo::manifest::FORMAT_REVISION
    );

    // The same metadata lives in the repository, with the backup.
    let repo_dir = data.join("backups");
    let c = listed(&repo_dir, &backup_id);
    assert_eq!(c["deployment_id"], deployment.as_str());
    let source = |name: &str| {
        c["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .unwrap_or_else(|| panic!("{name}: {c:#}"))["server_version"]
            .clone()
    };
    assert_eq!(source("pg"), pg_version.as_str());
    assert_eq!(source("my"), my_version.as_str());
    assert_eq!(source("kv"), redis_version.as_str());

    // A newer ibs wrote it, from a newer PostgreSQL.
    let pfx = data.join("certs/ibs-backup.pfx");
    let password = std::fs::read_to_string(data.join("certs/ibs-backup.pfx.password"))
        .unwrap()
        .trim()
        .to_string();
    reseal(
        &repo_dir.join("MASBackup"),
        &pfx,
        &password,
        &backup_id,
        |c| {
            c.ibs_version = "99.0.0".into();
            let s = c.sources.iter_mut().find(|s| s.name == "pg").unwrap();
            s.server_version = Some("99.1".into());
        },
    );
    let target = format!("postgresql://postgres@127.0.0.1:5432/{pg_target}");
    let restore = |extra: &[&str]| {
        let mut a = vec![
            "restore",
            &job_id,
            "--component",
            "pg",
            "--target",
            &target,
            "--pfx",
            pfx.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        s.ibs(&a, &[("IBS_PFX_PASSWORD", &password)])
    };
    let refused = restore(&[]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(15), "{err}");
    for needle in [
        "ibs 99.0.0",
        &format!("ibs {VERSION}"),
        "--allow-newer",
        "allow_newer",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert_eq!(
        psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname = '{pg_target}'")
        ),
        "0",
        "nothing restored when refused"
    );

    let ok = restore(&["--allow-newer"]);
    let err = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "{err}");
    let older = "warning: component pg: the backup was taken from PostgreSQL 99 (server 99.1) and the target runs the older major version";
    assert!(err.contains(older), "{err}");
    assert!(
        err.contains("warning: restoring despite the version rule"),
        "{err}"
    );
    assert_eq!(psql(&pg_target, "SELECT count(*) FROM items"), "77");
    // The warning is kept on the restore job (the API's view) and logged.
    let restore_job = last_line(&ok);
    let client = ureq::Agent::new_with_defaults();
    let body = client
        .get(format!("{}/api/v1/jobs/{restore_job}", s.url))
        .header(
            "Authorization",
            format!("Bearer {}", s.token.as_deref().unwrap()),
        )
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let rj: serde_json::Value = serde_json::from_str(&body).unwrap();
    let warnings: Vec<&str> = rj["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("{rj:#}"))
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings.iter().any(|w| older
            .strip_prefix("warning: ")
            .is_some_and(|o| w.starts_with(o))),
        "{rj:#}"
    );
    let log = std::fs::read_to_string(data.with_extension(format!("{port}.log"))).unwrap();
    assert!(log.contains("older major version"), "the warning is logged");
}
