"""The FastAPI application: `create_app(settings)`.

The index, the encoders and faiss are loaded once in the lifespan and the Numba kernels are
warmed there; endpoints are thin: validate (schemas), call the engine, shape the response.
Domain errors become status codes in `service.errors`.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from lsr.service.auth import require_api_key
from lsr.service.engine import SearchEngine
from lsr.service.errors import PayloadTooLarge, install_error_handlers
from lsr.service.middleware import BodySizeLimit, RequestMetrics
from lsr.service.schemas import (MAX_QUERY_CHARS, BatchSearchRequest, BatchSearchResponse, Document, DocumentOut,
                             ErrorDetail, ExplainResponse, Health, SearchRequest, SearchResponse, Stats, WriteResult)
from lsr.service.settings import Settings


def create_app(settings: Settings, engine_factory=None) -> FastAPI:
    """Build the app; the index is opened when the app starts (lifespan), not here.

    Args:
        settings: the service's settings.
        engine_factory: makes the `SearchEngine` at start-up (default: the index and encoders
            loaded in this process; ``service.ray_serve`` gives one over Ray Serve deployments).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Off the event loop: loading models takes seconds, and an engine over Ray Serve makes
        # blocking calls, which Serve refuses from inside a loop.
        engine = await asyncio.to_thread(engine_factory or (lambda: SearchEngine(settings)))
        try:
            if settings.warm_up:
                await asyncio.to_thread(engine.warm_up)
            engine.start_maintenance()
            app.state.engine = engine
            yield
        finally:
            engine.close()

    app = FastAPI(title="lsr search", version="0.1.0", lifespan=lifespan,
                  description="Learned sparse retrieval: sparse, dense and hybrid search with explanations.")
    app.state.settings = settings
    registry = CollectorRegistry()
    # multiprocess_mode matters only with several workers (`lsr serve --workers`): the newest value.
    documents = Gauge("lsr_documents", "Live documents in the index", registry=registry,
                      multiprocess_mode="mostrecent")
    install_error_handlers(app)
    _add_routes(app, _exposed_registry(registry), documents)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, registry=registry)  # added last: outermost, counts 413s too
    return app


def _exposed_registry(registry: CollectorRegistry) -> CollectorRegistry:
    """What `/metrics` shows: this process's registry, or, in prometheus-client's multiprocess mode
    (``PROMETHEUS_MULTIPROC_DIR``, set by ``lsr serve --workers N``), every worker's metrics
    summed from their files, whichever worker answers."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return registry
    from prometheus_client.multiprocess import MultiProcessCollector

    every_worker = CollectorRegistry()
    MultiProcessCollector(every_worker)
    return every_worker


def create_app_from_env() -> FastAPI:
    """The factory uvicorn workers call: settings from ``LSR_*`` environment variables."""
    return create_app(Settings())


def _errors(*codes: int) -> dict:
    """OpenAPI entries of the error statuses an endpoint can answer (`service.errors`)."""
    described = {400: "the body is not valid JSON", 401: "no API key", 403: "wrong API key, or writes disabled",
                 404: "no such document", 409: "dense search on an index without a dense part",
                 413: "body, query, document or batch over its limit"}
    return {code: {"model": ErrorDetail, "description": described[code]} for code in codes}


def _engine(request: Request) -> SearchEngine:
    return request.app.state.engine


def _check_scorer(scorer: str, located: list[tuple[tuple, SearchRequest]]) -> None:
    """alpha or beta below 1 asks for approximate BMP, which a service pinned to the exact
    exhaustive scorer (``LSR_SCORER=exhaustive``) cannot run: a 422 naming the field (each
    request comes with its ``loc``), where the planner's ValueError would be a 500."""
    if scorer != "exhaustive":
        return
    errors = [{"type": "value_error", "loc": (*loc, name), "input": getattr(request, name),
               "msg": f"{name} must be 1: this service runs the exact exhaustive scorer (LSR_SCORER=exhaustive)"}
              for loc, request in located for name in ("alpha", "beta") if getattr(request, name) < 1]
    if errors:
        raise RequestValidationError(errors)


def _add_routes(app: FastAPI, registry: CollectorRegistry, documents: Gauge) -> None:
    page = resources.files("lsr.service").joinpath("page/index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def search_page() -> str:
        return page

    @app.post("/search", response_model=SearchResponse, responses=_errors(400, 409, 413))
    def search(body: SearchRequest, engine: SearchEngine = Depends(_engine)) -> dict:
        _check_scorer(engine.settings.scorer, [(("body",), body)])
        return engine.search(body)

    @app.post("/search/batch", response_model=BatchSearchResponse, responses=_errors(400, 409, 413))
    def search_batch(body: BatchSearchRequest, engine: SearchEngine = Depends(_engine)) -> dict:
        limit = engine.settings.max_batch_queries
        if len(body.searches) > limit:
            raise PayloadTooLarge(f"{len(body.searches)} searches in one batch; the limit is {limit}")
        _check_scorer(engine.settings.scorer, [(("body", "searches", n), r) for n, r in enumerate(body.searches)])
        return {"results": [engine.search(request) for request in body.searches]}

    @app.get("/documents/{doc_id:path}", response_model=DocumentOut, responses=_errors(404))
    def get_document(doc_id: str, engine: SearchEngine = Depends(_engine)) -> dict:
        return engine.index.document(doc_id)

    @app.post("/documents", response_model=WriteResult, dependencies=[Depends(require_api_key)],
              responses=_errors(400, 401, 403, 413))
    def add_document(body: Document, engine: SearchEngine = Depends(_engine)) -> dict:
        return engine.add(body)

    @app.delete("/documents/{doc_id:path}", response_model=WriteResult, dependencies=[Depends(require_api_key)],
                responses=_errors(401, 403, 404))
    def delete_document(doc_id: str, engine: SearchEngine = Depends(_engine)) -> dict:
        return engine.delete(doc_id)

    @app.get("/explain", response_model=ExplainResponse, responses=_errors(404, 413))
    def explain(query: str = Query(..., min_length=1, max_length=MAX_QUERY_CHARS),
                doc_id: str = Query(..., alias="id", min_length=1),
                engine: SearchEngine = Depends(_engine)) -> dict:
        return engine.explain(query, doc_id)

    @app.get("/health", response_model=Health)
    def health(engine: SearchEngine = Depends(_engine)) -> dict:
        return {"status": "ok", "documents": engine.index.num_docs}

    @app.get("/stats", response_model=Stats)
    def stats(engine: SearchEngine = Depends(_engine)) -> dict:
        return engine.index.stats()

    @app.get("/metrics", include_in_schema=False)
    def metrics(engine: SearchEngine = Depends(_engine)) -> Response:
        documents.set(engine.index.num_docs)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST,
                        headers={"X-Worker-Pid": str(os.getpid())})
