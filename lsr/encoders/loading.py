"""`load_encoder`: any saved model (ours or a plain Hugging Face SPLADE masked LM) by name."""

from __future__ import annotations

from lsr.encoders.config_file import read_encoder_config
from lsr.encoders.models import DEFAULT_MODEL, resolve_model


def load_encoder(name_or_path: str | None = None, batch_size: int = 32, query_max_length: int | None = None,
                 doc_max_length: int | None = None, device: str = "cpu"):
    """Open an encoder; its type and max lengths come from ``lsr_encoder.json`` when present.

    Args:
        name_or_path: a directory saved by us, a Hugging Face masked-LM name or directory
            (SPLADE), or None for the bundled SPLADE-tiny.
        batch_size: texts per forward pass.
        query_max_length: override the saved query token limit.
        doc_max_length: override the saved document token limit.
        device: torch device.
    """
    from pathlib import Path

    name = name_or_path or DEFAULT_MODEL
    path = resolve_model(name)
    settings = read_encoder_config(path) if Path(path).is_dir() else None
    settings = dict(settings or {"type": "splade", "pooling": "max", "query_max_length": 64, "doc_max_length": 256})
    if query_max_length is not None:
        settings["query_max_length"] = query_max_length
    if doc_max_length is not None:
        settings["doc_max_length"] = doc_max_length
    kind = settings["type"]
    if kind == "splade":
        from lsr.encoders.splade import SpladeEncoder

        return SpladeEncoder(name, settings["query_max_length"], settings["doc_max_length"], batch_size,
                             settings.get("pooling", "max"), device=device)
    if kind == "unicoil":
        from lsr.encoders.unicoil import UniCoilEncoder

        encoder = UniCoilEncoder.load(path, settings, batch_size=batch_size, device=device)
    else:
        from lsr.encoders.inference_free import InferenceFreeEncoder

        encoder = InferenceFreeEncoder.load(path, settings, batch_size=batch_size, device=device)
    encoder.model_name = name
    return encoder
