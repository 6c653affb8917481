"""Sparse encoders that turn text into `SparseBatch` vocabulary vectors."""
