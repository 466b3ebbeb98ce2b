#!/usr/bin/env python3
"""Extrapolates the small-scale measurements of bench/s3_scale.py to many writers with many files
on one repository (issue 14 item 5; the figures and their discussion are in
docs/design/scale-out.md).

    python3 bench/scale_out.py [--writers 100] [--files 1000000] [--retention 30] [--prune-days 7]
                               [--window-hours 2] [--shared 0.02] [--measured bench/results/s3-scale.json]
                               [--segments bench/results/s3-scale-more.json]

The model is arithmetic on the repository format and the code as they are (format v2 manifests,
one index segment per backup that stores anything, every backup reading every segment), with
per-file coefficients measured on Ceph RGW:

- index bytes per file and manifest bytes per file: the 100,000-file, one-writer run (full backup);
- new index bytes per file per day: its day-1 backup (`gen_scale.py --day 1` change rates);
- fixed requests per backup by operation and object class: the one-writer no-change backup;
- lock requests per acquisition and per refresh: the protocol (storage-contract.md, "Locks"),
  checked against the 1/2/4-writer runs;
- cost of one index segment at backup start: the slope of the segments experiment (no-change
  backup time and GETs against the number of segments);
- writer memory: the measured peak of a no-change backup of 1 M files (130.7 MiB, bench/README.md)
  plus 23 bytes per chunk of the other writers in its dedup set (ADR 0059; 57, the whole index,
  before; docs/design/memory.md); the RSS fit
  between 10,000 and 100,000 files is printed for reference only (it overestimates: the fixed
  tables fill first); prune: the index plus a set of every referenced chunk (~33 bytes each),
  reading the manifests one at a time.

Standard library only. Prints a table; JSON in bench/results/scale-out.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# From the format and docs/design/memory.md (bytes).
REF_BYTES = 36  # refs body v2: chunk id (32) + one u32 position per source reference; ids do not compress
INDEX_MEM_PER_CHUNK = 57  # ChunkIdMap<Slot> in restore, check and prune
WRITER_MEM_PER_CHUNK = 23  # DedupSet in a backup (ADR 0059)
USED_SET_PER_CHUNK = 33  # prune's ChunkIdSet of every chunk any retained backup references (one manifest at a time)
SEGMENT_MAX_ENTRIES = 65536  # a backup writes a segment per 65,536 new entries (or 2000 packs)
PACK_BYTES = 16 << 20
MULTIPART_THRESHOLD = 16 << 20  # ibs-s3: objects above it go as multipart uploads of 16 MiB parts
LIST_PAGE = 1000  # keys per ListObjectsV2 page
LOCK_REFRESH_S = 30


def step(run: dict, name: str) -> dict:
    return next(s for s in run["steps"] if s["step"] == name)


def by_class(reqs: dict) -> dict[str, int]:
    return {k: v["n"] for k, v in reqs["by_op"].items()}


def pack_bytes(st: dict) -> int:
    """Bytes of packs a step uploaded (single PUTs and multipart parts)."""
    return sum(v["bytes"] for k, v in st["requests"]["by_op"].items() if k in ("PUT packs", "PUT_PART packs"))


def fit(x0, y0, x1, y1):
    b = (y1 - y0) / (x1 - x0)
    return y0 - b * x0, b


def coefficients(measured: dict, segments: dict | None) -> dict:
    runs = {(r["files_k"], r["writers"]): r for r in measured["runs"]}
    big = runs[(100, 1)]
    small = runs[(10, 1)]
    files = big["trees"][0]["files"]
    full, nochange, day1 = step(big, "full"), step(big, "nochange"), step(big, "day1")
    idx_full = full["inventory"]["index"]["bytes"]
    idx_day1 = day1["inventory"]["index"]["bytes"]
    man = nochange["inventory"]["backups"]["sizes"]
    c = {
        "files_measured": files,
        "index_bytes_per_file": idx_full / files,
        "manifest_bytes_per_file": man[-1] / files,
        "new_index_bytes_per_file_day": (idx_day1 - idx_full) / files,
        "pack_bytes_per_file": pack_bytes(full) / files,
        "new_pack_bytes_per_file_day": pack_bytes(day1) / files,
        "fixed_requests_nochange": by_class(nochange["requests"]),
        "fixed_requests_day1": by_class(day1["requests"]),
    }
    # chunks per file: the manifest's refs part is ~REF_BYTES per distinct chunk the backup references
    c["chunks_per_file"] = c["manifest_bytes_per_file"] / REF_BYTES
    c["index_bytes_per_chunk"] = c["index_bytes_per_file"] / c["chunks_per_file"]
    for kind in ("full", "nochange"):
        a, b = fit(small["trees"][0]["files"], max(j["maxrss_kib"] for j in step(small, kind)["jobs"]) / 1024,
                   files, max(j["maxrss_kib"] for j in step(big, kind)["jobs"]) / 1024)
        c[f"rss_{kind}_mib"] = {"fixed": a, "per_file": b}
    c["prune_rss_mib_100k"] = step(big, "prune")["jobs"][0]["maxrss_kib"] / 1024
    # the multi-writer runs: index reads per writer per segment (a second pass when chunks are
    # stored under several writers' data keys, keysel::writer_index), lock GETs per writer
    multi = []
    for (k, w), r in sorted(runs.items()):
        if w < 2:
            continue
        nc = step(r, "nochange")
        seg = step(r, "full")["inventory"]["index"]["n"]
        cls = by_class(nc["requests"])
        multi.append({"files_k": k, "writers": w, "segments": seg,
                      "index_gets_per_writer_per_segment": cls.get("GET index", 0) / w / seg,
                      "lock_gets_per_writer": cls.get("GET locks", 0) / w})
    c["multi_writer"] = multi
    if segments and segments.get("points"):
        pts = segments["points"]
        a, b = fit(pts[0]["segments"], pts[0]["wall_s"], pts[-1]["segments"], pts[-1]["wall_s"])
        c["backup_s_per_segment"] = b
        c["segment_points"] = [{"segments": p["segments"], "wall_s": p["wall_s"],
                                "gets": by_class(p["requests"]).get("GET index", 0)} for p in pts]
    return c


def model(c: dict, a: argparse.Namespace) -> dict:
    W, F, R, P, H, s = a.writers, a.files, a.retention, a.prune_days, a.window_hours, a.shared
    chunks = c["chunks_per_file"] * F  # distinct chunks of one writer's tree
    new_chunks_day = c["new_index_bytes_per_file_day"] * F / c["index_bytes_per_chunk"]
    union = W * chunks * (1 - s) + W * new_chunks_day * R  # index entries after a retention period
    index_bytes = union * c["index_bytes_per_chunk"]
    manifest = c["manifest_bytes_per_file"] * F
    # segments: a writer's first (full) backup writes ceil(chunks / 65,536); each later backup that
    # stores anything writes one; prune leaves one full segment (more if > 65,536 entries? it writes
    # one: format §12)
    seg_avg = 1 + W * P / 2
    seg_max = 1 + W * P
    reads = 2 if a.mixed_keys else 1
    fixed = sum(v for k, v in c["fixed_requests_day1"].items() if not k.endswith((" index", " locks")))
    manifest_parts = math.ceil(manifest / MULTIPART_THRESHOLD) if manifest > MULTIPART_THRESHOLD else 0
    new_pack_bytes = c["new_pack_bytes_per_file_day"] * F
    packs_day = max(1, math.ceil(new_pack_bytes / PACK_BYTES))
    # locks: acquisition = put (choosing) + look + put (waiting) + look + put (held) + delete;
    # a look = 1 LIST + one GET per other lock object; refresh = look + put every 30 s
    concurrent = min(W, max(1.0, W * a.backup_s / (H * 3600)))
    lock_acq = 4 + 2 * (1 + concurrent)
    lock_refresh = (a.backup_s // LOCK_REFRESH_S) * (2 + concurrent)
    per_backup = {
        "index LIST pages": math.ceil(seg_avg / LIST_PAGE) * reads,
        "index GETs": seg_avg * reads,
        "packs PUT + HEAD (verify)": 2 * packs_day,
        "manifest PUT requests": (manifest_parts + 2) if manifest_parts else 1,
        "lock requests": lock_acq + lock_refresh,
        "other fixed (config, keys, damaged, root probes)": fixed - c["fixed_requests_day1"].get("PUT packs", 0)
                                                            - c["fixed_requests_day1"].get("HEAD packs", 0)
                                                            - c["fixed_requests_day1"].get("PUT backups", 0),
    }
    req_backup = sum(per_backup.values())
    # packs: every writer's first backup (less what others stored) plus a retention period of changes
    total_packs = W * F * (c["pack_bytes_per_file"] * (1 - s) + c["new_pack_bytes_per_file_day"] * R) / PACK_BYTES
    # the writer's own part: measured at 1 M files (local folder, release build: bench/README.md,
    # "Memory at 1 M files"), scaled by files; the other writers' chunks come on top in the index
    own = a.own_rss_mib * F / 1_000_000 if F < 1_000_000 else a.own_rss_mib + WRITER_MEM_PER_CHUNK * (
        F - 1_000_000) * c["chunks_per_file"] / 2**20
    writer_rss = own + WRITER_MEM_PER_CHUNK * (union - chunks) / 2**20
    out = {
        "assumptions": {"writers": W, "files_per_writer": F, "backups_per_day": 1, "retention_backups": R,
                        "prune_every_days": P, "backup_window_hours": H, "shared_fraction": s,
                        "backup_duration_s": a.backup_s, "index_read_passes": reads},
        "per_writer": {
            "chunks": chunks,
            "index_bytes_own": chunks * c["index_bytes_per_chunk"],
            "new_chunks_per_day": new_chunks_day,
            "manifest_bytes_per_backup": manifest,
        },
        "repository": {
            "index_entries": union,
            "index_bytes": index_bytes,
            "segments_avg": seg_avg,
            "segments_max": seg_max,
            "manifests": W * R,
            "packs": total_packs,
            "manifest_bytes": W * R * manifest,
            "lock_objects_at_once": concurrent,
        },
        "per_backup": {
            "requests": per_backup,
            "requests_total": req_backup,
            "index_bytes_read": index_bytes * reads,
            "index_load_s_from_segment_slope": (seg_avg * c.get("backup_s_per_segment", 0) * reads),
            "manifest_bytes_written": manifest,
            "writer_rss_mib": writer_rss,
        },
        "per_day": {
            "backup_requests": W * req_backup,
            "request_rate_in_window_per_s": W * req_backup / (H * 3600),
            "index_bytes_read": W * index_bytes * reads,
            "manifest_bytes_written": W * manifest,
            "new_pack_bytes": W * new_pack_bytes,
        },
        "prune": {
            "list_pages": math.ceil(W * R / LIST_PAGE) + math.ceil(seg_max / LIST_PAGE)
                          + math.ceil(max(total_packs, 1) / LIST_PAGE),
            "manifest_bytes_read": W * R * manifest,
            "rss_mib_refs": USED_SET_PER_CHUNK * union / 2**20,
            "rss_mib_index": INDEX_MEM_PER_CHUNK * union / 2**20,
        },
        "locks_synchronized_start": {
            "lock_objects": W,
            "requests_per_acquisition": 4 + 2 * (1 + W),
            "refresh_requests_per_s": W * (2 + W) / LOCK_REFRESH_S,
        },
    }
    return out


def human(n: float, unit: str = "B") -> str:
    for p, name in ((2**40, "Ti"), (2**30, "Gi"), (2**20, "Mi"), (2**10, "Ki")):
        if abs(n) >= p:
            return f"{n / p:,.1f} {name}{unit}"
    return f"{n:,.0f} {unit}"


def table(c: dict, m: dict) -> str:
    A, pw, rp, pb, pd, pr, lk = (m["assumptions"], m["per_writer"], m["repository"], m["per_backup"], m["per_day"],
                                 m["prune"], m["locks_synchronized_start"])
    rows = [
        ("measured: index bytes per file / per chunk", f"{c['index_bytes_per_file']:.1f} / {c['index_bytes_per_chunk']:.1f}"),
        ("measured: manifest bytes per file (chunks per file)", f"{c['manifest_bytes_per_file']:.1f} ({c['chunks_per_file']:.2f})"),
        ("measured: new index bytes per file per day", f"{c['new_index_bytes_per_file_day']:.3f}"),
        ("measured: no-change backup RSS MiB = a + b × files", f"{c['rss_nochange_mib']['fixed']:.1f} + {c['rss_nochange_mib']['per_file'] * 1e6:.1f} per million"),
        ("measured: backup start-up s per index segment", f"{c.get('backup_s_per_segment', float('nan')):.4f}"),
        ("chunks per writer", f"{pw['chunks']:,.0f}"),
        ("index entries in the repository (all writers, after retention)", f"{rp['index_entries']:,.0f}"),
        ("index bytes in the repository", human(rp["index_bytes"])),
        ("index segments (average / before prune)", f"{rp['segments_avg']:,.0f} / {rp['segments_max']:,.0f}"),
        ("manifest per backup / all retained", f"{human(pw['manifest_bytes_per_backup'])} / {human(rp['manifest_bytes'])}"),
        ("requests per backup (daily, changed)", f"{pb['requests_total']:,.0f} ({', '.join(f'{k}: {v:,.0f}' for k, v in pb['requests'].items())})"),
        ("index bytes read per backup", human(pb["index_bytes_read"])),
        ("index load per backup from the segment slope", f"{pb['index_load_s_from_segment_slope']:.1f} s"),
        ("writer peak RSS (no-change backup)", f"{pb['writer_rss_mib']:,.0f} MiB"),
        ("requests per day / mean rate in the window", f"{pd['backup_requests']:,.0f} / {pd['request_rate_in_window_per_s']:.1f} per s"),
        ("index bytes read per day (all writers)", human(pd["index_bytes_read"])),
        ("manifest bytes written per day", human(pd["manifest_bytes_written"])),
        ("new pack bytes per day", human(pd["new_pack_bytes"])),
        ("prune: list pages / manifest bytes read", f"{pr['list_pages']:,} / {human(pr['manifest_bytes_read'])}"),
        ("prune: RSS for the referenced-chunk set / for the index", f"{pr['rss_mib_refs']:,.0f} MiB / {pr['rss_mib_index']:,.0f} MiB"),
        ("locks, all writers starting at once: requests per acquisition / refresh requests per s",
         f"{lk['requests_per_acquisition']:,} / {lk['refresh_requests_per_s']:,.0f}"),
    ]
    head = (f"{A['writers']} writers x {A['files_per_writer']:,} files, {A['backups_per_day']} backup/day, retention "
            f"{A['retention_backups']}, prune every {A['prune_every_days']} days, window {A['backup_window_hours']} h, "
            f"shared fraction {A['shared_fraction']}, backup {A['backup_duration_s']} s, index read "
            f"{A['index_read_passes']}x")
    return head + "\n\n| figure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--writers", type=int, default=100)
    p.add_argument("--files", type=int, default=1_000_000)
    p.add_argument("--retention", type=int, default=30, help="retained backups per writer (daily)")
    p.add_argument("--prune-days", type=int, default=7)
    p.add_argument("--window-hours", type=float, default=2.0)
    p.add_argument("--shared", type=float, default=0.02,
                   help="fraction of a writer's chunks another writer also has (measured 0.02 on gen_scale seeds)")
    p.add_argument("--backup-s", type=float, default=90.0,
                   help="duration of a daily backup (1 M files: 64-107 s measured locally, bench/README.md)")
    p.add_argument("--own-rss-mib", type=float, default=130.7,
                   help="peak RSS of a no-change backup of the writer's own 1 M files (bench/README.md)")
    p.add_argument("--single-read", dest="mixed_keys", action="store_false",
                   help="index read once per backup (no chunk under two writers' data keys)")
    p.add_argument("--measured", default=os.path.join(HERE, "results", "s3-scale.json"))
    p.add_argument("--segments", default=os.path.join(HERE, "results", "s3-scale-more.json"))
    p.add_argument("--results", default=os.path.join(HERE, "results", "scale-out.json"))
    a = p.parse_args(argv)
    with open(a.measured) as f:
        measured = json.load(f)
    segments = None
    if os.path.exists(a.segments):
        with open(a.segments) as f:
            segments = json.load(f).get("segments")
    c = coefficients(measured, segments)
    m = model(c, a)
    print(table(c, m))
    os.makedirs(os.path.dirname(a.results), exist_ok=True)
    with open(a.results, "w") as f:
        json.dump({"coefficients": c, "model": m}, f, indent=1)
    print(f"\nscale-out: JSON in {a.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
