"""Read an offline W&B run (the .wandb transaction log) back, to check what the training reported there.

wandb 0.31 moved its reader into the Go core; the format is LevelDB's log: a 7-byte header, then
32 KiB blocks of records (crc32 4 bytes, length 2, type 1: FULL=1, FIRST=2, MIDDLE=3, LAST=4).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = 7


def _records(raw: bytes):
    pos, chunk = HEADER, b""
    while pos + HEADER <= len(raw):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # a block's tail too short for a record header is zero padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos : pos + HEADER])
        if kind == 0:
            break
        chunk += raw[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            yield record
            chunk = b""


def read_offline_run(run_dir: Path) -> dict:
    """{'run_id', 'group', 'config', 'summary', 'history': [rows], 'exit_code'} of one offline-run-* folder."""
    (log_file,) = Path(run_dir).glob("*.wandb")
    out = {"run_id": None, "group": None, "config": {}, "summary": {}, "history": [], "exit_code": None}
    for record in _records(log_file.read_bytes()):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run_id"] = record.run.run_id
            out["group"] = record.run.run_group
            out["config"].update({u.key: json.loads(u.value_json) for u in record.run.config.update})
        elif kind == "config":
            out["config"].update({u.key: json.loads(u.value_json) for u in record.config.update if u.key})
        elif kind == "summary":
            out["summary"].update({u.key: json.loads(u.value_json) for u in record.summary.update if u.key})
        elif kind == "history":
            out["history"].append(
                {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
            )
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
    return out
