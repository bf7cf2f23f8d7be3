"""Telemetry conversion benchmark: long-format historian CSV -> canonical transitions.

Writes synthetic long exports (``timestamp, tag, value, quality, units``; ISO timestamps with ms
and 'Z'; 10 tags reporting about once a second with jitter; ~0.1 % PI digital states such as
"Bad Input" in the value column; OPC UA status codes) of two sizes into a temporary folder (cached
for the run), then measures each in fresh worker processes:

  (a) pandas:  a plain ``pandas.read_csv`` of the file (no parsing of timestamps, no alignment) --
               what "just load it" costs;
  (b) convert: ``telemetry_to_transitions(file, spec)`` end to end (chunked read, timestamp and
               quality parsing, no-look-ahead alignment of 8 of the 10 tags on a 10 s grid,
               episodes, rewards, validated TransitionData, the per-tag audit);
  (c) convert+options: the same with the scan-rate options of issue 12 on: ``hold_bad`` bridging
               bad samples on every tag, per-tag clock ``offset`` on three tags, and a once-a-minute
               hold on one (its logging-interval warning is computed too).

Printed per size: wall and CPU seconds (CPU time shows the cost when the machine is shared), long
rows/s, and the peak-RSS growth (VmHWM) of each worker over its RSS after imports. Goals: convert
>= 1M long rows/s on the large file, and its peak memory set by the chunk
size (``reader.chunk_rows``), not the file size: the two sizes should need about the same memory,
while pandas grows with the file.

Run:  python benchmarks/convert.py                      (10M and 2M rows)
      python benchmarks/convert.py --rows 2000000 --small 500000   (quick)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TAGS = [f"U{i}-10{i}.PV" for i in range(8)] + ["XX-900.PV", "XX-901.PV"]
"""Eight tags used by the spec (6 observations, 2 actions) and two that the converter skips."""
SPEC = {
    "control_period": "10s",
    "max_gap": "1min",
    "observations": [{"tag": t, "alignment": "mean"} for t in TAGS[:6]],
    "actions": [{"tag": t, "alignment": "stepped", "low": -1e4, "high": 1e4} for t in TAGS[6:8]],
    "impute": {"max_steps": 2},
    "reward": {"expression": f"-abs(next_{TAGS[0].replace('-', '_').replace('.', '_')}) - 0.01 * delta_"
                             f"{TAGS[6].replace('-', '_').replace('.', '_')}**2"},
}


SPEC_OPTIONS = {
    **SPEC,
    "hold_bad": "3s",
    "observations": [{"tag": t, "alignment": "mean", **({"offset": f"-{0.2 * (i + 1):g}s"} if i < 3 else {})}
                     for i, t in enumerate(TAGS[:6])],
    "extra_state": [],
    "actions": [{"tag": TAGS[6], "alignment": "stepped", "low": -1e4, "high": 1e4, "max_gap": "2min"},
                {"tag": TAGS[7], "alignment": "stepped", "low": -1e4, "high": 1e4}],
}
"""SPEC with the issue-12 options: bad-sample bridging, clock offsets, a longer per-tag hold."""
KINDS = {"pandas": None, "convert": SPEC, "convert+options": SPEC_OPTIONS}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    """Peak RSS of this process image (VmHWM; ru_maxrss would include the parent before exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def write_export(path: Path, rows: int, seed: int = 0, block: int = 1_000_000) -> None:
    """A time-ordered long export of ``rows`` rows, written block by block (bounded memory)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    rng = np.random.default_rng(seed)
    start = np.datetime64("2024-01-01T00:00:00", "ms")
    level = np.zeros(len(TAGS))
    t_ms = 0
    schema = pa.schema([("timestamp", pa.string()), ("tag", pa.string()), ("value", pa.string()),
                        ("quality", pa.int64()), ("units", pa.string())])
    tmp = path.with_suffix(".part")
    with pa_csv.CSVWriter(str(tmp), schema) as writer:
        done = 0
        while done < rows:
            n = min(block, rows - done)
            # 10 tags at ~1 Hz each: 100 ms mean spacing between rows, jittered.
            steps = rng.integers(1, 200, n)
            times = t_ms + np.cumsum(steps)
            t_ms = int(times[-1])
            tag_idx = rng.integers(0, len(TAGS), n)
            noise = rng.normal(0.0, 0.05, n)
            values = np.empty(n)
            for k in range(len(TAGS)):
                sel = tag_idx == k
                walk = level[k] + np.cumsum(noise[sel])
                values[sel] = walk
                if sel.any():
                    level[k] = walk[-1]
            text = np.char.mod("%.3f", values + 300.0).astype(object)
            bad = rng.random(n) < 0.001
            text[bad] = rng.choice(["Bad Input", "I/O Timeout", "Shutdown"], int(bad.sum()))
            quality = np.where(rng.random(n) < 0.002, 0x40000000, 0)
            quality[bad] = 0x80000000
            stamps = np.char.add(np.datetime_as_string(start + times.astype("timedelta64[ms]"), unit="ms"), "Z")
            names = np.array(TAGS, dtype=object)[tag_idx]
            units = np.where(tag_idx < 6, "degC", "%").astype(object)
            writer.write_table(pa.table({"timestamp": stamps.astype(object), "tag": names, "value": text,
                                         "quality": quality, "units": units}, schema=schema))
            done += n
    tmp.replace(path)


def worker(kind: str, path: str, chunk_rows: int) -> dict:
    """Run one measurement in this (fresh) process."""
    import pandas as pd  # pyarrow imports pandas on first use anyway: keep imports out of both timings

    from dime_offline.converters import telemetry_to_transitions

    base = _rss_bytes()
    t0, c0 = time.perf_counter(), time.process_time()
    if kind == "pandas":
        frame = pd.read_csv(path)
        rows = len(frame)
        extra: dict = {}
    else:
        data, report = telemetry_to_transitions(path, {**KINDS[kind], "reader": {"chunk_rows": chunk_rows}})
        rows = report.rows_read
        extra = {"transitions": len(data), "episodes": report.episode_count, "in_memory": report.in_memory,
                 "bridged_values": report.bridged_values}
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"kind": kind, "rows": rows, "seconds": seconds, "cpu_seconds": cpu, "rows_per_s": rows / seconds,
            "peak_growth_mb": (_peak_rss_bytes() - base) / 2**20, **extra}


def _run_worker(kind: str, path: Path, chunk_rows: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", kind, "--file", str(path), "--chunk-rows", str(chunk_rows)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows of the large export")
    parser.add_argument("--small", type=int, default=2_000_000, help="rows of the small export")
    parser.add_argument("--chunk-rows", type=int, default=500_000, help="reader.chunk_rows of the converter")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per worker kind and size")
    parser.add_argument("--worker", choices=list(KINDS), help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.file, args.chunk_rows)))
        return

    load = os.getloadavg()
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs; python {platform.python_version()};"
          f" load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start")
    with tempfile.TemporaryDirectory(prefix="dime-convert-bench-") as tmp:
        results = []
        for rows in (args.small, args.rows):
            path = Path(tmp) / f"historian-{rows}.csv"
            t0 = time.perf_counter()
            write_export(path, rows)
            size_mb = path.stat().st_size / 2**20
            print(f"\nwrote {rows:,} rows ({size_mb:,.0f} MiB) in {time.perf_counter() - t0:.1f} s")
            for kind in KINDS:
                for _ in range(args.repeats):
                    r = _run_worker(kind, path, args.chunk_rows)
                    r["file_rows"], r["file_mb"] = rows, size_mb
                    results.append(r)
                    print(f"  {kind:<8} {r['seconds']:7.2f} s (cpu {r['cpu_seconds']:.2f} s)"
                          f"  {r['rows_per_s'] / 1e6:6.2f} M rows/s"
                          f"  peak +{r['peak_growth_mb']:7.0f} MiB"
                          + (f"  ({r['transitions']:,} transitions, {r['bridged_values']:,} bridged)"
                             if kind != "pandas" else ""))
        print("\nsummary (best of repeats): seconds, M rows/s, peak MiB per kind")
        print(f"{'rows':>12} {'MiB':>6} | " + " | ".join(f"{k:>26}" for k in KINDS))
        for rows in (args.small, args.rows):
            best = {k: min((r for r in results if r["file_rows"] == rows and r["kind"] == k), key=lambda r: r["seconds"])
                    for k in KINDS}
            print(f"{rows:>12,} {best['pandas']['file_mb']:>6.0f} | " + " | ".join(
                f"{b['seconds']:>8.2f} {b['rows_per_s'] / 1e6:>8.2f} {b['peak_growth_mb']:>8.0f}" for b in best.values()))
        print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")


if __name__ == "__main__":
    main()
