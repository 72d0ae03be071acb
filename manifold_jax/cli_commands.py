"""The command line's commands: explore (and resume), report, view, demo, train.

Each takes the parsed arguments and raises :class:`~manifold_jax.cli_errors.CliError` (or the
library's own errors) for what the user must change; ``manifold_jax.cli.main`` turns them into
one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn

from manifold_jax.cli_errors import EXIT_INTERRUPTED, CliError
from manifold_jax.cli_parser import engine_flags, spec_flags

DEMO_DIGITS = (3, 1502, 2504)
"""Held-out MNIST images (a 0, a 3 and a 5) the demo explores."""


# --------------------------------------------------------------------------- explore


def _inputs(args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    """The typed inputs of the command line and, for messages, the flag each came from."""
    from manifold_jax.study import ImageFile, MnistImage, Text

    items: list[Any] = []
    sources: list[str] = []
    for index in (i for indices in args.mnist for i in indices):
        items.append(MnistImage(index))
        sources.append(f"--mnist {index}")
    for path in args.image:
        if not os.path.isfile(path):
            raise CliError(f"--image {path}: file not found")
        items.append(ImageFile(path))
        sources.append(f"--image {path}")
    for directory in args.image_dir:
        for path in _image_files(directory):
            items.append(ImageFile(path))
            sources.append(f"--image-dir {directory} ({os.path.basename(path)})")
    if len(args.text) >= 3 and all(len(t.split()) == 1 for t in args.text):
        warnings.warn(f"--text got {len(args.text)} one-word texts ({_short(' '.join(args.text))!r}), explored as "
                      "separate inputs; quote a sentence to explore it as one: --text \"...\"", stacklevel=1)
    for text in args.text:
        if not text.strip():
            raise CliError(f"--text {text!r}: the text is empty")
        items.append(Text(text))
        sources.append(f"--text {_short(text)!r}")
    if args.text_file:
        for number, line in _text_lines(args.text_file):
            items.append(Text(line))
            sources.append(f"--text-file {args.text_file} (line {number})")
    return items, sources


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
"""The files ``--image-dir`` takes from a folder (matplotlib and Pillow read them)."""


def _image_files(directory: str) -> list[str]:
    """The image files of a folder, by name (not its subfolders, not hidden files)."""
    if not os.path.isdir(directory):
        raise CliError(f"--image-dir {directory}: folder not found")
    names = sorted(n for n in os.listdir(directory)
                   if n.lower().endswith(IMAGE_SUFFIXES) and not n.startswith(".")
                   and os.path.isfile(os.path.join(directory, n)))
    if not names:
        raise CliError(f"--image-dir {directory}: no image file ({', '.join(IMAGE_SUFFIXES)})")
    return [os.path.join(directory, n) for n in names]


def _text_lines(path: str) -> list[tuple[int, str]]:
    try:
        with open(path, encoding="utf-8") as f:
            lines = [(n, line.strip()) for n, line in enumerate(f, start=1) if line.strip()]
    except FileNotFoundError:
        raise CliError(f"--text-file {path}: file not found") from None
    except UnicodeDecodeError:
        raise CliError(f"--text-file {path}: not UTF-8 text") from None
    except OSError as exc:
        raise CliError(f"--text-file {path}: {exc.strerror or exc}") from None
    if not lines:
        raise CliError(f"--text-file {path}: no non-empty line")
    return lines


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _spec_from_args(args: argparse.Namespace) -> Any:
    from manifold_jax.explore import ALGORITHMS
    from manifold_jax.models.embedded import EMBEDDED
    from manifold_jax.study import StudySpec

    if args.model is None:
        raise CliError(f"--model is required ({', '.join(EMBEDDED)}, a directory or a hub id)")
    inputs, args.sources = _inputs(args)
    if not inputs:
        raise CliError("no inputs: give --mnist, --image, --image-dir, --text or --text-file")
    options = {f.name: getattr(args, f.name) for f in engine_flags() if getattr(args, f.name) is not None}
    for key, value in args.option:
        if key in options or key == "algorithm":
            raise CliError(f"--option {key}=...: use --{key.replace('_', '-')} for this option")
        options[key] = value
    given = {name: getattr(args, name) for name in ("steps", "select", "bounds", "space", "seed", "max_length")
             if getattr(args, name) is not None}
    given["task"] = _task(args)
    algorithm = args.algorithm or "both"
    runs = ALGORITHMS if algorithm == "both" else (algorithm,)
    if args.counterfactual is not None:
        runs = (*runs, "counterfactual")
        target = args.counterfactual
        given["target"] = int(target) if target.isdigit() else target
    # the study routes the options: the corrector to SiMEC, tol and on to the runs that measure a step
    return StudySpec(model=args.model, inputs=tuple(inputs), runs=runs, baseline=not args.no_baseline,
                     options=options, **given)


def _resume_spec(args: argparse.Namespace) -> Any:
    """The study --resume continues: as its spec.json says, continued to --steps if given."""
    from manifold_jax.study.storage import read_spec

    given = [name for name in (*spec_flags(), "out", "overwrite") if getattr(args, name) not in (None, False, [])]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise CliError(f"--resume {args.resume} continues the study as its spec.json says; {flags} cannot change it "
                       "(only --steps can, to continue to more steps; start a new study with --out for the rest)")
    stored = read_spec(args.resume)
    if args.steps is None or args.steps == stored.steps:
        return None
    if args.steps < stored.steps:
        raise CliError(f"--steps {args.steps}: the study in {args.resume} has {stored.steps} steps; --resume can only "
                       "continue it to more")
    return dataclasses.replace(stored, steps=args.steps)


def _task(args: argparse.Namespace) -> str:
    """--task, else the model family's study task (a causal LM's frozen top-5) or its default."""
    if args.task is not None:
        return args.task
    from manifold_jax.models import family_of

    fam = family_of(args.model)
    return fam.study_task or fam.default_task


def explore(args: argparse.Namespace) -> None:
    from manifold_jax.report import build_report
    from manifold_jax.study import distributed

    spans = distributed.initialize(args.coordinator, args.num_processes, args.process_id, cluster=args.cluster)
    if spans and not distributed.leads():  # explore process 0's studies with it; write nothing
        try:
            distributed.follow()
        except distributed.LeaderFailedError as exc:
            raise CliError(str(exc)) from None
        return
    try:
        out = _run_explore(args)
    except BaseException:
        if spans:
            distributed.finish(ok=False)
        raise
    if spans:
        distributed.finish(ok=True)
    if not args.no_report:
        build_report(out, progress=not args.quiet)


def _run_explore(args: argparse.Namespace) -> Path:
    from manifold_jax.study import run_study

    if args.resume:
        out = _user_path("--resume", args.resume)
        spec = _resume_spec(args)
        try:
            run_study(spec, out, resume=True, progress=not args.quiet)
        except KeyboardInterrupt:
            _interrupted(out)
    else:
        if args.out is None:
            raise CliError("--out is required (or --resume DIR)")
        out = _user_path("--out", args.out)
        spec = _spec_from_args(args)
        try:
            run_study(spec, out, overwrite=args.overwrite, progress=not args.quiet)
        except KeyboardInterrupt:
            if (out / "spec.json").is_file():
                _interrupted(out)
            raise
    return out


def _user_path(flag: str, value: str) -> Path:
    """A path the user named, made absolute once here (relative to the working directory)."""
    if not value.strip():
        raise CliError(f"{flag}: expected a directory path, got an empty string")
    return Path(os.path.abspath(value))


def _interrupted(out: Path) -> NoReturn:
    print(f"\ninterrupted; continue with: manifold-jax explore --resume {out}", file=sys.stderr)
    raise SystemExit(EXIT_INTERRUPTED)


# --------------------------------------------------------------------------- the other commands


def report(args: argparse.Namespace) -> None:
    from manifold_jax.report import build_report

    build_report(_user_path("DIR", args.directory), figures=not args.no_figures, partial=args.partial,
                 progress=sys.stderr.isatty())


def demo(args: argparse.Namespace) -> None:
    from manifold_jax.data import demo_sentences
    from manifold_jax.report import build_report
    from manifold_jax.study import MnistImage, StudySpec, Text, run_study

    out = _user_path("--out", args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} is a file, not a directory")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise CliError(f"--out {out} is not empty; pass --overwrite to replace it")
    save_every = max(1, args.steps // 50)  # about 50 saved points, at a divisor of the steps
    while args.steps % save_every:
        save_every -= 1
    options = {"eta": args.eta, "save_every": save_every, "chunk_size": max(save_every, 100)}
    # The text study measures outputs with the Fisher-Rao metric: for this confident
    # classifier a SiMExp step along a Euclidean-logit eigenvector often barely moves the
    # predicted distribution, while the Fisher metric ranks directions by how much they do.
    # Each study also finds every input's closest counterfactual of its runner-up class (the
    # counterfactual run: mj.counterfactual, its path and KKT certificate).
    runs = ("simec", "simexp", "counterfactual")
    studies = {
        # pixel space: every explored point is an image the model classifies as the exploration says
        "images": StudySpec(model="mnist-vit", inputs=tuple(MnistImage(i) for i in DEMO_DIGITS), steps=args.steps,
                            space="pixels", runs=runs, baseline=not args.no_baseline, options=options),
        "text": StudySpec(model="minilm-topics", inputs=tuple(Text(t) for t in _demo_texts(demo_sentences())),
                          steps=args.steps, runs=runs, baseline=not args.no_baseline,
                          options={**options, "output_metric": "fisher_rao"}),
    }
    for name, spec in studies.items():
        print(f"== {name}: {spec.model}")
        run_study(spec, out / name, overwrite=args.overwrite, progress=not args.quiet)
        build_report(out / name, progress=not args.quiet)
    print(f"demo written to {args.out.rstrip(os.sep)}/ (images/ and text/: report.html, report.md, figures/*.png)")


def _demo_texts(demo: tuple[list[str], Any, tuple[str, ...]]) -> tuple[str, ...]:
    """The first held-out demo sentence of each topic."""
    texts, labels, _ = demo
    firsts: dict[int, str] = {}
    for text, label in zip(texts, labels, strict=True):
        firsts.setdefault(int(label), text)
    return tuple(firsts[c] for c in sorted(firsts))


def train(args: argparse.Namespace) -> None:
    from manifold_jax import training

    out = _user_path("--out", args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} is a file, not a directory")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise CliError(f"--out {out} is not empty; pass --overwrite to replace it")
    kwargs: dict[str, Any] = {"seed": args.seed, "save": out}
    if args.epochs is not None:
        if args.which == "minilm-topics":
            raise CliError("--epochs applies to mnist-vit; the topic head is a convex fit run to convergence")
        kwargs["epochs"] = args.epochs
    if args.which == "mnist-vit":
        _, metrics = training.train_mnist_vit(**kwargs)
    elif args.which == "mnist-vit-paper":
        _, metrics = training.train_mnist_vit_paper(**kwargs)
    else:
        _, metrics = training.train_topic_head(**kwargs)
    print({k: v for k, v in metrics.items() if not isinstance(v, (list, dict))})


def view(args: argparse.Namespace) -> None:
    from manifold_jax.view import view as open_view

    open_view(_user_path("DIR", args.directory), rebuild=args.rebuild)


__all__ = ["DEMO_DIGITS", "demo", "explore", "report", "train", "view"]
