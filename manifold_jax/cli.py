"""The ``manifold-jax`` command line: explore, report, view, demo, train.

Every failure a user or the machine can cause ends with one line on stderr naming the argument
or file, and exit status 2 (:mod:`manifold_jax.cli_errors`); ``--debug`` shows the traceback
instead. An unexpected internal error also prints one line (exit status 1). Ctrl-C ends with
status 130 and the command that resumes the run. The parser (:mod:`manifold_jax.cli_parser`)
takes its choices and defaults from the library; the commands live in
:mod:`manifold_jax.cli_commands`.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from manifold_jax import cli_commands
from manifold_jax.cli_errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, CliError, describe_error
from manifold_jax.cli_parser import build_parser

DEMO_DIGITS = cli_commands.DEMO_DIGITS


def _parser() -> argparse.ArgumentParser:
    """The parser of every command (tests read its actions)."""
    return build_parser()


def _one_line_warnings(command: str) -> None:
    """Show warnings as one line each, ``manifold-jax COMMAND: warning: ...``."""

    def show(message: Warning | str, category: type[Warning], *_where: Any, **_line: Any) -> None:
        """``warnings.showwarning``'s signature; where the warning came from is not shown."""
        text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
        print(f"manifold-jax {command}: warning: {text}", file=sys.stderr)

    warnings.showwarning = show


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``manifold-jax`` command."""
    args = build_parser().parse_args(argv)
    # the CLI never needs torch; transformers' advice that it is missing is noise here
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    handlers = {"explore": cli_commands.explore, "report": cli_commands.report, "view": cli_commands.view,
                "demo": cli_commands.demo, "train": cli_commands.train}
    shown = warnings.showwarning
    if not args.debug:
        _one_line_warnings(args.command)
    try:
        handlers[args.command](args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"\nmanifold-jax {args.command}: interrupted", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except Exception as exc:
        if args.debug:
            raise
        message, status = describe_error(exc, args)
        print(f"manifold-jax {args.command}: error: {message}", file=sys.stderr)
        raise SystemExit(status) from None
    finally:
        warnings.showwarning = shown


__all__ = ["DEMO_DIGITS", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_USAGE", "CliError", "describe_error", "main"]


if __name__ == "__main__":
    main()
