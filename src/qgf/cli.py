"""`qgf` command line: a thin dispatcher over the library.

Each subcommand lives in `qgf.commands.<name>` and exposes `register(subparsers)`, which adds its
parser and sets `func`. Command modules import only the standard library at import time so that
`qgf --help` stays fast; heavy imports (JAX, MuJoCo) happen inside the command functions.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from qgf.errors import QGFError

COMMANDS = (
    "demo",
    "data",
    "train",
    "finetune",
    "addon",
    "evaluate",
    "toy",
    "analyze",
    "bench",
    "sweep",
    "report",
)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that refuses abbreviated options: `--env X` must never be read as
    `--envs X` (long jobs should fail at once on a typo, not after an hour)."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    from qgf import __version__

    parser = Parser(
        prog="qgf",
        description="Test-time Q-gradient guidance (QGF) for flow-matching policies in offline RL.",
    )
    parser.add_argument("--version", action="version", version=f"qgf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"qgf.commands.{name}")
        except ModuleNotFoundError as exc:  # a command not built yet must not break the others
            if exc.name == f"qgf.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse like argparse, except that key=value overrides may also follow options:
    `qgf train a=1 --agent qam b=2` (argparse stops filling a positional list at the first option,
    so the later overrides arrive as unknown arguments; they are appended in order)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        if isinstance(getattr(args, "overrides", None), list) and all(
            "=" in token and not token.startswith("-") for token in extra
        ):
            args.overrides = args.overrides + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless by default; never needs a display
    parser = build_parser()
    args = parse_args(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        result = args.func(args)
    except QGFError as exc:
        print(f"qgf: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qgf: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except OSError as exc:  # a disk that filled up outside qgf.fileio (which names the file itself)
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        from qgf.fileio import no_space_error

        print(f"qgf: error: {no_space_error(exc.filename or 'the output files')}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
