"""The `lsr` command line.

Subcommands are discovered through the ``lsr.commands`` entry-point group, so each package
(``lsr``, ``eval``, later ``service``) owns its own and this module imports none of them
up front. An entry point is a ``register(subparsers)`` function that adds one parser whose
``handler`` default runs the command.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lsr", description="Learned sparse retrieval: index, search, evaluate.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    seen = set()
    for entry in sorted(entry_points(group="lsr.commands"), key=lambda e: e.name):
        # Metadata of an older install (the distribution was called lsr) can list a command a
        # second time: the first one found on the path wins.
        if entry.name in seen:
            continue
        seen.add(entry.name)
        try:
            register = entry.load()
        except ImportError as error:
            # A command whose package is not installed is left out of --help, not fatal.
            print(f"lsr: command {entry.name!r} unavailable: {error}", file=sys.stderr)
            continue
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded beside results
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError, RuntimeError) as error:
        # Domain errors already name the file, line or field: print them, not a traceback.
        print(f"lsr {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
