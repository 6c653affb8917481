"""Adapters for peer retrieval engines (Seismic, PISA, ...) behind one small interface.

Each adapter indexes the same `SparseBatch` in the same doc order (doc ``i`` is internal id
``i`` in every engine) and answers one query at a time, single-threaded, so that
``eval/bench_engines.py`` can compare latency, recall, build time, index size and build memory
side by side. The shared interface and the measuring helpers live in `eval.peers.base`; the
engine packages are imported lazily, only when an adapter is used.
"""
