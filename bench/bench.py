#!/usr/bin/env python3
"""ibs vs restic benchmark: full, no-change and small-change backups, then a restore.

Started by bench/run.sh (see bench/README.md). Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import secrets
import shutil
import stat
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in bench/
import gen_dataset  # noqa: E402

MIB = 1024 * 1024
STEPS = [
    ("full", "full backup"),
    ("nochange", "no-change backup"),
    ("small", "small-change backup"),
    ("restore", "restore"),
]
# targets: ibs vs restic
SPEED_TARGETS = {"full": 2.5, "nochange": 5.0, "restore": 3.0}


def log(msg: str) -> None:
    print(msg, flush=True)


def die(msg: str, code: int = 1) -> None:
    print(f"bench: ERROR: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


# ----------------------------------------------------------------------------------------------
# setup


def build_ibs(args) -> None:
    cmd = ["cargo", "build", "--release", "-p", "ibs", "--manifest-path", os.path.join(ROOT, "Cargo.toml")]
    log(f"bench: building ibs: {' '.join(cmd)}")
    t = time.time()
    r = subprocess.run(cmd)
    if r.returncode != 0:
        die(f"cargo build failed (exit {r.returncode})")
    log(f"bench: build done in {time.time() - t:.0f} s")


def ensure_restic() -> None:
    if shutil.which("restic"):
        return
    log("bench: restic not found, installing the Debian package")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["apt-get", "install", "-y", "restic"], env=env)
    if r.returncode != 0:
        subprocess.run(["apt-get", "update"], env=env)
        r = subprocess.run(["apt-get", "install", "-y", "restic"], env=env)
    if r.returncode != 0 or not shutil.which("restic"):
        die("could not install restic (apt-get install -y restic)")


def tool_version(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except Exception as e:  # noqa: BLE001
        return f"unknown ({e})"


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except Exception:  # noqa: BLE001
        return "unknown"


# ----------------------------------------------------------------------------------------------
# measuring

class CacheDropper:
    PATH = "/proc/sys/vm/drop_caches"

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.successes = 0

    def drop(self) -> bool:
        os.sync()
        try:
            with open(self.PATH, "w") as f:
                f.write("3\n")
            self.successes += 1
            return True
        except OSError as e:
            self.failures.append(f"{type(e).__name__}: {e.strerror or e}")
            return False

    def note(self) -> str:
        if not self.failures:
            return f"page cache dropped before every step (sync; echo 3 > /proc/sys/vm/drop_caches; {self.successes} times)"
        return (f"WARNING: page cache was NOT dropped before {len(self.failures)} of "
                f"{len(self.failures) + self.successes} steps ({self.failures[0]}): reads may come from RAM")


def run_measured(cmd: list[str], env: dict, cwd: str | None, logbase: str, timeout: float) -> dict:
    """Runs one tool process; wall time, CPU and the tool's own peak RSS.

    The peak RSS is what `/usr/bin/time` reports for the tool, its child. A process forked from
    this Python process directly would report at least Python's own resident size (Linux keeps a
    process's peak across fork and exec), which at a large tree is more than a small step uses."""
    with open(logbase + ".out", "wb") as out, open(logbase + ".err", "wb") as err:
        load = os.getloadavg()[0]
        rss_file = logbase + ".rss"
        timed = ["/usr/bin/time", "-f", "%M", "-o", rss_file] + list(cmd)
        t0 = time.perf_counter()
        p = subprocess.Popen(timed, env=env, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        killed = []

        def kill():
            killed.append(True)
            try:
                os.killpg(p.pid, 9)  # the tool too, not only /usr/bin/time
            except OSError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
    with open(logbase + ".out", "rb") as f:
        stdout = f.read().decode(errors="replace")
    with open(logbase + ".err", "rb") as f:
        stderr = f.read().decode(errors="replace")
    try:
        with open(rss_file) as f:
            maxrss = int(f.read().split()[-1])
    except (OSError, ValueError, IndexError):
        maxrss = 0
    return {"cmd": cmd, "rc": p.returncode, "wall": wall, "maxrss_kib": maxrss,
            "user": ru.ru_utime, "sys": ru.ru_stime, "stdout": stdout, "stderr": stderr,
            "timed_out": bool(killed), "load1_before": load}


def du_bytes(path: str) -> int:
    r = subprocess.run(["du", "-sb", path], capture_output=True, text=True)
    if r.returncode != 0:
        return -1
    return int(r.stdout.split()[0])


def tree_bytes(path: str) -> tuple[int, int]:
    """(apparent bytes of regular files, number of regular files)."""
    total = n = 0
    for dp, dn, fn in os.walk(path):
        for name in fn:
            st = os.lstat(os.path.join(dp, name))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
                n += 1
    return total, n


# ----------------------------------------------------------------------------------------------
# verifying a restore


def manifest(root: str) -> dict[str, tuple]:
    """path -> ("file", sha256, size, mode) | ("symlink", target) | ("dir", mode) | ("other",)."""
    m: dict[str, tuple] = {}
    for dp, dn, fn in os.walk(root):
        rel_dir = os.path.relpath(dp, root)
        for name in dn + fn:
            full = os.path.join(dp, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                m[rel] = ("symlink", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                m[rel] = ("dir", stat.S_IMODE(st.st_mode))
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    h = hashlib.file_digest(f, "sha256").hexdigest()
                m[rel] = ("file", h, st.st_size, stat.S_IMODE(st.st_mode))
            else:
                m[rel] = ("other",)
    return m


def compare(src: dict, dst: dict) -> tuple[list[str], list[str]]:
    """(errors, warnings). Content, type, symlink target and presence are errors; modes warnings."""
    errors, warnings = [], []
    for p in sorted(src.keys() | dst.keys()):
        a, b = src.get(p), dst.get(p)
        if a is None:
            errors.append(f"extra in restore: {p} {b[0]}")
        elif b is None:
            errors.append(f"missing in restore: {p} ({a[0]})")
        elif a[0] != b[0]:
            errors.append(f"type differs: {p}: {a[0]} vs {b[0]}")
        elif a[0] == "file":
            if a[2] != b[2]:
                errors.append(f"size differs: {p}: {a[2]} vs {b[2]}")
            elif a[1] != b[1]:
                errors.append(f"content differs: {p}")
            if a[3] != b[3]:
                warnings.append(f"mode differs: {p}: {a[3]:o} vs {b[3]:o}")
        elif a[0] == "symlink" and a[1] != b[1]:
            errors.append(f"symlink target differs: {p}: {a[1]!r} vs {b[1]!r}")
        elif a[0] == "dir" and a[1] != b[1]:
            warnings.append(f"mode differs: {p}/: {a[1]:o} vs {b[1]:o}")
    return errors, warnings


# ----------------------------------------------------------------------------------------------
# the tools


# Deleting a tree of thousands of files makes ext4 slower to create files for about 30 s: its inode
# allocator skips inodes freed less than 30 s ago ("recently_deleted"), scanning for others. A
# restore measured right after the harness deleted a previous round's trees ran 20-40 % slower, in
# kernel time. So between rounds trees are moved into a trash folder (a rename frees no inode) and
# deleted at the end of the run; if the harness deleted anything earlier in the run, the restore
# step waits until SETTLE_S seconds have passed since.
SETTLE_S = 31.0
_last_delete = [0.0]


def delete_tree(path: str) -> None:
    if os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=True)
        _last_delete[0] = time.monotonic()


def trash(work: str, path: str) -> None:
    """Moves `path` out of the way without freeing its inodes (emptied by delete_tree at the end)."""
    if os.path.lexists(path):
        bin_ = os.path.join(work, "trash")
        os.makedirs(bin_, exist_ok=True)
        os.rename(path, os.path.join(bin_, f"{os.path.basename(path)}-{time.monotonic_ns()}"))


def settle() -> None:
    wait = _last_delete[0] + SETTLE_S - time.monotonic()
    if _last_delete[0] and wait > 0:
        log(f"bench: waiting {wait:.0f} s after deleting old trees (ext4 inode allocation, see SETTLE_S)")
        time.sleep(wait)


class Tool:
    name = ""

    def __init__(self, args, work: str, dataset: str):
        self.args, self.dataset = args, dataset
        self.dir = os.path.join(work, self.name)
        self.repo = os.path.join(self.dir, "repo")
        self.logs = os.path.join(work, "logs")
        self.restore_dir = os.path.join(work, f"restore-{self.name}")
        self.timeout = args.timeout

    def base_env(self) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RESTIC_", "IBS_", "GOMAXPROCS", "RUST_LOG"))}
        return env

    def setup(self) -> None:
        raise NotImplementedError

    def backup(self, step: str) -> dict:
        raise NotImplementedError

    def restore(self) -> dict:
        raise NotImplementedError

    def restored_root(self) -> str:
        raise NotImplementedError

    def repo_size(self) -> int:
        return du_bytes(self.repo)

    def state_size(self) -> int:
        raise NotImplementedError

    def setup_cmd(self, cmd, env, what):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            die(f"{self.name} {what} failed (exit {r.returncode}):\n  {' '.join(cmd)}\n{r.stdout}{r.stderr}")
        return r


class Ibs(Tool):
    name = "ibs"

    def __init__(self, args, work, dataset):
        super().__init__(args, work, dataset)
        self.bin = args.ibs_bin
        self.state = os.path.join(self.dir, "state")
        self.cer = os.path.join(self.dir, "bench.cer")
        self.pfx = os.path.join(self.dir, "bench.pfx")
        self.password = secrets.token_urlsafe(24)
        self.backup_id = None

    def env(self) -> dict:
        e = self.base_env()
        e["IBS_PFX_PASSWORD"] = self.password
        # restore gets no --state in the contract: point the default at the same state folder
        e["IBS_STATE_DIR"] = self.state
        return e

    def threads(self) -> list[str]:
        return ["--threads", str(self.args.threads)] if self.args.threads else []

    def setup(self) -> None:
        os.makedirs(self.repo, exist_ok=True)  # the location must exist; ibs creates repo/MASBackup
        self.setup_cmd([self.bin, "cert", "new", "--subject", "ibs bench", "--cer", self.cer, "--pfx", self.pfx,
                        "--bits", "2048"], self.env(), "cert new")
        self.setup_cmd([self.bin, "repo", "init", "--repo", self.repo, "--cert", self.cer, "--state", self.state],
                       self.env(), "repo init")

    def backup(self, step: str) -> dict:
        cmd = [self.bin, "repo", "backup", "--repo", self.repo, "--state", self.state,
               "--source", f"data={self.dataset}"] + self.threads()
        r = run_measured(cmd, self.env(), None, os.path.join(self.logs, f"{step}-{self.name}"), self.timeout)
        lines = [ln.strip() for ln in r["stdout"].splitlines() if ln.strip()]
        if r["rc"] == 0:
            if not lines:
                r["error"] = "backup printed no backup id"
            else:
                self.backup_id = lines[-1]
                r["backup_id"] = self.backup_id
        return r

    def restore(self) -> dict:
        if not self.backup_id:
            return {"rc": -1, "error": "no backup id from the previous step", "wall": 0, "maxrss_kib": 0}
        cmd = [self.bin, "repo", "restore", "--repo", self.repo, "--backup", self.backup_id,
               "--target", self.restore_dir, "--pfx", self.pfx] + self.threads()
        return run_measured(cmd, self.env(), None, os.path.join(self.logs, f"restore-{self.name}"), self.timeout)

    def restored_root(self) -> str:
        return os.path.join(self.restore_dir, "data")

    def state_size(self) -> int:
        return du_bytes(self.state)


class Restic(Tool):
    name = "restic"

    def __init__(self, args, work, dataset):
        super().__init__(args, work, dataset)
        self.cache = os.path.join(self.dir, "cache")
        self.password = secrets.token_urlsafe(24)

    def env(self) -> dict:
        e = self.base_env()
        e["RESTIC_PASSWORD"] = self.password
        if self.args.threads:
            e["GOMAXPROCS"] = str(self.args.threads)
        return e

    def common(self) -> list[str]:
        return ["--repo", self.repo, "--cache-dir", self.cache]

    def setup(self) -> None:
        os.makedirs(self.dir, exist_ok=True)
        self.setup_cmd(["restic", "init"] + self.common(), self.env(), "init")
        r = subprocess.run(["restic", "cat", "config"] + self.common(), env=self.env(), capture_output=True,
                           text=True)
        try:
            self.repo_version = json.loads(r.stdout).get("version")
        except ValueError:
            self.repo_version = None

    def backup(self, step: str) -> dict:
        cmd = ["restic", "backup"] + self.common() + ["."]
        return run_measured(cmd, self.env(), self.dataset, os.path.join(self.logs, f"{step}-{self.name}"),
                            self.timeout)

    def restore(self) -> dict:
        cmd = ["restic", "restore", "latest"] + self.common() + ["--target", self.restore_dir]
        return run_measured(cmd, self.env(), None, os.path.join(self.logs, f"restore-{self.name}"), self.timeout)

    def restored_root(self) -> str:
        return self.restore_dir

    def state_size(self) -> int:
        return du_bytes(self.cache)


TOOLS = {"ibs": Ibs, "restic": Restic}


# ----------------------------------------------------------------------------------------------
# reporting


def fmt(v, spec=".2f", none="—"):
    return none if v is None else format(v, spec)


def results_tables(res: dict) -> str:
    m = res["meta"]
    lines = []
    lines.append(f"Dataset: {m['dataset']['bytes'] / MIB:.0f} MiB apparent in {m['dataset']['files']} files "
                 f"(seed {m['seed']}, size {m['size']}), on disk {m['dataset']['disk_bytes'] / MIB:.0f} MiB; "
                 f"small change: {m.get('mutation_summary', 'n/a')}")
    lines.append(f"Tools: {'; '.join(f'{k} = {v}' for k, v in m['versions'].items())}")
    lines.append(f"Host: {m['host']['cpus']} CPUs, {m['host']['mem_gib']} GiB RAM; threads: "
                 f"{m['threads'] or 'tool defaults'}; load average before steps: "
                 f"{m['load_min']:.2f}–{m['load_max']:.2f}; commit {m['commit']}; {m['date']}")
    lines.append(f"Caches: {m['cache_note']}")
    if res.get("repeat", 1) > 1:
        lines.append(f"Each figure is the median of {res['repeat']} rounds (fresh repositories each round); "
                     "every round's numbers are in the JSON")
    lines.append("")
    lines.append("| step | tool | wall s | MB/s | peak RSS MiB | repo size MiB | CPU s |")
    lines.append("|---|---|---:|---:|---:|---:|---:|")
    for r in res["results"]:
        if r.get("error"):
            lines.append(f"| {r['step_label']} | {r['tool']} | FAILED | — | — | — | — |")
            continue
        lines.append(f"| {r['step_label']} | {r['tool']} | {r['wall_s']:.2f} | {r['mb_s']:.1f} | "
                     f"{r['peak_rss_mib']:.1f} | {r['repo_mib']:.1f} | {r['cpu_s']:.2f} |")
    if res["ratios"]:
        lines.append("")
        lines.append("ibs vs restic (speedup = restic time / ibs time; RSS and repo ratios = ibs / restic):")
        lines.append("")
        lines.append("| step | speedup | speed target | RSS ratio | RSS target (≤ 1) | repo size ratio | repo target (≤ 1) |")
        lines.append("|---|---:|---|---:|---|---:|---|")
        for q in res["ratios"]:
            st = q["speed_target"]
            speed_t = f"≥ {st}× {q['speed_pass']}" if st else "—"
            lines.append(f"| {q['step_label']} | {fmt(q['speedup'])}× | {speed_t} | {fmt(q['rss_ratio'])} | "
                         f"{q['rss_pass']} | {fmt(q['repo_ratio'])} | {q['repo_pass']} |")
        n_pass = sum(1 for t in res["targets"] if t["result"] == "PASS")
        lines.append("")
        lines.append(f"Targets: {n_pass} of {len(res['targets'])} PASS"
                     + ("" if n_pass == len(res["targets"]) else
                        " — FAIL: " + ", ".join(t["name"] for t in res["targets"] if t["result"] != "PASS")))
    v = res.get("verify", {})
    if v:
        lines.append("")
        lines.append("Restore verification (sha256 of every file, symlink targets, directories): " + "; ".join(
            f"{k}: {'OK' if x['ok'] else 'FAILED (' + str(len(x['errors'])) + ' differences)'}"
            + (f", {x['n_warnings']} mode warnings" if x.get("n_warnings") else "") for k, x in v.items()))
    return "\n".join(lines)


def compute_ratios(res: dict) -> None:
    by = {(r["step"], r["tool"]): r for r in res["results"]}
    res["ratios"], res["targets"] = [], []
    for step, label in STEPS:
        a, b = by.get((step, "ibs")), by.get((step, "restic"))
        if not a or not b:
            continue
        ok = not a.get("error") and not b.get("error")
        q = {"step": step, "step_label": label,
             "speedup": b["wall_s"] / a["wall_s"] if ok and a["wall_s"] > 0 else None,
             "rss_ratio": a["peak_rss_mib"] / b["peak_rss_mib"] if ok and b["peak_rss_mib"] else None,
             "repo_ratio": a["repo_mib"] / b["repo_mib"] if ok and b["repo_mib"] else None,
             "speed_target": SPEED_TARGETS.get(step)}

        def verdict(value, good):
            return "FAIL" if value is None else ("PASS" if good(value) else "FAIL")

        q["speed_pass"] = verdict(q["speedup"], lambda x: x >= q["speed_target"]) if q["speed_target"] else None
        q["rss_pass"] = verdict(q["rss_ratio"], lambda x: x <= 1.0)
        q["repo_pass"] = verdict(q["repo_ratio"], lambda x: x <= 1.0)
        res["ratios"].append(q)
        if q["speed_target"]:
            res["targets"].append({"name": f"{label} speedup ≥ {q['speed_target']}×", "value": q["speedup"],
                                   "result": q["speed_pass"]})
        res["targets"].append({"name": f"{label} peak RSS ibs ≤ restic", "value": q["rss_ratio"],
                               "result": q["rss_pass"]})
        if step != "restore":  # restore does not change the repository
            res["targets"].append({"name": f"{label} repo size ibs ≤ restic", "value": q["repo_ratio"],
                                   "result": q["repo_pass"]})


def update_readme(text: str) -> None:
    path = os.path.join(HERE, "README.md")
    try:
        with open(path) as f:
            s = f.read()
    except OSError:
        return
    a, b = "<!-- last-results:start -->", "<!-- last-results:end -->"
    if a not in s or b not in s:
        return
    head, rest = s.split(a, 1)
    _, tail = rest.split(b, 1)
    with open(path, "w") as f:
        f.write(head + a + "\n" + text + "\n" + b + tail)


# ----------------------------------------------------------------------------------------------
# main


def run_round(args, size: int, work: str, dataset: str, insts: list, dropper: CacheDropper, rnd: int):
    """Generates/syncs the dataset, sets up fresh repositories and runs every step for every tool."""
    r = subprocess.run([sys.executable, os.path.join(HERE, "gen_dataset.py"), "--size", str(size),
                        "--seed", str(args.seed), "--out", dataset])
    if r.returncode != 0:
        die("dataset generation failed")
    os.makedirs(os.path.join(work, "logs"), exist_ok=True)
    for tool in insts:
        for p in (tool.dir, tool.restore_dir):  # fresh repositories; restore targets must not exist
            delete_tree(p)
        log(f"bench: setting up {tool.name} repository in {tool.repo}")
        tool.setup()

    results: list[dict] = []
    verify: dict = {}
    ok = True
    mutation = None
    src_manifest = None
    data_bytes = data_files = None
    for step, label in STEPS:
        if step == "small":
            r = subprocess.run([sys.executable, os.path.join(HERE, "gen_dataset.py"), "--mutate", "small",
                                "--seed", str(args.seed), "--out", dataset])
            if r.returncode != 0:
                die("--mutate small failed")
            mutation = (gen_dataset.read_marker(dataset) or {}).get("mutation")
        if step in ("full", "small"):
            data_bytes, data_files = tree_bytes(dataset)
        if step == "restore":
            log("bench: hashing the source tree for verification")
            src_manifest = manifest(dataset)
            settle()
        for tool in insts:
            dropped = dropper.drop()
            log(f"bench: [{label}] {tool.name} ...")
            m = tool.restore() if step == "restore" else tool.backup(step)
            row = {"round": rnd, "step": step, "step_label": label, "tool": tool.name, "cache_dropped": dropped,
                   "dataset_bytes": data_bytes, "rc": m.get("rc"), "cmd": m.get("cmd"),
                   "load1_before": m.get("load1_before"), "user_s": m.get("user"), "sys_s": m.get("sys")}
            if m.get("rc") != 0 or m.get("error"):
                err = m.get("error") or f"exit code {m.get('rc')}" + (" (timed out)" if m.get("timed_out") else "")
                row["error"] = err
                tail = "\n".join((m.get("stderr") or "").splitlines()[-15:])
                log(f"bench: [{label}] {tool.name} FAILED: {err}\n{tail}")
                ok = False
            else:
                row.update({"wall_s": m["wall"], "mb_s": data_bytes / 1e6 / m["wall"],
                            "cpu_s": m["user"] + m["sys"],
                            "peak_rss_mib": m["maxrss_kib"] / 1024.0})
                if m.get("backup_id"):
                    row["backup_id"] = m["backup_id"]
            row["repo_bytes"] = tool.repo_size()
            row["repo_mib"] = row["repo_bytes"] / MIB
            row["state_bytes"] = tool.state_size()
            results.append(row)
            if not row.get("error"):
                log(f"bench: [{label}] {tool.name}: {row['wall_s']:.2f} s, {row['mb_s']:.1f} MB/s, "
                    f"peak RSS {row['peak_rss_mib']:.1f} MiB, repo {row['repo_mib']:.1f} MiB "
                    f"(CPU user {row['user_s']:.1f} s + sys {row['sys_s']:.1f} s, "
                    f"load before {row['load1_before']:.2f})")
            if step == "restore" and not row.get("error"):
                root = tool.restored_root()
                dst = manifest(root) if os.path.isdir(root) else {}
                errors, warnings = compare(src_manifest, dst)
                verify[tool.name] = {"ok": not errors, "errors": errors[:200], "n_errors": len(errors),
                                     "warnings": warnings[:50], "n_warnings": len(warnings), "root": root,
                                     "round": rnd}
                if errors:
                    ok = False
                    log("")
                    log("#" * 78)
                    log(f"# RESTORE VERIFICATION FAILED for {tool.name}: {len(errors)} differences "
                        f"between {dataset} and {root}")
                    for e in errors[:20]:
                        log(f"#   {e}")
                    log("#" * 78)
                    log("")
                else:
                    log(f"bench: restore of {tool.name} verified: {len(src_manifest)} entries identical"
                        + (f" ({len(warnings)} mode warnings, e.g. {warnings[0]})" if warnings else ""))
    return results, verify, mutation, ok


def aggregate(rows: list[dict], repeat: int) -> list[dict]:
    """One row per (step, tool): the median over rounds of wall time, peak RSS and repo size."""
    import statistics
    if repeat == 1:
        return rows
    out = []
    for step, label in STEPS:
        for tool in dict.fromkeys(r["tool"] for r in rows):
            rs = [r for r in rows if r["step"] == step and r["tool"] == tool]
            if not rs:
                continue
            good = [r for r in rs if not r.get("error")]
            row = {"step": step, "step_label": label, "tool": tool, "rounds": len(rs),
                   "dataset_bytes": rs[-1]["dataset_bytes"], "cmd": rs[-1]["cmd"],
                   "load1_before": max(r["load1_before"] or 0 for r in rs)}
            if len(good) < len(rs):
                row["error"] = "; ".join(r["error"] for r in rs if r.get("error"))
            else:
                for k in ("wall_s", "peak_rss_mib", "repo_mib", "repo_bytes", "state_bytes", "user_s", "sys_s",
                          "cpu_s"):
                    row[k] = statistics.median(r[k] for r in good)
                row["wall_s_all"] = [round(r["wall_s"], 3) for r in good]
                row["mb_s"] = row["dataset_bytes"] / 1e6 / row["wall_s"]
            out.append(row)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="ibs vs restic backup benchmark")
    ap.add_argument("--size", default="1G", help="dataset size (default 1G), e.g. 128M")
    ap.add_argument("--seed", type=int, default=1, help="dataset seed (default 1)")
    ap.add_argument("--tools", default="ibs,restic", help="comma-separated: ibs,restic (default both)")
    ap.add_argument("--work", default=os.path.join(HERE, "work"), help="work folder (default bench/work)")
    ap.add_argument("--keep", action="store_true", help="keep repositories and restored trees afterwards")
    ap.add_argument("--threads", type=int, default=0,
                    help="worker threads: ibs --threads N, restic GOMAXPROCS=N (default: tool defaults)")
    ap.add_argument("--ibs-bin", default=os.path.join(ROOT, "target", "release", "ibs"))
    ap.add_argument("--no-build", action="store_true", help="do not run cargo build (use --ibs-bin as it is)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run the whole sequence N times (fresh repositories each time) and report medians")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds before a tool step is killed")
    ap.add_argument("--results", default=os.path.join(HERE, "results", "latest.json"))
    ap.add_argument("--no-readme", action="store_true", help="do not fill the 'Last results' section of README.md")
    args = ap.parse_args(argv)

    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    for t in tools:
        if t not in TOOLS:
            die(f"unknown tool {t!r} (known: {', '.join(TOOLS)})", 2)
    size = gen_dataset.parse_size(args.size)
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    dataset = os.path.join(work, "dataset")

    # --- setup: build, install, dataset
    if "ibs" in tools:
        if not args.no_build:
            build_ibs(args)
        if not os.access(args.ibs_bin, os.X_OK):
            die(f"ibs binary not found at {args.ibs_bin}")
    if "restic" in tools:
        ensure_restic()
    versions = {}
    if "ibs" in tools:
        versions["ibs"] = tool_version([args.ibs_bin, "--version"])
    if "restic" in tools:
        versions["restic"] = tool_version(["restic", "version"])
    log(f"bench: tools: {versions}")
    log(f"bench: dataset {dataset} (size {args.size}, seed {args.seed})")
    dropper = CacheDropper()
    results: list[dict] = []
    verify: dict = {}
    mutation = None
    failed = False
    insts: list[Tool] = []
    for rnd in range(args.repeat):
        if args.repeat > 1:
            log(f"bench: ===== round {rnd + 1} of {args.repeat} =====")
        insts = [TOOLS[t](args, work, dataset) for t in tools]
        rows, ver, mut, ok = run_round(args, size, work, dataset, insts, dropper, rnd)
        results += rows
        mutation = mut or mutation
        failed = failed or not ok
        for k, v in ver.items():  # keep the first failure, else the last success
            if k not in verify or verify[k]["ok"]:
                verify[k] = v
        if rnd < args.repeat - 1 and not args.keep:
            for tool in insts:
                trash(work, tool.dir)
                trash(work, tool.restore_dir)
    summary = aggregate(results, args.repeat)

    loads = [r["load1_before"] for r in results if r.get("load1_before") is not None] or [0.0]
    mut_summary = "n/a"
    if mutation:
        mut_summary = (f"{mutation['files_touched']} entries touched, {mutation['changed_bytes'] / 1024:.0f} KiB "
                       f"new/changed ({mutation['changed_pct']}%)")
    res = {
        "meta": {
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "size": gen_dataset.fmt_size(size), "size_bytes": size, "seed": args.seed, "tools": tools,
            "threads": args.threads, "versions": versions, "commit": git_rev(),
            "dataset": dict(zip(("bytes", "files"), tree_bytes(dataset)), path=dataset, disk_bytes=du_bytes(dataset)),
            "host": {"cpus": os.cpu_count(), "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
                     "kernel": platform.release()},
            "cache_note": dropper.note(), "caches_dropped": not dropper.failures,
            "load_min": min(loads), "load_max": max(loads), "mutation_summary": mut_summary,
            "restic_repo_version": getattr(next((t for t in insts if t.name == "restic"), None), "repo_version", None),
        },
        "results": summary, "rounds": results if args.repeat > 1 else None, "repeat": args.repeat,
        "mutation": mutation, "verify": verify,
    }
    compute_ratios(res)
    text = results_tables(res)
    print()
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
    with open(args.results, "w") as f:
        json.dump(res, f, indent=2, default=str)
    log(f"\nbench: results written to {args.results}; tool output in {os.path.join(work, 'logs')}")
    if not args.no_readme and not failed and len(tools) == 2:
        update_readme(f"Measured by `bench/run.sh --size {args.size} --seed {args.seed}"
                      + (f" --repeat {args.repeat}" if args.repeat > 1 else "")
                      + (f" --threads {args.threads}" if args.threads else "") + "` "
                      f"on {res['meta']['date']}:\n\n{text}")
    if not args.keep:
        for tool in insts:
            delete_tree(tool.dir)
            delete_tree(tool.restore_dir)
    delete_tree(os.path.join(work, "trash"))
    if failed:
        log("bench: FAILED (see above)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
