"""Query scorers over an opened `SparseIndex`."""
