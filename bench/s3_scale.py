#!/usr/bin/env python3
"""What several ibs writers cost one repository on Ceph RGW, per backup, at small scale (issue 14
item 5): the measured input of `bench/scale_out.py` and `docs/design/scale-out.md`.

For each configuration FILESxWRITERS (FILES in thousands: 10 = `gen_scale.py --point 1m --hosts 10`,
about 10,000 files of ~94 bytes in 10 host trees), each writer with its own tree (seed 1 + writer
number) and its own writer state (`repo init` for writer 0, `repo adopt` for the others):

  full      every writer backs up its tree, all at once
  nochange  the same again
  day1      `gen_scale.py --day 1` applied to every tree, then every writer backs up again
  prune     writer 0 runs `ibs repo prune --grace-hours 0` (nothing is forgotten: it lists and reads
            everything and rewrites what it can consolidate)

and records per step: the gateway's requests for the bucket by operation and object class (from
radosgw's access log: `PUT packs`, `GET index`, `LIST backups`, `PUT locks`, …) with their bytes,
each writer's wall time, CPU and peak RSS, and after the step the objects in the bucket by class
(count, bytes, the size of every index segment and manifest). JSON in bench/results/s3-scale.json.

    python3 bench/s3_scale.py [--configs 10x1,10x2,10x4,100x1] [--segments 1,25,100] [--ibs-bin target/release/ibs]

With --segments, also: backup start-up against the number of index segments (run_segments).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True
import bench  # noqa: E402
import s3lib  # noqa: E402

PREFIX = "repo/MASBackup/"


def log(msg: str) -> None:
    print(msg, flush=True)


def gen_tree(path: str, hosts: int, seed: int, day: int = 0) -> dict:
    if not day:
        shutil.rmtree(path, ignore_errors=True)
    cmd = [sys.executable, os.path.join(HERE, "gen_scale.py"), path, "--point", "1m", "--hosts", str(hosts),
           "--seed", str(seed)] + (["--day", str(day)] if day else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"s3 scale: {' '.join(cmd)} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_config(args, gw, kfiles: int, writers: int, cert: dict) -> dict:
    work = os.path.join(args.work, f"{kfiles}kx{writers}")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    hosts = kfiles  # about 1000 files per host
    trees = [os.path.join(work, f"tree{i}") for i in range(writers)]
    gens = [gen_tree(t, hosts, 1 + i) for i, t in enumerate(trees)]
    bucket = gw.create_bucket(f"scale{kfiles}k{writers}")
    loc = f"s3+http://{gw.host_port}/{bucket}/repo"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("IBS_", "AWS_", "RUST_LOG"))}
    base |= gw.env() | {"IBS_PFX_PASSWORD": cert["password"]}
    states = [os.path.join(work, f"state{i}") for i in range(writers)]
    out = {"files_k": kfiles, "writers": writers, "bucket_prefix": PREFIX, "trees": gens, "steps": []}
    try:
        for i, st in enumerate(states):
            cmd = [args.ibs_bin, "repo", "init" if i == 0 else "adopt", "--repo", loc, "--state", st]
            cmd += ["--cert", cert["cer"]] if i == 0 else ["--pfx", cert["pfx"]]
            r = subprocess.run(cmd, env=base, capture_output=True, text=True, stdin=subprocess.DEVNULL)
            if r.returncode != 0:
                raise SystemExit(f"s3 scale: {' '.join(cmd)} failed:\n{r.stderr}")
        for step in ("full", "nochange", "day1", "prune"):
            if step == "day1":
                out["day1"] = [gen_tree(t, hosts, 1 + i, day=1) for i, t in enumerate(trees)]
            if step == "prune":
                jobs = [([args.ibs_bin, "repo", "prune", "--repo", loc, "--state", states[0], "--grace-hours", "0",
                          "--lock-wait", "60"], {**base, "IBS_STATE_DIR": states[0]})]
            else:
                jobs = [([args.ibs_bin, "repo", "backup", "--repo", loc, "--state", states[i], "--source",
                          f"data={trees[i]}"], {**base, "IBS_STATE_DIR": states[i]}) for i in range(writers)]
            win = s3lib.LogWindow(gw)
            win.start()
            cpu0 = gw.cpu_seconds()
            load = os.getloadavg()[0]
            m = s3lib.run_concurrent(jobs, os.path.join(work, "logs"), step)
            reqs = win.stop([bucket], {bucket: PREFIX})
            cpu1 = gw.cpu_seconds()
            inv = s3lib.inventory(gw, bucket, PREFIX)
            row = {"step": step, "wall_s": m["wall"], "jobs": m["jobs"], "requests": reqs, "load1_before": load,
                   "server_cpu_s": {k: round(cpu1[k] - cpu0.get(k, 0), 2) for k in cpu1}, "inventory": inv}
            out["steps"].append(row)
            bad = [j for j in m["jobs"] if j["rc"] != 0]
            summ = s3lib.summarize(reqs)
            log(f"s3 scale: {kfiles}k x {writers} {step}: {m['wall']:.1f} s, requests {reqs['requests']} {summ}, "
                f"peak RSS {max(j['maxrss_kib'] for j in m['jobs']) / 1024:.0f} MiB, "
                f"index {inv.get('index', {}).get('n', 0)} segments {inv.get('index', {}).get('bytes', 0)} B, "
                f"manifests {inv.get('backups', {}).get('n', 0)} {inv.get('backups', {}).get('bytes', 0)} B")
            if bad:
                log(f"s3 scale: {step} FAILED: {[(j['rc'], j['stderr_tail']) for j in bad]}")
                out["failed"] = True
                break
        r = subprocess.run([args.ibs_bin, "repo", "list", "--repo", loc, "--state", states[0], "--json"],
                           env={**base, "IBS_STATE_DIR": states[0]}, capture_output=True, text=True)
        try:
            out["catalogs"] = json.loads(r.stdout)
        except ValueError:
            out["catalogs"] = None
    finally:
        if not args.keep:
            gw.delete_bucket(bucket)
            shutil.rmtree(work, ignore_errors=True)
    return out


def run_segments(args, gw, cert, counts: list[int]) -> dict:
    """Backup start-up cost against the number of index segments and manifests: one writer backs
    up a 10,000-file tree, then adds segments with small backups (one changed file each, so one new
    pack, one segment and one manifest each), and at each count in `counts` runs a no-change
    backup of the tree (which lists and reads every segment) and records its requests and time."""
    work = os.path.join(args.work, "segments")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    tree = os.path.join(work, "tree")
    gen_tree(tree, 10, 1)
    bucket = gw.create_bucket("segments")
    loc = f"s3+http://{gw.host_port}/{bucket}/repo"
    st = os.path.join(work, "state")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IBS_", "AWS_", "RUST_LOG"))}
    env |= gw.env() | {"IBS_PFX_PASSWORD": cert["password"], "IBS_STATE_DIR": st}
    out = {"points": []}

    def backup():
        return subprocess.run([args.ibs_bin, "repo", "backup", "--repo", loc, "--state", st, "--source",
                               f"data={tree}"], env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)

    try:
        subprocess.run([args.ibs_bin, "repo", "init", "--repo", loc, "--cert", cert["cer"], "--state", st],
                       env=env, check=True, capture_output=True)
        if backup().returncode != 0:
            raise SystemExit("s3 scale: segments: first backup failed")
        made = 1
        for want in counts:
            while made < want:
                with open(os.path.join(tree, "extra.txt"), "w") as f:
                    f.write(secrets.token_hex(64))
                r = backup()
                if r.returncode != 0:
                    raise SystemExit(f"s3 scale: segments: backup failed:\n{r.stderr}")
                made += 1
            win = s3lib.LogWindow(gw)
            win.start()
            m = s3lib.run_concurrent([([args.ibs_bin, "repo", "backup", "--repo", loc, "--state", st, "--source",
                                        f"data={tree}"], env)], os.path.join(work, "logs"), f"seg{want}")
            reqs = win.stop([bucket], {bucket: PREFIX})
            inv = s3lib.inventory(gw, bucket, PREFIX)
            row = {"segments": inv.get("index", {}).get("n", 0), "manifests": inv.get("backups", {}).get("n", 0),
                   "index_bytes": inv.get("index", {}).get("bytes", 0), "wall_s": m["wall"],
                   "rc": m["jobs"][0]["rc"], "peak_rss_mib": m["jobs"][0]["maxrss_kib"] / 1024,
                   "requests": reqs, "load1": os.getloadavg()[0]}
            out["points"].append(row)
            log(f"s3 scale: segments {row['segments']} manifests {row['manifests']}: no-change backup "
                f"{m['wall']:.2f} s, requests {reqs['requests']} {s3lib.summarize(reqs)}, "
                f"GET latency sum {reqs['latency_s']:.2f} s")
        win = s3lib.LogWindow(gw)
        win.start()
        m = s3lib.run_concurrent([([args.ibs_bin, "repo", "prune", "--repo", loc, "--state", st, "--grace-hours",
                                    "0"], env)], os.path.join(work, "logs"), "prune")
        reqs = win.stop([bucket], {bucket: PREFIX})
        out["prune"] = {"wall_s": m["wall"], "rc": m["jobs"][0]["rc"], "requests": reqs,
                        "peak_rss_mib": m["jobs"][0]["maxrss_kib"] / 1024,
                        "inventory_after": s3lib.inventory(gw, bucket, PREFIX)}
        log(f"s3 scale: prune of {made} backups: {m['wall']:.2f} s, requests {reqs['requests']} "
            f"{s3lib.summarize(reqs)}")
    finally:
        if not args.keep:
            gw.delete_bucket(bucket)
            shutil.rmtree(work, ignore_errors=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="10x1,10x2,10x4,100x1",
                   help="comma-separated FILESxWRITERS, FILES in thousands (default 10x1,10x2,10x4,100x1)")
    p.add_argument("--work", default=os.path.join(HERE, "work", "s3-scale"))
    p.add_argument("--ibs-bin", default=os.path.join(ROOT, "target", "release", "ibs"))
    p.add_argument("--rgw-dir", default=os.environ.get("IBS_TEST_RGW_DIR", "/tmp/ibs-rgw"))
    p.add_argument("--segments", default="",
                   help="comma-separated segment counts for the start-up experiment (e.g. 1,25,100); empty: skip")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--results", default=os.path.join(HERE, "results", "s3-scale.json"))
    args = p.parse_args(argv)
    args.ibs_bin = os.path.abspath(args.ibs_bin)
    gw = s3lib.Gateway(args.rgw_dir)
    os.makedirs(args.work, exist_ok=True)
    password = secrets.token_urlsafe(24)
    cert = {"cer": os.path.join(args.work, "c.cer"), "pfx": os.path.join(args.work, "c.pfx"), "password": password}
    for f in (cert["cer"], cert["pfx"]):
        if os.path.exists(f):
            os.remove(f)
    r = subprocess.run([args.ibs_bin, "cert", "new", "--subject", "ibs s3 scale", "--cer", cert["cer"], "--pfx",
                        cert["pfx"], "--bits", "2048"], env={**os.environ, "IBS_PFX_PASSWORD": password},
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"s3 scale: cert new failed:\n{r.stderr}")
    runs = []
    for c in filter(None, args.configs.split(",")):
        k, w = (int(x) for x in c.split("x"))
        runs.append(run_config(args, gw, k, w, cert))
    segments = run_segments(args, gw, cert, [int(x) for x in args.segments.split(",")]) if args.segments else None
    meta = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": bench.git_rev(),
            "ibs": bench.tool_version([args.ibs_bin, "--version"]), "endpoint": gw.endpoint,
            "host": f"{os.cpu_count()} CPUs", "load_after": os.getloadavg()}
    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    with open(args.results, "w") as f:
        json.dump({"meta": meta, "runs": runs, "segments": segments}, f, indent=1)
    log(f"s3 scale: JSON in {args.results}")
    return 0 if not any(r.get("failed") for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
