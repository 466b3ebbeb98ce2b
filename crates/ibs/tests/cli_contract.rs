//! The command-line contract of `ibs`: certificates and key files, init, backup of folders, single
//! files and stdin, list without keys, restore (whole backup and one source), sparse files, check.

mod common;

use common::*;
use std::os::unix::fs::{symlink, FileExt, MetadataExt};
use std::path::Path;

/// A source tree with every kind of entry a restore must reproduce.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    write(&root.join("readme.txt"), b"hello ibs\n");
    write(&root.join("empty-file"), b"");
    write(
        &root.join("sub/deeper/big.bin"),
        &pseudo_random(7, 3 * 1024 * 1024 + 12345),
    );
    write(
        &root.join("sub/text.log"),
        &b"a compressible line of text\n".repeat(40_000),
    );
    write(&root.join("sub/exec.sh"), b"#!/bin/sh\necho hi\n");
    write(&root.join("name with spaces & ünïcödé.txt"), b"odd name\n");
    write(&root.join("secret.key"), b"private stuff\n");
    write(&root.join("ro.txt"), b"read only\n");
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    std::fs::create_dir_all(root.join("sub/empty-nested/inner-empty")).unwrap();
    symlink("readme.txt", root.join("link-rel")).unwrap();
    symlink("/etc/hostname", root.join("link-abs")).unwrap();
    symlink("does/not/exist", root.join("sub/link-dangling")).unwrap();
    symlink("deeper", root.join("sub/link-to-dir")).unwrap();

    set_mode(&root.join("sub/exec.sh"), 0o755);
    set_mode(&root.join("secret.key"), 0o600);
    set_mode(&root.join("ro.txt"), 0o444);
    set_mode(&root.join("sub/text.log"), 0o640);
    set_mode(&root.join("sub"), 0o750);
    set_mode(&root.join("empty-dir"), 0o700);
    // Distinct, old mtimes; directories last (creating entries changes a directory's mtime).
    let mut t = 1_500_000_000i64;
    for f in [
        "readme.txt",
        "empty-file",
        "sub/deeper/big.bin",
        "sub/text.log",
        "sub/exec.sh",
        "name with spaces & ünïcödé.txt",
        "secret.key",
        "ro.txt",
    ] {
        set_mtime(&root.join(f), t);
        t += 86_400 + 17;
    }
    for d in [
        "sub/empty-nested/inner-empty",
        "sub/empty-nested",
        "sub/deeper",
        "sub",
        "empty-dir",
        "",
    ] {
        set_mtime(&root.join(d), t);
        t += 3_600 + 1;
    }
}

#[test]
fn cert_new_writes_cer_and_private_pfx_and_refuses_overwrite() {
    let fx = Fx::new();
    let c = new_cert(&fx.root, "mine");
    let cer = std::fs::read(&c.cer).unwrap();
    assert!(cer.len() > 500 && cer[0] == 0x30, "the .cer is not DER");
    let pfx_meta = std::fs::metadata(&c.pfx).unwrap();
    assert_eq!(
        pfx_meta.mode() & 0o777,
        0o600,
        "the .pfx must be private (0600)"
    );
    let pfx = std::fs::read(&c.pfx).unwrap();
    // openssl opens it with the password, and the certificate inside is the .cer.
    let inside = openssl([
        "pkcs12",
        "-in",
        c.pfx.to_str().unwrap(),
        "-nokeys",
        "-passin",
        "env:IBS_PFX_PASSWORD",
    ]);
    let cer_pem = openssl(["x509", "-inform", "DER", "-in", c.cer.to_str().unwrap()]);
    let cer_pem = String::from_utf8(cer_pem).unwrap();
    assert!(
        String::from_utf8_lossy(&inside).contains(cer_pem.trim()),
        "the .pfx does not hold the .cer's certificate"
    );

    // Both files exist: refused, nothing rewritten.
    ibs([
        "cert",
        "new",
        "--subject",
        "again",
        "--bits",
        "2048",
        "--cer",
    ])
    .arg(&c.cer)
    .arg("--pfx")
    .arg(&c.pfx)
    .pw()
    .run()
    .code(1)
    .stderr_has("already exists; refusing to overwrite");
    assert_eq!(std::fs::read(&c.cer).unwrap(), cer);
    assert_eq!(std::fs::read(&c.pfx).unwrap(), pfx);

    // Only the .pfx exists: refused, and the new .cer is not created either.
    let new_cer = fx.path("other.cer");
    ibs([
        "cert",
        "new",
        "--subject",
        "again",
        "--bits",
        "2048",
        "--cer",
    ])
    .arg(&new_cer)
    .arg("--pfx")
    .arg(&c.pfx)
    .pw()
    .run()
    .code(1)
    .stderr_has("already exists; refusing to overwrite");
    assert!(!new_cer.exists(), "a refused cert new must write nothing");
    assert_eq!(std::fs::read(&c.pfx).unwrap(), pfx);
}

#[test]
fn key_new_writes_private_key_file_and_refuses_overwrite() {
    let fx = Fx::new();
    let k = fx.path("legacy.key");
    ibs(["key", "new", "--out"]).arg(&k).run().ok();
    let m = std::fs::metadata(&k).unwrap();
    assert_eq!(m.mode() & 0o777, 0o600, "the key file must be private");
    let text = std::fs::read_to_string(&k).unwrap();
    let b64 = text.trim();
    // 64 bytes of key material, standard base64.
    assert_eq!(b64.len(), 88, "key file text {b64:?}");
    assert!(b64
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'='));
    ibs(["key", "new", "--out"])
        .arg(&k)
        .run()
        .code(1)
        .stderr_has("refusing to overwrite");
    assert_eq!(std::fs::read_to_string(&k).unwrap(), text);
}

#[test]
fn backup_folder_list_without_key_and_restore_byte_identical() {
    let fx = Fx::new();
    let cert = shared_cert(0);
    let init = fx.init_cert(&cert.cer);
    assert!(
        fx.mas().join("config").is_file(),
        "init made no config:\n{init}"
    );
    assert!(fx.state.is_dir(), "init made no writer state");

    let docs = fx.path("src/docs");
    let extra = fx.path("src/extra");
    make_tree(&docs);
    write(&extra.join("x.txt"), b"extra source\n");
    let want_docs = snapshot(&docs);
    let want_extra = snapshot(&extra);

    let id = fx.backup(&[("docs", &docs), ("extra", &extra)]);

    // list needs no key: no password in the environment and no state directory.
    let table = ibs(["repo", "list", "--repo"]).arg(&fx.repo).run().ok();
    let row = table
        .stdout
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("id {id} not in the table:\n{table}"));
    assert!(row.contains("Succeeded"), "status missing:\n{table}");
    assert!(row.contains("docs,extra"), "sources missing:\n{table}");
    assert!(
        row.contains(&cert.thumbprint),
        "thumbprint missing:\n{table}"
    );

    let list = fx.list();
    assert_eq!(list.len(), 1);
    let c = &list[0];
    assert_eq!(c["backup_id"], id.as_str());
    assert_eq!(c["status"], "Succeeded");
    let names: Vec<&str> = c["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["docs", "extra"]);
    assert_eq!(c["sources"][0]["kind"], "dir");
    assert_eq!(c["certificate_thumbprint"], cert.thumbprint.as_str());
    assert_eq!(c["encryption_mode"], "certificate");

    // Whole backup: TARGET/<name>/…
    let target = fx.path("restore-all");
    fx.restore_cmd(&id, &target, &[&cert.pfx]).run().ok();
    let mut top: Vec<String> = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["docs", "extra"]);
    assert_tree(&want_docs, &target.join("docs"), "whole restore, docs");
    assert_tree(&want_extra, &target.join("extra"), "whole restore, extra");
    assert!(target.join("docs/empty-dir").is_dir());
    assert!(target.join("docs/sub/empty-nested/inner-empty").is_dir());

    // One source: directly into TARGET.
    let one = fx.path("restore-one");
    fx.restore_cmd(&id, &one, &[&cert.pfx])
        .args(["--source", "docs"])
        .run()
        .ok();
    assert_tree(&want_docs, &one, "--source docs");
    assert!(!one.join("extra").exists() && !one.join("x.txt").exists());
}

#[test]
fn backup_single_file_source() {
    let fx = Fx::new();
    let cert = shared_cert(0);
    fx.init_cert(&cert.cer);
    let file = fx.path("in/db-export.bak");
    write(&file, &pseudo_random(11, 1_500_000));
    set_mode(&file, 0o640);
    set_mtime(&file, 1_600_000_000);
    let want = std::fs::read(&file).unwrap();

    let out = fx.backup_cmd(&[("db", &file)]).arg("--json").run().ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "expected one JSON line and the id:\n{out}");
    let id = lines[1].trim().to_owned();
    assert!(is_backup_id(&id), "{out}");
    let v: serde_json::Value = serde_json::from_str(lines[0])
        .unwrap_or_else(|e| panic!("the line before the id is not JSON ({e}):\n{out}"));
    assert_eq!(v["catalog"]["backup_id"], id.as_str());
    let c = fx.catalog(&id);
    assert_eq!(c, v["catalog"], "list --json and backup --json disagree");
    assert_eq!(c["sources"][0]["name"], "db");
    assert_eq!(c["sources"][0]["kind"], "file");
    assert_eq!(c["sources"][0]["files"], 1);
    assert_eq!(c["sources"][0]["bytes"], want.len() as u64);

    let check = |p: &Path| {
        assert_eq!(std::fs::read(p).unwrap(), want, "{}", p.display());
        let m = std::fs::metadata(p).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o640, "{}", p.display());
        assert_eq!(m.mtime(), 1_600_000_000, "{}", p.display());
    };
    let all = fx.path("all");
    fx.restore_cmd(&id, &all, &[&cert.pfx]).run().ok();
    check(&all.join("db/db-export.bak"));
    let one = fx.path("one");
    fx.restore_cmd(&id, &one, &[&cert.pfx])
        .args(["--source", "db"])
        .run()
        .ok();
    check(&one.join("db-export.bak"));
}

#[test]
fn backup_stdin_with_json() {
    let fx = Fx::new();
    let cert = shared_cert(0);
    fx.init_cert(&cert.cer);
    let mut bytes = pseudo_random(3, 2_000_000);
    bytes.extend_from_slice(&b"SELECT 1;\n".repeat(50_000));

    let out = ibs(["repo", "backup", "--json", "--state"])
        .arg(&fx.state)
        .arg("--repo")
        .arg(&fx.repo)
        .args(["--source", "dump=-"])
        .stdin(bytes.clone())
        .run()
        .ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines.len() >= 2, "expected JSON then the id:\n{out}");
    let id = lines[lines.len() - 1].trim();
    assert!(is_backup_id(id), "last line is not a backup id:\n{out}");
    let v: serde_json::Value = serde_json::from_str(lines[lines.len() - 2])
        .unwrap_or_else(|e| panic!("the line before the id is not JSON ({e}):\n{out}"));
    assert_eq!(v["catalog"]["backup_id"], id);
    assert_eq!(v["catalog"]["status"], "Succeeded");
    assert_eq!(v["catalog"]["sources"][0]["name"], "dump");
    assert_eq!(v["catalog"]["sources"][0]["kind"], "stream");
    assert_eq!(v["catalog"]["bytes_read"], bytes.len() as u64);

    let all = fx.path("all");
    fx.restore_cmd(id, &all, &[&cert.pfx]).run().ok();
    let got = std::fs::read(all.join("dump/dump")).unwrap();
    assert!(got == bytes, "stdin bytes differ after restore");
    let one = fx.path("one");
    fx.restore_cmd(id, &one, &[&cert.pfx])
        .args(["--source", "dump"])
        .run()
        .ok();
    assert!(std::fs::read(one.join("dump")).unwrap() == bytes);
}

#[test]
fn sparse_file_restores_with_holes() {
    let fx = Fx::new();
    let cert = shared_cert(0);
    fx.init_cert(&cert.cer);
    let src = fx.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let p = src.join("disk.img");
    const SIZE: u64 = 64 << 20;
    {
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(SIZE).unwrap();
        f.write_all_at(&pseudo_random(1, 100_000), 5 << 20).unwrap();
        f.write_all_at(&pseudo_random(2, 50_000), SIZE - 200_000)
            .unwrap();
    }
    let src_alloc = std::fs::metadata(&p).unwrap().blocks() * 512;
    assert!(
        src_alloc < 2 << 20,
        "the test filesystem did not keep the source sparse ({src_alloc} bytes allocated)"
    );
    let want = snapshot(&src);

    let id = fx.backup(&[("vm", &src)]);
    let target = fx.path("restored");
    fx.restore_cmd(&id, &target, &[&cert.pfx]).run().ok();
    assert_tree(&want, &target.join("vm"), "sparse restore");
    let m = std::fs::metadata(target.join("vm/disk.img")).unwrap();
    assert_eq!(m.len(), SIZE);
    let alloc = m.blocks() * 512;
    assert!(
        alloc < 2 << 20,
        "restored sparse file allocates {alloc} bytes for {SIZE} bytes with 150 kB of data"
    );
}

#[test]
fn check_levels_pass_on_healthy_repo() {
    let fx = Fx::new();
    let cert = shared_cert(0);
    fx.init_cert(&cert.cer);
    let src = fx.path("src");
    make_tree(&src);
    fx.backup(&[("a", &src)]);
    write(&src.join("new.txt"), b"second backup\n");
    fx.backup(&[("a", &src)]);

    let s = fx.repo_cmd("check").run().ok();
    assert!(s.stdout.contains("check (structure): 2 backups"), "{s}");
    assert!(s.stdout.contains("no problems found"), "{s}");
    let r = fx.repo_cmd("check").arg("--read-data").run().ok();
    assert!(r.stdout.contains("check (read-data): 2 backups"), "{r}");
    assert!(r.stdout.contains("no problems found"), "{r}");
    let d = fx
        .repo_cmd("check")
        .arg("--pfx")
        .arg(&cert.pfx)
        .pw()
        .run()
        .ok();
    assert!(d.stdout.contains("check (decrypt): 2 backups"), "{d}");
    assert!(d.stdout.contains("no problems found"), "{d}");
    let j = fx
        .repo_cmd("check")
        .args(["--json", "--read-data", "--pfx"])
        .arg(&cert.pfx)
        .pw()
        .run()
        .ok();
    let v = j.json();
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{j}");
    assert!(v["chunks_verified"].as_u64().unwrap() > 0, "{j}");
    assert!(v["packs_read"].as_u64().unwrap() > 0, "{j}");
}

#[test]
fn init_pack_size_sets_where_packs_are_closed_and_refuses_out_of_range_sizes() {
    let cert = shared_cert(0);
    for bad in ["3", "257", "0", "x"] {
        let fx = Fx::new();
        fx.repo_cmd("init")
            .arg("--cert")
            .arg(&cert.cer)
            .args(["--pack-size", bad])
            .run()
            .code(2);
        assert!(
            !fx.mas().join("config").exists(),
            "--pack-size {bad} created a repository"
        );
    }
    let fx = Fx::new();
    fx.repo_cmd("init")
        .arg("--cert")
        .arg(&cert.cer)
        .args(["--pack-size", "4"])
        .run()
        .ok();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fx.mas().join("config")).unwrap()).unwrap();
    assert_eq!(config["pack_target_size"], 4 << 20);
    // 12 MiB of incompressible data fills at least three 4 MiB packs (one 16 MiB pack by default).
    let src = fx.path("src");
    for i in 0..4 {
        write(&src.join(format!("r{i}.bin")), &pseudo_random(i, 3 << 20));
    }
    let id = fx.backup(&[("data", &src)]);
    let packs = files_under(&fx.mas().join("packs"));
    assert!(packs.len() >= 3, "{} packs: {packs:?}", packs.len());
    let target = fx.path("restored");
    fx.restore_cmd(&id, &target, &[&cert.pfx]).run().ok();
    assert_tree(&snapshot(&src), &target.join("data"), "4 MiB packs");
}
