"""The command line's errors: one line naming the argument or file, and the exit status.

Every failure a user or the machine can cause (a missing or corrupt file, an unknown model, an
input of the wrong kind, a selection out of range, a full or read-only disk, a non-empty output
directory) becomes one line with exit status 2; an unexpected internal error one line too (1).
"""

from __future__ import annotations

import argparse
import errno
from typing import Any

EXIT_USAGE = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A user error the CLI reports in one line."""


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe_error(exc: BaseException, args: argparse.Namespace) -> tuple[str, int]:
    """The one-line message and exit status for an error raised by a command."""
    if isinstance(exc, CliError):
        return str(exc), EXIT_USAGE
    message = _input_error(exc, getattr(args, "sources", [])) or _study_error(exc, args) or _plain_error(exc, args)
    if message is None:
        return (f"internal error: {type(exc).__name__}: {first_line(exc)} (rerun with --debug for the traceback)",
                EXIT_INTERNAL)
    return message, EXIT_USAGE


def _input_error(exc: BaseException, sources: list[str]) -> str | None:
    """An input the model cannot take, named as the user gave it."""
    from manifold_jax import study

    if isinstance(exc, study.ModalityError):
        culprit = sources[exc.index] if exc.index < len(sources) else f"input {exc.index}"
        give = "--text or --text-file" if exc.modality == "text" else "--mnist, --image or --image-dir"
        article = "an" if exc.modality == "image" else "a"
        return f"{culprit}: {exc.model} is {article} {exc.modality} model; give {give}"
    if isinstance(exc, study.TextTooLongError):
        culprit = sources[exc.index] if exc.index < len(sources) else f"input {exc.index}"
        return (f"{culprit}: {exc.tokens} tokens, more than the {exc.limit} the model takes; shorten it or pass "
                f"--max-length {exc.limit} to cut it")
    return None


def _study_error(exc: BaseException, args: argparse.Namespace) -> str | None:
    """A study directory that is not what the command needs, with the command that fixes it."""
    from manifold_jax import study

    where = (args.resume or args.out) if args.command == "explore" else getattr(args, "directory", None)
    if isinstance(exc, study.StudyExistsError):
        return (f"--out {exc.path} is not empty; pass --overwrite to replace it or --resume {exc.path} "
                "to continue it")
    if isinstance(exc, study.NotAStudyError):
        return _not_a_study(exc, args)
    if isinstance(exc, study.StudyDamagedError):
        fix = f"; rebuild it with: manifold-jax explore --resume {where}" if exc.recoverable and where else ""
        return f"{exc.path}: {exc.reason}{fix}"
    if isinstance(exc, study.StudyIncompleteError):
        runs = ", ".join(f"{a} ({done} of {exc.steps} steps)" for a, done in exc.missing.items())
        return (f"{exc.path}: unfinished: {runs}; finish it with: manifold-jax explore --resume {where or exc.path}, "
                "or report what is done with --partial")
    return None


def _not_a_study(exc: Any, args: argparse.Namespace) -> str:
    if args.command == "explore" and not args.resume:
        return f"--out {exc.path}: {exc.reason}"
    if args.command == "explore":
        return f"--resume {exc.path}: no study there ({exc.reason})"
    return str(exc)


def _plain_error(exc: BaseException, args: argparse.Namespace) -> str | None:
    """A model that does not load, a file, a number or a value refused: its first line."""
    from manifold_jax import study

    if isinstance(exc, study.ModelLoadError):
        model = getattr(args, "model", None)
        return (f"--model {model}: " if model else "") + first_line(exc)
    if isinstance(exc, OSError):
        return _os_error(exc)
    if isinstance(exc, OverflowError):
        return f"a number is out of range ({first_line(exc)})"
    if isinstance(exc, (ValueError, TypeError, KeyError, IndexError)):
        message = first_line(exc)
        if "weights_only" in message:  # never pass on torch's advice to unpickle untrusted code
            message = "a PyTorch checkpoint was refused by the safe (weights-only) loader; convert it to safetensors"
        return message
    return None


def _os_error(exc: OSError) -> str:
    """An OS error as "FILE: reason" (disk full and read-only disks said plainly)."""
    if exc.errno == errno.ENOSPC:
        reason = "no space left on the device"
    elif exc.errno == errno.EROFS:
        reason = "the file system is read-only"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        reason = "permission denied"
    else:
        reason = exc.strerror or first_line(exc)
    if exc.filename is None:
        return first_line(exc) if exc.strerror is None else reason
    return f"{exc.filename}: {reason}"


__all__ = ["EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_USAGE", "CliError", "describe_error", "first_line"]
