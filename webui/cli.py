"""The `vidsearch` command: one entry point whose subcommands live in the package they belong to."""
from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand -> module that provides `add_parser(subparsers)`; the module sets `func` on its parser.
# Modules are imported only when needed so that `vidsearch --help` never loads torch or faiss.
SUBCOMMANDS = {
    "probe": "trainer.cli",
    "train": "trainer.cli",
    "eval": "trainer.cli",
    "index": "indexer.cli",
    "remove": "indexer.cli",
    "search": "search.cli",
    "serve": "webui.serve",
    "demo": "webui.demo",
}
# Subcommand -> a later package's module whose `extend_parsers(subparsers)` adds to it: `train --store` reads
# a store (indexer) for the trainer, which must not import the indexer itself.
EXTENSIONS = {"train": "indexer.cli"}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Build the top-level parser; with `only`, import just that subcommand's module."""
    parser = argparse.ArgumentParser(prog="vidsearch", description="Cross-modal video search.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = [only] if only in SUBCOMMANDS else list(SUBCOMMANDS)
    for module_name in dict.fromkeys(SUBCOMMANDS[name] for name in wanted):
        importlib.import_module(module_name).add_parsers(sub)
    for name in wanted:
        if name in EXTENSIONS:
            importlib.import_module(EXTENSIONS[name]).extend_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `vidsearch`; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
