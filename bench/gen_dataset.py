#!/usr/bin/env python3
"""Seeded, deterministic generator of an "infrastructure-like" file tree for the ibs benchmark.

The same --seed and --size always give a byte-identical tree (contents, names, symlink targets,
modes and mtimes). Python 3.11 standard library only.

    gen_dataset.py --out DIR [--size 1G] [--seed 1]       # create, or bring back to the pristine state
    gen_dataset.py --out DIR --mutate small [--seed 1]    # apply the seeded "small change"

A marker file DIR.marker.json (beside the tree, not inside it, so backups never see it) records
seed, size, generator version and state ("pristine" / "mutated-small"). When the marker matches,
the generator only re-creates entries whose size/mtime/type differ from the plan and removes
entries that are not in it, so going back from "mutated-small" to "pristine" is cheap.

Text is assembled column-wise with C-level iterators (zip/map/join over pools and random index
streams), never byte by byte, so generation runs at several hundred MB/s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import time
from array import array
from itertools import accumulate, chain, repeat
from operator import and_, floordiv, mod, sub

GEN_VERSION = 2  # bump whenever the bytes of a pristine tree change (the marker sync trusts size+mtime)
KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
BASE_EPOCH = 1704067200  # 2024-01-01T00:00:00Z: planned mtimes lie in the 90 days after it
MUTATE_EPOCH = BASE_EPOCH + 200 * 86400  # mtime of everything --mutate small touches
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


# ----------------------------------------------------------------------------------------------
# helpers


def parse_size(text: str) -> int:
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": KIB, "M": MIB, "G": GIB, "T": 1024 * GIB}
    if t and t[-1] in mult:
        return int(float(t[:-1]) * mult[t[-1]])
    return int(t)


def fmt_size(n: int) -> str:
    for unit, m in (("G", GIB), ("M", MIB), ("K", KIB)):
        if n >= m and n % m == 0:
            return f"{n // m}{unit}"
    return str(n)


def rng_for(seed: int, *keys) -> random.Random:
    """An independent, stable random stream for (seed, keys...)."""
    h = hashlib.sha256(("%d|" % seed + "|".join(map(str, keys))).encode()).digest()
    return random.Random(int.from_bytes(h[:16], "little"))


def u16_stream(rng: random.Random, n: int, mask: int):
    """n random ints in [0, mask] (mask = 2^k - 1, k <= 16), endian-independent."""
    a = array("H")
    a.frombytes(rng.randbytes(2 * n))
    if sys.byteorder == "big":
        a.byteswap()
    return map(and_, a, repeat(mask))


def loguniform(rng: random.Random, lo: float, hi: float) -> int:
    import math

    return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def fit(data: bytes, size: int) -> bytes:
    """Cut text to exactly `size` bytes, ending in a newline (data must be long enough)."""
    if size <= 0:
        return b""
    if len(data) < size:
        raise ValueError(f"generator produced {len(data)} bytes, need {size}")
    return data[: size - 1] + b"\n"


# ----------------------------------------------------------------------------------------------
# vocabularies

WORDS = (
    "account active address agent alert allocate api archive audit auth backend backup balance "
    "batch billing bind bucket buffer build cache capacity certificate channel check client cluster "
    "commit config connection consumer container context controller cron customer daemon database "
    "deadline default delete deploy device disk dispatch domain driver endpoint engine event export "
    "failover feature fetch filter firewall flush gateway handler health host import index instance "
    "interval inventory job journal kernel key latency lease limit listener load lock logger mailer "
    "manifest master memory metric migration mirror module monitor mount namespace network node "
    "notify offset order owner package partition payload peer pipeline policy pool primary probe "
    "process profile proxy publish queue quota record region registry replica request resolver "
    "resource retry role rollback route scheduler schema secret segment server service session shard "
    "snapshot socket source storage stream subscriber sync table task template tenant thread timeout "
    "token topic trace transaction upstream user validate vault version volume watcher worker zone"
).split()
SERVICES = ["api", "auth", "billing", "cache", "gateway", "inventory", "mailer", "metrics",
            "orders", "payments", "scheduler", "search", "storage", "worker", "reports", "ingest"]
ROLES = ["web", "app", "db", "cache", "mq", "mon", "lb", "ci"]
FIRST = ("anna ben carla david emma felix greta hans ida jonas karin lukas mia noah olga paul rita "
         "sven tina uwe vera walter xenia yusuf zoe").split()
LAST = ("meyer schmidt schneider fischer weber wagner becker schulz hoffmann koch richter klein "
        "wolf neumann schwarz braun zimmermann hartmann lange werner krause lehmann kaiser").split()
LEVELS = [(b"INFO ", 60), (b"DEBUG", 25), (b"WARN ", 10), (b"ERROR", 4), (b"TRACE", 1)]
APP_MSGS = [
    ("processed order %d for customer %d in %dms", 30),
    ("GET /api/v1/%s/%d returned %d in %dms", 25),
    ("cache %s for key %s:%d (ttl=%ds)", 15),
    ("connection pool stats: active=%d idle=%d waiting=%d", 8),
    ("scheduled job %s finished in %dms, next run in %ds", 6),
    ("retrying request to %s (attempt %d of %d) after %dms", 5),
    ("user %s.%s logged in from 10.%d.%d.%d", 5),
    ("published %d events to topic %s partition %d", 4),
    ("slow query on table %s took %dms (rows=%d)", 3),
    ("failed to reach upstream %s: connection reset by peer (errno=%d)", 2),
    ("health check %s: status=%s latency=%dms", 2),
    ("java.lang.IllegalStateException: %s %s is not ready\n\tat com.example.%s.%sService.handle(%sService.java:%d)\n\tat com.example.core.Dispatcher.run(Dispatcher.java:%d)\n\tat java.base/java.lang.Thread.run(Thread.java:%d)", 1),
]
SYSLOG_MSGS = [
    ("sshd[%d]: Accepted publickey for %s from 10.%d.%d.%d port %d ssh2: RSA SHA256:%s", 10),
    ("CRON[%d]: (%s) CMD (/usr/local/bin/%s-%s.sh >/dev/null 2>&1)", 20),
    ("systemd[1]: Started %s-%s.service - %s %s daemon.", 10),
    ("kernel: [%d.%d] EXT4-fs (vda%d): mounted filesystem with ordered data mode", 2),
    ("dockerd[%d]: time=\"2024\" level=info msg=\"%s %s container %s\"", 15),
    ("postfix/smtpd[%d]: connect from unknown[10.%d.%d.%d]", 8),
    ("ntpd[%d]: adjusting local clock by %d.%dms", 5),
    ("kernel: [%d.%d] TCP: request_sock_TCP: Possible SYN flooding on port %d. Sending cookies.", 1),
]
HTTP_PATHS = ["/api/v1/orders", "/api/v1/items", "/api/v2/customers", "/static/app.js", "/health",
              "/metrics", "/login", "/api/v1/search", "/static/style.css", "/api/v1/cart"]
UAS = ["Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
       "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
       "curl/8.5.0", "kube-probe/1.28", "Prometheus/2.48.1", "python-requests/2.31.0",
       "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"]


_CACHE: dict = {}


def cached(key, fn):
    """Pools are built once per (seed, kind) and shared by all files of that kind."""
    v = _CACHE.get(key)
    if v is None:
        v = _CACHE[key] = fn()
    return v


def word(rng):
    return rng.choice(WORDS)


def fill_template(rng: random.Random, tpl: str) -> str:
    out = []
    parts = tpl.split("%")
    out.append(parts[0])
    for p in parts[1:]:
        if p.startswith("d"):
            out.append(str(rng.choice((rng.randrange(10), rng.randrange(1000), rng.randrange(100000)))))
        elif p.startswith("s"):
            out.append(word(rng))
        out.append(p[1:])
    return "".join(out)


def weighted_pool(rng: random.Random, templates, size: int, prefix=b"", suffix=b"") -> list[bytes]:
    tpls = [t for t, _ in templates]
    weights = [w for _, w in templates]
    chosen = rng.choices(tpls, weights=weights, k=size)
    return [prefix + fill_template(rng, t).encode() + suffix for t in chosen]


# ----------------------------------------------------------------------------------------------
# log text: column-wise assembly

_SEC_TABLES: dict[str, list[bytes]] = {}


def sec_table(style: str) -> list[bytes]:
    """60000 entries indexed by milliseconds within the minute."""
    t = _SEC_TABLES.get(style)
    if t is None:
        if style in ("app", "json"):
            t = [b"%02d.%03dZ" % (ms // 1000, ms % 1000) for ms in range(60000)]
        elif style == "nginx":
            secs = [b"%02d +0000" % s for s in range(60)]
            t = [secs[ms // 1000] for ms in range(60000)]
        else:
            secs = [b"%02d" % s for s in range(60)]
            t = [secs[ms // 1000] for ms in range(60000)]
        _SEC_TABLES[style] = t
    return t


def minute_prefix(style: str, minute: int) -> bytes:
    tm = time.gmtime(minute * 60)
    if style in ("app", "json"):
        return b"%04d-%02d-%02dT%02d:%02d:" % (tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min)
    if style == "nginx":
        return b"%02d/%s/%04d:%02d:%02d:" % (tm.tm_mday, MONTHS[tm.tm_mon - 1].encode(), tm.tm_year,
                                            tm.tm_hour, tm.tm_min)
    return b"%s %2d %02d:%02d:" % (MONTHS[tm.tm_mon - 1].encode(), tm.tm_mday, tm.tm_hour, tm.tm_min)


class LogWriter:
    """Produces log text of one style with monotonically increasing timestamps."""

    STYLES = ("app", "nginx", "syslog", "json")

    def __init__(self, seed: int, rng: random.Random, style: str, host: str, service: str, start_ms: int):
        self.rng, self.style, self.t = rng, style, start_ms
        pr = rng_for(seed, "logpool", style)
        self.secs = sec_table(style)
        r = rng
        if style == "app":
            lv = [l for l, _ in LEVELS]
            lw = [w for _, w in LEVELS]
            self.heads = [b" %s [%s-%d] c.e.%s.%s%s - " % (
                r.choices(lv, lw)[0], r.choice([b"http-nio-8080-exec", b"worker", b"kafka-consumer", b"scheduler"]),
                r.randrange(32), service.encode(), word(r).capitalize().encode(),
                r.choice([b"Service", b"Controller", b"Repository", b"Client", b"Handler"]))
                for _ in range(256)]
            self.msgs = cached((seed, "msgs", style), lambda: weighted_pool(pr, APP_MSGS, 4096, suffix=b"\n"))
        elif style == "json":
            self.heads = [b'","level":"%s","svc":"%s","host":"%s","span":"%08x","trace":"' % (
                r.choices([b"info", b"debug", b"warn", b"error"], [60, 25, 10, 5])[0], service.encode(),
                host.encode(), r.getrandbits(32)) for _ in range(256)]
            self.msgs = cached((seed, "msgs", style), lambda: weighted_pool(
                pr, [(t.replace("\n\t", " | "), w) for t, w in APP_MSGS], 4096, prefix=b'","msg":"', suffix=b'"}\n'))
        elif style == "nginx":
            self.heads = [b"10.%d.%d.%d - %s [" % (r.randrange(4), r.randrange(256), r.randrange(256),
                                                 r.choice([b"-", b"-", b"-", r.choice(FIRST).encode()]))
                          for _ in range(256)]
            self.msgs = cached((seed, "msgs", style), lambda: [
                b'] "%s %s/%d HTTP/1.1" %d %d "-" "%s" rt=%d.%03d uct=0.000 req_id=' % (
                    pr.choices([b"GET", b"POST", b"PUT", b"DELETE"], [70, 20, 7, 3])[0],
                    pr.choice(HTTP_PATHS).encode(), pr.randrange(100000),
                    pr.choices([200, 201, 204, 301, 304, 400, 404, 500, 502], [70, 5, 3, 2, 8, 3, 6, 2, 1])[0],
                    pr.randrange(100, 200000), pr.choice(UAS).encode(), pr.randrange(3), pr.randrange(1000))
                for _ in range(4096)])
        else:  # syslog
            self.heads = [b" %s " % host.encode() for _ in range(256)]
            self.msgs = cached((seed, "msgs", style), lambda: weighted_pool(pr, SYSLOG_MSGS, 4096, suffix=b"\n"))

    def block(self, n: int) -> bytes:
        r, style = self.rng, self.style
        deltas = r.randbytes(n)  # 0..255 ms between lines
        acc = list(accumulate(deltas, initial=self.t))[1:]
        self.t = acc[-1] + 1
        mins = list(map(floordiv, acc, repeat(60000)))
        base = mins[0]
        prefs = [minute_prefix(style, m) for m in range(base, mins[-1] + 1)]
        pref_it = map(prefs.__getitem__, map(sub, mins, repeat(base)))
        sec_it = map(self.secs.__getitem__, map(mod, acc, repeat(60000)))
        heads = map(self.heads.__getitem__, r.randbytes(n))
        msgs = map(self.msgs.__getitem__, u16_stream(r, n, 4095))
        if style == "app":
            cols = (pref_it, sec_it, heads, msgs)
        elif style == "json":
            ids = r.randbytes(n * 16).hex(" ", 16).encode().split()
            cols = (repeat(b'{"ts":"'), pref_it, sec_it, heads, ids, msgs)
        elif style == "nginx":
            ids = r.randbytes(n * 8).hex(" ", 8).encode().split()
            cols = (heads, pref_it, sec_it, msgs, ids, repeat(b"\n"))
        else:
            cols = (pref_it, sec_it, heads, msgs)
        return b"".join(chain.from_iterable(zip(*cols)))

    def text(self, nbytes: int) -> bytes:
        """At least nbytes of whole lines."""
        out, have = [], 0
        while have < nbytes:
            n = max(64, min(16384, (nbytes - have) // 100 + 16))
            b = self.block(n)
            out.append(b)
            have += len(b)
        return b"".join(out)


def log_content(seed: int, path: str, size: int, params: dict):
    rng = rng_for(seed, "log", path)
    w = LogWriter(seed, rng, params["style"], params["host"], params["service"], params["start_ms"])
    remaining = size
    while remaining > 0:
        piece = w.text(min(remaining, 4 * MIB))
        if len(piece) >= remaining:
            yield fit(piece, remaining)
            return
        yield piece
        remaining -= len(piece)


# ----------------------------------------------------------------------------------------------
# database dumps


def _q(s: str) -> bytes:
    return b"'" + s.replace("'", "''").encode() + b"'"


SQL_TABLES = {
    "customers": ["id bigint", "name text", "email text", "country char(2)", "created_at timestamptz", "status text"],
    "orders": ["id bigint", "customer_id bigint", "status text", "total numeric(12,2)", "currency char(3)", "created_at timestamptz", "note text"],
    "order_items": ["id bigint", "order_id bigint", "sku text", "quantity integer", "unit_price numeric(12,2)"],
    "events": ["id bigint", "uuid uuid", "kind text", "payload jsonb", "created_at timestamptz"],
    "audit_log": ["id bigint", "actor text", "action text", "object text", "at timestamptz", "ip inet"],
}


class SqlWriter:
    def __init__(self, seed: int, rng: random.Random, copy_style: bool):
        self.rng, self.copy, self.seed = rng, copy_style, seed
        self.pool = cached((seed, "sql", copy_style), lambda: self._pools(rng_for(seed, "sqlpool", copy_style)))
        self.next_id = {t: 1 for t in SQL_TABLES}

    def _pools(self, r: random.Random) -> dict:
        copy_style = self.copy
        names = [f"{r.choice(FIRST)} {r.choice(LAST)}" for _ in range(4096)]
        return {
            "name": [(n.title().encode() if copy_style else _q(n.title())) for n in names],
            "email": [self._s(f"{n.replace(' ', '.')}{r.randrange(100)}@example.{r.choice(['com', 'org', 'net', 'de'])}") for n in names],
            "country": [self._s(c) for c in ["DE", "DE", "DE", "AT", "CH", "FR", "NL", "US", "GB", "PL", "IT", "ES", "SE", "DK", "CZ", "BE"] * 16],
            "ts": [self._s("2023-%02d-%02d %02d:%02d:%02d.%06d+00" % (r.randrange(1, 13), r.randrange(1, 29), r.randrange(24), r.randrange(60), r.randrange(60), r.randrange(1000000))) for _ in range(4096)],
            "status": [self._s(s) for s in (["active"] * 10 + ["inactive"] * 3 + ["suspended", "deleted", "pending"]) * 16],
            "ostatus": [self._s(s) for s in (["shipped"] * 6 + ["delivered"] * 6 + ["new", "paid", "cancelled", "returned"]) * 16],
            "money": [b"%d.%02d" % (r.randrange(100000), r.randrange(100)) for _ in range(4096)],
            "smallmoney": [b"%d.%02d" % (r.randrange(500), r.randrange(100)) for _ in range(4096)],
            "int": [b"%d" % r.randrange(1, 2000000) for _ in range(4096)],
            "qty": [b"%d" % q for q in ([1] * 8 + [2] * 4 + [3, 4, 5, 10]) * 16],
            "currency": [self._s(c) for c in ["EUR"] * 200 + ["USD"] * 40 + ["CHF"] * 16],
            "note": [self._s(" ".join(word(r) for _ in range(r.randrange(0, 12)))) for _ in range(4096)],
            "sku": [self._s("SKU-%s-%05d" % (word(r)[:4].upper(), r.randrange(100000))) for _ in range(4096)],
            "kind": [self._s(f"{word(r)}.{word(r)}") for _ in range(256)],
            "payload": [self._s(json.dumps({"source": word(r), "count": r.randrange(1000), "tags": [word(r) for _ in range(r.randrange(4))], "ok": r.random() < 0.9})) for _ in range(4096)],
            "actor": [self._s(f"{r.choice(FIRST)}.{r.choice(LAST)}") for _ in range(256)],
            "action": [self._s(a) for a in ["login", "logout", "update", "create", "delete", "grant", "revoke", "export"] * 32],
            "object": [self._s(f"/{word(r)}/{word(r)}/{r.randrange(10000)}") for _ in range(4096)],
            "ip": [self._s(f"10.{r.randrange(4)}.{r.randrange(256)}.{r.randrange(256)}") for _ in range(4096)],
        }

    def _s(self, s: str) -> bytes:
        return s.encode() if self.copy else _q(s)

    TABLE_COLS = {
        "customers": (["name", "email", "country"], ["ts", "status"]),
        "orders": (["int", "ostatus", "money"], ["currency", "ts", "note"]),
        "order_items": (["int", "sku"], ["qty", "smallmoney"]),
        "events": (["kind"], ["payload", "ts"]),
        "audit_log": (["actor", "action", "object"], ["ts", "ip"]),
    }

    def _fragments(self, seed: int, table: str):
        """Two pools of 4096 pre-joined column groups; a row is id + one of each (+ uuid)."""
        r = rng_for(seed, "sqlfrag", table, self.copy)
        sep = b"\t" if self.copy else b", "
        end = b"\n" if self.copy else b");\n"
        c1, c2 = self.TABLE_COLS[table]
        a = [sep + sep.join(r.choice(self.pool[c]) for c in c1) + sep for _ in range(4096)]
        b = [sep.join(r.choice(self.pool[c]) for c in c2) + end for _ in range(4096)]
        return a, b

    def rows(self, table: str, n: int) -> bytes:
        r = self.rng
        start = self.next_id[table]
        self.next_id[table] = start + n
        fa, fb = cached((self.seed, "sqlfrag", table, self.copy), lambda: self._fragments(self.seed, table))
        cols = [map(b"%d".__mod__, range(start, start + n))]
        if table == "events":
            cols.append(repeat(b"\t" if self.copy else b", '"))
            cols.append(r.randbytes(16 * n).hex(" ", 16).encode().split())
            if not self.copy:
                cols.append(repeat(b"'"))
        cols.append(map(fa.__getitem__, u16_stream(r, n, 4095)))
        cols.append(map(fb.__getitem__, u16_stream(r, n, 4095)))
        if not self.copy:
            cols.insert(0, repeat(b"INSERT INTO public.%s VALUES (" % table.encode()))
        return b"".join(chain.from_iterable(zip(*cols)))


def sql_content(seed: int, path: str, size: int, params: dict):
    rng = rng_for(seed, "sql", path)
    copy_style = params["copy"]
    w = SqlWriter(seed, rng, copy_style)
    header = (
        "--\n-- PostgreSQL database dump\n--\n\n-- Dumped from database version 15.5\n"
        "-- Dumped by pg_dump version 15.5\n\nSET statement_timeout = 0;\nSET lock_timeout = 0;\n"
        "SET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\n"
        "SELECT pg_catalog.set_config('search_path', '', false);\nSET check_function_bodies = false;\n\n"
    )
    for t, cols in SQL_TABLES.items():
        header += f"CREATE TABLE public.{t} (\n    " + ",\n    ".join(cols) + "\n);\n\n"
        header += f"ALTER TABLE public.{t} OWNER TO {params['db']};\n\n"
    out = header.encode()
    remaining = size
    tables = list(SQL_TABLES)
    weights = [0.15, 0.3, 0.3, 0.15, 0.1]
    ti = 0
    table_budget = [int(size * wt) for wt in weights]
    used = [0] * len(tables)
    pending = [out]
    have = len(out)
    while True:
        t = tables[ti]
        if used[ti] == 0:
            colnames = ", ".join(c.split()[0] for c in SQL_TABLES[t])
            intro = (f"--\n-- Data for Name: {t}; Type: TABLE DATA; Schema: public; Owner: {params['db']}\n--\n\n"
                     + (f"COPY public.{t} ({colnames}) FROM stdin;\n" if copy_style else "")).encode()
            pending.append(intro)
            have += len(intro)
        b = w.rows(t, 4096)
        pending.append(b)
        have += len(b)
        used[ti] += len(b)
        if used[ti] >= table_budget[ti] and ti < len(tables) - 1:
            if copy_style:
                pending.append(b"\\.\n\n")
                have += 4
            ti += 1
        if have >= min(remaining, 4 * MIB):
            data = b"".join(pending)
            pending, have = [], 0
            if len(data) >= remaining:
                yield fit(data, remaining)
                return
            yield data
            remaining -= len(data)


# ----------------------------------------------------------------------------------------------
# binaries, compressed data, VM images


def _skew_table() -> bytes:
    common = [0x00] * 80 + [0xFF] * 14 + [0x48] * 10 + [0x89] * 9 + [0x8B] * 8 + [0xE8] * 6 + \
             [0x0F] * 6 + [0x24] * 5 + [0x44] * 5 + [0x85] * 4 + [0xC0] * 5 + [0x74] * 4 + \
             [0x75] * 4 + [0x83] * 4 + [0x01] * 4 + [0x08] * 4 + [0x10] * 4 + [0x20] * 4
    rest = [b for b in range(256) if b not in set(common)]
    table = (common + rest)[:256]
    return bytes(table)


SKEW = _skew_table()
SYMTAB_TABLE = bytes([0] * 180 + list(range(1, 77)))


def skewed(rng: random.Random, n: int) -> bytes:
    return b"".join(rng.randbytes(min(MIB, n - i)) for i in range(0, n, MIB)).translate(SKEW) if n else b""


def _bin_pools(r: random.Random):
    strs = [(" ".join(word(r) for _ in range(r.randrange(1, 6))) + r.choice(
        [": %s", " failed: %d", "", "\n", " (code %d)", "_%s"])).encode() for _ in range(2048)]
    syms = [b"_ZN%d%s%d%s17h%016x" % (len(w1), w1.encode(), len(w2), w2.encode(), r.getrandbits(64))
            for w1, w2 in ((word(r), word(r)) for _ in range(2048))]
    return strs, syms


def gen_binary(seed: int, key: str, size: int) -> bytes:
    rng = rng_for(seed, "bin", key)
    name = key.rsplit("/", 1)[-1].encode()
    hdr = bytearray(b"\x7fELF\x02\x01\x01" + bytes(9))
    hdr += (b"\x03\x00\x3e\x00\x01\x00\x00\x00" + rng.randbytes(8) + b"\x40" + bytes(7)
            + rng.randbytes(8) + bytes(4) + b"\x40\x00\x38\x00\x0d\x00\x40\x00\x24\x00\x23\x00")
    hdr += skewed(rng, 13 * 56) + bytes(4096 - len(hdr) - 13 * 56)
    text_n, ro_n, data_n = int(size * 0.55), int(size * 0.2), int(size * 0.1)
    # .text: fresh skewed "instructions" interleaved with copies of earlier code (LZ matches)
    fresh = skewed(rng, text_n)
    text = bytearray()
    fi = 0
    while len(text) < text_n:
        if len(text) > 8192 and rng.random() < 0.3:
            ln = rng.randrange(32, 1024)
            st = rng.randrange(0, len(text) - ln)
            text += text[st:st + ln]
        else:
            ln = rng.randrange(64, 2048)
            text += fresh[fi:fi + ln]
            fi += ln
            if fi >= len(fresh):
                fi = 0
    del text[text_n:]
    # .rodata: strings
    strs, syms = cached((seed, "binpool"), lambda: _bin_pools(rng_for(seed, "binpool")))
    ro = b"\0".join(chain(map(strs.__getitem__, u16_stream(rng, ro_n // 24, 2047)),
                          map(syms.__getitem__, u16_stream(rng, ro_n // 80, 2047)), [name, b"GLIBC_2.34"]))
    ro = (ro * (ro_n // max(1, len(ro)) + 1))[:ro_n]
    # .data: sparse-ish initialised data, then symbol table entries, zero padding between sections
    data = b"".join(rng.randbytes(min(MIB, data_n - i)) for i in range(0, data_n, MIB)).translate(SYMTAB_TABLE)
    out = bytearray(hdr)
    for sec in (bytes(text), ro, data):
        out += sec
        out += bytes((-len(out)) % 4096)
    rest = size - len(out)
    if rest > 0:
        out += b"".join(rng.randbytes(min(MIB, rest - i)) for i in range(0, rest, MIB)).translate(SYMTAB_TABLE)
    return bytes(out[:size])


def binary_content(seed: int, path: str, size: int, params: dict):
    base_key = params.get("base")
    if not base_key:
        yield gen_binary(seed, path, size)
        return
    # a previous release of the same program: mostly identical, with a few small edits
    b = bytearray(gen_binary(seed, base_key, params["base_size"]))
    rng = rng_for(seed, "variant", path)
    for _ in range(rng.randrange(3, 12)):
        op = rng.random()
        off = rng.randrange(4096, max(4097, len(b) - 4096))
        ln = rng.randrange(8, 512)
        if op < 0.4:
            b[off:off + ln] = rng.randbytes(ln).translate(SKEW)
        elif op < 0.7:
            b[off:off] = rng.randbytes(ln).translate(SKEW)
        else:
            del b[off:off + ln]
    b = b.replace(params["base_version"].encode(), params["version"].encode())
    if len(b) < size:
        b += bytes(size - len(b))
    yield bytes(b[:size])


def random_content(seed: int, path: str, size: int, params: dict):
    rng = rng_for(seed, "rand", path)
    magic = {"gz": b"\x1f\x8b\x08\x00", "zst": b"\x28\xb5\x2f\xfd", "jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
             "png": b"\x89PNG\r\n\x1a\n", "woff2": b"wOF2", "xz": b"\xfd7zXZ\x00"}.get(params["fmt"], b"")
    first = True
    for i in range(0, size, MIB):
        n = min(MIB, size - i)
        b = rng.randbytes(n)
        if first:
            b = (magic + b[len(magic):])[:n]
            first = False
        yield b


def vm_template_block(seed: int, idx: int) -> bytes:
    """Block idx (1 MiB) of the shared "base OS" template that cloned VM images have in common."""
    rng = rng_for(seed, "vm-template", idx)
    kind = rng.random()
    if kind < 0.45:
        return skewed(rng, MIB)
    if kind < 0.75:
        w = LogWriter(seed, rng, "syslog", "template", "base", BASE_EPOCH * 1000 - 86400000 * idx)
        return fit(w.text(MIB), MIB)
    return gen_binary(seed, f"vm-template-{idx}", MIB)


def vm_regions(seed: int, path: str, size: int):
    """The region plan of an image: list of (offset_mib, length_mib, kind)."""
    rng = rng_for(seed, "vm", path)
    total = size // MIB
    kinds = ["zero", "fsdata", "text", "template", "repeat", "random"]
    weights = [40, 18, 12, 15, 5, 10]
    regions, pos = [], 0
    # cloned images share the template at the same offsets near the start (boot + root fs)
    tmpl = max(1, total // 8)
    regions.append((0, tmpl, "template"))
    pos = tmpl
    while pos < total:
        k = rng.choices(kinds, weights)[0]
        ln = min(total - pos, rng.randrange(1, 17))
        if k == "repeat" and pos < 2:
            k = "fsdata"
        regions.append((pos, ln, k))
        pos += ln
    return regions


def vm_write(seed: int, path: str, size: int, fpath: str):
    regions = vm_regions(seed, path, size)
    rng = rng_for(seed, "vm-data", path)
    written: list[int] = []
    with open(fpath, "wb") as f:
        for off, ln, kind in regions:
            if kind == "zero":
                continue
            f.seek(off * MIB)
            for j in range(ln):
                blk_idx = off + j
                if kind == "fsdata":
                    b = bytearray(skewed(rng, MIB))
                    for _ in range(rng.randrange(0, 64)):  # free 4 KiB pages inside used extents
                        p = rng.randrange(256) * 4096
                        b[p:p + 4096] = bytes(4096)
                    b = bytes(b)
                elif kind == "text":
                    w = LogWriter(seed, rng, rng.choice(LogWriter.STYLES), "vm", "guest", BASE_EPOCH * 1000 + blk_idx * 7200000)
                    b = fit(w.text(MIB), MIB)
                elif kind == "template":
                    b = vm_template_block(seed, blk_idx)
                elif kind == "repeat":
                    src = rng.choice(written) if written else None
                    if src is None:
                        b = skewed(rng, MIB)
                    else:
                        f.flush()
                        with open(fpath, "rb") as g:
                            g.seek(src * MIB)
                            b = g.read(MIB)
                        b = b + bytes(MIB - len(b))
                else:
                    b = rng.randbytes(MIB)
                f.write(b)
                written.append(blk_idx)
        f.truncate(size)


# ----------------------------------------------------------------------------------------------
# configuration files

CONF_TYPES = ["yaml", "ini", "json", "xml", "conf", "properties"]


def _conf_val(rng: random.Random) -> str:
    k = rng.random()
    if k < 0.3:
        return str(rng.choice([rng.randrange(2), rng.randrange(100), rng.randrange(65536), rng.randrange(10**6)]))
    if k < 0.45:
        return rng.choice(["true", "false", "yes", "no", "on", "off"])
    if k < 0.6:
        return f"{word(rng)}-{word(rng)}.internal.example.com"
    if k < 0.7:
        return f"/var/lib/{word(rng)}/{word(rng)}"
    if k < 0.8:
        return "10.%d.%d.%d" % (rng.randrange(4), rng.randrange(256), rng.randrange(256))
    return f"{word(rng)}_{word(rng)}"


def _conf_pools(seed: int, ctype: str):
    """(line pool of 4096 "key = value" lines, section name pool of 256) for one config syntax."""
    r = rng_for(seed, "confpool", ctype)
    lines = []
    for _ in range(4096):
        k1, k2, v = word(r), word(r), _conf_val(r)
        if ctype == "yaml":
            ln = f"  {k1}_{k2}: {v}" if r.random() < 0.85 else f"  {k1}:\n    - {v}\n    - {_conf_val(r)}"
        elif ctype == "ini":
            ln = f"{k1}_{k2} = {v}" if r.random() < 0.9 else f"; {' '.join(word(r) for _ in range(6))}\n{k1}_{k2} = {v}"
        elif ctype == "xml":
            ln = f'    <property name="{k1}.{k2}" value="{v}"/>'
        elif ctype == "conf":
            ln = f"    {k1}_{k2} {v};"
        elif ctype == "json":
            ln = f'    "{k1}{r.choice(["", "Id", "Name", "Timeout", "Enabled", "Path"])}": {json.dumps(v)}'
        else:
            ln = f"{k1}.{k2}={v}"
        lines.append(ln.encode())
    secs = [f"{word(r)}_{word(r)}".encode() for _ in range(256)]
    return lines, secs


CONF_SYNTAX = {  # (file head, section open, section close, line separator, file tail)
    "yaml": (b"# managed by configuration management - do not edit\n---\nhost: HOSTNAME\naddress: HOSTIP\n",
             b"%s:\n", b"", b"\n", b""),
    "ini": (b"; managed by configuration management - do not edit\n[host]\nname = HOSTNAME\naddress = HOSTIP\n",
            b"\n[%s]\n", b"", b"\n", b""),
    "xml": (b'<?xml version="1.0" encoding="UTF-8"?>\n<configuration>\n  <property name="host.name" value="HOSTNAME"/>\n'
            b'  <property name="host.ip" value="HOSTIP"/>\n', b'  <section name="%s">\n', b"  </section>\n", b"\n",
            b"</configuration>\n"),
    "conf": (b"# managed by configuration management - do not edit\nserver_name HOSTNAME;\nlisten HOSTIP:443 ssl;\n",
             b"\nlocation /%s {\n", b"}\n", b"\n", b""),
    "json": (b'{\n  "hostname": "HOSTNAME",\n  "address": "HOSTIP",\n  "sections": [\n', b'  {"name": "%s",\n',
             b"  },\n", b",\n", b'  {"end": true}\n  ]\n}\n'),
    "properties": (b"# generated\nhost.name=HOSTNAME\nhost.ip=HOSTIP\n", b"# %s\n", b"", b"\n", b""),
}


def config_base(seed: int, family: str, ctype: str, size: int) -> bytes:
    """The family's base text (at least 1.3 * size + 2 KiB). Hosts get variants of it."""
    rng = rng_for(seed, "conf", family)
    lines, secs = cached((seed, "confpool", ctype), lambda: _conf_pools(seed, ctype))
    head, sopen, sclose, sep, tail = CONF_SYNTAX[ctype]
    target = int(size * 1.3) + 2048
    n = target // 30 + 16
    picked = list(map(lines.__getitem__, u16_stream(rng, n, 4095)))
    names = rng.randbytes(n // 8 + 1)
    out = [head]
    have = len(head)
    i = k = 0
    while have < target:
        cnt = 4 + (names[k] & 15)
        body = sep.join(picked[i:i + cnt])
        piece = (sopen % secs[names[k]]) + body + b"\n" + sclose
        out.append(piece)
        have += len(piece)
        i += cnt
        k += 1
        if i >= n or k >= len(names):
            i = k = 0
            rng.shuffle(picked)
    out.append(tail)
    return b"".join(out)


_CONF_CACHE: dict[str, bytes] = {}


def config_content(seed: int, path: str, size: int, params: dict):
    fam = params["family"]
    base = _CONF_CACHE.get(fam)
    if base is None:
        base = config_base(seed, fam, params["ctype"], params["fsize"])
        if len(_CONF_CACHE) > 512:
            _CONF_CACHE.clear()
        _CONF_CACHE[fam] = base
    host = params.get("host")
    if host is None:  # exact copy of the family's file
        yield fit(base, size)
        return
    rng = rng_for(seed, "confvar", path)
    b = base.replace(b"HOSTNAME", f"{host}.prod.example.com".encode()).replace(
        b"HOSTIP", params["ip"].encode())
    lines = b.split(b"\n")
    for _ in range(rng.randrange(0, 6)):  # a few host-specific values
        i = rng.randrange(len(lines))
        lines[i] = lines[i] + b" # " + word(rng).encode() + b"=" + str(rng.randrange(1000)).encode()
    yield fit(b"\n".join(lines), size)


def text_doc_content(seed: int, path: str, size: int, params: dict):
    rng = rng_for(seed, "doc", path)
    parts, have = [], 0
    while have < size + 64:
        s = " ".join(word(rng) for _ in range(rng.randrange(5, 20))).capitalize() + ".\n"
        if rng.random() < 0.1:
            s += "\n## " + word(rng).capitalize() + " " + word(rng) + "\n\n"
        parts.append(s)
        have += len(s)
    yield fit("".join(parts).encode(), size)


GENERATORS = {"log": log_content, "sql": sql_content, "bin": binary_content, "rand": random_content,
              "conf": config_content, "doc": text_doc_content}


# ----------------------------------------------------------------------------------------------
# the plan


def build_plan(seed: int, size: int) -> list[dict]:
    """Every entry of the tree: {"type": file|dir|symlink, "path", ...}. Files carry size, kind,
    params, mode and mtime. Sizes add up to exactly `size`."""
    rng = rng_for(seed, "plan", size)
    files: list[dict] = []
    links: list[dict] = []
    dirs: list[str] = []
    used_paths: set[str] = set()

    def add(path, kind, nbytes, mode=0o644, **params):
        assert path not in used_paths, path
        used_paths.add(path)
        files.append({"type": "file", "path": path, "kind": kind, "size": nbytes, "mode": mode,
                      "mtime": BASE_EPOCH + rng.randrange(0, 90 * 86400), "params": params})

    n_hosts = max(4, min(48, size // (32 * MIB)))
    hosts = [f"{ROLES[i % len(ROLES)]}{i // len(ROLES) + 1:02d}" for i in range(n_hosts)]
    host_ip = {h: "10.%d.%d.%d" % (i // 250, (i * 7) % 250 + 1, i % 250 + 1) for i, h in enumerate(hosts)}
    budget = {"vm": int(size * 0.30), "log": int(size * 0.25), "sql": int(size * 0.20),
              "bin": int(size * 0.10), "conf": int(size * 0.05)}
    budget["rand"] = size - sum(budget.values())

    # --- VM images: two clones of one template, a few hundred MiB at 1 GiB
    vm_total = budget["vm"]
    sizes = [max(MIB, (int(vm_total * 0.6) // MIB) * MIB)]
    sizes.append(max(MIB, ((vm_total - sizes[0]) // MIB) * MIB))
    for name, s in zip(["web-frontend-01.img", "db-primary-01.img"], sizes):
        add(f"vm/images/{name}", "vm", s)
    spent_vm = sum(sizes)
    budget["rand"] += vm_total - spent_vm

    # --- logs
    remaining = budget["log"]
    cap = max(MIB, min(50 * MIB, budget["log"] // 3))
    i = 0
    while remaining > 0:
        s = min(remaining, loguniform(rng, MIB, cap))
        if remaining - s < MIB:
            s = remaining
        h = hosts[i % len(hosts)]
        svc = SERVICES[(i * 5) % len(SERVICES)]
        # web servers and load balancers write access logs; the others app, JSON and system logs
        style = "nginx" if h.startswith(("web", "lb")) else ("app", "json", "syslog")[i % 3]
        day = 1 + (i % 28)
        name = {"app": f"{svc}-2024-02-{day:02d}.log", "json": f"{svc}.json.log.{i % 7 + 1}",
                "nginx": f"access.log.{i % 9 + 1}", "syslog": f"syslog.{i % 5 + 1}"}[style]
        sub_dir = {"app": svc, "json": svc, "nginx": "nginx", "syslog": "system"}[style]
        path = f"var/log/{h}/{sub_dir}/{name}"
        while path in used_paths:
            path = path + ".1"
        add(path, "log", s, 0o640, style=style, host=h, service=svc,
            start_ms=(BASE_EPOCH + rng.randrange(0, 60 * 86400)) * 1000)
        remaining -= s
        i += 1

    # --- database dumps
    remaining = budget["sql"]
    lo, hi = min(10 * MIB, budget["sql"] // 4), max(MIB, min(60 * MIB, budget["sql"] // 2))
    i = 0
    while remaining > 0:
        s = min(remaining, rng.randrange(lo, max(lo + 1, hi)))
        if remaining - s < MIB:
            s = remaining
        db = ["shop", "crm", "billing", "inventory", "analytics"][i % 5]
        add(f"var/backups/db/{db}/{db}-2024-02-{1 + i % 28:02d}.sql", "sql", s, 0o600,
            copy=(i % 2 == 0), db=db)
        remaining -= s
        i += 1

    # --- binaries: current releases, previous releases (near-duplicates), shared libs, tools
    remaining = budget["bin"]
    cap = max(64 * KIB, min(24 * MIB, budget["bin"] // 4))
    apps = SERVICES[:]
    i = 0
    while remaining > 0:
        s = min(remaining, loguniform(rng, 64 * KIB, cap))
        if remaining - s < 64 * KIB:
            s = remaining
        app = apps[i % len(apps)]
        ver = f"2.{4 + i // len(apps)}.{rng.randrange(20)}"
        path = f"srv/{app}/releases/{ver}/bin/{app}-server" if i % 3 != 2 else \
            f"usr/local/lib/lib{app}{i}.so.{1 + i % 3}"
        if path in used_paths:
            path += f".{i}"
        add(path, "bin", s, 0o755, version=ver)
        remaining -= s
        if i % 3 != 2 and remaining > s and rng.random() < 0.5:
            prev = f"2.{3 + i // len(apps)}.{rng.randrange(20)}"
            vpath = f"srv/{app}/releases/{prev}/bin/{app}-server"
            if vpath not in used_paths:
                add(vpath, "bin", s, 0o755, base=path, base_size=s, base_version=ver, version=prev)
                remaining -= s
                links.append({"type": "symlink", "path": f"srv/{app}/current", "target": f"releases/{ver}"})
        i += 1

    # --- configuration files: families shared by many hosts, with host-specific edits
    remaining = budget["conf"]
    n_fam = max(8, min(400, remaining // (60 * KIB)))
    families = []
    for k in range(n_fam):
        ctype = CONF_TYPES[k % len(CONF_TYPES)]
        ext = {"yaml": "yaml", "ini": "ini", "json": "json", "xml": "xml", "conf": "conf", "properties": "properties"}[ctype]
        svc = SERVICES[k % len(SERVICES)]
        d = rng.choice([f"{svc}", f"{svc}/conf.d", "nginx/sites-available", "systemd/system",
                        f"opt/{svc}/etc", "prometheus/rules", "ssl", "sysconfig"])
        families.append((f"fam{k}", ctype, f"{d}/{word(rng)}-{word(rng)}.{ext}",
                         loguniform(rng, KIB, 50 * KIB)))
    # special names and documentation
    for name, s in [("docs/Release Notes 2024 (final).txt", 6000), ("docs/Übersicht-Konfiguration.md", 9000),
                    ("docs/runbooks/on call #1 — escalation.md", 4000)]:
        add(name, "doc", s)
        remaining -= s
    # deep directories (vendored dependency trees)
    deep = "opt/portal/app"
    for d in range(18):
        deep += f"/node_modules/{word(rng)}-{d}"
        if d % 3 == 2:
            fam = families[d % n_fam]
            s = min(fam[3], 8 * KIB)
            add(f"{deep}/package.json", "conf", s, family=fam[0], ctype=fam[1], fsize=fam[3], host=None)
            remaining -= s
    # each host carries a host-specific selection of the families (round robin over hosts)
    orders = {}
    for h in hosts:
        o = list(range(n_fam))
        rng.shuffle(o)
        orders[h] = o
    hi = 0
    while remaining > 0:
        h = hosts[hi % len(hosts)]
        o = orders[h]
        fam = families[o[(hi // len(hosts)) % n_fam]]
        hi += 1
        path = f"etc/{h}/{fam[2]}"
        k = 1
        while path in used_paths:  # another instance of the same config on this host
            d, _, name = fam[2].rpartition("/")
            path = f"etc/{h}/{d}/{k:02d}-{name}"
            k += 1
        exact = rng.random() < 0.15
        s = fam[3] if exact else max(512, fam[3] + rng.randrange(-256, 257))
        s = min(s, remaining) if remaining > 512 else remaining
        add(path, "conf", s, 0o600 if "ssl" in path else 0o644, family=fam[0], ctype=fam[1], fsize=fam[3],
            host=None if exact else h, ip=host_ip[h])
        remaining -= s

    # --- already-compressed data; the last file absorbs rounding so the total is exact
    remaining = size - sum(f["size"] for f in files)
    cap = max(128 * KIB, min(32 * MIB, remaining // 3))
    i = 0
    while remaining > 0:
        s = min(remaining, loguniform(rng, 128 * KIB, cap))
        if remaining - s < 128 * KIB:
            s = remaining
        fmt = ["gz", "zst", "jpg", "png", "woff2", "xz"][i % 6]
        h = hosts[i % len(hosts)]
        path = {"gz": f"archives/{h}/etc-2024-02-{1 + i % 28:02d}.tar.gz",
                "zst": f"var/backups/files/{h}-home-{i}.tar.zst",
                "jpg": f"srv/portal/static/img/{word(rng)}-{i}.jpg",
                "png": f"srv/portal/static/img/{word(rng)}-{i}.png",
                "woff2": f"srv/portal/static/fonts/{word(rng)}-{i}.woff2",
                "xz": f"archives/{h}/logs-2023-{1 + i % 12:02d}.tar.xz"}[fmt]
        if path in used_paths:
            path = path + f".{i}"
        add(path, "rand", s, fmt=fmt)
        remaining -= s
        i += 1

    # --- empty files, empty directories, symlinks
    for h in hosts[:3]:
        add(f"etc/{h}/cron.d/.placeholder", "doc", 0)
    dirs += ["var/spool/cron/crontabs", "tmp", "var/lib/portal/uploads/incoming"]
    logs = [f for f in files if f["kind"] == "log"]
    if logs:
        lg = logs[0]["path"]
        links.append({"type": "symlink", "path": lg.rsplit("/", 1)[0] + "/latest.log",
                      "target": lg.rsplit("/", 1)[1]})
    links.append({"type": "symlink", "path": f"etc/{hosts[0]}/localtime", "target": "/usr/share/zoneinfo/Europe/Berlin"})
    links.append({"type": "symlink", "path": f"etc/{hosts[1]}/nginx/sites-enabled/legacy-site",
                  "target": "../sites-available/legacy-site"})  # dangling on purpose
    links.append({"type": "symlink", "path": "vm/current.img", "target": "images/web-frontend-01.img"})
    seen = set()
    uniq_links = []
    for ln in links:
        if ln["path"] not in seen and ln["path"] not in used_paths:
            seen.add(ln["path"])
            uniq_links.append(ln)
    entries = files + uniq_links + [{"type": "dir", "path": d} for d in dirs]
    total = sum(f["size"] for f in files)
    assert total == size, (total, size)
    return entries


# ----------------------------------------------------------------------------------------------
# writing, syncing


def write_file(root: str, e: dict, seed: int) -> None:
    """Writes one planned regular file (its parent directory must exist)."""
    p = os.path.join(root, e["path"])
    if os.path.lexists(p) and (os.path.islink(p) or os.path.isdir(p)):
        remove(p)
    if e["kind"] == "vm":
        vm_write(seed, e["path"], e["size"], p)
    else:
        with open(p, "wb", buffering=0) as f:
            for piece in GENERATORS[e["kind"]](seed, e["path"], e["size"], e["params"]):
                mv = memoryview(piece)
                while mv:
                    mv = mv[f.write(mv):]
    os.chmod(p, e["mode"])
    os.utime(p, (e["mtime"], e["mtime"]))


def prewarm(seed: int) -> None:
    """Builds the shared pools once, before the writer processes fork."""
    for style in LogWriter.STYLES:
        LogWriter(seed, random.Random(0), style, "h", "s", 0)
    for copy_style in (False, True):
        w = SqlWriter(seed, random.Random(0), copy_style)
        for t in SQL_TABLES:
            w.rows(t, 1)
    cached((seed, "binpool"), lambda: _bin_pools(rng_for(seed, "binpool")))
    for ctype in CONF_TYPES:
        cached((seed, "confpool", ctype), lambda: _conf_pools(seed, ctype))


def _write_job(args) -> int:
    root, e, seed = args
    write_file(root, e, seed)
    return e["size"]


def remove(p: str) -> None:
    if os.path.isdir(p) and not os.path.islink(p):
        shutil.rmtree(p)
    else:
        os.unlink(p)


def set_dir_times(root: str, epoch: int) -> None:
    for dp, dn, fn in os.walk(root, topdown=False):
        os.utime(dp, (epoch, epoch))


def marker_path(out: str) -> str:
    return os.path.abspath(out).rstrip("/") + ".marker.json"


def read_marker(out: str) -> dict | None:
    try:
        with open(marker_path(out)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_marker(out: str, m: dict) -> None:
    tmp = marker_path(out) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(m, f, indent=2)
    os.replace(tmp, marker_path(out))


def entry_ok(root: str, e: dict) -> bool:
    p = os.path.join(root, e["path"])
    try:
        st = os.lstat(p)
    except OSError:
        return False
    import stat as S
    if e["type"] == "file":
        return S.S_ISREG(st.st_mode) and st.st_size == e["size"] and int(st.st_mtime) == e["mtime"] \
            and S.S_IMODE(st.st_mode) == e["mode"]
    if e["type"] == "symlink":
        return S.S_ISLNK(st.st_mode) and os.readlink(p) == e["target"]
    return S.S_ISDIR(st.st_mode)


def generate(out: str, seed: int, size: int, force: bool = False, quiet: bool = False, jobs: int = 2) -> dict:
    t0 = time.time()
    out = os.path.abspath(out)
    plan = build_plan(seed, size)
    m = read_marker(out)
    same = m is not None and m.get("version") == GEN_VERSION and m.get("seed") == seed and m.get("size") == size
    if os.path.exists(out) and (force or not same):
        if m is None and os.listdir(out) and not force:
            sys.exit(f"gen_dataset: {out} exists, is not empty and has no marker {marker_path(out)}; "
                     "refusing to delete it (use --force)")
        shutil.rmtree(out)
        same = False
    os.makedirs(out, exist_ok=True)
    write_marker(out, {"version": GEN_VERSION, "seed": seed, "size": size, "state": "generating"})
    # remove what is not in the plan (e.g. files a mutation added)
    removed = 0
    if same:
        planned = {e["path"] for e in plan}
        planned_dirs = set()
        for e in plan:
            parts = e["path"].split("/")
            for k in range(1, len(parts) + (1 if e["type"] == "dir" else 0)):
                planned_dirs.add("/".join(parts[:k]))
        for dp, dn, fn in os.walk(out, topdown=True):
            rel = os.path.relpath(dp, out)
            rel = "" if rel == "." else rel + "/"
            for name in list(dn):
                r = rel + name
                if os.path.islink(os.path.join(dp, name)):
                    fn.append(name)
                    dn.remove(name)
                elif r not in planned_dirs:
                    shutil.rmtree(os.path.join(dp, name))
                    dn.remove(name)
                    removed += 1
            for name in fn:
                if rel + name not in planned:
                    os.unlink(os.path.join(dp, name))
                    removed += 1
    written = written_bytes = 0
    todo = [e for e in plan if not (same and entry_ok(out, e))]
    made: set[str] = set()

    def parent(p):
        d = os.path.dirname(p)
        if d not in made:
            os.makedirs(d, exist_ok=True)
            made.add(d)

    files_todo = [e for e in todo if e["type"] == "file"]
    for e in files_todo:
        parent(os.path.join(out, e["path"]))
    # biggest first, so that the two workers finish together
    files_todo.sort(key=lambda e: (-e["size"], e["path"]))
    if jobs > 1 and len(files_todo) > 1:
        import multiprocessing as mp
        prewarm(seed)
        with mp.get_context("fork").Pool(jobs) as pool:
            for n in pool.imap_unordered(_write_job, [(out, e, seed) for e in files_todo], chunksize=1):
                written += 1
                written_bytes += n
    else:
        for e in files_todo:
            written_bytes += _write_job((out, e, seed))
            written += 1
    for e in todo:
        p = os.path.join(out, e["path"])
        if e["type"] == "file":
            continue
        elif e["type"] == "symlink":
            parent(p)
            if os.path.lexists(p):
                remove(p)
            os.symlink(e["target"], p)
            os.utime(p, (BASE_EPOCH, BASE_EPOCH), follow_symlinks=False)
            written += 1
        else:
            if os.path.lexists(p) and not os.path.isdir(p):
                remove(p)
            os.makedirs(p, exist_ok=True)
            written += 1
    set_dir_times(out, BASE_EPOCH)
    dt = time.time() - t0
    files = [e for e in plan if e["type"] == "file"]
    info = {"version": GEN_VERSION, "seed": seed, "size": size, "state": "pristine",
            "files": len(files), "symlinks": sum(e["type"] == "symlink" for e in plan),
            "bytes": sum(e["size"] for e in files),
            "by_kind": {k: sum(e["size"] for e in files if e["kind"] == k) for k in GENERATORS.keys() | {"vm"}}}
    write_marker(out, info)
    if not quiet:
        verb = "synced" if same else "generated"
        print(f"gen_dataset: {verb} {out}: {info['files']} files, {info['symlinks']} symlinks, "
              f"{info['bytes'] / MIB:.1f} MiB; rewrote {written} entries ({written_bytes / MIB:.1f} MiB), "
              f"removed {removed} in {dt:.2f} s"
              + (f" ({written_bytes / 1e6 / dt:.0f} MB/s)" if written_bytes and dt > 0 else ""))
    return info


# ----------------------------------------------------------------------------------------------
# mutation


def whole_lines(text: bytes, limit: int) -> bytes:
    """The longest prefix of whole lines not longer than limit (at least one line)."""
    i = text.rfind(b"\n", 0, limit) + 1
    return text[:i] if i > 0 else text[: text.find(b"\n") + 1]


def mutate_small(out: str, seed: int) -> dict:
    out = os.path.abspath(out)
    m = read_marker(out)
    if m is None or m.get("state") != "pristine":
        sys.exit(f"gen_dataset: {out} is not a pristine generated tree (marker state: "
                 f"{None if m is None else m.get('state')}); run without --mutate first")
    seed_, size = m["seed"], m["size"]
    if seed_ != seed:
        sys.exit(f"gen_dataset: tree was generated with seed {seed_}, not {seed}")
    plan = build_plan(seed, size)
    files = [e for e in plan if e["type"] == "file"]
    rng = rng_for(seed, "mutate-small", size)
    changes = []
    touched_bytes = 0
    changed_bytes = 0

    def touch(path):
        os.utime(os.path.join(out, path), (MUTATE_EPOCH, MUTATE_EPOCH))

    logs = sorted((e for e in files if e["kind"] == "log"), key=lambda e: e["path"])
    confs = sorted((e for e in files if e["kind"] == "conf" and e["size"] > 2048), key=lambda e: e["path"])
    vms = sorted((e for e in files if e["kind"] == "vm"), key=lambda e: e["path"])

    # 1. insert a few KiB of new lines in the middle of one large log (closest to 1% of the dataset)
    big = min(logs, key=lambda e: (abs(e["size"] - size * 0.01), e["path"]))
    p = os.path.join(out, big["path"])
    with open(p, "rb") as f:
        data = f.read()
    mid = data.find(b"\n", len(data) // 2) + 1
    w = LogWriter(seed, rng, big["params"]["style"], big["params"]["host"], big["params"]["service"], big["params"]["start_ms"])
    want = rng.randrange(2 * KIB, 8 * KIB)
    ins = whole_lines(w.text(want), want)
    with open(p, "wb") as f:
        f.write(data[:mid])
        f.write(ins)
        f.write(data[mid:])
    touch(big["path"])
    del data
    changes.append({"op": "insert", "path": big["path"], "offset": mid, "bytes": len(ins)})
    touched_bytes += big["size"] + len(ins)
    changed_bytes += len(ins)

    # 2. append lines to three other logs
    others = [e for e in logs if e["path"] != big["path"]]
    for e in rng.sample(others, min(3, len(others))):
        w = LogWriter(seed, rng, e["params"]["style"], e["params"]["host"], e["params"]["service"],
                      e["params"]["start_ms"] + 90 * 86400 * 1000)
        want = rng.randrange(4 * KIB, 64 * KIB)
        add = whole_lines(w.text(want), want)
        with open(os.path.join(out, e["path"]), "ab") as f:
            f.write(add)
        touch(e["path"])
        changes.append({"op": "append", "path": e["path"], "bytes": len(add)})
        touched_bytes += e["size"] + len(add)
        changed_bytes += len(add)

    # 3. edit a few configs: change a value on some lines
    for e in rng.sample(confs, min(5, len(confs))):
        p = os.path.join(out, e["path"])
        with open(p, "rb") as f:
            lines = f.read().split(b"\n")
        n_edit = rng.randrange(1, 4)
        for _ in range(n_edit):
            i = rng.randrange(len(lines))
            lines[i] = lines[i] + b" # changed " + str(rng.randrange(10**6)).encode()
        new = b"\n".join(lines)
        with open(p, "wb") as f:
            f.write(new)
        touch(e["path"])
        changes.append({"op": "edit", "path": e["path"], "lines": n_edit, "size_delta": len(new) - e["size"]})
        touched_bytes += len(new)
        changed_bytes += 64 * n_edit

    # 4. rewrite one 4 MiB region of a VM image in place (inside a non-zero region)
    if vms:
        vm = vms[0]
        regions = [r for r in vm_regions(seed, vm["path"], vm["size"]) if r[2] != "zero"]
        cand = [r for r in regions if r[0] + 4 <= vm["size"] // MIB] or [(0, 1, "x")]
        reg = rng.choice(cand)
        off = min((reg[0] + rng.randrange(max(1, reg[1] - 3))) * MIB, max(0, vm["size"] - 4 * MIB))
        ln = min(4 * MIB, vm["size"])
        with open(os.path.join(out, vm["path"]), "r+b") as f:
            f.seek(off)
            f.write(skewed(rng, ln))
        touch(vm["path"])
        changes.append({"op": "rewrite", "path": vm["path"], "offset": off, "bytes": ln})
        touched_bytes += vm["size"]
        changed_bytes += ln

    # 5. five new small files
    fams = sorted({(e["params"]["family"], e["params"]["ctype"], e["params"]["fsize"]) for e in confs})
    for k in range(5):
        e = rng.choice(confs)
        d = os.path.dirname(e["path"])
        fam = rng.choice(fams)
        path = f"{d}/new-{word(rng)}-{k}.{ 'yaml' if fam[1] == 'yaml' else 'conf'}"
        s = rng.randrange(KIB, 8 * KIB)
        body = b"".join(config_content(seed, path, min(s, fam[2]), {"family": fam[0], "ctype": fam[1],
                                                                    "fsize": fam[2], "host": "newhost", "ip": "10.9.9.9"}))
        p = os.path.join(out, path)
        with open(p, "wb") as f:
            f.write(body)
        touch(path)
        changes.append({"op": "add", "path": path, "bytes": len(body)})
        touched_bytes += len(body)
        changed_bytes += len(body)

    # 6. delete two files
    for e in rng.sample(confs, 2):
        p = os.path.join(out, e["path"])
        if os.path.exists(p):
            os.unlink(p)
            changes.append({"op": "delete", "path": e["path"], "bytes": e["size"]})
    # parent directories of changed entries get a deterministic mtime too
    for c in changes:
        d = os.path.join(out, os.path.dirname(c["path"]))
        os.utime(d, (MUTATE_EPOCH, MUTATE_EPOCH))

    report = {"changes": changes, "files_touched": len(changes), "touched_bytes": touched_bytes,
              "changed_bytes": changed_bytes, "dataset_bytes": size,
              "touched_pct": round(100.0 * touched_bytes / size, 2),
              "changed_pct": round(100.0 * changed_bytes / size, 2)}
    m["state"] = "mutated-small"
    m["mutation"] = report
    write_marker(out, m)
    print(f"gen_dataset: mutate small on {out}:")
    for c in changes:
        extra = ", ".join(f"{k}={v}" for k, v in c.items() if k not in ("op", "path"))
        print(f"  {c['op']:8} {c['path']}  ({extra})")
    print(f"  -> {len(changes)} entries, files touched hold {touched_bytes / MIB:.1f} MiB "
          f"({report['touched_pct']}% of the dataset), about {changed_bytes / KIB:.0f} KiB "
          f"({report['changed_pct']}%) of new/changed bytes")
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1G", help="total bytes of regular files, e.g. 1G, 256M (default 1G)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "work", "dataset"))
    ap.add_argument("--mutate", choices=["small"], help="apply a seeded change to an existing pristine tree")
    ap.add_argument("--force", action="store_true", help="regenerate from scratch even if the marker matches")
    ap.add_argument("--jobs", type=int, default=2, help="writer processes (default 2; output does not depend on it)")
    ap.add_argument("--plan", action="store_true", help="print the plan summary and exit")
    a = ap.parse_args(argv)
    size = parse_size(a.size)
    if size < 16 * MIB:
        ap.error("--size must be at least 16M")
    if a.plan:
        plan = build_plan(a.seed, size)
        kinds: dict[str, list[int]] = {}
        for e in plan:
            if e["type"] == "file":
                kinds.setdefault(e["kind"], []).append(e["size"])
        for k, v in sorted(kinds.items()):
            print(f"{k:5} {len(v):6} files {sum(v) / MIB:9.1f} MiB ({100 * sum(v) / size:5.1f}%)  max {max(v) / MIB:.1f} MiB")
        print(f"symlinks {sum(e['type'] == 'symlink' for e in plan)}, empty dirs {sum(e['type'] == 'dir' for e in plan)}")
        return 0
    if a.mutate:
        mutate_small(a.out, a.seed)
    else:
        generate(a.out, a.seed, size, force=a.force, jobs=a.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
