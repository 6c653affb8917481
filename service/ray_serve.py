"""Sharded search on Ray Serve: ``lsr serve DIR --ray [ADDRESS] --replicas R``.

Deployments of one Serve application:

* ``shard-NNNN`` (one per shard, R replicas each): `ShardSearcher`, a `index.live.LiveIndex`
  over the shard's memory-mapped segments. Replicas of a shard are processes on one index
  directory, as the workers of ``lsr serve --workers`` are: each appends writes to the
  shard's write-ahead log (fsynced before it answers), one of them flushes and merges.
* ``encoder``: `QueryEncoder`, the index's encoders (`service.encoders.LocalEncoders`).
* ``ingress``: the FastAPI app of ``service.app`` (same endpoints, schemas and OpenAPI
  document as the one-process service), whose engine reads through `RemoteShards` and
  `RemoteEncoders`: a query is encoded once, sent to every shard, and the shards' top-k
  are merged exactly (`index.shards.merge_top_k`).

Faults: a call that fails because its replica died, or that gets no answer in time, is sent
again (Serve routes it to another replica) until ``shard_timeout_seconds`` have passed; then
the search answers 503 naming the shard, or with ``allow_partial`` answers from the other
shards with the missing ones listed.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from ray import serve
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

from lsr.index.live import DocumentNotFound, LiveIndex
from lsr.index.shards import group_by_shard, merge_top_k, shard_directories, shard_of
from lsr.index.sharded import combine_stats
from lsr.index.writer import FlushPolicy
from lsr.service.errors import EncoderUnavailable, ShardUnavailable
from lsr.service.maintenance import Maintenance
from lsr.service.settings import Settings

APP_NAME = "lsr"
RETRY_PAUSES = (0.05, 0.2, 0.5, 1.0)  # between attempts on a failed shard call, then 1 s each
UNAVAILABLE = (RayActorError, ActorUnavailableError, GetTimeoutError, TimeoutError)


# deployments


@serve.deployment(ray_actor_options={"num_cpus": 0})
class ShardSearcher:
    """One replica of one shard: search, read and write it; flush and merge when it is the writer."""

    def __init__(self, directory: str, settings: Settings) -> None:
        from lsr.service.engine import warm_kernels

        if settings.warm_up:
            warm_kernels()
        self.index = LiveIndex(directory, writer="auto")
        self.index.flush_policy.max_docs = settings.flush_docs
        self.index.flush_policy.max_seconds = settings.flush_seconds
        Maintenance(self.index, settings.flush_check_seconds, settings.merge_check_seconds).start()

    def settings(self) -> dict:
        return self.index.settings

    # A search may bring the documents of its first ``with_documents`` hits along: the ingress
    # then needs no second round to the shards for titles and texts.

    def search_sparse(self, terms, weights, k, scorer, alpha, beta, max_blocks=None, with_documents=0,
                      precision="auto"):
        return self._with_documents(self.index.search_sparse(terms, weights, k, scorer, alpha, beta, max_blocks,
                                                             precision), with_documents)

    def search_dense(self, vector, k, with_documents=0):
        return self._with_documents(self.index.search_dense(vector, k), with_documents)

    def _with_documents(self, hits, count: int):
        return hits if not count else (*hits, self.index.documents(hits[0][:count]))

    def documents(self, doc_ids):
        return self.index.documents(doc_ids)

    # A missing document is an answer (None, False), not an exception: Serve would log each
    # one as a replica's failure.

    def document(self, doc_id):
        try:
            return self.index.document(doc_id)
        except DocumentNotFound:
            return None

    def document_vector(self, doc_id, precision="auto"):
        try:
            return self.index.document_vector(doc_id, precision)
        except DocumentNotFound:
            return None

    def add(self, doc_id, title, text, terms, weights, dense):
        return self.index.add(doc_id, title, text, terms, weights, dense)

    def delete(self, doc_id) -> bool:
        try:
            self.index.delete(doc_id)
        except DocumentNotFound:
            return False
        return True

    def stats(self):
        return self.index.stats()

    def num_docs(self):
        return self.index.num_docs

    def pid(self) -> int:
        import os

        return os.getpid()


@serve.deployment(ray_actor_options={"num_cpus": 0})
class QueryEncoder:
    """The index's encoders, loaded once per replica."""

    def __init__(self, directory: str, settings: Settings) -> None:
        from lsr.index.commit import read_newest_commit
        from lsr.service.encoders import LocalEncoders

        self.encoders = LocalEncoders(read_newest_commit(Path(directory)).settings, settings.device,
                                      settings.torch_threads, settings.query_backend)

    def info(self) -> dict:
        return {"has_dense": self.encoders.has_dense, "vocab_size": self.encoders.vocab_size}

    def tokens(self):
        return self.encoders.tokens()

    def encode_sparse(self, query):
        return self.encoders.encode_sparse(query)

    def encode_dense(self, query):
        return self.encoders.encode_dense(query)

    def encode_document(self, full_text):
        return self.encoders.encode_document(full_text)


# what the ingress's engine reads through


def _call(handle, method: str, *args, deadline: float):
    """``handle.method(*args)``, sent again while its replica dies or does not answer, until
    ``deadline`` (`time.monotonic`); `ShardUnavailable`-worthy errors are raised after it."""
    attempt = 0
    while True:
        remaining = deadline - time.monotonic()
        try:
            return getattr(handle, method).remote(*args).result(timeout_s=max(0.05, remaining))
        except UNAVAILABLE:
            if time.monotonic() >= deadline:
                raise
        time.sleep(min(RETRY_PAUSES[min(attempt, len(RETRY_PAUSES) - 1)], max(0.0, deadline - time.monotonic())))
        attempt += 1


class RemoteEncoders:
    """`service.encoders.LocalEncoders`'s methods, answered by the ``encoder`` deployment."""

    def __init__(self, handle, timeout: float) -> None:
        self.handle, self.timeout = handle, timeout
        info = self._call("info")
        self.has_dense, self.vocab_size = info["has_dense"], info["vocab_size"]

    min_timeout = 60.0  # a model takes longer to start again than a shard: at least a minute before a 503

    def _call(self, method: str, *args):
        try:
            return _call(self.handle, method, *args, deadline=time.monotonic() + max(self.timeout, self.min_timeout))
        except UNAVAILABLE as error:
            raise EncoderUnavailable() from error

    def tokens(self):
        return self._call("tokens")

    def encode_sparse(self, query):
        return self._call("encode_sparse", query)

    def encode_dense(self, query):
        return self._call("encode_dense", query)

    def encode_document(self, full_text):
        return self._call("encode_document", full_text)


class HitsWithDocuments(tuple):
    """``(ids, scores)`` with ``.documents``: id -> document for the hits whose shards sent them."""

    documents: dict


class RemoteShards:
    """`index.live.LiveIndex`'s methods that the engine uses, over the shard deployments:
    searches fan out and merge, a document's reads and writes go to the shard owning its id.

    Args:
        handles: shard name -> its deployment handle, in shard order.
        timeout: seconds a shard may take (retries included) before it counts as unavailable.
    """

    remote = True  # the engine: kernels run in the shards' replicas, partial answers possible

    def __init__(self, handles: dict, timeout: float) -> None:
        self.names = list(handles)
        self.handles = list(handles.values())
        self.timeout = timeout
        self.flush_policy = FlushPolicy()  # the replicas flush on their own (their settings)
        self.writer = None  # nothing to merge here: the engine's merge thread idles
        self.settings = self._one(0, "settings")

    @property
    def meta(self) -> dict:
        return self.settings["meta"]

    def maintain(self) -> None:
        """The replicas maintain their shards themselves."""

    def merge(self, *args, **kwargs) -> None:
        """The replicas merge their shards themselves."""

    def close(self) -> None:
        """Nothing is held here: the deployments outlive an ingress replica."""

    def _one(self, shard: int, method: str, *args):
        try:
            return _call(self.handles[shard], method, *args, deadline=time.monotonic() + self.timeout)
        except UNAVAILABLE as error:
            raise ShardUnavailable([self.names[shard]]) from error

    def _all(self, method: str, *args, missing: list | None = None) -> list:
        """Every shard's answer (None for a shard that gave none, with ``missing``)."""
        answers = self._gather(method, {shard: args for shard in range(len(self.handles))}, missing)
        return [answers[shard] for shard in range(len(self.handles))]

    def _gather(self, method: str, calls: dict[int, tuple], missing: list | None = None) -> dict:
        """Shard -> its answer to ``method(*calls[shard])``, sent to all first, then gathered.
        The shards that gave none go to ``missing`` (answer None), or without it make a
        `ShardUnavailable` naming them."""
        deadline = time.monotonic() + self.timeout
        pending = {shard: getattr(self.handles[shard], method).remote(*args) for shard, args in calls.items()}
        answers, failed = {}, []
        for shard, response in pending.items():
            try:
                answers[shard] = response.result(timeout_s=max(0.05, deadline - time.monotonic()))
                continue
            except UNAVAILABLE:
                pass
            try:  # its replica died or is stuck: again, on whichever replica Serve picks
                answers[shard] = _call(self.handles[shard], method, *calls[shard], deadline=deadline)
            except UNAVAILABLE:
                failed.append(shard)
                answers[shard] = None
        if failed and missing is None:
            raise ShardUnavailable([self.names[s] for s in failed])
        if missing is not None:
            missing.extend(self.names[s] for s in failed)
        return answers

    def _owner(self, doc_id: str) -> int:
        return shard_of(doc_id, len(self.handles))

    # searching

    def search_sparse(self, terms, weights, k, scorer="auto", alpha=1.0, beta=1.0, max_blocks=None, missing=None,
                      with_documents=0, precision="auto"):
        """The exact top ``k`` over the shards; with ``with_documents`` = n, each shard sends
        the documents of its first n hits too (`HitsWithDocuments`)."""
        return self._merge(self._all("search_sparse", np.asarray(terms), np.asarray(weights), k, scorer, alpha, beta,
                                     max_blocks, with_documents, precision, missing=missing), k)

    def search_dense(self, vector, k, missing=None, with_documents=0):
        return self._merge(self._all("search_dense", np.asarray(vector), k, with_documents, missing=missing), k)

    @staticmethod
    def _merge(answers: list, k: int):
        answers = [a for a in answers if a is not None]
        hits = HitsWithDocuments(merge_top_k([a[:2] for a in answers], k))
        hits.documents = {doc_id: doc for a in answers if len(a) > 2 for doc_id, doc in a[2].items()}
        return hits

    @property
    def num_docs(self) -> int:
        return sum(self._all("num_docs"))

    def stats(self) -> dict:
        return combine_stats(self.names, self._all("stats"))

    def contains(self, doc_id: str) -> bool:
        try:
            self.document(doc_id)
        except DocumentNotFound:
            return False
        return True

    def document(self, doc_id: str) -> dict:
        found = self._one(self._owner(doc_id), "document", doc_id)
        if found is None:
            raise DocumentNotFound(doc_id)
        return found

    def documents(self, doc_ids: list[str]) -> dict[str, dict]:
        calls = {shard: ([doc_ids[p] for p in positions],)
                 for shard, positions in group_by_shard(doc_ids, len(self.handles)).items()}
        found = {}
        for answer in self._gather("documents", calls).values():
            found.update(answer)
        return found

    def document_vector(self, doc_id: str, precision: str = "auto"):
        found = self._one(self._owner(doc_id), "document_vector", doc_id, precision)
        if found is None:
            raise DocumentNotFound(doc_id)
        return found

    # writing: an add sent again is the same add (same id, same vectors); a delete sent again
    # after a replica died may find the document gone by the first attempt

    def add(self, doc_id, title, text, terms, weights, dense=None) -> bool:
        return self._one(self._owner(doc_id), "add", doc_id, title, text, np.asarray(terms), np.asarray(weights),
                         dense)

    def delete(self, doc_id: str) -> None:
        shard = self._owner(doc_id)
        try:
            deleted = self.handles[shard].delete.remote(doc_id).result(timeout_s=self.timeout)
        except UNAVAILABLE:
            self._one(shard, "delete", doc_id)  # not found now: the first attempt deleted it before its replica died
            return
        if not deleted:
            raise DocumentNotFound(doc_id)


# the application


def _handle(deployment: str):
    """A handle whose calls go over Serve's inter-deployment gRPC (answers by value): 5.7 ms a
    round trip on this project's 2-CPU machine against 6.4 ms for Serve's default actor calls
    (eval/results/bench_ray_serve_scifact.md). Every replica runs that gRPC server."""
    return serve.get_deployment_handle(deployment, app_name=APP_NAME).options(_by_reference=False)


def build_application(index_dir: str | Path, settings: Settings, replicas: int = 1, shard_cpus: float = 0.0,
                      encoder_cpus: float = 0.0):
    """The Serve application (not yet running): shard deployments, the encoder, the ingress."""
    from lsr.service.app import create_app
    from lsr.service.engine import SearchEngine

    shards = shard_directories(index_dir)
    timeout = settings.shard_timeout_seconds

    def build_app():  # runs on the ingress replica
        def engine():
            handles = {name: _handle(name) for name in shards}
            encoders = RemoteEncoders(_handle("encoder"), timeout)
            return SearchEngine(settings, index=RemoteShards(handles, timeout), encoders=encoders)

        return create_app(settings, engine_factory=engine)

    @serve.deployment(name="ingress", ray_actor_options={"num_cpus": 0})
    @serve.ingress(build_app)
    class Ingress:
        def __init__(self, *deployments) -> None:  # bound so that Serve runs them in this application
            self.deployments = deployments

    bound_shards = [ShardSearcher.options(name=name, num_replicas=replicas, ray_actor_options={"num_cpus": shard_cpus})
                    .bind(str(directory), settings) for name, directory in shards.items()]
    encoder = QueryEncoder.options(name="encoder", ray_actor_options={"num_cpus": encoder_cpus}).bind(
        str(next(iter(shards.values()))), settings)
    return Ingress.bind(encoder, *bound_shards)


def serve_on_ray(index_dir: str | Path, settings: Settings, address: str | None = None, replicas: int = 1,
                 host: str = "127.0.0.1", port: int = 8000, shard_cpus: float = 0.0, encoder_cpus: float = 0.0,
                 blocking: bool = True):
    """Start Serve on the cluster (a local Ray without ``address``) and run the application.

    Returns:
        The ingress's deployment handle (when not ``blocking``).
    """
    from lsr.scaleout.ray_indexing import start_ray

    if replicas < 1:
        raise ValueError("--replicas must be at least 1")
    start_ray(address)
    serve.start(http_options={"host": host, "port": port})
    application = build_application(index_dir, settings, replicas, shard_cpus, encoder_cpus)
    handle = serve.run(application, name=APP_NAME, route_prefix="/", blocking=False)
    if blocking:
        print(f"serving {index_dir} on http://{host}:{port} ({len(shard_directories(index_dir))} shards x {replicas} "
              f"replicas on Ray); Ctrl-C stops", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            serve.shutdown()
    return handle
