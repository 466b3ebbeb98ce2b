#!/usr/bin/env python3
"""Scale bench (issue 18): ibs (one or more binaries) against restic on a `gen_scale.py` tree.

Steps, interleaved across tools so every tool backs up the very same tree:
  full            first backup into a fresh repository
  no-change       the same tree again
  changed         after day 1's changes (`gen_scale.py --day 1`)
  restore         of the last backup into an empty folder (verified with --verify)
  backup N        days 2 … N-1: one backup after each day's changes (repository growth per day)
  forget          the older half of the backups (both tools: `forget --keep-last N/2`)
  prune           ibs: `repo prune --grace-hours 0 --delete-delay-hours 0` (deletes at once, as restic's
                  prune does, instead of keeping what it removes in the grace area for 24 h); restic: `prune`
  check           `check --read-data` (ibs with the .pfx: every chunk decrypted and verified, as restic does)
plus `stat walk`: a cold `find DATASET -printf '%s %T@ %i\\n'` (the floor of a no-change backup).
With --stop-after-forget the run ends after forget and leaves the repositories in --work; a later
`--resume RESULTS` (same --point, --work, --tools and --tool-bin names; a binary may be newer) runs prune
and check on them and appends those rows to RESULTS, noting the resumed binaries and time in its meta.
With --no-change-rounds N only the stat walk, full and no-change steps run, the last two N times
(A/B of the no-change backup: `--tools ibs-a,ibs-b --tool-bin ibs-a=… --tool-bin ibs-b=…`).

Each step: wall s, user+sys CPU s, peak RSS (the child's own ru_maxrss from wait4, as `/usr/bin/time -v`
reports it) and repository size after the step (`du -sb`). Page cache dropped before every step.
Results go to --results (JSON) and a Markdown table on stdout.

  python3 bench/scale.py --point 1m --dataset bench/work/scale/1m --tools ibs,restic
  python3 bench/scale.py --point 60k --tool-bin ibs-base=/tmp/ibs-base --tools ibs-base,ibs,restic
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench as B  # noqa: E402


class Args:
    threads = 0
    timeout = 7200


class KeepsPassword:
    """A tool whose throwaway bench password (ibs: the .pfx's; restic: the repository's) is kept in
    `bench.password` (0600) beside its repository, for a later --resume or `prune_ab.py`."""

    def password_file(self):
        return os.path.join(self.dir, "bench.password")

    def setup(self):
        super().setup()
        fd = os.open(self.password_file(), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.password)

    def reopen(self):
        """Takes the password the stopped run left."""
        with open(self.password_file()) as f:
            self.password = f.read()


class Ibs(KeepsPassword, B.Ibs):
    def __init__(self, name, binary, work, dataset):
        self.name = name
        a = Args()
        a.ibs_bin = binary
        super().__init__(a, work, dataset)

    def run(self, step, cmd):
        return B.run_measured(cmd, self.env(), None, os.path.join(self.logs, f"{step}-{self.name}"), self.timeout)


    def forget(self, keep):
        return self.run("forget", [self.bin, "repo", "forget", "--repo", self.repo, "--keep-last", str(keep)])

    def prune(self):
        return self.run("prune", [self.bin, "repo", "prune", "--repo", self.repo, "--grace-hours", "0",
                                     "--delete-delay-hours", "0"])

    def check(self):
        return self.run("check", [self.bin, "repo", "check", "--repo", self.repo, "--read-data", "--pfx", self.pfx])


class Restic(KeepsPassword, B.Restic):
    def __init__(self, work, dataset):
        a = Args()
        super().__init__(a, work, dataset)

    def run(self, step, args):
        return B.run_measured(["restic"] + args + self.common(), self.env(), None,
                              os.path.join(self.logs, f"{step}-{self.name}"), self.timeout)

    def forget(self, keep):
        return self.run("forget", ["forget", "--keep-last", str(keep)])

    def prune(self):
        return self.run("prune", ["prune"])

    def check(self):
        return self.run("check", ["check", "--read-data"])


def gen(dataset, point, seed, day=0, hosts=0):
    cmd = [sys.executable, os.path.join(HERE, "gen_scale.py"), dataset, "--point", point, "--seed", str(seed)]
    if day:
        cmd += ["--day", str(day)]
    if hosts:
        cmd += ["--hosts", str(hosts)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        B.die(f"gen_scale failed: {r.stderr}")
    B.log(r.stdout.strip())
    return json.loads(r.stdout)


def tree_figures(path):
    r = subprocess.run(["find", path, "-printf", "%y %s\n"], capture_output=True, text=True)
    files = dirs = links = size = 0
    for line in r.stdout.splitlines():
        t, s = line.split()
        if t == "f":
            files += 1
            size += int(s)
        elif t == "d":
            dirs += 1
        elif t == "l":
            links += 1
    return {"files": files, "dirs": dirs, "symlinks": links, "bytes": size}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--point", default="60k")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hosts", type=int, default=0, help="fewer hosts (quick runs)")
    ap.add_argument("--work", default=os.path.join(HERE, "work", "scale"))
    ap.add_argument("--dataset", help="an existing pristine tree of this point and seed (it is changed)")
    ap.add_argument("--tools", default="ibs,restic")
    ap.add_argument("--tool-bin", action="append", default=[], help="NAME=PATH: an ibs binary under a tool name")
    ap.add_argument("--backups", type=int, default=30, help="backups before forget+prune of the older half (≥ 3)")
    ap.add_argument("--verify", action="store_true", help="compare each restored tree with the source")
    ap.add_argument("--results", default=None)
    ap.add_argument("--no-change-rounds", type=int, default=0,
                    help="A/B of the no-change backup only: after the full backups, N rounds of a cold stat walk "
                         "then each tool's no-change backup; no other step")
    ap.add_argument("--stop-after-forget", action="store_true",
                    help="end the run after forget, leaving each tool's repository in --work as it is before "
                         "prune (A/B of prune on copies of it)")
    ap.add_argument("--resume", metavar="RESULTS",
                    help="prune and check the repositories a --stop-after-forget run left, appending to RESULTS")
    a = ap.parse_args(argv)

    work = os.path.abspath(os.path.join(a.work, f"run-{a.point}"))
    if a.resume:
        return resume(a, work)
    if os.path.exists(work):
        shutil.rmtree(work)
    os.makedirs(os.path.join(work, "logs"))
    dataset = os.path.abspath(a.dataset) if a.dataset else os.path.join(work, "dataset")
    if not a.dataset:
        gen(dataset, a.point, a.seed, hosts=a.hosts)
    tools = make_tools(a, work, dataset)
    for t in tools:
        os.makedirs(t.logs, exist_ok=True)
        t.setup()
    dropper = B.CacheDropper()
    rows = []
    fig = tree_figures(dataset)
    B.log(f"dataset: {fig}")
    record = recorder(rows)
    each = stepper(tools, dropper, record)

    def stat_walk(n=0):
        """The floor of a no-change backup: a cold `find -printf` of the tree."""
        dropper.drop()
        r = B.run_measured(["find", dataset, "-printf", "%s %T@ %i\n"], dict(os.environ), None,
                           os.path.join(work, "logs", f"statwalk{n or ''}"), 3600)
        r.pop("stdout", None)
        r.pop("stderr", None)
        rows.append(r | {"step": "stat walk", "tool": "find", "repo_bytes": 0})
        B.log(f"stat walk: {r['wall']:.2f}s load={r['load1_before']:.2f}")

    stat_walk()
    each("full", lambda t: t.backup("full"))
    each("no-change", lambda t: t.backup("no-change"))
    for n in range(1, a.no_change_rounds):
        stat_walk(n)
        each("no-change", lambda t: t.backup(f"no-change{n}"))
    if a.no_change_rounds:
        return finish(a, meta_of(a, fig, [], tools, dropper), rows, {})
    mut = [gen(dataset, a.point, a.seed, day=1, hosts=a.hosts)]
    each("changed", lambda t: t.backup("changed"))
    verify = {}
    for t in tools:
        dropper.drop()
        record("restore", t, t.restore())
        if a.verify:
            src = B.manifest(dataset)
            dst = B.manifest(t.restored_root())
            errs, warns = B.compare(src, dst)
            verify[t.name] = {"errors": errs[:20], "n_errors": len(errs), "warnings": len(warns)}
            B.log(f"verify {t.name}: {len(errs)} differences")
    # Removed only once every tool has restored: ext4 makes creating files slow for minutes after
    # a large tree is deleted (it skips inodes freed in the last 60-300 s, reading each one's
    # inode table block), so a restore right after another tool's tree was removed pays for it.
    for t in tools:
        shutil.rmtree(t.restore_dir, ignore_errors=True)
    for day in range(2, a.backups):
        mut.append(gen(dataset, a.point, a.seed, day=day, hosts=a.hosts))
        each(f"backup {day + 1}", lambda t: t.backup(f"backup{day + 1}"))
    each("forget", lambda t: t.forget(max(1, a.backups // 2)))
    if not a.stop_after_forget:
        each("prune", lambda t: t.prune())
        each("check", lambda t: t.check())
    return finish(a, meta_of(a, fig, mut, tools, dropper), rows, verify)


def make_tools(a, work, dataset) -> list:
    bins = dict(kv.split("=", 1) for kv in a.tool_bin)
    tools = []
    for name in a.tools.split(","):
        if name == "restic":
            tools.append(Restic(work, dataset))
        else:
            tools.append(Ibs(name, os.path.abspath(bins.get(name, os.path.join(HERE, "..", "target", "release", "ibs"))),
                             work, dataset))
    return tools


def recorder(rows):
    """Records one tool's step in `rows` and logs it."""
    def record(step, t, r):
        r.pop("stdout", None)
        r.pop("stderr", None)
        r.update({"step": step, "tool": t.name, "repo_bytes": t.repo_size(), "load1_after": os.getloadavg()[0]})
        rows.append(r)
        B.log(f"{step:12} {t.name:9} rc={r['rc']} wall={r['wall']:.2f}s cpu={r.get('user', 0) + r.get('sys', 0):.2f}s "
              f"rss={r.get('maxrss_kib', 0) / 1024:.1f}MiB repo={r['repo_bytes'] / 2**20:.1f}MiB load={r['load1_before']:.2f}")
        if r["rc"] != 0:
            B.log(f"  FAILED: see {os.path.join(t.logs, step + '-' + t.name)}.err")
    return record


def stepper(tools, dropper, record):
    """Runs one step for every tool in turn, page cache dropped before each."""
    def each(step, fn):
        for t in tools:
            dropper.drop()
            record(step, t, fn(t))
    return each


def resume(a, work) -> int:
    """Prune and check on what a --stop-after-forget run left in `work`; rows appended to a.resume."""
    with open(a.resume) as f:
        done = json.load(f)
    if any(r["step"] in ("prune", "check") for r in done["rows"]):
        raise SystemExit(f"{a.resume} already has prune or check rows")
    tools = make_tools(a, work, os.path.join(work, "dataset"))
    for t in tools:
        t.reopen()
    dropper = B.CacheDropper()
    rows = done["rows"]
    each = stepper(tools, dropper, recorder(rows))
    each("prune", lambda t: t.prune())
    each("check", lambda t: t.check())
    meta = done["meta"]
    meta["resumed"] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": B.git_rev(),
                       "steps": ["prune", "check"], "cache": dropper.note(),
                       "tools": {t.name: B.tool_version([t.bin, "--version"] if hasattr(t, "bin") else ["restic", "version"])
                                 for t in tools}}
    a.results = a.resume
    return finish(a, meta, rows, done["verify"])


def meta_of(a, fig, mut, tools, dropper) -> dict:
    return {"point": a.point, "seed": a.seed, "dataset": fig, "mutations": mut, "backups": a.backups,
            "no_change_rounds": a.no_change_rounds,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": B.git_rev(),
            "cpus": os.cpu_count(), "cache": dropper.note(),
            "tools": {t.name: B.tool_version([t.bin, "--version"] if hasattr(t, "bin") else ["restic", "version"])
                      for t in tools}}


def finish(a, meta, rows, verify) -> int:
    out = a.results or os.path.join(HERE, "results", f"scale-{a.point}.json")
    with open(out, "w") as f:
        json.dump({"meta": meta, "rows": rows, "verify": verify}, f, indent=1)
    print(table(meta, rows))
    return 1 if any(r["rc"] != 0 for r in rows) or any(v["n_errors"] for v in verify.values()) else 0


def table(meta, rows) -> str:
    d = meta["dataset"]
    out = [f"Point {meta['point']} (seed {meta['seed']}): {d['files']} files, {d['dirs']} folders, {d['symlinks']} symlinks, "
           f"{d['bytes'] / 2**20:.0f} MiB; {meta['date']}, commit {meta['commit']}; {meta['cache']}", "",
           "| step | tool | wall s | CPU s | peak RSS MiB | repo MiB | load before |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        cpu = r.get("user", 0) + r.get("sys", 0)
        fail = "" if r["rc"] == 0 else " FAILED"
        out.append(f"| {r['step']}{fail} | {r['tool']} | {r['wall']:.2f} | {cpu:.2f} | {r.get('maxrss_kib', 0) / 1024:.0f} | "
                   f"{r['repo_bytes'] / 2**20:.1f} | {r.get('load1_before', 0):.1f} |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
