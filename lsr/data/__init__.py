"""Corpus, query and relevance-judgment loading."""
