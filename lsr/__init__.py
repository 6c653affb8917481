"""Learned sparse retrieval: encoders, corpus and query loading, the `lsr` command line, and
the Python API (`lsr.api`: `SparseIndex`, `Hit`), imported on first use so that the command
line starts without torch."""

__all__ = ["Hit", "SparseIndex"]


def __getattr__(name: str):
    if name in __all__:
        from lsr import api

        return getattr(api, name)
    raise AttributeError(f"module 'lsr' has no attribute {name!r}")
