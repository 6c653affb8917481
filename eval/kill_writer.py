"""The process `eval/kill_test.py` kills: a writer under a 16-client load.

    python -m eval.kill_writer INDEX_DIR SEED [--clients 16]

It opens the index as its writer (flushing every 40 writes), runs a merge thread that merges
whenever there are three or more segments, and client threads that each add, replace and
delete documents of their own (ids ``c<client>-<n>``) and search. Before a write it prints
``begin`` with the whole operation, after the call returns ``ack``; lines are printed whole.
It runs until it is killed.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading

import numpy as np

from lsr.index.live import LiveIndex

VOCAB = 200
_print_lock = threading.Lock()


def emit(record: dict) -> None:
    line = json.dumps(record, separators=(",", ":")) + "\n"
    with _print_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


class EagerMerges:
    def find_merge(self, segments):
        if len(segments) < 3:
            return None
        return [s.name for s in sorted(segments, key=lambda s: s.num_live)[:3]]


def vector(rng) -> tuple[list[int], list[float]]:
    terms = np.sort(rng.choice(VOCAB, size=int(rng.integers(3, 15)), replace=False))
    weights = (rng.random(len(terms)) + 0.05).astype(np.float32)
    return terms.tolist(), weights.tolist()


def client(live: LiveIndex, number: int, seed: int, start: int) -> None:
    rng = np.random.default_rng([seed, number])
    mine: list[str] = [doc_id for doc_id in _existing(live, number)]
    counter = start
    while True:
        draw = rng.random()
        if draw < 0.3:
            terms, weights = vector(rng)
            live.search_sparse(terms, weights, 10, scorer="bmp" if rng.random() < 0.5 else "exhaustive")
            continue
        if mine and draw < 0.45:
            doc_id = mine.pop(int(rng.integers(len(mine))))
            emit({"begin": [number, counter], "op": "delete", "id": doc_id})
            live.delete(doc_id)
        else:
            if mine and draw < 0.55:
                doc_id = mine[int(rng.integers(len(mine)))]  # replace
            else:
                doc_id = f"c{number}-{seed}-{counter}"
                mine.append(doc_id)
            terms, weights = vector(rng)
            emit({"begin": [number, counter], "op": "add", "id": doc_id, "terms": terms, "weights": weights})
            live.add(doc_id, "", "", np.array(terms), np.array(weights, dtype=np.float32))
        emit({"ack": [number, counter]})
        counter += 1


def _existing(live: LiveIndex, number: int) -> list[str]:
    """The client's documents from earlier trials (its id prefix)."""
    view = live.refresh()
    prefix = f"c{number}-"
    found = []
    for state in view.segments:
        for local in range(state.segment.num_docs):
            doc_id = state.segment.doc_ids[local]
            if doc_id.startswith(prefix) and (not len(state.live) or state.live[local]):
                found.append(doc_id)
    if view.buffer is not None:
        buffer = view.buffer
        found += [buffer.doc_id(row) for row in range(buffer.num_rows)
                  if buffer.doc_id(row).startswith(prefix) and buffer.live[row]]
    return sorted(set(found))


def merger(live: LiveIndex) -> None:
    while True:
        if live.merge(policy=EagerMerges()) is None:
            threading.Event().wait(0.05)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("index")
    parser.add_argument("seed", type=int)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    live = LiveIndex(args.index, writer="required")
    live.flush_policy.max_docs = 40
    threads = [threading.Thread(target=merger, args=(live,), daemon=True)]
    threads += [threading.Thread(target=client, args=(live, c, args.seed, 0), daemon=True) for c in range(args.clients)]
    for thread in threads:
        thread.start()
    emit({"ready": True})
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
