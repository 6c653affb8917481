"""Service settings: constructor arguments or ``LSR_*`` environment variables.

API keys are `SecretStr`: they never appear in a repr, a log line or an error message.
``LSR_API_KEYS`` takes several keys separated by commas. A settings error names the setting
and never shows a value (``hide_input_in_errors``): the value may be the keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from lsr.encoders.query_backends import QUERY_BACKENDS
from lsr.service.schemas import DEFAULT_MAX_BODY_BYTES, MAX_BATCH_SEARCHES, MAX_DOCUMENT_CHARS, MAX_QUERY_CHARS


class Settings(BaseSettings):
    """Everything `create_app` needs; limits are enforced on every request."""

    model_config = SettingsConfigDict(env_prefix="LSR_", extra="forbid", hide_input_in_errors=True)

    index_dir: Path
    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = ()  # empty: write endpoints refuse everyone
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024)
    max_query_chars: int = Field(MAX_QUERY_CHARS, ge=1, le=MAX_QUERY_CHARS)
    max_document_chars: int = Field(MAX_DOCUMENT_CHARS, ge=1, le=MAX_DOCUMENT_CHARS)
    max_batch_queries: int = Field(MAX_BATCH_SEARCHES, ge=1, le=MAX_BATCH_SEARCHES)
    fusion_depth: int = Field(100, ge=1, le=1000, description="candidates per list before hybrid fusion")
    scorer: str = Field("auto", pattern="^(auto|exhaustive|bmp)$")
    # Which impacts score a search (index.search): auto takes the 16-bit ones where every
    # segment has them.
    precision: str = Field("auto", pattern="^(auto|16-bit|8-bit)$")
    warm_up: bool = True
    device: str = "cpu"
    # One intra-op thread per request: concurrent requests then run side by side instead of
    # several OpenMP teams spinning against each other on few cores.
    torch_threads: int = Field(1, ge=1)
    # Query encoding (lsr.encoders.onnx_queries): auto runs an ONNX graph where one is present.
    query_backend: str = Field("auto", pattern=f"^({'|'.join(QUERY_BACKENDS)})$")
    # Index maintenance in the background: how often the write buffer is checked for a flush
    # (due after flush_docs writes or flush_seconds), and how often the merge policy is asked.
    flush_docs: int = Field(1000, ge=1, description="buffered writes that make a segment")
    flush_seconds: float = Field(5.0, gt=0, description="age of the oldest buffered write that makes a segment")
    flush_check_seconds: float = Field(0.5, gt=0)
    merge_check_seconds: float = Field(2.0, gt=0)
    # Sharded search on Ray Serve: how long a shard may take to answer (retries on other
    # replicas included) before the search answers 503 naming it (or, allow_partial, goes on).
    shard_timeout_seconds: float = Field(10.0, gt=0)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value):
        if isinstance(value, str):
            value = [key.strip() for key in value.split(",")]
        keys = tuple(value or ())
        empty = [str(n) for n, key in enumerate(keys, 1)
                 if not (key.get_secret_value() if isinstance(key, SecretStr) else key)]
        if empty:  # positions only: the message must not carry a key
            raise ValueError(f"an API key entry is empty (position {', '.join(empty)} of {len(keys)}); "
                             "LSR_API_KEYS separates keys by commas: leave out empty entries, or unset it "
                             "to disable writes")
        return keys
