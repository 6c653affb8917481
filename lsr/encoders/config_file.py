"""Our small config beside a saved model: which encoder it is and how it encodes."""

from __future__ import annotations

import json
from pathlib import Path

CONFIG_NAME = "lsr_encoder.json"
FORMAT_VERSION = 1
ENCODER_TYPES = ("splade", "unicoil", "inference-free")


def write_encoder_config(directory: str | Path, settings: dict) -> None:
    if settings.get("type") not in ENCODER_TYPES:
        raise ValueError(f"encoder type must be one of {ENCODER_TYPES}, got {settings.get('type')!r}")
    payload = {"format_version": FORMAT_VERSION, **settings}
    (Path(directory) / CONFIG_NAME).write_text(json.dumps(payload, indent=2) + "\n")


def read_encoder_config(directory: str | Path) -> dict | None:
    """The saved settings, or None for a plain Hugging Face directory (a SPLADE masked LM)."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        return None
    settings = json.loads(path.read_text())
    if settings.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {settings.get('format_version')!r}, expected {FORMAT_VERSION}")
    if settings.get("type") not in ENCODER_TYPES:
        raise ValueError(f"{path}: field 'type' must be one of {ENCODER_TYPES}, got {settings.get('type')!r}")
    return settings
