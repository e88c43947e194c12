"""Files a run writes, written so that a crash never leaves half of one: JSON through a
temporary file and a rename; a file that cannot be trusted is set aside, never deleted."""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path


def now() -> str:
    """The time as a record writes it: UTC, ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, obj) -> None:
    """Write atomically (temp file + rename): a crash never leaves a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(obj, indent=2, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except OSError:  # a full disk: no temporary file left behind, the previous file untouched
        tmp.unlink(missing_ok=True)
        raise


def set_aside(path: Path, why: str, tag: str = "unreadable") -> Path:
    """Move a file out of the way, keeping it: <name>.<tag>-<time>."""
    path = Path(path)
    kept = path.with_name(f"{path.name}.{tag}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}")
    os.replace(path, kept)
    print(f"{path}: {why}; kept as {kept.name}", flush=True)
    return kept
