"""Learned sparse retrieval: encoders, corpus and query loading, and the `lsr` command line."""
