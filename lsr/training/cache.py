"""Keys and atomic JSON files for what training computes once and reuses (negatives, teacher scores)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def cache_key(*parts) -> str:
    """A short stable hash of the parts (model names, dataset, settings)."""
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, payload) -> None:
    """Write beside, then rename: a crash never leaves half a cache file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps(payload))
    os.replace(partial, path)
