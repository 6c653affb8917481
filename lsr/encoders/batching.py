"""Shared plumbing of the encoders: length-sorted batches and dense-to-CSR conversion."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from lsr.index.sparse_batch import SparseBatch
from lsr.encoders.tokens import tokenize
from lsr.encoders.windows import padded, split_into_windows


def empty_batch(vocab_size: int) -> SparseBatch:
    return SparseBatch(np.zeros(1, np.int64), np.zeros(0, np.uint32), np.zeros(0, np.float32), vocab_size)


def encode_texts(
    texts: list[str],
    tokenizer,
    max_length: int,
    batch_size: int,
    forward: Callable[[dict], torch.Tensor],
    vocab_size: int,
    show_progress: bool = False,
    window: int | None = None,
) -> SparseBatch:
    """Run ``forward`` over length-sorted batches; rows come back in input order.

    With ``window`` below ``max_length``, a text longer than the window is read as overlapping
    windows, max-pooled (`lsr.encoders.windows`).

    Args:
        texts: the texts to encode.
        tokenizer: a Hugging Face tokenizer.
        max_length: token limit (special tokens included).
        batch_size: texts per forward pass.
        forward: tokenized batch (``return_tensors="pt"``) -> ``(batch, vocab)`` weights.
        vocab_size: columns of the result.
        show_progress: a progress bar over batches.
        window: the longest input the model reads, special tokens included (None: no limit).
    """
    if not texts:
        return empty_batch(vocab_size)
    if window is not None and max_length > window:
        return _encode_windows(texts, tokenizer, max_length, window, batch_size, forward, vocab_size, show_progress)
    lengths = [len(ids) for ids in tokenize(tokenizer, texts, truncation=True, max_length=max_length)["input_ids"]]
    order = np.argsort(lengths, kind="stable")[::-1]  # similar lengths share a batch: less padding
    parts: list[SparseBatch] = []
    starts = range(0, len(texts), batch_size)
    with torch.inference_mode():
        for start in tqdm(starts, desc="encoding", unit="batch", disable=not show_progress):
            batch_texts = [texts[i] for i in order[start : start + batch_size]]
            tokens = tokenize(tokenizer, batch_texts, truncation=True, max_length=max_length, padding=True,
                              return_tensors="pt")
            parts.append(dense_to_sparse(forward(tokens)))
    return take_rows(SparseBatch.concat(parts), np.argsort(order))


def _encode_windows(texts, tokenizer, max_length, window, batch_size, forward, vocab_size, show_progress) -> SparseBatch:
    """Every window in length-sorted batches, then each text's maximum over its windows."""
    pieces, owner = split_into_windows(tokenizer, texts, max_length, window)
    order = np.argsort([len(piece) for piece in pieces], kind="stable")[::-1]
    keys, values = [], []  # (text, term) as text * vocab + term, and the weight
    with torch.inference_mode():
        for start in tqdm(range(0, len(pieces), batch_size), desc="encoding", unit="batch", disable=not show_progress):
            rows = order[start : start + batch_size]
            part = dense_to_sparse(forward(padded([pieces[i] for i in rows], tokenizer.pad_token_id or 0)))
            owners = np.repeat(owner[rows], np.diff(part.indptr))
            keys.append(owners * vocab_size + part.indices.astype(np.int64))
            values.append(part.values)
    keys, values = np.concatenate(keys), np.concatenate(values)
    by_key = np.argsort(keys, kind="stable")
    keys, values = keys[by_key], values[by_key]
    firsts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    maxima = np.maximum.reduceat(values, firsts) if len(firsts) else values
    rows, terms = np.divmod(keys[firsts], vocab_size)
    indptr = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=len(texts)), out=indptr[1:])
    return SparseBatch(indptr, terms.astype(np.uint32), maxima.astype(np.float32), vocab_size)


def dense_to_sparse(dense: torch.Tensor) -> SparseBatch:
    """(batch, vocab) float tensor -> SparseBatch of its nonzero entries."""
    dense = dense.detach().float().cpu()
    rows, cols = dense.nonzero(as_tuple=True)  # row-major order: CSR as it comes
    indptr = np.zeros(dense.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows.numpy(), minlength=dense.shape[0]), out=indptr[1:])
    return SparseBatch(indptr, cols.numpy(), dense[rows, cols].numpy(), dense.shape[1])


def take_rows(batch: SparseBatch, rows: np.ndarray) -> SparseBatch:
    matrix = batch.to_scipy()[rows]
    return SparseBatch(matrix.indptr, matrix.indices, matrix.data, batch.vocab_size)


def special_token_ids(tokenizer) -> list[int]:
    """[CLS], [SEP], [PAD], ...: never a term of a vector."""
    return sorted(set(tokenizer.all_special_ids))
