#!/usr/bin/env python3
"""A/B of prune on copies of the repositories a `scale.py --stop-after-forget` run left.

Each variant gets a fresh copy of the stopped run's repository (with its password, which `scale.py` keeps in
`bench.password`, and for ibs its writer state), the page cache is dropped, and the prune is timed as `scale.py` times its steps
(wall, user+sys CPU, peak RSS of the child, repository size after). Variants run in the order
given, `--rounds` times. The copies are deleted after each variant, the originals never touched.

  python3 bench/prune_ab.py --run /work/scale-data/run60/run-60k \\
      --variant old=ibs:/work/bin/ibs-62e24a4 \\
      --variant new=ibs:/work/bin/ibs-new \\
      --variant new-0=ibs:/work/bin/ibs-new:--max-unused=0 \\
      --variant restic=restic --rounds 2

A variant is NAME=ibs:BINARY[:EXTRA-ARG,…] or NAME=restic (`restic prune`, its defaults).
"""
import argparse
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench as B  # noqa: E402


def du(path: str) -> int:
    return B.du_bytes(path)


def run_variant(run: str, name: str, spec: str, scratch: str, dropper) -> dict:
    kind, _, rest = spec.partition(":")
    src = os.path.join(run, kind)
    copy = os.path.join(scratch, f"{name}-copy")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(src, copy, symlinks=True)
    env = dict(os.environ)
    with open(os.path.join(copy, "bench.password")) as f:
        password = f.read()
    logs = os.path.join(scratch, f"prune-{name}")
    if kind == "ibs":
        binary, _, extra = rest.partition(":")
        env["IBS_PFX_PASSWORD"] = password
        env["IBS_STATE_DIR"] = os.path.join(copy, "state")
        cmd = [binary, "repo", "prune", "--repo", os.path.join(copy, "repo"), "--state",
               os.path.join(copy, "state"), "--grace-hours", "0", "--delete-delay-hours", "0"]
        cmd += [a for a in extra.split(",") if a]
        repo = os.path.join(copy, "repo")
    elif kind == "restic":
        repo = os.path.join(copy, "repo")
        env["RESTIC_PASSWORD"] = password
        cmd = ["restic", "prune", "--repo", repo, "--cache-dir", os.path.join(copy, "cache")]
    else:
        raise SystemExit(f"unknown variant kind {kind!r} in {spec!r}")
    dropper.drop()
    r = B.run_measured(cmd, env, None, logs, 7200)
    r.pop("stdout", None)
    r.pop("stderr", None)
    r.update({"variant": name, "spec": spec, "repo_bytes_after": du(repo)})
    shutil.rmtree(copy, ignore_errors=True)
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="the run-<point> folder a --stop-after-forget run left")
    ap.add_argument("--variant", action="append", required=True, metavar="NAME=SPEC")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--scratch", default=None, help="where the copies go (default: beside --run)")
    ap.add_argument("--results", default=None)
    a = ap.parse_args(argv)
    scratch = a.scratch or os.path.join(os.path.dirname(os.path.abspath(a.run)), "prune-ab")
    os.makedirs(scratch, exist_ok=True)
    variants = [v.split("=", 1) for v in a.variant]
    dropper = B.CacheDropper()
    rows = []
    for n in range(a.rounds):
        for name, spec in variants:
            r = run_variant(os.path.abspath(a.run), name, spec, scratch, dropper)
            r["round"] = n + 1
            rows.append(r)
            B.log(f"round {n + 1} {name:10} rc={r['rc']} wall={r['wall']:.2f}s "
                  f"cpu={r.get('user', 0) + r.get('sys', 0):.2f}s rss={r.get('maxrss_kib', 0) / 1024:.1f}MiB "
                  f"repo after={r['repo_bytes_after'] / 2**20:.1f}MiB")
    meta = {"run": os.path.abspath(a.run), "commit": B.git_rev(), "cache": dropper.note(), "cpus": os.cpu_count()}
    if a.results:
        with open(a.results, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print("| round | variant | wall s | CPU s | peak RSS MiB | repo after MiB |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['round']} | {r['variant']} | {r['wall']:.2f} | {r.get('user', 0) + r.get('sys', 0):.2f} | "
              f"{r.get('maxrss_kib', 0) / 1024:.0f} | {r['repo_bytes_after'] / 2**20:.1f} |")
    return 1 if any(r["rc"] != 0 for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
