"""Hard negatives mined with our own index: the top-ranked documents that are not positives.

The corpus is indexed once with the mining model (the bundled SPLADE model by default, or
the current model), the training queries are searched, and the ranked non-positive ids are
cached per (corpus, model, depth, skip), so every run with the same settings reuses them.
"""

from __future__ import annotations

from pathlib import Path

from lsr.index.commit import generations
from lsr.index.live import LiveIndex
from lsr.data.loaders import Document
from lsr.training.cache import cache_key, read_json, write_json
from lsr.training.data import TrainingSet


def corpus_index(training_set: TrainingSet, encoder, cache_dir: Path) -> Path:
    """The corpus indexed with ``encoder`` (built once, then reused from the cache)."""
    from lsr.indexing import index_corpus

    directory = cache_dir / f"index-{cache_key(training_set.name, len(training_set.corpus), encoder.describe())}"
    if not generations(directory):
        documents = (Document(doc_id, "", text) for doc_id, text in training_set.corpus.items())
        index_corpus(documents, encoder, directory, training_set.name, overwrite=True)
    else:
        from lsr.index.upgrade import upgrade_if_needed

        upgrade_if_needed(directory)  # a cache kept from an older build of this project
    return directory


def mine_hard_negatives(training_set: TrainingSet, encoder, cache_dir: str | Path, depth: int = 100,
                        skip: int = 0) -> dict[str, list[str]]:
    """Ranked hard negatives per query id (at most ``depth - skip`` each).

    Args:
        training_set: the examples and their corpus.
        encoder: the mining model (anything with ``encode_queries``/``encode_documents``).
        cache_dir: where the index and the mined lists are kept.
        depth: documents retrieved per query.
        skip: top ranks never taken (likely relevant but unjudged).
    """
    cache_dir = Path(cache_dir)
    key = cache_key(training_set.name, len(training_set.examples), encoder.describe(), depth, skip)
    cache_file = cache_dir / f"negatives-{key}.json"
    cached = read_json(cache_file)
    if cached is not None:
        return cached
    examples = training_set.examples
    vectors = encoder.encode_queries([e.query for e in examples], show_progress=True)
    with LiveIndex(corpus_index(training_set, encoder, cache_dir), writer="never") as index:
        results = index.search_sparse_batch(vectors, depth)
    mined = {}
    for example, (ranked, _) in zip(examples, results):
        positives = set(example.positives)
        mined[example.query_id] = [doc for doc in ranked[skip:] if doc not in positives]
    write_json(cache_file, mined)
    return mined
