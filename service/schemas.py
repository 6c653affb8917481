"""Request and response bodies. Every request model refuses unknown fields and bounds its values."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

Mode = Literal["sparse", "dense", "hybrid"]
MAX_QUERY_CHARS = 4096  # the schema's bound; `Settings.max_query_chars` may only lower it
MAX_DOCUMENT_CHARS = 100_000
MAX_BATCH_SEARCHES = 32
# The largest valid body (a full batch of longest queries, every character JSON-escaped as a
# 12-byte surrogate pair) stays under the default body limit, so the limit never refuses valid data.
DEFAULT_MAX_BODY_BYTES = 2_000_000
DOC_ID_PATTERN = r"^[^\x00-\x1f]{1,256}$"  # any printable id up to 256 characters


def _json_integer(value):
    """JSON Schema counts 462.0 as an integer; strict pydantic would not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Strict models refuse "10" for a number and 0 for a boolean; integers written as 10.0 pass.
JsonInt = Annotated[int, BeforeValidator(_json_integer)]


class Strict(BaseModel):
    """Request bodies: unknown fields, non-finite floats (``NaN`` and ``Infinity``, which Python's
    JSON parser accepts) and text holding a lone surrogate (``"\\ud800"``, which no UTF-8
    encoder takes; pydantic-core's ``string_unicode`` error) are refused, naming the field."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class SearchRequest(Strict):
    query: str = Field(..., min_length=1, max_length=MAX_QUERY_CHARS,
                       description="query text; beyond the encoder's token limit it is truncated (flagged)")
    k: JsonInt = Field(10, ge=1, le=1000, description="number of results")
    mode: Mode = "sparse"
    alpha: float = Field(1.0, gt=0.0, le=1.0, description="BMP bound factor: 1 is exact, lower is approximate")
    beta: float = Field(1.0, gt=0.0, le=1.0, description="fraction of query terms kept: 1 is exact")
    fusion: Literal["adaptive", "rrf", "convex"] = Field(
        "adaptive", description="hybrid: z-scores weighted per query by how far each list's best score stands out "
                                "(the default, chosen on dev splits), reciprocal rank fusion, or a fixed convex "
                                "combination of normalised scores (fusion_weight)")
    rrf_k: JsonInt = Field(60, ge=0, le=10_000, description="RRF constant")
    fusion_weight: float = Field(0.5, ge=0.0, le=1.0, description="convex fusion: weight of the sparse scores")
    normalization: Literal["minmax", "zscore"] = "minmax"
    include_text: bool = Field(False, description="return each hit's text")
    highlight: bool = Field(False, description="return the vocabulary terms each hit shares with the query")
    allow_partial: bool = Field(False, description="a sharded index on Ray: when a shard is unavailable, answer "
                                                   "from the others (marked partial) instead of 503")


class BatchSearchRequest(Strict):
    searches: list[SearchRequest] = Field(..., min_length=1, max_length=MAX_BATCH_SEARCHES)


class StageTimings(BaseModel):
    """Milliseconds spent in each stage of one search (absent stages are 0)."""

    sparse_encode_ms: float = 0.0
    sparse_search_ms: float = 0.0
    dense_encode_ms: float = 0.0
    dense_search_ms: float = 0.0
    fusion_ms: float = 0.0
    total_ms: float = 0.0


class SearchHit(BaseModel):
    id: str
    score: float
    title: str
    text: str | None = None
    matched_terms: list[str] | None = None


class SearchResponse(BaseModel):
    query: str
    mode: Mode
    k: int
    truncated: bool = Field(description="the query was longer than the encoder's token limit and was cut")
    query_terms: int = Field(description="non-zero terms of the sparse query vector (0 in dense mode)")
    hits: list[SearchHit]
    timings: StageTimings
    partial: bool = Field(False, description="some shards were unavailable (allow_partial): hits are from the others")
    missing_shards: list[str] = Field(default_factory=list, description="the shards missing from a partial answer")


class BatchSearchResponse(BaseModel):
    results: list[SearchResponse]


class Document(Strict):
    id: str = Field(..., pattern=DOC_ID_PATTERN)
    title: str = Field("", max_length=10_000)
    text: str = Field(..., min_length=1, max_length=MAX_DOCUMENT_CHARS)


class DocumentOut(BaseModel):
    id: str
    title: str
    text: str
    segment: str = Field(description="the segment that holds it, or `buffer` for a write not yet flushed into one")


class WriteResult(BaseModel):
    id: str
    status: Literal["added", "replaced", "deleted"]


class ExplainTerm(BaseModel):
    term_id: int
    token: str
    query_weight: float = Field(description="the query encoder's weight")
    document_weight: float = Field(description="the document's weight (its dequantised impact in a segment)")
    impact: int | None = Field(description="the stored impact the search scores: uint8, or uint16 at 16-bit precision "
                                           "(None for a write not yet in a segment)")
    contribution: float = Field(description="this term's part of the score")


class ExplainResponse(BaseModel):
    id: str
    query: str
    score: float = Field(description="sum of the contributions: the document's sparse score")
    truncated: bool
    terms: list[ExplainTerm]


class ErrorDetail(BaseModel):
    detail: str


class Health(BaseModel):
    status: Literal["ok"]
    documents: int


class SegmentStats(BaseModel):
    name: str
    documents: int = Field(description="documents stored, deleted ones included")
    live: int = Field(description="documents not deleted")


class ShardStats(BaseModel):
    name: str
    documents: int
    commit: int
    wal_seq: int
    last_seq: int
    writer: bool


class Stats(BaseModel):
    documents: int = Field(description="live documents, written but unflushed ones included")
    segments: list[SegmentStats]
    buffered_writes: int = Field(description="acknowledged writes not yet in a segment")
    buffer_documents: int
    postings: int
    vocab_size: int
    commit: int = Field(description="generation of the commit this worker reads")
    wal_seq: int = Field(description="last write-ahead log record the commit's segments hold")
    last_seq: int = Field(description="last write-ahead log record this worker has applied")
    writer: bool = Field(description="this worker holds the write role (flushes and merges)")
    encoder: dict
    dense: dict | None
    quantization: str
    block_size: int
    doc_order: str
    shards: list[ShardStats] | None = Field(
        None, description="a sharded index: each shard's figures (commit, wal_seq and last_seq above are their sums)")
