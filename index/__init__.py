"""Inverted index for learned sparse vectors: format, builder, quantisation and scorers.

This is the bottom layer of the project: it depends on numpy, scipy and numba only, never on
torch or transformers, so a search-only deployment stays small and starts fast.
"""
