"""Helpers of the S3 benchmarks (bench/s3.py, bench/s3_scale.py): the shared Ceph RADOS Gateway of
`scripts/ceph-rgw.sh`, a minimal S3 client (AWS signature version 4, path-style, standard library
only) for the benchmarks' own buckets, and request counts read from the gateway's access log.

The gateway is shared with other users (tests, other benchmarks): everything here works on buckets
this process created, and the request counts keep only the log lines naming those buckets.
Secrets are read from the gateway's env file and passed to tools through the environment only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.client
import os
import re
import secrets
import subprocess
import time
import urllib.parse
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class Gateway:
    """The running gateway as DIR/env describes it (started through the script, idempotent)."""

    def __init__(self, rgw_dir: str):
        self.dir = rgw_dir
        out = subprocess.run(["bash", os.path.join(ROOT, "scripts/ceph-rgw.sh"), "start", rgw_dir],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"s3 bench: scripts/ceph-rgw.sh start {rgw_dir} failed:\n{out.stderr}")
        env = dict(ln.split("=", 1) for ln in out.stdout.splitlines() if "=" in ln)
        self.endpoint = env["IBS_TEST_RGW_ENDPOINT"]
        self.region = env["IBS_TEST_RGW_REGION"]
        self.access_key = env["IBS_TEST_RGW_WRITER_ACCESS_KEY"]
        self._secret = env["IBS_TEST_RGW_WRITER_SECRET_KEY"]
        self.host_port = self.endpoint.split("://", 1)[1]
        self.log_path = os.path.join(rgw_dir, "log", "client.rgw.gw.log")

    def env(self) -> dict:
        """The AWS variables ibs and restic read the writer's keys from."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self._secret}

    def pids(self) -> dict:
        out = {}
        for name in ("rgw", "osd", "mon"):
            try:
                with open(os.path.join(self.dir, f"{name}.pid")) as f:
                    out[name] = int(f.read().strip())
            except (OSError, ValueError):
                pass
        return out

    def cpu_seconds(self) -> dict:
        """user+system CPU seconds so far of radosgw, the OSD and the monitor."""
        tick = os.sysconf("SC_CLK_TCK")
        out = {}
        for name, pid in self.pids().items():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                out[name] = (int(fields[11]) + int(fields[12])) / tick
            except OSError:
                out[name] = float("nan")
        return out

    def rss_mib(self) -> dict:
        out = {}
        for name, pid in self.pids().items():
            try:
                with open(f"/proc/{pid}/status") as f:
                    for ln in f:
                        if ln.startswith("VmRSS:"):
                            out[name] = int(ln.split()[1]) / 1024
            except OSError:
                pass
        return out

    # -- a minimal S3 client ---------------------------------------------------------------------

    def request(self, method: str, bucket: str, key: str = "", query: dict | None = None,
                body: bytes = b"", headers: dict | None = None) -> tuple[int, bytes]:
        query = query or {}
        path = "/" + bucket + ("/" + key if key else "")
        cpath = urllib.parse.quote(path, safe="/-_.~")
        cquery = "&".join(f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(str(v), safe='-_.~')}"
                          for k, v in sorted(query.items()))
        now = dt.datetime.now(dt.timezone.utc)
        amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        payload = hashlib.sha256(body).hexdigest()
        hdrs = {"host": self.host_port, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
        for k, v in (headers or {}).items():
            hdrs[k.lower()] = v
        signed = ";".join(sorted(hdrs))
        canon = "\n".join([method, cpath, cquery, "".join(f"{k}:{hdrs[k].strip()}\n" for k in sorted(hdrs)),
                           signed, payload])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canon.encode()).hexdigest()])
        k = ("AWS4" + self._secret).encode()
        for part in (day, self.region, "s3", "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
        hdrs["authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
                                 f"SignedHeaders={signed}, Signature={sig}")
        conn = http.client.HTTPConnection(self.host_port, timeout=120)
        try:
            conn.request(method, cpath + ("?" + cquery if cquery else ""), body=body, headers=hdrs)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def create_bucket(self, tag: str) -> str:
        name = f"s3bench-{tag}-{os.getpid()}-{secrets.token_hex(4)}"
        status, body = self.request("PUT", name)
        if status != 200:
            raise SystemExit(f"s3 bench: create bucket {name}: HTTP {status} {body[:300]!r}")
        return name

    def list_objects(self, bucket: str, prefix: str = "") -> list[tuple[str, int]]:
        """(key, size) of every object under prefix (ListObjectsV2, all pages)."""
        out, token = [], None
        while True:
            q = {"list-type": "2", "max-keys": "1000"}
            if prefix:
                q["prefix"] = prefix
            if token:
                q["continuation-token"] = token
            status, body = self.request("GET", bucket, query=q)
            if status != 200:
                raise SystemExit(f"s3 bench: list {bucket}: HTTP {status} {body[:300]!r}")
            root = ET.fromstring(body)
            ns = root.tag.split("}")[0] + "}" if root.tag.startswith("{") else ""
            for c in root.iter(f"{ns}Contents"):
                out.append((c.find(f"{ns}Key").text, int(c.find(f"{ns}Size").text)))
            if (root.findtext(f"{ns}IsTruncated") or "false") != "true":
                return out
            token = root.findtext(f"{ns}NextContinuationToken")

    def delete_bucket(self, bucket: str) -> None:
        """Deletes every object (and unfinished multipart upload), then the bucket."""
        keys = [k for k, _ in self.list_objects(bucket)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda k: self.request("DELETE", bucket, k), keys))
        status, body = self.request("GET", bucket, query={"uploads": ""})
        if status == 200:
            root = ET.fromstring(body)
            ns = root.tag.split("}")[0] + "}" if root.tag.startswith("{") else ""
            for u in root.iter(f"{ns}Upload"):
                self.request("DELETE", bucket, u.findtext(f"{ns}Key"), {"uploadId": u.findtext(f"{ns}UploadId")})
        self.request("DELETE", bucket)


# -- processes ------------------------------------------------------------------------------------

def run_concurrent(jobs: list[tuple[list[str], dict]], logdir: str, tag: str) -> dict:
    """Starts every (argv, env) at once; returns the wall time until the last one exited and, per
    job, its exit code, wall time, CPU seconds and peak RSS (wait4 of that child), stdout's last
    line and stderr's tail."""
    os.makedirs(logdir, exist_ok=True)
    procs, t0 = [], time.perf_counter()
    for i, (argv, env) in enumerate(jobs):
        out = open(os.path.join(logdir, f"{tag}-{i}.out"), "wb")
        err = open(os.path.join(logdir, f"{tag}-{i}.err"), "wb")
        p = subprocess.Popen(argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        procs.append((p, out, err))
    res: dict[int, dict] = {}
    by_pid = {p.pid: i for i, (p, _, _) in enumerate(procs)}
    while len(res) < len(jobs):
        pid, status, ru = os.wait4(-1, 0)
        if pid not in by_pid:
            continue
        i = by_pid[pid]
        p, out, err = procs[i]
        out.close()
        err.close()
        with open(out.name, "rb") as f:
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
        with open(err.name, "rb") as f:
            tail = f.read().decode(errors="replace").splitlines()[-10:]
        res[i] = {"rc": os.waitstatus_to_exitcode(status), "wall": time.perf_counter() - t0,
                  "cpu": ru.ru_utime + ru.ru_stime, "maxrss_kib": ru.ru_maxrss,
                  "last_line": lines[-1] if lines else None, "stderr_tail": tail}
    return {"wall": time.perf_counter() - t0, "jobs": [res[i] for i in range(len(jobs))]}


def inventory(gw: "Gateway", bucket: str, prefix: str) -> dict:
    """Objects under prefix by class (first name component): count, bytes and sizes."""
    out: dict[str, dict] = {}
    for key, size in gw.list_objects(bucket, prefix):
        cls = key[len(prefix):].split("/", 1)[0]
        c = out.setdefault(cls, {"n": 0, "bytes": 0, "sizes": []})
        c["n"] += 1
        c["bytes"] += size
        c["sizes"].append(size)
    return out


# -- request counts from the access log ------------------------------------------------------------

# radosgw (beast frontend, debug_rgw >= 1, the default) logs one line per request:
# ... beast: 0x7f..: 127.0.0.1 - USER [05/Dec/2026:00:11:22.862 +0000] "GET /b/k?x HTTP/1.1" 200 231 - "UA" - latency=0.004s
# The number after the status is the body bytes of the request or the response (PUT: received).
BEAST = re.compile(r'beast: \S+ \S+ - (\S+) \[[^\]]*\] "(\w+) (\S+) HTTP/[\d.]+" (\d+) (\d+|-) .*latency=([\d.]+)')


class LogWindow:
    """The gateway's access-log lines written between start() and stop() for some buckets."""

    def __init__(self, gw: Gateway):
        self.gw = gw
        self.offset = 0

    def start(self) -> None:
        try:
            self.offset = os.path.getsize(self.gw.log_path)
        except OSError:
            self.offset = 0

    def stop(self, buckets: list[str], prefix_of: dict | None = None, settle: float = 1.5) -> dict:
        """Counts by (op, class) for requests naming one of `buckets`; `prefix_of` maps a bucket to
        the key prefix its repository lives under (stripped before classifying)."""
        time.sleep(settle)  # radosgw writes its log asynchronously
        with open(self.gw.log_path, "rb") as f:
            f.seek(self.offset)
            data = f.read().decode(errors="replace")
        counts: dict[str, dict] = {}
        total = {"requests": 0, "bytes": 0, "errors": 0, "latency_s": 0.0}
        want = set(buckets)
        for ln in data.splitlines():
            m = BEAST.search(ln)
            if not m:
                continue
            _user, method, target, status, nbytes, lat = m.groups()
            path, _, query = target.partition("?")
            parts = path.lstrip("/").split("/", 1)
            if parts[0] not in want:
                continue
            key = urllib.parse.unquote(parts[1]) if len(parts) > 1 else ""
            op = classify(method, key, query)
            pre = (prefix_of or {}).get(parts[0], "")
            if key.startswith(pre):
                key = key[len(pre):]
            cls = key.split("/", 1)[0] if key else "-"
            if op == "LIST":
                q = urllib.parse.parse_qs(query)
                cls = (q.get("prefix", [""])[0][len(pre):].split("/", 1)[0] or "-")
            name = f"{op} {cls}"
            c = counts.setdefault(name, {"n": 0, "bytes": 0, "latency_s": 0.0})
            c["n"] += 1
            c["bytes"] += int(nbytes) if nbytes != "-" else 0
            c["latency_s"] += float(lat)
            total["requests"] += 1
            total["bytes"] += int(nbytes) if nbytes != "-" else 0
            total["latency_s"] += float(lat)
            if int(status) >= 400:
                total["errors"] += 1
        return {"by_op": dict(sorted(counts.items())), **total}


def classify(method: str, key: str, query: str) -> str:
    q = urllib.parse.parse_qs(query, keep_blank_values=True)
    if not key:
        if method == "GET" and "uploads" in q:
            return "LIST_UPLOADS"
        if method == "GET" and ("list-type" in q or "prefix" in q or not q or "max-keys" in q):
            return "LIST"
        if method == "POST" and "delete" in q:
            return "DELETE_MULTI"
        return f"{method}_BUCKET"
    if method == "PUT" and "partNumber" in q:
        return "PUT_PART"
    if method == "POST" and "uploads" in q:
        return "MPU_INIT"
    if method == "POST" and "uploadId" in q:
        return "MPU_COMPLETE"
    if method == "DELETE" and "uploadId" in q:
        return "MPU_ABORT"
    if method in ("PUT", "GET") and ("retention" in q or "legal-hold" in q):
        return f"{method}_RETENTION"
    return method


def summarize(counts: dict) -> dict:
    """Totals by operation (the class dropped)."""
    out: dict[str, int] = {}
    for name, c in counts["by_op"].items():
        op = name.split(" ", 1)[0]
        out[op] = out.get(op, 0) + c["n"]
    return dict(sorted(out.items()))
