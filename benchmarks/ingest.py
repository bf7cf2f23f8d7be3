"""Ingest benchmark: canonical Parquet -> ReplayStore and -> load_dataset, side by side with a plain pyarrow read.

Writes a synthetic, schema-valid HalfCheetah-shaped dataset (obs 17, action 6; 1000 episodes of
1000 steps = 1M transitions by default) to a temporary Parquet file with the project's writer,
then measures in fresh worker processes (so peak-RSS figures are not polluted by the generator):

  (a) raw:   ``pyarrow.parquet.read_table`` + ``to_numpy`` of every column (fixed-size lists
             flattened to 2-D arrays) -- the floor any Parquet loader pays;
  (b) store: ``ReplayStore.from_parquet`` (record-batch streaming, action scaling, validation,
             returns-to-go and normalisation statistics included);
  (c) load:  ``load_dataset`` (the whole file as checked ``TransitionData``: clean-up, non-finite
             scan, schema, order, flags, bounds and the continuity check next_obs[t] == obs[t+1]).

Each worker does one warm-up run (which also gives the peak-RSS growth over the RSS after imports)
and ``--repeats`` timed runs; the raw, store and load workers alternate ``--rounds`` times and the
medians cover all their runs. Printed: the load average before and after, rows/s of each, the rate
of (b) and (c) as a multiple of (a) (goal >= 0.8x each), store bytes per transition against the raw
bytes (goal <= 1.15x), peak RSS growth of each worker, and the cost of sampling batches of 256 from
the 1M-row store (goal: well under 1 ms).

Run:  python benchmarks/ingest.py            (add --rows 200000 for a quick run)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OBS_DIM, ACTION_DIM = 17, 6
METHODS = ("raw", "store", "load")
"""The workers, in the order each round runs them."""
RAW_BYTES_PER_ROW = (2 * OBS_DIM + ACTION_DIM + 1) * 4 + 2
"""obs + next_obs + action + reward as float32, terminated + truncated as one byte each."""


# ------------------------------------------------------------------------- helpers
def _rss_bytes() -> int:
    """Current resident set size (Linux /proc), else the peak so far as a stand-in."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return _peak_rss_bytes()


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def _write_dataset(path: Path, rows: int, episode_length: int) -> None:
    import numpy as np

    from dime_offline.data.parquet import write_parquet
    from dime_offline.data.schema import DatasetMetadata, TransitionData

    episodes = rows // episode_length
    n = episodes * episode_length
    rng = np.random.default_rng(0)
    states = rng.standard_normal((episodes, episode_length + 1, OBS_DIM), dtype=np.float32)
    data = TransitionData(
        episode_id=np.repeat(np.arange(episodes, dtype=np.int64), episode_length),
        step=np.tile(np.arange(episode_length, dtype=np.int32), episodes),
        obs=np.ascontiguousarray(states[:, :-1].reshape(n, OBS_DIM)),
        action=rng.uniform(-1.0, 1.0, size=(n, ACTION_DIM)).astype(np.float32),
        reward=rng.standard_normal(n, dtype=np.float32),
        next_obs=np.ascontiguousarray(states[:, 1:].reshape(n, OBS_DIM)),
        terminated=np.zeros(n, dtype=bool),
        truncated=np.tile(np.r_[np.zeros(episode_length - 1, bool), True], episodes),
        metadata=DatasetMetadata(
            action_low=[-1.0] * ACTION_DIM, action_high=[1.0] * ACTION_DIM, env_id="HalfCheetah-v5",
            source="benchmarks/ingest.py synthetic",
        ),
    )
    write_parquet(data, path)


# ------------------------------------------------------------------------- workers
def _raw_read(path: Path) -> int:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    arrays = {}
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_fixed_size_list(column.type):
            width = column.type.list_size
            arrays[name] = pc.list_flatten(column).to_numpy().reshape(-1, width)
        else:
            arrays[name] = column.to_numpy()
    return len(arrays["reward"])


def _store_read(path: Path) -> int:
    from dime_offline.data.replay import ReplayStore

    store = ReplayStore.from_parquet(path, online_capacity=0)
    return len(store)


def _load_read(path: Path) -> int:
    from dime_offline.data.load import load_dataset

    return len(load_dataset(path))


def _time_sampling(path: Path, batch_size: int, iterations: int) -> dict[str, float]:
    import numpy as np
    import torch

    from dime_offline.data.replay import ReplayStore

    store = ReplayStore.from_parquet(path, online_capacity=100_000)
    n_online = 100_000
    rng = np.random.default_rng(1)
    store.add(
        rng.standard_normal((n_online, OBS_DIM), dtype=np.float32), rng.uniform(-1, 1, (n_online, ACTION_DIM)),
        rng.standard_normal(n_online, dtype=np.float32), rng.standard_normal((n_online, OBS_DIM), dtype=np.float32),
        np.zeros(n_online, bool), np.zeros(n_online, bool),
    )
    generator = torch.Generator().manual_seed(0)
    out: dict[str, float] = {}
    for label, fraction in (("uniform", None), ("mixed_0.5", 0.5)):
        for _ in range(200):
            store.sample(batch_size, fraction, generator=generator)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(iterations):
                store.sample(batch_size, fraction, generator=generator)
            times.append((time.perf_counter() - start) / iterations)
        out[label] = statistics.median(times)
    single = (
        np.zeros(OBS_DIM, np.float32), np.zeros(ACTION_DIM, np.float32), 0.0, np.zeros(OBS_DIM, np.float32), False, False,
    )
    start = time.perf_counter()
    for _ in range(iterations):
        store.add(*single)
    out["add_one"] = (time.perf_counter() - start) / iterations
    out["store_bytes_per_row"] = store.bytes_per_row()
    return out


def worker(method: str, path: Path, repeats: int, batch_size: int) -> dict[str, object]:
    # Imported before the RSS baseline: imports are not part of the memory figure.
    import pyarrow.compute
    import pyarrow.parquet  # noqa: F401
    import torch

    import dime_offline.data.load
    import dime_offline.data.parquet
    import dime_offline.data.replay  # noqa: F401

    rss_before = _rss_bytes()
    read = {"raw": _raw_read, "store": _store_read, "load": _load_read}[method]
    # The first run, in this fresh process, sets the peak; it also warms the page cache and allocators.
    rows = read(path)
    peak_rss_delta = _peak_rss_bytes() - rss_before
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        read(path)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    result: dict[str, object] = {
        "method": method, "rows": rows, "times": times, "median": statistics.median(times),
        "cpu_median": statistics.median(cpu_times),
        "peak_rss_delta": peak_rss_delta, "torch_threads": torch.get_num_threads(),
    }
    if method == "store":
        from dime_offline.data.replay import ReplayStore

        store = ReplayStore.from_parquet(path, online_capacity=0)
        result["store_nbytes"] = store.nbytes()
        result["store_offline_rows"] = store.offline_size
        del store
        result["sampling"] = _time_sampling(path, batch_size, iterations=2000)
    return result


def _run_worker(method: str, path: Path, repeats: int, batch_size: int) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--worker", method, "--path", str(path), "--repeats", str(repeats),
           "--batch-size", str(batch_size)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="transitions to generate")
    parser.add_argument("--episode-length", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating raw/store/load worker rounds")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size for the sampling figures")
    parser.add_argument("--worker", choices=list(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args.worker, args.path, args.repeats, args.batch_size)))
        return

    import numpy
    import pyarrow
    import torch

    load_before = _load_average()
    with tempfile.TemporaryDirectory(prefix="dime-ingest-") as tmp:
        path = Path(tmp) / "halfcheetah_synthetic.parquet"
        start = time.perf_counter()
        _write_dataset(path, args.rows, args.episode_length)
        write_s = time.perf_counter() - start
        # Alternate the workers so that load from other processes hits both methods alike.
        runs: dict[str, list[dict[str, object]]] = {method: [] for method in METHODS}
        for _ in range(args.rounds):
            for method in METHODS:
                runs[method].append(_run_worker(method, path, args.repeats, args.batch_size))
        raw, store, load_run = (_merge_rounds(runs[method]) for method in METHODS)
        file_mb = path.stat().st_size / 1e6

    rows = int(raw["rows"])  # type: ignore[arg-type]
    raw_t = float(raw["median"])  # type: ignore[arg-type]
    bytes_per_row = int(store["store_nbytes"]) / int(store["store_offline_rows"])  # type: ignore[arg-type]
    sampling: dict[str, float] = store["sampling"]  # type: ignore[assignment]
    load = _load_average()
    print("== dime-offline ingest benchmark ==")
    print(f"machine: {platform.platform()}; {platform.processor() or platform.machine()}; {os.cpu_count()} logical CPUs;"
          f" load average before {_fmt_load(load_before)}, after {_fmt_load(load)}")
    print(f"python {platform.python_version()}, torch {torch.__version__} ({raw['torch_threads']} threads),"
          f" numpy {numpy.__version__}, pyarrow {pyarrow.__version__}"
          f" (memory pool {pyarrow.default_memory_pool().backend_name}, {pyarrow.cpu_count()} CPU threads)")
    print(f"dataset: {rows:,} transitions (obs {OBS_DIM}, action {ACTION_DIM}, episodes of {args.episode_length}),"
          f" {file_mb:.1f} MB zstd Parquet, written in {write_s:.2f} s")
    print(f"timing: median of {args.rounds}x{args.repeats} runs, each worker process doing 1 warm-up first;"
          " peak RSS: growth during the warm-up run over the RSS after imports")
    labelled = (
        ("(a) pyarrow read_table + to_numpy", raw), ("(b) ReplayStore.from_parquet    ", store),
        ("(c) load_dataset                ", load_run),
    )
    for label, res in labelled:
        wall = float(res["median"])  # type: ignore[arg-type]
        print(f"{label}: {wall:7.3f} s  {rows / wall:12,.0f} rows/s  CPU {float(res['cpu_median']):.3f} s"  # type: ignore[arg-type]
              f"  peak RSS +{int(res['peak_rss_delta']) / 1e6:.0f} MB   runs {_fmt(res['times'])}")  # type: ignore[arg-type]
    for name, res in (("b", store), ("c", load_run)):
        wall = float(res["median"])  # type: ignore[arg-type]
        print(f"{name}: rate {raw_t / wall:.2f}x raw (goal >= 0.8x; time ratio {name}/a {wall / raw_t:.2f}, goal <= 1.25);"
              f" CPU-time ratio {float(res['cpu_median']) / float(raw['cpu_median']):.2f}")  # type: ignore[arg-type]
    print(f"store bytes/transition: {bytes_per_row:.1f} vs raw {RAW_BYTES_PER_ROW}"
          f" -> {bytes_per_row / RAW_BYTES_PER_ROW:.3f}x (goal <= 1.15x; +4 B is the Monte-Carlo return)")
    for label in ("uniform", "mixed_0.5"):
        seconds = sampling[label]
        print(f"sample({args.batch_size}, {label:9}) from {rows:,}+100,000 online rows: {seconds * 1e6:7.1f} us/batch"
              f"  {args.batch_size / seconds:12,.0f} samples/s")
    print(f"add(one transition): {sampling['add_one'] * 1e6:.1f} us")


def _merge_rounds(results: list[dict[str, object]]) -> dict[str, object]:
    """One result from several rounds: medians over all timed runs, the largest peak RSS."""
    merged = dict(results[-1])
    merged["times"] = [t for r in results for t in r["times"]]  # type: ignore[attr-defined]
    merged["median"] = statistics.median(merged["times"])  # type: ignore[arg-type]
    merged["cpu_median"] = statistics.median(float(r["cpu_median"]) for r in results)  # type: ignore[arg-type]
    merged["peak_rss_delta"] = max(int(r["peak_rss_delta"]) for r in results)  # type: ignore[call-overload]
    return merged


def _load_average() -> tuple[float, float, float]:
    return os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3


def _fmt_load(load: tuple[float, float, float]) -> str:
    return f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"


def _fmt(times: object) -> str:
    return "[" + ", ".join(f"{t:.3f}" for t in times) + "]"  # type: ignore[union-attr]


if __name__ == "__main__":
    main()
