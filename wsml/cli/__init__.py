"""The ``wsml`` command: one argparse tree for every sub-command, run under one error guard.

``wsml [--debug] COMMAND ... [--debug]``: the commands come in groups, one module each -- ``prepare``/``train``
(:mod:`wsml.cli.train`), ``eval``/``predict`` (:mod:`wsml.cli.evaluate`), ``report``/``analyze``
(:mod:`wsml.cli.analysis`), ``find-missing``/``review`` (:mod:`wsml.cli.tools`), ``bench`` (:mod:`wsml.cli.bench`).
Each module's ``add_parsers(sub)`` adds its commands with ``func`` (the handler) as a default; a command that takes
``key=value`` items names their list in ``key_values`` (they may also follow its options). Errors in configs, paths
or inputs print one line ``wsml: error: ...`` and exit with code 2, Ctrl-C exits with 130 (:mod:`wsml.cli._guard`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Optional, Sequence

from wsml.cli._guard import USER_ERRORS, guarded

__all__ = ["USER_ERRORS", "build_parser", "main"]

GROUPS = ("train", "evaluate", "analysis", "tools", "bench")  # modules of wsml.cli, in --help order
DEBUG_HELP = "show full tracebacks on errors (accepted before or after the command)"


def build_parser() -> argparse.ArgumentParser:
    """The whole ``wsml`` command tree."""
    p = argparse.ArgumentParser(prog="wsml", description="Multi-label classification from partial labels "
                                "(Large Loss Matters, CVPR 2022): LL-R, LL-Ct, LL-Cp and baselines.")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        importlib.import_module(f"wsml.cli.{group}").add_parsers(sub)
    for command in sub.choices.values():  # listed in every command's --help; main() takes it out of argv
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return p


def _take_key_values(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list) -> None:
    """``key=value`` items after a command's options (``prepare voc --out d seed=1``) land in ``extra``: give them
    to the command's ``key_values`` list; anything else is an unrecognized argument. Each item is parsed later by
    the one ``key=value`` parser, :func:`wsml.config.parse_assignment`."""
    field = getattr(args, "key_values", None)
    bad = [a for a in extra if a.startswith("-") or "=" not in a]
    if bad or (extra and field is None):
        parser.error(f"unrecognized arguments: {' '.join(bad or extra)}")
    if field is not None:
        getattr(args, field).extend(extra)
    config = getattr(args, "config", None)  # `train optim.lr=1e-3`: a first positional key=value is an override
    if field == "overrides" and config and "=" in config and not Path(config).is_file():
        args.overrides.insert(0, config)
        args.config = None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``wsml`` console script (and ``python -m wsml.cli``); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere: before or after the command
    argv = [a for a in argv if a != "--debug"]
    if len(argv) >= 3 and argv[0] == "prepare" and ({"-h", "--help"} & set(argv[2:])):
        from wsml.cli.train import adapter_help

        text = adapter_help(argv[1])
        if text is not None:  # `wsml prepare csv --help`: that adapter's options
            print(text)
            return 0
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    args.debug, args.argv = debug, argv[1:]  # argv: the command's own arguments (recorded by bench and sweeps)
    _take_key_values(parser, args, extra)
    return guarded(args.func, args)
