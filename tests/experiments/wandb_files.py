"""Reading W&B offline runs back from their transaction logs (what a run really recorded, without W&B's servers)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def wandb_records(run_file: Path) -> list[Any]:
    """The records of a W&B transaction log (``run-<id>.wandb``): a 7-byte file header, then 32 KiB
    blocks of chunks, each a 7-byte header (CRC32, little-endian length, type: 1 whole record, 2 first
    part, 3 middle, 4 last) and the bytes of a protobuf ``Record``."""
    from wandb.proto import wandb_internal_pb2

    data, block = run_file.read_bytes(), 32768
    assert data[:4] == b":W&B"
    records, pending, position = [], b"", 7
    while position + 7 <= len(data):
        if block - position % block < 7:  # the block's tail is padding
            position += block - position % block
            continue
        length, kind = int.from_bytes(data[position + 4:position + 6], "little"), data[position + 6]
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_run(out: Path, run_id: str) -> dict[str, Any]:
    """History points per key, config, summary, exit codes, and group, job type and tags (of the last
    session) of every offline session of run ``run_id`` in ``out/wandb``."""
    sessions = sorted((out / "wandb").glob(f"offline-run-*-{run_id}"))
    history: dict[str, set[tuple[int, float]]] = {}
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    exit_codes = []
    grouping: dict[str, Any] = {}
    for session in sessions:
        records = wandb_records(session / f"run-{run_id}.wandb")
        deadline = time.monotonic() + 30
        while records[-1].WhichOneof("record_type") != "exit" and time.monotonic() < deadline:
            time.sleep(0.2)  # W&B's service may still be writing the session's last records
            records = wandb_records(session / f"run-{run_id}.wandb")
        for record in records:
            kind = record.WhichOneof("record_type")
            if kind == "history":
                row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
                for key, value in row.items():
                    if "/" in key:
                        history.setdefault(key, set()).add((row["step"], value))
            elif kind in ("run", "config"):  # the config the run starts with, and later changes
                updates = record.run.config.update if kind == "run" else record.config.update
                config.update({item.key: json.loads(item.value_json) for item in updates})
                if kind == "run":
                    grouping = {"group": record.run.run_group, "job_type": record.run.job_type, "tags": list(record.run.tags)}
            elif kind == "summary":
                summary.update({item.key: json.loads(item.value_json) for item in record.summary.update})
            elif kind == "exit":
                exit_codes.append(record.exit.exit_code)
    return {"sessions": len(sessions), "history": history, "config": config, "summary": summary, "exit_codes": exit_codes,
            **grouping}
