#!/usr/bin/env python3
"""ibs on S3 (Ceph RGW on loopback) against ibs on a local folder, restic on the same RGW, and four
concurrent ibs writers against one (issue 14, "Performance").

Started by bench/s3.sh (see bench/README.md, "S3: Ceph RGW on loopback"). Python 3.11 standard
library only. Steps, each with the page cache dropped first:

1. the bench tree (gen_dataset.py) backed up (full, then no change) and restored, interleaved:
   ibs to a local folder, ibs to `s3+http://…/BUCKET/repo`, restic to `s3:http://…/BUCKET`;
   every restore verified against the tree;
2. one ibs writer backs up tree 0 into a fresh S3 repository; then four writers (one `repo init`,
   three `repo adopt`, each its own state) back up trees 0–3 (other seeds, so different content)
   into another fresh S3 repository at once. Total throughput = bytes of the four trees / wall time
   of the slowest.

Each step also records the gateway's requests for the step's bucket (from radosgw's access log) and
the CPU seconds radosgw and the OSD spent meanwhile (the gateway is shared: other users' requests
add to those CPU figures, never to the request counts).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True
import bench  # noqa: E402
import gen_dataset  # noqa: E402
import s3lib  # noqa: E402

STEPS = [("full", "full backup"), ("nochange", "no-change backup"), ("restore", "restore")]
TARGET_VS_LOCAL = 0.7  # S3 speed / local speed
TARGET_VS_RESTIC = 3.0  # restic time / ibs time
TARGET_WRITERS = 2.0  # 4 writers' total throughput / one writer's


def log(msg: str) -> None:
    print(msg, flush=True)


class Runner:
    """One tool on one target: repository setup, backup, restore, size."""

    def __init__(self, name: str, args, gw: s3lib.Gateway, work: str, password: str):
        self.name, self.args, self.gw = name, args, gw
        self.dir = os.path.join(work, name)
        self.logs = os.path.join(work, "logs")
        self.restore_dir = os.path.join(work, f"restore-{name}")
        self.password = password  # of the .pfx (ibs) or the repository (restic); environment only
        self.bucket = None
        self.prefix = ""
        self.backup_id = None

    # which kind of runner
    @property
    def ibs(self) -> bool:
        return self.name.startswith("ibs")

    @property
    def s3(self) -> bool:
        return self.name.endswith("s3")

    def env(self, state: str | None = None) -> dict:
        e = {k: v for k, v in os.environ.items()
             if not k.startswith(("RESTIC_", "IBS_", "AWS_", "GOMAXPROCS", "RUST_LOG"))}
        if self.s3:
            e.update(self.gw.env())
        if self.ibs:
            e["IBS_PFX_PASSWORD"] = self.password
            e["IBS_STATE_DIR"] = state or os.path.join(self.dir, "state")
        else:
            e["RESTIC_PASSWORD"] = self.password
        return e

    def location(self) -> str:
        if self.name == "ibs-local":
            return os.path.join(self.dir, "repo")
        if self.name == "ibs-s3":
            return f"s3+http://{self.gw.host_port}/{self.bucket}/repo"
        return f"s3:{self.gw.endpoint}/{self.bucket}"

    def setup(self, cer: str) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.restore_dir, ignore_errors=True)
        os.makedirs(self.logs, exist_ok=True)
        if self.s3:
            self.bucket = self.gw.create_bucket(self.name.replace("-", ""))
            self.prefix = "repo/MASBackup/" if self.ibs else ""
        else:
            os.makedirs(os.path.join(self.dir, "repo"))
        if self.ibs:
            cmd = [self.args.ibs_bin, "repo", "init", "--repo", self.location(), "--cert", cer,
                   "--state", os.path.join(self.dir, "state")]
        else:
            cmd = ["restic", "init", "--repo", self.location(), "--cache-dir", os.path.join(self.dir, "cache")]
        r = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise SystemExit(f"s3 bench: {self.name} init failed: {' '.join(cmd)}\n{r.stdout}{r.stderr}")

    def backup(self, step: str, dataset: str) -> dict:
        if self.ibs:
            cmd = [self.args.ibs_bin, "repo", "backup", "--repo", self.location(), "--state",
                   os.path.join(self.dir, "state"), "--source", f"data={dataset}"]
            cwd = None
        else:
            cmd = ["restic", "backup", "--repo", self.location(), "--cache-dir", os.path.join(self.dir, "cache"), "."]
            cwd = dataset
        r = bench.run_measured(cmd, self.env(), cwd, os.path.join(self.logs, f"{step}-{self.name}"),
                               self.args.timeout)
        if self.ibs and r["rc"] == 0:
            lines = [ln.strip() for ln in r["stdout"].splitlines() if ln.strip()]
            self.backup_id = lines[-1] if lines else None
        return r

    def restore(self, pfx: str) -> dict:
        if self.ibs:
            cmd = [self.args.ibs_bin, "repo", "restore", "--repo", self.location(), "--backup", str(self.backup_id),
                   "--target", self.restore_dir, "--pfx", pfx]
        else:
            cmd = ["restic", "restore", "latest", "--repo", self.location(), "--cache-dir",
                   os.path.join(self.dir, "cache"), "--target", self.restore_dir]
        return bench.run_measured(cmd, self.env(), None, os.path.join(self.logs, f"restore-{self.name}"),
                                  self.args.timeout)

    def restored_root(self) -> str:
        return os.path.join(self.restore_dir, "data") if self.ibs else self.restore_dir

    def repo_bytes(self) -> int:
        if not self.s3:
            return bench.du_bytes(os.path.join(self.dir, "repo"))
        return sum(s for _, s in self.gw.list_objects(self.bucket, "repo/" if self.ibs else ""))

    def cleanup(self) -> None:
        if self.bucket and not self.args.keep:
            self.gw.delete_bucket(self.bucket)
        if not self.args.keep:
            shutil.rmtree(self.restore_dir, ignore_errors=True)
            shutil.rmtree(self.dir, ignore_errors=True)


def measured(gw, runner_buckets: list[str], prefixes: dict, fn) -> tuple[dict, dict, dict]:
    """Runs fn() and returns (its result, the gateway's requests for the buckets, server CPU seconds)."""
    win = s3lib.LogWindow(gw)
    win.start()
    cpu0 = gw.cpu_seconds()
    r = fn()
    reqs = win.stop(runner_buckets, prefixes) if runner_buckets else None
    cpu1 = gw.cpu_seconds()
    return r, reqs, {k: round(cpu1[k] - cpu0.get(k, 0.0), 2) for k in cpu1}


def row_of(m: dict, data_bytes: int) -> dict:
    row = {"rc": m.get("rc"), "cmd": m.get("cmd"), "load1_before": m.get("load1_before")}
    if m.get("rc") != 0:
        row["error"] = f"exit code {m.get('rc')}" + (" (timed out)" if m.get("timed_out") else "")
        log("\n".join((m.get("stderr") or "").splitlines()[-15:]))
        return row
    row.update({"wall_s": m["wall"], "mb_s": data_bytes / 1e6 / m["wall"], "cpu_s": m["user"] + m["sys"],
                "peak_rss_mib": m["maxrss_kib"] / 1024.0})
    return row


def compare_round(args, gw, work, dataset, cert, dropper, rnd) -> tuple[list[dict], dict, bool]:
    """Part 1: the three runners through full, no-change and restore, interleaved per step."""
    runners = [Runner(n, args, gw, work, cert["password"]) for n in args.runners.split(",")]
    for r in runners:
        r.setup(cert["cer"])
    data_bytes, data_files = bench.tree_bytes(dataset)
    rows, verify, ok = [], {}, True
    src_manifest = None
    try:
        for step, label in STEPS:
            if step == "restore":
                src_manifest = bench.manifest(dataset)
            for r in runners:
                dropped = dropper.drop()
                log(f"s3 bench: [{label}] {r.name} ...")
                fn = (lambda r=r: r.restore(cert["pfx"])) if step == "restore" else (lambda r=r: r.backup(step, dataset))
                m, reqs, cpu = measured(gw, [r.bucket] if r.bucket else [], {r.bucket: r.prefix}, fn)
                row = {"round": rnd, "step": step, "step_label": label, "tool": r.name, "cache_dropped": dropped,
                       "dataset_bytes": data_bytes, "dataset_files": data_files, **row_of(m, data_bytes),
                       "server_cpu_s": cpu, "requests": reqs}
                row["repo_bytes"] = r.repo_bytes()
                rows.append(row)
                if row.get("error"):
                    ok = False
                    log(f"s3 bench: [{label}] {r.name} FAILED: {row['error']}")
                    continue
                log(f"s3 bench: [{label}] {r.name}: {row['wall_s']:.2f} s, {row['mb_s']:.1f} MB/s, "
                    f"CPU {row['cpu_s']:.1f} s, RSS {row['peak_rss_mib']:.0f} MiB, rgw CPU {cpu.get('rgw')} s, "
                    f"osd CPU {cpu.get('osd')} s, requests {reqs['requests'] if reqs else '-'}")
                if step == "restore":
                    root = r.restored_root()
                    errors, warnings = bench.compare(src_manifest, bench.manifest(root) if os.path.isdir(root) else {})
                    verify[f"{r.name}/{rnd}"] = {"ok": not errors, "n_errors": len(errors), "errors": errors[:50],
                                                 "n_warnings": len(warnings)}
                    if errors:
                        ok = False
                        log(f"s3 bench: RESTORE VERIFICATION FAILED for {r.name}: {len(errors)} differences, "
                            f"e.g. {errors[:3]}")
                    else:
                        log(f"s3 bench: restore of {r.name} verified ({len(src_manifest)} entries)")
    finally:
        for r in runners:
            r.cleanup()
    return rows, verify, ok


def writers_round(args, gw, work, trees, cert, dropper, rnd) -> tuple[list[dict], bool]:
    """Part 2: one writer, then four at once, each into a fresh S3 repository."""
    rows, ok = [], True
    sizes = [bench.tree_bytes(t)[0] for t in trees]
    ibs = args.ibs_bin
    for n in sorted({1, len(trees)}):
        wdir = os.path.join(work, f"writers{n}")
        shutil.rmtree(wdir, ignore_errors=True)
        os.makedirs(os.path.join(wdir, "logs"))
        bucket = gw.create_bucket(f"w{n}")
        loc = f"s3+http://{gw.host_port}/{bucket}/repo"
        password = cert["password"]
        base = {k: v for k, v in os.environ.items() if not k.startswith(("IBS_", "AWS_", "RUST_LOG"))}
        base.update(gw.env())
        base["IBS_PFX_PASSWORD"] = password
        states = [os.path.join(wdir, f"state{i}") for i in range(n)]
        try:
            for i, st in enumerate(states):
                cmd = [ibs, "repo", "init" if i == 0 else "adopt", "--repo", loc, "--state", st]
                cmd += ["--cert", cert["cer"]] if i == 0 else ["--pfx", cert["pfx"]]
                r = subprocess.run(cmd, env=base, capture_output=True, text=True, stdin=subprocess.DEVNULL)
                if r.returncode != 0:
                    raise SystemExit(f"s3 bench: {' '.join(cmd)} failed:\n{r.stderr}")
            dropped = dropper.drop()
            log(f"s3 bench: [{n} writer(s)] backing up {n} tree(s) at once ...")

            jobs = [([ibs, "repo", "backup", "--repo", loc, "--state", states[i], "--source", f"data={trees[i]}"],
                     {**base, "IBS_STATE_DIR": states[i]}) for i in range(n)]

            load = os.getloadavg()[0]
            m, reqs, cpu = measured(gw, [bucket], {bucket: "repo/MASBackup/"},
                                    lambda: s3lib.run_concurrent(jobs, os.path.join(wdir, "logs"), "backup"))
            total = sum(sizes[:n])
            row = {"round": rnd, "step": f"writers{n}", "tool": "ibs-s3", "writers": n, "cache_dropped": dropped,
                   "dataset_bytes": total, "wall_s": m["wall"], "mb_s": total / 1e6 / m["wall"],
                   "per_writer": m["jobs"], "cpu_s": sum(w["cpu"] for w in m["jobs"]),
                   "peak_rss_mib": max(w["maxrss_kib"] for w in m["jobs"]) / 1024, "server_cpu_s": cpu,
                   "requests": reqs, "load1_before": load,
                   "repo_bytes": sum(s for _, s in gw.list_objects(bucket, "repo/"))}
            if any(w["rc"] != 0 for w in m["jobs"]):
                ok = False
                row["error"] = f"exit codes {[w['rc'] for w in m['writers']]}"
                log(f"s3 bench: [{n} writers] FAILED: {row['error']} (logs in {wdir}/logs)")
            else:
                log(f"s3 bench: [{n} writer(s)] {total / 1e6:.0f} MB in {m['wall']:.2f} s = {row['mb_s']:.1f} MB/s; "
                    f"CPU {row['cpu_s']:.1f} s, rgw CPU {cpu.get('rgw')} s, osd CPU {cpu.get('osd')} s, "
                    f"requests {reqs['requests']}")
            rows.append(row)
        finally:
            if not args.keep:
                gw.delete_bucket(bucket)
                shutil.rmtree(wdir, ignore_errors=True)
    return rows, ok


def median_rows(rows: list[dict]) -> list[dict]:
    """One row per (step, tool): medians over the rounds of the numeric columns."""
    out = {}
    for r in rows:
        out.setdefault((r["step"], r["tool"]), []).append(r)
    agg = []
    for (step, tool), rs in out.items():
        good = [r for r in rs if not r.get("error")]
        a = dict(rs[-1])
        if good:
            for k in ("wall_s", "mb_s", "cpu_s", "peak_rss_mib", "repo_bytes"):
                a[k] = statistics.median(r[k] for r in good)
            a["server_cpu_s"] = {k: statistics.median(r["server_cpu_s"].get(k, 0) for r in good)
                                 for k in good[0]["server_cpu_s"]}
        a["rounds"] = len(rs)
        agg.append(a)
    return agg


def fmt(v, spec=".2f"):
    return "—" if v is None else format(v, spec)


def tables(agg: list[dict], meta: dict) -> tuple[str, list[dict]]:
    by = {(r["step"], r["tool"]): r for r in agg}
    lines = [f"Dataset: {meta['dataset_bytes'] / 2**20:.0f} MiB in {meta['dataset_files']} files (gen_dataset.py "
             f"--size {meta['size']} --seed {meta['seed']}); writers: {meta['writers']} trees of "
             f"{meta['writer_size']} (seeds {meta['writer_seeds']})",
             f"Host: {meta['host']}; load average before: {meta['load_before']}; after: {meta['load_after']}; "
             f"commit {meta['commit']}; {meta['date']}",
             f"Gateway: Ceph RGW {meta['rgw_version']} (memstore OSD) on {meta['endpoint']}, shared; "
             f"caches: {meta['caches']}",
             f"Each figure is the median of {meta['repeat']} round(s)", "",
             "| step | target | wall s | MB/s | CPU s | peak RSS MiB | rgw CPU s | osd CPU s | requests | repo MiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in agg:
        sc = r.get("server_cpu_s") or {}
        reqs = r.get("requests") or {}
        label = r.get("step_label") or f"{r.get('writers')} writer(s) at once"
        lines.append(f"| {label} | {r['tool']} | {fmt(r.get('wall_s'))} | {fmt(r.get('mb_s'), '.1f')} | "
                     f"{fmt(r.get('cpu_s'), '.1f')} | {fmt(r.get('peak_rss_mib'), '.0f')} | "
                     f"{fmt(sc.get('rgw'), '.1f') if r['tool'] != 'ibs-local' else '—'} | "
                     f"{fmt(sc.get('osd'), '.1f') if r['tool'] != 'ibs-local' else '—'} | "
                     f"{reqs.get('requests', '—')} | {fmt(r.get('repo_bytes', 0) / 2**20, '.1f')} |")
    targets = []

    def ratio(a, b):
        if a and b and not a.get("error") and not b.get("error"):
            return b["wall_s"] / a["wall_s"]
        return None

    for step, label in STEPS:
        s3, local, restic = by.get((step, "ibs-s3")), by.get((step, "ibs-local")), by.get((step, "restic-s3"))
        v = ratio(local, s3)  # local time / s3 time = s3 speed / local speed
        if v is not None and step != "nochange":
            targets.append({"name": f"{label}: ibs on S3 / ibs local speed", "value": 1 / v,
                            "target": f"≥ {TARGET_VS_LOCAL}", "pass": 1 / v >= TARGET_VS_LOCAL})
        elif v is not None:
            targets.append({"name": f"{label}: ibs on S3 / ibs local speed", "value": 1 / v, "target": "—",
                            "pass": None})
        v = ratio(s3, restic)
        if v is not None:
            targets.append({"name": f"{label}: restic time / ibs time, both on S3", "value": v,
                            "target": f"≥ {TARGET_VS_RESTIC}", "pass": v >= TARGET_VS_RESTIC})
    w = sorted((r for r in agg if r["step"].startswith("writers")), key=lambda r: r["writers"])
    if len(w) == 2 and not w[0].get("error") and not w[1].get("error"):
        v = w[1]["mb_s"] / w[0]["mb_s"]
        targets.append({"name": f"{w[1]['writers']} writers' total throughput / one writer's", "value": v,
                        "target": f"≥ {TARGET_WRITERS}", "pass": v >= TARGET_WRITERS})
    lines += ["", "| ratio | value | target | result |", "|---|---:|---|---|"]
    for t in targets:
        res = "—" if t["pass"] is None else ("PASS" if t["pass"] else "FAIL")
        lines.append(f"| {t['name']} | {t['value']:.2f} | {t['target']} | {res} |")
    counted = [t for t in targets if t["pass"] is not None]
    lines += ["", f"Targets: {sum(t['pass'] for t in counted)} of {len(counted)} PASS"]
    return "\n".join(lines), targets


def request_table(agg: list[dict]) -> str:
    """Requests per step by operation (the gateway's access log, this run's buckets only)."""
    ops = sorted({op for r in agg if r.get("requests") for op in s3lib.summarize(r["requests"])})
    lines = ["| step | target | " + " | ".join(ops) + " | bytes |", "|---|---|" + "---:|" * (len(ops) + 1)]
    for r in agg:
        if not r.get("requests"):
            continue
        s = s3lib.summarize(r["requests"])
        label = r.get("step_label") or f"{r.get('writers')} writer(s)"
        lines.append(f"| {label} | {r['tool']} | " + " | ".join(str(s.get(o, 0)) for o in ops)
                     + f" | {r['requests']['bytes'] / 1e6:.1f} MB |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="1G", help="bench tree size (default 1G)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--writers", type=int, default=4)
    p.add_argument("--writer-size", default="256M", help="size of each writer's tree (default 256M)")
    p.add_argument("--parts", default="compare,writers", help="compare, writers or both")
    p.add_argument("--runners", default="ibs-local,ibs-s3,restic-s3")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--work", default=os.path.join(HERE, "work"))
    p.add_argument("--ibs-bin", default=os.path.join(ROOT, "target", "release", "ibs"))
    p.add_argument("--rgw-dir", default=os.environ.get("IBS_TEST_RGW_DIR", "/tmp/ibs-rgw"))
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--keep", action="store_true", help="keep buckets, repositories and restored trees")
    p.add_argument("--results", default=os.path.join(HERE, "results", "s3.json"))
    args = p.parse_args(argv)
    args.ibs_bin = os.path.abspath(args.ibs_bin)
    if not os.access(args.ibs_bin, os.X_OK):
        raise SystemExit(f"s3 bench: no ibs binary at {args.ibs_bin} (cargo build --release -p ibs)")
    if shutil.which("restic") is None:
        bench.ensure_restic()
    gw = s3lib.Gateway(args.rgw_dir)
    work = os.path.join(args.work, "s3")
    os.makedirs(work, exist_ok=True)
    size = gen_dataset.parse_size(args.size)
    dataset = os.path.join(args.work, "dataset")
    parts = args.parts.split(",")
    if "compare" in parts:
        r = subprocess.run([sys.executable, os.path.join(HERE, "gen_dataset.py"), "--size", str(size),
                            "--seed", str(args.seed), "--out", dataset])
        if r.returncode != 0:
            raise SystemExit("s3 bench: dataset generation failed")
    seeds = [100 + i for i in range(args.writers)]
    trees = [os.path.join(args.work, "s3-trees", f"w{i}") for i in range(args.writers)]
    if "writers" in parts:
        for t, s in zip(trees, seeds):
            r = subprocess.run([sys.executable, os.path.join(HERE, "gen_dataset.py"), "--size",
                                str(gen_dataset.parse_size(args.writer_size)), "--seed", str(s), "--out", t])
            if r.returncode != 0:
                raise SystemExit("s3 bench: writer tree generation failed")
    password = secrets.token_urlsafe(24)
    cert = {"cer": os.path.join(work, "bench.cer"), "pfx": os.path.join(work, "bench.pfx"), "password": password}
    for f in (cert["cer"], cert["pfx"]):
        if os.path.exists(f):
            os.remove(f)
    r = subprocess.run([args.ibs_bin, "cert", "new", "--subject", "ibs s3 bench", "--cer", cert["cer"], "--pfx",
                        cert["pfx"], "--bits", "2048"],
                       env={**os.environ, "IBS_PFX_PASSWORD": password}, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"s3 bench: ibs cert new failed:\n{r.stderr}")

    dropper = bench.CacheDropper()
    load_before = os.getloadavg()
    rows, verify, ok = [], {}, True
    for rnd in range(args.repeat):
        if "compare" in parts:
            rr, vv, o = compare_round(args, gw, work, dataset, cert, dropper, rnd)
            rows += rr
            verify.update(vv)
            ok &= o
        if "writers" in parts:
            rr, o = writers_round(args, gw, work, trees, cert, dropper, rnd)
            rows += rr
            ok &= o
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    agg = median_rows(rows)
    data_bytes, data_files = bench.tree_bytes(dataset) if "compare" in parts else (0, 0)
    rgw_version = subprocess.run(["radosgw", "--version"], capture_output=True, text=True).stdout.split(" (")[0]
    meta = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": bench.git_rev(),
            "size": args.size, "seed": args.seed, "dataset_bytes": data_bytes, "dataset_files": data_files,
            "writers": args.writers, "writer_size": args.writer_size, "writer_seeds": seeds,
            "host": f"{os.cpu_count()} CPUs, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM",
            "load_before": " ".join(f"{x:.2f}" for x in load_before),
            "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()), "caches": dropper.note(),
            "repeat": args.repeat, "endpoint": gw.endpoint, "rgw_version": rgw_version.replace("ceph version ", ""),
            "ibs": bench.tool_version([args.ibs_bin, "--version"]), "restic": bench.tool_version(["restic", "version"]),
            "gateway_rss_mib_after": gw.rss_mib()}
    text, targets = tables(agg, meta)
    log("")
    log(text)
    log("")
    log("Requests to the gateway per step (radosgw access log, this run's buckets):")
    log("")
    log(request_table(agg))
    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    with open(args.results, "w") as f:
        json.dump({"meta": meta, "results": rows, "medians": agg, "targets": targets, "verify": verify}, f, indent=1)
    log(f"\ns3 bench: JSON in {args.results}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
