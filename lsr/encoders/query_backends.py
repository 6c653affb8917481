"""The names of the query encoding backends (`lsr.encoders.onnx_queries`), and the one
command-line option that picks one: light, so that parsers import it without numpy or torch."""

from __future__ import annotations

QUERY_BACKENDS = ("auto", "torch", "onnx", "onnx-int8")


def add_query_backend_option(parser, default: str | None = "auto", note: str = "") -> None:
    """``--query-backend`` on an argparse parser (``note``: what the command does with it)."""
    parser.add_argument("--query-backend", choices=QUERY_BACKENDS, default=default,
                        help="query encoding: the model's ONNX graph in ONNX Runtime (onnx, exported once into the "
                             "cache if missing; onnx-int8 with int8 weights), PyTorch, or auto (onnx where a graph "
                             f"is present; the default){note}")
