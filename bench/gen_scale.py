#!/usr/bin/env python3
"""Seeded generator of infrastructure-host-like trees at scale (issue 18): a fleet of hosts under
`hosts/NAME/`, about 1000 small files each, plus (at the 60k and 600k points) the large files a
real host has. The same --seed and --point give the same tree; `--day K` applies day K's changes.

Points:
  60k   ~60,000 files, ~1 GiB   (60 hosts)
  600k  ~600,000 files, ~10 GiB (600 hosts)
  1m    ~1,000,000 small files of ~94 bytes on average (1000 hosts, no large files)

Per host: configs under etc/ (each file belongs to a family shared by every host: 35 % are exact
copies of the family's text, the others carry the host's name, address and a few own values),
package docs identical on every host, home folders with ssh keys (0600, unique) and shared
authorized_keys/.bashrc, TLS keys (0600), application state files (unique), release configs, empty
folders (var/tmp, run/lock, srv/app/uploads/tmp), symlinks (absolute, relative, directory, dangling).
Large files (60k/600k): logs (4 formats), database dumps (on every 8th host), sparse VM images (2
clones per 16th host, sharing a template), release binaries (the same on every host of a role,
two releases differing by small edits), incompressible artifacts (unique per host). The large file
generators are `gen_dataset.py`'s.

A day of changes (`--day K`, K ≥ 1, deterministic): logs grow by ~1 %, every dump gets 40
scattered row edits, one VM image per VM host has a 1 MiB region rewritten, 0.5 % of the small
files are edited, 0.1 % are added, 0.1 % of the state files are deleted, and every 10th host gets a
new 2 MiB artifact.

Standard library only (Python ≥ 3.11). Writes with --jobs processes (the output does not depend on it).
"""
import argparse
import json
import os
import random
import sys
import time
from multiprocessing import Pool

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_dataset as gd  # noqa: E402

KIB, MIB, GIB = 1024, 1 << 20, 1 << 30
POINTS = {
    "60k": {"hosts": 60, "bytes": 1 * GIB, "tiny": False},
    "600k": {"hosts": 600, "bytes": 10 * GIB, "tiny": False},
    "1m": {"hosts": 1000, "bytes": 0, "tiny": True},
}
PKGS = ("nginx apache2 postgresql mysql redis haproxy keepalived systemd ssh sudo cron logrotate rsyslog "
        "prometheus grafana alertmanager node_exporter docker containerd kubelet etcd consul vault nomad "
        "fail2ban ufw chrony postfix dovecot bind9 dnsmasq openvpn wireguard zabbix telegraf elasticsearch "
        "kibana logstash rabbitmq memcached").split()
ROLES = ["web", "app", "db", "cache", "mq", "mon", "lb", "ci"]
USERS = ["deploy", "ops", "backup"]
CONF_FILES = 500    # etc/<pkg>/conf.d/*, per host
DOC_FILES = 120     # usr/share/doc/<pkg>/*, identical on every host
STATE_FILES = 330   # var/lib/<app>/state/**, unique per host
REL_FILES = 30      # srv/app/releases/<ver>/conf/*, per role
WORDS = gd.WORDS


def rng_for(seed, *keys):
    return gd.rng_for(seed, "scale", *keys)


_POOL: dict = {}


def text_pool(seed) -> bytes:
    """1 MiB of word text; unique small files are slices of it (fast, compressible, distinct)."""
    p = _POOL.get(seed)
    if p is None:
        r = rng_for(seed, "pool")
        parts, n = [], 0
        while n < MIB:
            line = " ".join(r.choice(WORDS) for _ in range(r.randrange(3, 12)))
            line = f"{line} = {r.randrange(100000)}\n"
            parts.append(line)
            n += len(line)
        p = _POOL[seed] = "".join(parts).encode()[:MIB]
    return p


def small_size(r: random.Random, tiny: bool) -> int:
    # lognormal; mean ≈ 94 bytes (tiny) or ≈ 1.6 KiB
    if tiny:
        return max(1, min(4000, int(r.lognormvariate(4.22, 0.8))))
    return max(1, min(64 * KIB, int(r.lognormvariate(6.9, 1.0))))


_FAMILY: dict = {}


def family_text(seed, fam: str, size: int) -> bytes:
    key = (fam, size)
    t = _FAMILY.get(key)
    if t is None:
        r = rng_for(seed, "family", fam)
        lines, n = [], 0
        while n < size + 64:
            k = "_".join(r.choice(WORDS) for _ in range(r.randrange(1, 3)))
            if r.random() < 0.15:
                line = f"{k} = @HOST@.prod.example.com\n"
            elif r.random() < 0.1:
                line = f"listen = @IP@:{r.randrange(1024, 65535)}\n"
            else:
                line = f"{k} = {r.choice(WORDS)}{r.randrange(1000)}\n"
            lines.append(line)
            n += len(line)
        t = "".join(lines).encode()
        if len(_FAMILY) > 20000:
            _FAMILY.clear()
        _FAMILY[key] = t
    return t


def host_name(h: int) -> str:
    return f"{ROLES[h % len(ROLES)]}-{h:04d}"


def host_ip(h: int) -> str:
    return f"10.{h // 250}.{(h * 7) % 250 + 1}.{h % 250 + 1}"


def host_plan(seed: int, point: str, h: int) -> dict:
    """Every entry of one host: files (path, size, mode, how), dirs (empty), links."""
    spec = POINTS[point]
    tiny = spec["tiny"]
    name = host_name(h)
    role = ROLES[h % len(ROLES)]
    r = rng_for(seed, "host", point, h)
    files, links, empty = [], [], ["var/tmp", "run/lock", "srv/app/uploads/tmp"]
    for i in range(CONF_FILES):
        pkg = PKGS[i % len(PKGS)]
        fr = rng_for(seed, "famsize", point, i)
        size = small_size(fr, tiny)
        exact = fr.random() < 0.35
        files.append({"path": f"etc/{pkg}/conf.d/{i:03d}-{fr.choice(WORDS)}.conf", "size": size, "mode": 0o644,
                      "how": "family", "fam": f"conf{i}", "exact": exact})
    for i in range(DOC_FILES):
        pkg = PKGS[i % len(PKGS)]
        fr = rng_for(seed, "docsize", point, i)
        files.append({"path": f"usr/share/doc/{pkg}/{('copyright', 'changelog', 'README')[i % 3]}{i // 120 or ''}",
                      "size": small_size(fr, tiny), "mode": 0o644, "how": "family", "fam": f"doc{i}",
                      "exact": True})
    for u in USERS:
        base = f"home/{u}"
        files += [
            {"path": f"{base}/.ssh/id_ed25519", "size": 100 if tiny else 411, "mode": 0o600, "how": "key"},
            {"path": f"{base}/.ssh/id_ed25519.pub", "size": 96, "mode": 0o644, "how": "key"},
            {"path": f"{base}/.ssh/authorized_keys", "size": small_size(rng_for(seed, "ak", u), tiny),
             "mode": 0o600, "how": "family", "fam": f"ak-{u}", "exact": True},
            {"path": f"{base}/.bashrc", "size": small_size(rng_for(seed, "rc", u), tiny), "mode": 0o644,
             "how": "family", "fam": "bashrc", "exact": True},
            {"path": f"{base}/.bash_history", "size": small_size(r, tiny), "mode": 0o600, "how": "unique"},
        ]
    for i in range(5):
        files.append({"path": f"etc/ssl/private/svc{i}.key", "size": 120 if tiny else 1704, "mode": 0o600,
                      "how": "key"})
    app = f"{role}app"
    for i in range(STATE_FILES):
        files.append({"path": f"var/lib/{app}/state/{i % 16:02x}/s{i}.json", "size": small_size(r, tiny),
                      "mode": 0o640, "how": "unique"})
    for ver in ("1.41.0", "1.42.0"):
        for i in range(REL_FILES // 2):
            files.append({"path": f"srv/app/releases/{ver}/conf/c{i}.yml",
                          "size": small_size(rng_for(seed, "rel", role, i), tiny), "mode": 0o644,
                          "how": "family", "fam": f"rel-{role}-{ver}-{i}", "exact": True})
    links += [("etc/localtime", "/usr/share/zoneinfo/Europe/Berlin"), ("srv/app/current", "releases/1.42.0"),
              ("etc/nginx/sites-enabled-default", "../nginx/conf.d/000-default.conf"),
              ("var/run-stale.pid", "/run/does-not-exist.pid")]
    if not tiny:
        per_host = spec["bytes"] // spec["hosts"]
        small = sum(f["size"] for f in files)
        big = max(0, per_host - small)
        # logs 30 %, dumps 20 % (on db hosts), VM images 25 % (on hypervisors), binaries 12 %, artifacts 13 %
        for j, style in enumerate(("app", "nginx" if role in ("web", "lb") else "json", "syslog")):
            size = int(big * 0.30 / 3 * (0.5 + j * 0.5))
            svc = gd.SERVICES[(h + j) % len(gd.SERVICES)]
            files.append({"path": f"var/log/{svc}/{svc}-{style}.log", "size": size, "mode": 0o640, "how": "log",
                          "params": {"style": style, "host": name, "service": svc,
                                     "start_ms": gd.BASE_EPOCH * 1000 + h * 1000}})
        if h % 8 == 2:
            for j in range(2):
                files.append({"path": f"var/backups/db/app{j}.sql", "size": int(big * 0.20 * 8 / 2), "mode": 0o600,
                              "how": "sql", "params": {"copy": j == 0, "db": f"app{j}"}})
        if h % 16 == 5:
            vm = (int(big * 0.25 * 16 / 2) // MIB) * MIB
            for j in range(2):
                files.append({"path": f"var/lib/libvirt/images/guest{j}.img", "size": max(MIB, vm), "mode": 0o600,
                              "how": "vm"})
        for ver, base in (("1.42.0", "1.41.0"), ("1.41.0", None)):
            for j in range(2):
                size = int(big * 0.12 / 4)
                params = {"version": ver}
                if base:
                    params |= {"base": f"bin-{role}-{base}-{j}", "base_size": size, "base_version": base}
                files.append({"path": f"srv/app/releases/{ver}/bin/{role}d{j}", "size": size, "mode": 0o755,
                              "how": "bin", "key": f"bin-{role}-{ver}-{j}", "params": params})
        for j in range(2):
            files.append({"path": f"srv/app/artifacts/build-{j}.tar.gz", "size": int(big * 0.13 / 2), "mode": 0o644,
                          "how": "rand", "params": {"fmt": "gz"}})
    return {"name": name, "files": files, "links": links, "empty": empty}


def content(seed: int, h: int, f: dict) -> bytes:
    how, size = f["how"], f["size"]
    if how == "family":
        t = family_text(seed, f["fam"], size)
        if not f.get("exact"):
            t = t.replace(b"@HOST@", host_name(h).encode()).replace(b"@IP@", host_ip(h).encode())
            r = rng_for(seed, "own", h, f["path"])
            cut = r.randrange(size // 2 + 1, size + 1)
            t = t[: t.rfind(b"\n", 0, cut) + 1] + f"own_{r.randrange(10**6)} = 1\n".encode() + t[cut:]
        return t[:size]
    if how == "unique":
        p = text_pool(seed)
        r = rng_for(seed, "u", h, f["path"])
        off = r.randrange(0, len(p) - size - 1) if size < len(p) - 1 else 0
        return (f"{h}:{f['path']}\n".encode() + p[off:off + size])[:size]
    if how == "key":
        r = rng_for(seed, "key", h, f["path"])
        import base64
        return base64.b64encode(r.randbytes(size))[:size]
    raise ValueError(how)


def write_bytes(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        mv = memoryview(data)
        while mv:
            mv = mv[os.write(fd, mv):]
    finally:
        os.close(fd)


def write_host(args) -> tuple[int, int]:
    out, seed, point, h = args
    plan = host_plan(seed, point, h)
    root = os.path.join(out, "hosts", plan["name"])
    made = set()
    nbytes = 0
    for f in plan["files"]:
        p = os.path.join(root, f["path"])
        d = os.path.dirname(p)
        if d not in made:
            os.makedirs(d, exist_ok=True)
            made.add(d)
        how = f["how"]
        if how == "vm":
            gd.vm_write(seed, f"h{h}/{f['path']}", f["size"], p)
            os.chmod(p, f["mode"])
        elif how in ("log", "sql", "bin", "rand"):
            key = f.get("key") or f"h{h}/{f['path']}"
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, f["mode"])
            try:
                for piece in gd.GENERATORS[how](seed, key, f["size"], f["params"]):
                    mv = memoryview(piece)
                    while mv:
                        mv = mv[os.write(fd, mv):]
            finally:
                os.close(fd)
        else:
            write_bytes(p, content(seed, h, f), f["mode"])
        nbytes += f["size"]
    for e in plan["empty"]:
        os.makedirs(os.path.join(root, e), exist_ok=True)
    for src, target in plan["links"]:
        p = os.path.join(root, src)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if not os.path.lexists(p):
            os.symlink(target, p)
    return len(plan["files"]), nbytes


def mutate_host(args) -> dict:
    out, seed, point, h, day = args
    plan = host_plan(seed, point, h)
    root = os.path.join(out, "hosts", plan["name"])
    r = rng_for(seed, "day", day, h)
    st = {"touched": 0, "added": 0, "deleted": 0, "bytes": 0}
    smalls = [f for f in plan["files"] if f["how"] in ("family", "unique", "key")]
    for f in r.sample(smalls, max(1, len(smalls) * 5 // 1000)):
        p = os.path.join(root, f["path"])
        if os.path.exists(p):
            line = f"changed_day_{day} = {r.randrange(10**6)}\n".encode()
            with open(p, "ab") as fh:
                fh.write(line)
            st["touched"] += 1
            st["bytes"] += len(line)
    for i in range(max(1, len(smalls) // 1000)):
        f = {"path": f"var/lib/new/d{day}/n{i}.json", "size": small_size(r, POINTS[point]["tiny"]), "how": "unique"}
        p = os.path.join(root, f["path"])
        os.makedirs(os.path.dirname(p), exist_ok=True)
        write_bytes(p, content(seed, h + 100000 * day, f), 0o644)
        st["added"] += 1
        st["bytes"] += f["size"]
    states = [f for f in plan["files"] if f["path"].startswith("var/lib/") and f["how"] == "unique"]
    for f in r.sample(states, max(1, len(states) // 1000)):
        p = os.path.join(root, f["path"])
        if os.path.exists(p):
            os.unlink(p)
            st["deleted"] += 1
    for f in plan["files"]:
        p = os.path.join(root, f["path"])
        if f["how"] == "log" and os.path.exists(p):
            n = max(4 * KIB, f["size"] // 100)
            with open(p, "ab") as fh:
                for piece in gd.GENERATORS["log"](seed, f"h{h}/{f['path']}#day{day}", n, f["params"]):
                    fh.write(piece)
            st["touched"] += 1
            st["bytes"] += n
        elif f["how"] == "sql" and os.path.exists(p):
            with open(p, "r+b") as fh:
                size = os.fstat(fh.fileno()).st_size
                for _ in range(40):
                    src, dst = r.randrange(size - 200), r.randrange(size - 200)
                    fh.seek(src)
                    b = fh.read(120)
                    fh.seek(dst)
                    fh.write(b)
            st["touched"] += 1
            st["bytes"] += 40 * 120
        elif f["how"] == "vm" and f["path"].endswith("guest0.img") and os.path.exists(p):
            with open(p, "r+b") as fh:
                blocks = max(1, f["size"] // MIB // 8)
                fh.seek(r.randrange(blocks) * MIB)
                fh.write(r.randbytes(MIB))
            st["touched"] += 1
            st["bytes"] += MIB
    if not POINTS[point]["tiny"] and h % 10 == 0:
        p = os.path.join(root, f"srv/app/artifacts/build-day{day}.tar.gz")
        write_bytes(p, b"\x1f\x8b\x08\x00" + r.randbytes(2 * MIB - 4), 0o644)
        st["added"] += 1
        st["bytes"] += 2 * MIB
    return st


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--point", choices=sorted(POINTS), default="60k")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--day", type=int, default=0, help="apply day K's changes to an existing tree (K ≥ 1)")
    ap.add_argument("--hosts", type=int, default=0, help="fewer hosts than the point has (quick runs)")
    a = ap.parse_args(argv)
    hosts = a.hosts or POINTS[a.point]["hosts"]
    t0 = time.time()
    with Pool(a.jobs) as pool:
        if a.day:
            totals = {"touched": 0, "added": 0, "deleted": 0, "bytes": 0}
            for st in pool.imap_unordered(mutate_host, [(a.out, a.seed, a.point, h, a.day) for h in range(hosts)],
                                          chunksize=4):
                for k in totals:
                    totals[k] += st[k]
            totals |= {"day": a.day, "seconds": round(time.time() - t0, 1)}
            print(json.dumps(totals))
            return 0
        if os.path.exists(a.out) and os.listdir(a.out):
            print(f"{a.out} is not empty", file=sys.stderr)
            return 1
        os.makedirs(a.out, exist_ok=True)
        n = b = 0
        for fn, fb in pool.imap_unordered(write_host, [(a.out, a.seed, a.point, h) for h in range(hosts)],
                                          chunksize=2):
            n += fn
            b += fb
    print(json.dumps({"point": a.point, "seed": a.seed, "hosts": hosts, "files": n, "bytes": b,
                      "seconds": round(time.time() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
