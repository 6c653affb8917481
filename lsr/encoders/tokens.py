"""Every call of a shared Hugging Face tokenizer goes through `tokenize`, one at a time.

A fast tokenizer keeps its truncation and padding settings in its Rust object and changes them
at the start of a call whose settings differ from the last call's. Two threads calling one
tokenizer with different settings (a query cut at 64 tokens, a document at 256, a length count
without truncation: the service does all three at once) can each run with the other's
settings: a document silently cut at 64 tokens and indexed so, or one not cut at all and too
long for the model's positions (a 500 on ``POST /documents`` under load, measured). A call
takes well under a millisecond, so one lock for the process costs little.
"""

from __future__ import annotations

import threading

import numpy as np

_ONE_AT_A_TIME = threading.Lock()


def tokenize(tokenizer, texts, **options):
    """``tokenizer(texts, **options)``, never concurrently with another call made through here."""
    with _ONE_AT_A_TIME:
        return tokenizer(texts, **options)


def word_piece_ids(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Each text's word-piece ids without special tokens, cut at ``max_length``: what
    ``tokenize(tokenizer, texts, add_special_tokens=False, truncation=True, max_length=...)``
    gives, at a third of its cost for a short query. A fast tokenizer's Rust backend is called
    directly (its truncation and padding switched off first, under the lock: another call may
    have left them set) and the ids are cut here; a slow tokenizer takes the plain call."""
    if not getattr(tokenizer, "is_fast", False):
        return tokenize(tokenizer, texts, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
    backend = tokenizer.backend_tokenizer
    with _ONE_AT_A_TIME:
        backend.no_truncation()
        backend.no_padding()
        # encode_batch_fast (tokenizers >= 0.21) skips the character offsets nobody reads here.
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
        encodings = encode(list(texts), add_special_tokens=False)
    if tokenizer.truncation_side == "left":
        return [e.ids[-max_length:] if len(e.ids) > max_length else e.ids for e in encodings]
    return [e.ids[:max_length] for e in encodings]


def pad_right(token_ids: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``input_ids`` and ``attention_mask`` (int64), padded on the right to the longest, as the
    tokenizer pads."""
    width = max(len(ids) for ids in token_ids)
    input_ids = np.full((len(token_ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(token_ids), width), dtype=np.int64)
    for row, ids in enumerate(token_ids):
        input_ids[row, : len(ids)] = ids
        mask[row, : len(ids)] = 1
    return input_ids, mask
