//! Format compatibility fixtures (docs/design/repository-format.md §16): every repository under
//! `tests/fixtures/compat/NAME/` was written by an earlier build of ibs, and this build must read
//! it. For each fixture, on a copy of it: `ibs repo list` names the recorded backups,
//! `ibs repo check --read-data` with its .pfx files finds no problem, and every backup restores to
//! exactly the recorded contents (`expected.json`: kinds, permission bits, mtimes, sizes and
//! content hashes, sparseness, link targets, hard-link groups, extended attributes), and recovers
//! the same way through `ibs recover`, which applies the version-mismatch rule (ADR 0023).
//!
//! The fixture of the current format (named by its structure versions and, from format revision 4
//! on, its revision, see [`current`]) must exist: a build that bumps a version or the revision
//! fails here until someone runs the generator,
//! `cargo test -p ibs --test compat_fixtures -- --ignored generate`, and commits its output next
//! to the older fixtures, which stay.

mod common;
use common::*;
use serde_json::{json, Value};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compat")
}

/// The fixture name of what this build writes: the versions of the repository config, the
/// manifest and the tree stream, and the format revision (fixtures from before revision 4 carry
/// no revision in their names).
fn current() -> String {
    format!(
        "repo{}-manifest{}-tree{}-rev{}",
        ibs_repo::config::FORMAT_VERSION,
        ibs_repo::manifest::MANIFEST_VERSION,
        ibs_repo::tree::TREE_FORMAT,
        ibs_repo::manifest::FORMAT_REVISION
    )
}

/// How many of backup `id`'s tree chunks, in the repository in `mas` (its `MASBackup` folder), are
/// delta recipes (format §7.1, revision 4 on), opened with the fixture's certificates.
fn tree_recipes(f: &Fixture, mas: &Path, id: &str) -> usize {
    use ibs_repo::ids::{ChunkId, KeyId};
    use ibs_repo::keyring::Unlock;
    let certs = f.expected["certificates"].as_array().expect("certs");
    let idents = certs
        .iter()
        .map(|c| {
            let pfx = std::fs::read(f.dir.join(c["pfx"].as_str().unwrap())).unwrap();
            let pw = std::fs::read_to_string(f.dir.join(c["password_file"].as_str().unwrap()));
            ibs_keys::PrivateIdentity::from_pfx(&pfx, &pw.unwrap()).unwrap()
        })
        .collect();
    let unlock = Unlock::Identities(idents);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let storage: ibs_storage::DynStorage =
            Arc::new(ibs_storage::LocalStorage::open(mas).unwrap());
        let repo = ibs_repo::Repository::open(storage, Arc::new(ibs_repo::clock::SystemClock))
            .await
            .unwrap();
        let keys = repo.open_repo_keys(&unlock).await.unwrap();
        let (index, _) = repo.load_index(&keys.metadata).await.unwrap();
        let m = repo.read_manifest(id).await.unwrap();
        let key_id = KeyId::from_hex(&m.catalog.data_key_id).unwrap();
        let thumb = m.catalog.certificate_thumbprint.as_deref();
        let dk = repo.open_data_key(&key_id, &unlock, thumb).await.unwrap();
        let tree = m.open_tree(&dk).unwrap();
        tree.sources
            .iter()
            .flat_map(|s| &s.tree)
            .map(|h| index.get(&ChunkId::from_hex(h).unwrap()).expect("indexed"))
            .filter(|l| l.encoding == ibs_repo::pack::encoding::DELTA)
            .count()
    })
}

/// One fixture's `expected.json`, with its folder.
struct Fixture {
    dir: PathBuf,
    expected: Value,
}

impl Fixture {
    fn load(dir: PathBuf) -> Fixture {
        let text = std::fs::read_to_string(dir.join("expected.json"))
            .unwrap_or_else(|e| panic!("{}/expected.json: {e}", dir.display()));
        Fixture {
            expected: serde_json::from_str(&text).unwrap(),
            dir,
        }
    }

    fn name(&self) -> String {
        self.dir.file_name().unwrap().to_string_lossy().into_owned()
    }

    fn backups(&self) -> &Vec<Value> {
        self.expected["backups"].as_array().expect("backups")
    }

    /// `--pfx P --pfx-password-file F` for every certificate of the fixture.
    fn unlock(&self, mut c: Ibs) -> Ibs {
        let certs = self.expected["certificates"].as_array().expect("certs");
        for cert in certs {
            c = c
                .arg("--pfx")
                .arg(self.dir.join(cert["pfx"].as_str().unwrap()));
        }
        for cert in certs {
            let f = self.dir.join(cert["password_file"].as_str().unwrap());
            c = c.arg("--pfx-password-file").arg(f);
        }
        c
    }
}

fn all_fixtures() -> Vec<Fixture> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected.json").is_file())
        .collect();
    dirs.sort();
    dirs.into_iter().map(Fixture::load).collect()
}

#[test]
fn the_current_format_has_a_compatibility_fixture() {
    let names: Vec<String> = all_fixtures().iter().map(Fixture::name).collect();
    assert!(
        names.contains(&current()),
        "no fixture {} for the format this build writes (have {names:?}): run \
         `cargo test -p ibs --test compat_fixtures -- --ignored generate` and commit it",
        current()
    );
}

#[test]
fn every_fixture_lists_checks_and_restores_with_this_build() {
    let all = all_fixtures();
    assert!(
        !all.is_empty(),
        "no fixtures under {}",
        fixtures().display()
    );
    for f in &all {
        let name = f.name();
        let fx = Fx::new();
        // A copy: check and restore take locks in the repository; the committed files stay as
        // the old build wrote them.
        ibs_testing::copy_dir(&f.dir.join("repo"), &fx.repo);

        let listed = fx.list_ids();
        let want: Vec<&str> = f
            .backups()
            .iter()
            .map(|b| b["id"].as_str().unwrap())
            .collect();
        assert_eq!(listed, want, "{name}: repo list");
        for c in fx.list() {
            assert_eq!(c["status"], "Succeeded", "{name}: {c}");
        }

        f.unlock(fx.repo_cmd("check").arg("--read-data")).run().ok();

        for b in f.backups() {
            let id = b["id"].as_str().unwrap();
            // The fixture still holds what it claims to (a tree stored as recipes, revision 4).
            if let Some(n) = b.get("tree_recipes").and_then(Value::as_u64) {
                assert_eq!(
                    tree_recipes(f, &fx.mas(), id) as u64,
                    n,
                    "{name}: backup {id}"
                );
            }
            let target = fx.path(&format!("restore-{id}"));
            let restore = fx
                .repo_cmd("restore")
                .args(["--backup", id])
                .arg("--target")
                .arg(&target);
            f.unlock(restore).run().ok();
            let source = b["source"].as_str().unwrap();
            ibs_testing::manifest::assert_matches_json(
                &b["entries"],
                &target.join(source),
                &format!("{name}: backup {id}"),
            );
            // `ibs recover` applies the version-mismatch rule (ADR 0023): a backup from an older
            // build, with or without recorded metadata, recovers without --allow-newer.
            let recovered = fx.path(&format!("recover-{id}"));
            let plan = fx.path(&format!("plan-{id}.toml"));
            std::fs::write(
                &plan,
                format!(
                    "[[component]]\nname = \"{source}\"\ntarget = \"{}\"\n",
                    recovered.display()
                ),
            )
            .unwrap();
            let recover = ibs(["recover", "--backup", id, "--location"])
                .arg(&fx.repo)
                .arg("--plan")
                .arg(&plan)
                .arg("--state")
                .arg(fx.path(&format!("state-recover-{id}")));
            let out = f.unlock(recover).run().ok();
            assert!(!out.stderr.contains("warning"), "{name}: {out}");
            ibs_testing::manifest::assert_matches_json(
                &b["entries"],
                &recovered,
                &format!("{name}: recovered backup {id}"),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// generator

/// The .pfx passwords of the fixture certificates. Test keys only: they protect nothing.
const PASSWORDS: [&str; 2] = [
    "compat fixture certificate 1 (test only)",
    "compat fixture certificate 2 (test only)",
];

/// The first tree: a symlink (relative, up a folder, dangling), a hard link, a non-UTF-8 name,
/// extended attributes, a sparse file, a run of zeros, the same contents under two names, an empty
/// file and folder, private modes. Text and zeros, so the repository stays small.
fn first_tree(d: &Path) {
    let text = |n: usize, tag: &str| format!("{tag}: the quick brown fox, line {n}\n").repeat(n);
    write(&d.join("readme.txt"), text(40, "readme").as_bytes());
    write(&d.join("docs/guide.txt"), text(200, "guide").as_bytes());
    write(
        &d.join("docs/old/notes.txt"),
        b"to be deleted in backup 2\n",
    );
    std::os::unix::fs::symlink("readme.txt", d.join("link-relative")).unwrap();
    std::os::unix::fs::symlink("../readme.txt", d.join("docs/link-up")).unwrap();
    std::os::unix::fs::symlink("no/such/target", d.join("link-dangling")).unwrap();
    write(&d.join("hard-a.txt"), b"one inode, two names\n");
    std::fs::hard_link(d.join("hard-a.txt"), d.join("docs/hard-b.txt")).unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"name-\xff\xfe-latin1-\xe9.txt");
    write(&d.join(odd), b"a name that is not UTF-8\n");
    write(&d.join("tagged.txt"), b"has extended attributes\n");
    ibs_testing::set_xattr(&d.join("tagged.txt"), "user.ibs.note", b"compat");
    ibs_testing::set_xattr(&d.join("tagged.txt"), "user.ibs.binary", &[0, 1, 2, 0xff]);
    let sparse = std::fs::File::create(d.join("sparse.img")).unwrap();
    sparse.set_len(3 << 20).unwrap();
    sparse.write_all_at(&[0xab; 4096], 1 << 20).unwrap();
    write(&d.join("zeros.bin"), &vec![0u8; 256 << 10]);
    let shared = text(3000, "shared");
    write(&d.join("copy-1.txt"), shared.as_bytes());
    write(&d.join("docs/copy-2.txt"), shared.as_bytes());
    write(&d.join("empty.txt"), b"");
    std::fs::create_dir_all(d.join("empty-dir")).unwrap();
    // A fleet of small configs: enough tree lines that a day's edits store the tree as a recipe.
    for i in 0..FLEET {
        write(&fleet_file(d, i), fleet_text(i, 0).as_bytes());
    }
    write(&d.join("private/secret.txt"), b"0600 in a 0700 folder\n");
    set_mode(&d.join("private/secret.txt"), 0o600);
    set_mode(&d.join("private"), 0o700);
}

/// Small config files in the first tree, under `fleet/` (1 % edited for backup 2).
const FLEET: usize = 800;

fn fleet_file(d: &Path, i: usize) -> PathBuf {
    d.join(format!("fleet/h{}/etc/f{i}.conf", i / 100))
}

fn fleet_text(i: usize, generation: u32) -> String {
    format!("# host {} file {i}\nvalue = {generation}\n", i / 100)
}

/// Writes `tests/fixtures/compat/<current>/`: two certificates with their .pfx and password
/// files, a local-folder repository with three incremental backups (the third after
/// `ibs repo set-cert`), and `expected.json`. Refuses to overwrite an existing fixture.
#[test]
#[ignore = "writes a new compatibility fixture; run by hand when the format version changes"]
fn generate() {
    let out = fixtures().join(current());
    assert!(
        !out.exists(),
        "{} exists: a committed fixture is never rewritten",
        out.display()
    );
    let fx = Fx::new();
    let keys = fx.path("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let mut certs = Vec::new();
    for (i, password) in PASSWORDS.iter().enumerate() {
        let n = i + 1;
        let c = new_cert_with_password(&keys, &format!("compat-fixture-{n}"), password);
        std::fs::copy(&c.pfx, out.join(format!("cert{n}.pfx"))).unwrap();
        std::fs::write(out.join(format!("cert{n}.pfx.password")), password).unwrap();
        certs.push(c.cer);
    }

    fx.init_cert(&certs[0]);
    let data = fx.path("data");
    first_tree(&data);
    let mut backups = Vec::new();
    let mut record = |id: String, cert: u32| {
        let mut snap = ibs_testing::snapshot(&data);
        for (rel, n) in snap.iter_mut() {
            // A restore leaves aligned all-zero 4 KiB blocks as holes (format §13).
            if n.kind == ibs_testing::Kind::File && !n.sparse {
                let bytes = std::fs::read(data.join(std::ffi::OsStr::from_bytes(rel))).unwrap();
                n.sparse = bytes.chunks_exact(4096).any(|b| b.iter().all(|&x| x == 0));
            }
        }
        let entries = ibs_testing::manifest::to_json(&snap);
        backups.push(json!({"id": id, "source": "data", "certificate": cert, "entries": entries}));
    };
    record(fx.backup(&[("data", &data)]), 1);

    next_second();
    let mut readme = std::fs::read(data.join("readme.txt")).unwrap();
    readme.extend_from_slice(b"a line added for backup 2\n");
    write(&data.join("readme.txt"), &readme);
    write(&data.join("docs/added.txt"), b"new in backup 2\n");
    for i in (7..FLEET).step_by(100) {
        write(&fleet_file(&data, i), fleet_text(i, 1).as_bytes());
    }
    std::fs::remove_dir_all(data.join("docs/old")).unwrap();
    record(fx.backup(&[("data", &data)]), 1);

    next_second();
    fx.repo_cmd("set-cert")
        .arg("--cert")
        .arg(&certs[1])
        .run()
        .ok();
    write(&data.join("docs/guide.txt"), b"rewritten for backup 3\n");
    std::fs::rename(data.join("copy-1.txt"), data.join("copy-1-renamed.txt")).unwrap();
    record(fx.backup(&[("data", &data)]), 2);

    ibs_testing::copy_dir(&fx.repo, &out.join("repo"));
    // Backups 2 and 3 store their trees as recipes against backup 1's (ADR 0049).
    let fixture = Fixture {
        dir: out.clone(),
        expected: json!({"certificates": [
            {"pfx": "cert1.pfx", "password_file": "cert1.pfx.password"},
            {"pfx": "cert2.pfx", "password_file": "cert2.pfx.password"},
        ]}),
    };
    for b in backups.iter_mut() {
        let n = tree_recipes(&fixture, &fx.mas(), b["id"].as_str().unwrap());
        b["tree_recipes"] = json!(n);
    }
    assert!(
        backups[1]["tree_recipes"].as_u64() > Some(0),
        "backup 2 stored no tree recipe: the fixture would not cover them"
    );
    // git keeps no empty folder; readers create `locks/` when they need it.
    let _ = std::fs::remove_dir(out.join("repo/MASBackup/locks"));
    let expected = json!({
        "written_by": format!("ibs {}", env!("CARGO_PKG_VERSION")),
        "versions": {
            "repository": ibs_repo::config::FORMAT_VERSION,
            "manifest": ibs_repo::manifest::MANIFEST_VERSION,
            "tree": ibs_repo::tree::TREE_FORMAT,
            "format_revision": ibs_repo::manifest::FORMAT_REVISION,
        },
        "certificates": [
            {"pfx": "cert1.pfx", "password_file": "cert1.pfx.password"},
            {"pfx": "cert2.pfx", "password_file": "cert2.pfx.password"},
        ],
        "backups": backups,
    });
    let text = serde_json::to_string_pretty(&expected).unwrap() + "\n";
    std::fs::write(out.join("expected.json"), text).unwrap();
    eprintln!(
        "wrote {} ({} bytes)",
        out.display(),
        dir_size(&out) // regular files only
    );
}
