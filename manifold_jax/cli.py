"""The ``manifold-jax`` command line: explore, report, demo, train.

Every failure a user can cause (a missing file, an unknown model, a selection out of
range, a non-image, an empty text, a non-empty output directory) ends with a one-line
error on stderr and exit status 2; Ctrl-C ends with status 130 and the command that
resumes the run.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEMO_DIGITS = ("mnist:3", "mnist:1502", "mnist:2504")
"""Held-out MNIST images (a 0, a 3 and a 5) the demo explores."""


class CliError(Exception):
    """A user error the CLI reports in one line."""


def _positions(text: str) -> str | tuple[int, ...]:
    if text in ("all", "one", "q1", "q2", "q3", "mask"):
        return text
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--select {text!r}: use all, one, q1, q2, q3, mask or comma-separated positions like 3,5,8"
        ) from None


def _threshold(text: str) -> float | str:
    if text == "reference":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--threshold {text!r}: a relative level such as 1e-4, or 'reference'") from None


def _add_exploration_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("exploration")
    g.add_argument("--algorithm", choices=("simec", "simexp", "both"), default="both",
                   help="SiMEC stays in the input's class, SiMExp leaves it (default: both)")
    g.add_argument("--steps", type=int, default=1000, help="iterations per exploration (default 1000)")
    g.add_argument("--eta", type=float, default=1.0, help="step multiplier (the paper uses 1 and 10; default 1)")
    g.add_argument("--select", type=_positions, default="all",
                   help="tokens/patches to explore: all, one (highest attribution), q1/q2/q3 (at or above the "
                        "1st/2nd/3rd quartile of attribution), mask (the masked word, MLM) or positions 3,5,8")
    g.add_argument("--bounds", choices=("theoretical", "measured", "none"), default="theoretical",
                   help="feasible box the explored embeddings are clipped into (default theoretical)")
    g.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    g.add_argument("--save-every", type=int, default=10, help="keep every n-th point (default 10)")
    g.add_argument("--spectrum", choices=("gram", "svd", "dense", "matfree"), default="gram",
                   help="eigen-solver of the pullback metric (default gram; dense is the paper's literal O(d^3) one)")
    g.add_argument("--threshold", type=_threshold, default=1e-4,
                   help="null eigenvalue level relative to each block's largest (default 1e-4), or 'reference' "
                        "for the authors' absolute 0.01")
    g.add_argument("--step-rule", choices=("reference", "paper"), default="reference",
                   help="the authors' code step (default) or the paper's formula")
    g.add_argument("--output-metric", choices=("euclidean", "fisher_rao", "softmax"), default="euclidean",
                   help="metric on the outputs: Euclidean on the logits (the reference, default), Fisher-Rao "
                        "of the predicted distribution, or Euclidean on the probabilities")
    g.add_argument("--chunk-size", type=int, default=100, help="steps per compiled chunk and checkpoint (default 100)")
    g.add_argument("--no-baseline", action="store_true", help="skip the gradient-plus-noise baseline")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="manifold-jax",
        description="Explore the input space of Transformer models through the pullback of the output metric "
                    "(SiMEC / SiMExp, arXiv 2410.06019).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("explore", help="explore inputs of a model and write a study directory",
                       description="Run SiMEC and/or SiMExp on images or texts and write trajectories, "
                                   "interpretations, metrics and figures to --out.")
    p.add_argument("--model", default=None,
                   help="embedded model (mnist-vit, minilm-topics), a local model directory or a hub id")
    p.add_argument("--task", choices=("classification", "mlm", "lm", "lm-top5"), default=None,
                   help="model head (default: classification; for a causal LM such as GPT-2, lm-top5: the "
                        "next-token logits of the 5 likeliest tokens at the prompt, frozen)")
    src = p.add_argument_group("inputs (one or more)")
    src.add_argument("--mnist", type=int, nargs="+", default=[], metavar="INDEX",
                     help="images of the shipped MNIST subset (0..4999)")
    src.add_argument("--image", nargs="+", default=[], metavar="FILE", help="image files of the model's size")
    src.add_argument("--text", nargs="+", default=[], metavar="TEXT", help="sentences")
    src.add_argument("--text-file", default=None, metavar="FILE", help="a text file, one sentence per line")
    _add_exploration_options(p)
    out = p.add_argument_group("output")
    out.add_argument("--out", default=None, help="study directory to write")
    out.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    out.add_argument("--resume", default=None, metavar="DIR", help="continue an interrupted study in DIR")
    out.add_argument("--no-report", action="store_true", help="skip metrics and figures at the end")
    out.add_argument("--quiet", action="store_true", help="no progress bars")

    r = sub.add_parser("report", help="metrics and figures for a finished study",
                       description="Compute every metric, draw the figures and write report.md for a study directory.")
    r.add_argument("directory", help="a study directory written by 'explore'")
    r.add_argument("--no-figures", action="store_true", help="metrics and report.md only")

    d = sub.add_parser("demo", help="the README's main job: SiMEC and SiMExp on MNIST digits and sentences",
                       description="Explore three MNIST digits with the embedded ViT and three sentences with the "
                                   "embedded MiniLM topic classifier, then write a report folder.")
    d.add_argument("--out", default="manifold-jax-demo", help="report folder (default ./manifold-jax-demo)")
    d.add_argument("--steps", type=int, default=1000, help="iterations per exploration (default 1000)")
    d.add_argument("--eta", type=float, default=10.0, help="step multiplier (default 10)")
    d.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    d.add_argument("--quiet", action="store_true", help="no progress bars")

    t = sub.add_parser("train", help="train the embedded models (the MNIST ViT, the MiniLM topic head)",
                       description="Reproduce the weights shipped with the package.")
    t.add_argument("which", choices=("mnist-vit", "minilm-topics"), help="model to train")
    t.add_argument("--out", required=True, help="directory to save the trained model to")
    t.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    t.add_argument("--epochs", type=int, default=None,
                   help="mnist-vit only: training epochs (default 100, the shipped model's; ~15 min on 2 cores)")
    t.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    return parser


def _inputs(args: argparse.Namespace) -> tuple[str, ...]:
    items = [f"mnist:{i}" for i in args.mnist] + list(args.image) + list(args.text)
    if args.text_file:
        if not os.path.isfile(args.text_file):
            raise CliError(f"--text-file {args.text_file}: file not found")
        with open(args.text_file, encoding="utf-8") as f:
            lines = [line.strip() for line in f if line.strip()]
        if not lines:
            raise CliError(f"--text-file {args.text_file}: no non-empty line")
        items += lines
    for path in args.image:
        if not os.path.isfile(path):
            raise CliError(f"--image {path}: file not found")
    return tuple(items)


def _spec_from_args(args: argparse.Namespace) -> Any:
    from manifold_jax.runs import StudySpec

    if args.model is None:
        raise CliError("--model is required (mnist-vit, minilm-topics, a directory or a hub id)")
    inputs = _inputs(args)
    if not inputs:
        raise CliError("no inputs: give --mnist, --image, --text or --text-file")
    return StudySpec(
        model=args.model, task=_task(args), inputs=inputs,
        algorithms=("simec", "simexp") if args.algorithm == "both" else (args.algorithm,),
        steps=args.steps, eta=args.eta, select=args.select, bounds=args.bounds, seed=args.seed,
        save_every=args.save_every, spectrum=args.spectrum, threshold=args.threshold,
        step_rule=args.step_rule, output_metric=args.output_metric, chunk_size=args.chunk_size,
        baseline=not args.no_baseline,
    )


def _task(args: argparse.Namespace) -> str:
    """--task, else the model family's study task (a causal LM's frozen top-5) or its default."""
    if args.task is not None:
        return args.task
    from manifold_jax.models import family_of

    fam = family_of(args.model)
    return fam.study_task or fam.default_task


def _explore(args: argparse.Namespace) -> None:
    from manifold_jax.report import build_report
    from manifold_jax.runs import run_study

    if args.resume:
        out = Path(args.resume)
        try:
            run_study(None, out, resume=True, progress=not args.quiet)
        except KeyboardInterrupt:
            _interrupted(out)
    else:
        if args.out is None:
            raise CliError("--out is required (or --resume DIR)")
        spec = _spec_from_args(args)
        out = Path(args.out)
        try:
            run_study(spec, out, overwrite=args.overwrite, progress=not args.quiet)
        except KeyboardInterrupt:
            _interrupted(out)
    if not args.no_report:
        build_report(out)


def _interrupted(out: Path) -> None:
    print(f"\ninterrupted; continue with: manifold-jax explore --resume {out}", file=sys.stderr)
    raise SystemExit(130)


def _demo(args: argparse.Namespace) -> None:
    from manifold_jax.data import demo_sentences
    from manifold_jax.report import build_report
    from manifold_jax.runs import StudySpec, run_study

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise CliError(f"output directory {out} is not empty; pass --overwrite to replace it")
    save_every = max(1, args.steps // 50)
    common = dict(steps=args.steps, eta=args.eta, save_every=save_every, chunk_size=max(save_every, 100))
    # The text study measures outputs with the Fisher-Rao metric: for this confident
    # classifier a SiMExp step along a Euclidean-logit eigenvector often barely moves the
    # predicted distribution, while the Fisher metric ranks directions by how much they do.
    studies = {
        "images": StudySpec(model="mnist-vit", inputs=DEMO_DIGITS, **common),
        "text": StudySpec(model="minilm-topics", inputs=_demo_texts(demo_sentences()), output_metric="fisher_rao", **common),
    }
    for name, spec in studies.items():
        print(f"== {name}: {spec.model}")
        run_study(spec, out / name, overwrite=args.overwrite, progress=not args.quiet)
        build_report(out / name)
    print(f"demo written to {out}/ (images/report.md, text/report.md, figures/*.png)")


def _demo_texts(demo: tuple[list[str], Any, tuple[str, ...]]) -> tuple[str, ...]:
    """The first held-out demo sentence of each topic."""
    texts, labels, _ = demo
    firsts = {}
    for text, label in zip(texts, labels, strict=True):
        firsts.setdefault(int(label), text)
    return tuple(firsts[c] for c in sorted(firsts))


def _train(args: argparse.Namespace) -> None:
    from manifold_jax import training

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise CliError(f"output directory {out} is not empty; pass --overwrite to replace it")
    kwargs: dict[str, Any] = {"seed": args.seed, "save": out}
    if args.epochs is not None:
        if args.which != "mnist-vit":
            raise CliError("--epochs applies to mnist-vit; the topic head is a convex fit run to convergence")
        kwargs["epochs"] = args.epochs
    if args.which == "mnist-vit":
        _, metrics = training.train_mnist_vit(**kwargs)
    else:
        _, metrics = training.train_topic_head(**kwargs)
    print({k: v for k, v in metrics.items() if not isinstance(v, (list, dict))})


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``manifold-jax`` command."""
    args = _parser().parse_args(argv)
    # the CLI never needs torch; transformers' advice that it is missing is noise here
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    handlers = {"explore": _explore, "report": _report, "demo": _demo, "train": _train}
    try:
        handlers[args.command](args)
    except (CliError, ValueError, TypeError, FileNotFoundError, FileExistsError, KeyError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"manifold-jax {args.command}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def _report(args: argparse.Namespace) -> None:
    from manifold_jax.report import build_report

    build_report(args.directory, figures=not args.no_figures)


if __name__ == "__main__":
    main()
