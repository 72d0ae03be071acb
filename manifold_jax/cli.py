"""The ``manifold-jax`` command line: explore, report, view, demo, train.

Every failure a user or the machine can cause (a missing or corrupt file, an unknown model,
an input of the wrong kind, a selection out of range, a full or read-only disk, a non-empty
output directory) ends with one line on stderr naming the argument or file, and exit status
2; ``--debug`` shows the traceback instead. An unexpected internal error also prints one line
(exit status 1). Ctrl-C ends with status 130 and the command that resumes the run. The
choices and defaults of the options come from the library (``StudySpec``, ``ExploreConfig``).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

DEMO_DIGITS = (3, 1502, 2504)
"""Held-out MNIST images (a 0, a 3 and a 5) the demo explores."""

EXIT_USAGE = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A user error the CLI reports in one line."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (no usage block above them)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --------------------------------------------------------------------------- defaults from the library


def _spec_default(name: str) -> Any:
    from manifold_jax.study import StudySpec

    return next(f.default for f in dataclasses.fields(StudySpec) if f.name == name)


def _engine_default(name: str) -> Any:
    from manifold_jax.explore import ExploreConfig
    from manifold_jax.study.spec import STUDY_OPTIONS

    if name in STUDY_OPTIONS:
        return STUDY_OPTIONS[name]
    return getattr(ExploreConfig(algorithm="simec"), name)


def _positions(text: str) -> str | tuple[int, ...]:
    from manifold_jax.study import STUDY_SELECTIONS

    if text in STUDY_SELECTIONS:
        return text
    try:
        positions = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        positions = ()
    if not positions or min(positions) < 0:
        raise argparse.ArgumentTypeError(
            f"{text!r}: use {', '.join(STUDY_SELECTIONS)} or comma-separated positions like 3,5,8"
        )
    repeated = sorted({p for p in positions if positions.count(p) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"{text!r} repeats position(s) {', '.join(map(str, repeated))}")
    return positions


def _mnist_indices(text: str) -> tuple[int, ...]:
    """An index (11) or a range START:STOP (0:1000, STOP excluded)."""
    start, sep, stop = text.partition(":")
    try:
        bounds = (int(start), int(stop)) if sep else (int(text), int(text) + 1)
    except ValueError:
        bounds = (0, 0)
    if bounds[0] < 0 or bounds[1] <= bounds[0]:
        raise argparse.ArgumentTypeError(f"{text!r}: an image index such as 11, or a range START:STOP such as 0:1000")
    return tuple(range(*bounds))


def _threshold(text: str) -> float | str:
    if text == "reference":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a relative level such as 1e-4, or 'reference'") from None


def _engine_option(text: str) -> tuple[str, Any]:
    """KEY=VALUE: the value read as JSON (numbers, true/false/null), else kept as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. corrector=newton or tol=1e-6")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    if isinstance(value, (list, dict)):
        raise argparse.ArgumentTypeError(f"{text!r}: the value must be a string or a number")
    return key.strip().replace("-", "_"), value


ENGINE_FLAGS = ("eta", "threshold", "step_rule", "spectrum", "blocks", "output_metric", "save_every", "chunk_size",
                "direction", "box", "stop")
"""Exploration options with a flag of their own; any other ExploreConfig option goes through --option."""

SPEC_FLAGS = ("model", "task", "algorithm", "select", "bounds", "space", "seed", "max_length", "no_baseline",
              "mnist", "image", "text", "text_file", "option", "corrector", "tol", "counterfactual", *ENGINE_FLAGS)
"""What a new study is made of: refused beside --resume (which continues the study as it is)."""


def _add_exploration_options(p: argparse.ArgumentParser) -> None:
    from manifold_jax.explore import ALGORITHMS, STEP_RULES
    from manifold_jax.explore.options import BOX_POLICIES, CORRECTORS, DIRECTIONS, STOP_EVENTS
    from manifold_jax.geometry import BLOCKS, METHODS
    from manifold_jax.output_metrics import OUTPUT_METRICS
    from manifold_jax.study import BOUNDS, SPACES, STUDY_SELECTIONS, TARGETS

    g = p.add_argument_group("exploration (defaults: the library's)")
    g.add_argument("--algorithm", choices=(*ALGORITHMS, "both"), default=None,
                   help="SiMEC stays in the input's class, SiMExp leaves it (default: both)")
    g.add_argument("--steps", type=int, default=None,
                   help=f"iterations per exploration (default {_spec_default('steps')}); with --resume: continue "
                        "the study to this many steps")
    g.add_argument("--eta", type=float, default=None,
                   help=f"step multiplier (the paper uses 1 and 10; default {_engine_default('eta'):g})")
    g.add_argument("--select", type=_positions, default=None,
                   help=f"tokens/patches to explore: {', '.join(STUDY_SELECTIONS)} or positions 3,5,8 "
                        f"(default {_spec_default('select')}; one: highest attribution, q1/q2/q3: at or above the "
                        "1st/2nd/3rd quartile of attribution, mask: the masked word of an MLM)")
    g.add_argument("--bounds", choices=BOUNDS, default=None,
                   help=f"feasible box the explored embeddings are clipped into (default {_spec_default('bounds')})")
    g.add_argument("--space", choices=SPACES, default=None,
                   help=f"explore the input embeddings (the paper; default {_spec_default('space')}) or, for a ViT, "
                        "the pixels: every point is then an image in [0, 1] and decoding is exact")
    g.add_argument("--seed", type=int, default=None,
                   help=f"seed of every random choice (default {_spec_default('seed')})")
    g.add_argument("--save-every", type=int, default=None,
                   help=f"keep every n-th point (default {_engine_default('save_every')})")
    g.add_argument("--spectrum", choices=METHODS, default=None,
                   help=f"eigen-solver of the pullback metric (default {_engine_default('spectrum')}; dense is the "
                        "paper's literal O(d^3) one)")
    g.add_argument("--blocks", choices=BLOCKS, default=None,
                   help="one metric per token or one on all selected coordinates "
                        f"(default {_engine_default('blocks')})")
    g.add_argument("--threshold", type=_threshold, default=None,
                   help=f"null eigenvalue level relative to each block's largest (default "
                        f"{_engine_default('threshold').rtol:g}), or 'reference' for the authors' absolute 0.01")
    g.add_argument("--step-rule", choices=STEP_RULES, default=None,
                   help=f"step size rule (default {_engine_default('step_rule')}: the authors' code; "
                        "paper: its formula)")
    g.add_argument("--output-metric", choices=tuple(OUTPUT_METRICS), default=None,
                   help=f"metric on the outputs (default {_engine_default('output_metric')}: on the logits, the "
                        "reference; fisher_rao: of the predicted distribution; softmax: on the probabilities)")
    g.add_argument("--chunk-size", type=int, default=None,
                   help=f"steps per compiled chunk and checkpoint (default {_engine_default('chunk_size')})")
    c = p.add_argument_group("continuation (beyond the paper; README: Exploration as numerical continuation)")
    c.add_argument("--corrector", choices=CORRECTORS, default=None,
                   help="SiMEC: pull every step back onto the input's level set (minimum-norm Gauss-Newton)")
    c.add_argument("--direction", choices=DIRECTIONS, default=None,
                   help="random (the paper's, default) or coherent: the previous direction transported onto the "
                        "new subspace, a geodesic-like path")
    c.add_argument("--tol", type=float, default=None,
                   help="tolerance of --step-rule adaptive and of --corrector (how far an accepted point's outputs "
                        "may lie from the input's)")
    c.add_argument("--box", choices=BOX_POLICIES, default=None,
                   help="clip (the paper's, default) or active: coordinates at a bound that a step pushes outward "
                        "are frozen, so the point stays on the level set")
    c.add_argument("--stop", choices=STOP_EVENTS, default=None,
                   help="flip: stop an input's exploration where its predicted class changes")
    c.add_argument("--counterfactual", nargs="?", const="runner-up", default=None, metavar="TARGET",
                   help="also find each input's closest counterfactual of another class (mj.counterfactual, with "
                        f"its KKT certificate): {', '.join(TARGETS)} (default runner-up), a class index or a label")
    g.add_argument("--option", type=_engine_option, action="append", default=[], metavar="KEY=VALUE",
                   help="any other option of the engine (ExploreConfig), e.g. --option mode=rev; repeatable")
    g.add_argument("--max-length", type=int, default=None, metavar="N",
                   help="cut texts longer than N tokens, with a warning (default: a text longer than the model's "
                        "positions is refused)")
    g.add_argument("--no-baseline", action="store_true", help="skip the gradient-plus-noise baseline")


def _add_process_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("several processes and hosts (README: Several hosts); every process runs the same "
                             "command, process 0 writes the study")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="address of process 0's coordination service, reachable from every process")
    g.add_argument("--num-processes", type=int, default=None, metavar="N", help="how many processes take part")
    g.add_argument("--process-id", type=int, default=None, metavar="I", help="this process's number, 0 to N-1")
    g.add_argument("--cluster", action="store_true",
                   help="join the runtime as JAX finds it (JAX_COORDINATOR_ADDRESS, SLURM, Open MPI, Kubernetes)")


def _parser() -> argparse.ArgumentParser:
    from manifold_jax.study import TASKS

    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser = _Parser(
        prog="manifold-jax",
        description="Explore the input space of Transformer models through the pullback of the output metric "
                    "(SiMEC / SiMExp, arXiv 2410.06019).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("explore", parents=[common], help="explore inputs of a model and write a study directory",
                       description="Run SiMEC and/or SiMExp on images or texts and write trajectories, "
                                   "interpretations, metrics and figures to --out.")
    p.add_argument("--model", default=None,
                   help="embedded model (mnist-vit, minilm-topics), a local model directory or a hub id")
    p.add_argument("--task", choices=TASKS, default=None,
                   help="model head (default: the model family's, classification for classifiers; for a causal "
                        "LM such as GPT-2, lm-top5: the next-token logits of the 5 likeliest tokens at the prompt, "
                        "frozen)")
    src = p.add_argument_group("inputs (one or more, of the model's kind)")
    src.add_argument("--mnist", type=_mnist_indices, nargs="+", default=[], metavar="INDEX",
                     help="images of the shipped MNIST subset (0..4999), for image models: indices, or ranges "
                          "START:STOP such as 0:1000 (STOP excluded)")
    src.add_argument("--image", nargs="+", default=[], metavar="FILE", help="image files of the model's size")
    src.add_argument("--text", nargs="+", default=[], metavar="TEXT", help="sentences, for text models")
    src.add_argument("--text-file", default=None, metavar="FILE", help="a UTF-8 text file, one sentence per line")
    _add_exploration_options(p)
    out = p.add_argument_group("output")
    out.add_argument("--out", default=None,
                     help="study directory to write (created, with any missing parent folders)")
    out.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    out.add_argument("--resume", default=None, metavar="DIR",
                     help="continue the study in DIR as its spec.json says (after Ctrl-C, a crash or damage to its "
                          "files); only --steps may change it, to continue to more steps")
    out.add_argument("--no-report", action="store_true", help="skip metrics and figures at the end")
    out.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_process_options(p)

    r = sub.add_parser("report", parents=[common], help="metrics and figures for a finished study",
                       description="Compute every metric, draw the figures and write report.md for a study directory.")
    r.add_argument("directory", help="a study directory written by 'explore'")
    r.add_argument("--no-figures", action="store_true", help="metrics, report.md and report.html only")
    r.add_argument("--partial", action="store_true",
                   help="report the finished explorations of an unfinished study (default: refuse it)")

    v = sub.add_parser("view", parents=[common], help="open a study's interactive report.html in the browser",
                       description="Open report.html (built first when missing) in the default browser; where there "
                                   "is none (a headless machine), print its path.")
    v.add_argument("directory", help="a study directory written by 'explore'")
    v.add_argument("--rebuild", action="store_true", help="rebuild the report first even when report.html exists")

    d = sub.add_parser("demo", parents=[common],
                       help="the README's main job: SiMEC, SiMExp and counterfactuals on MNIST digits and sentences",
                       description="Explore three MNIST digits (in pixel space) with the embedded ViT and three "
                                   "sentences with the embedded MiniLM topic classifier: SiMEC, SiMExp, and a "
                                   "closest counterfactual of each input's runner-up class; then write a report.")
    d.add_argument("--out", default="manifold-jax-demo", help="report folder (default ./manifold-jax-demo)")
    d.add_argument("--steps", type=int, default=1000, help="iterations per exploration (default 1000)")
    d.add_argument("--eta", type=float, default=10.0, help="step multiplier (default 10)")
    d.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.add_argument("--no-baseline", action="store_true", help="skip the gradient-plus-noise baseline")

    t = sub.add_parser("train", parents=[common],
                       help="train the embedded models (the MNIST ViT, the MiniLM topic head)",
                       description="Reproduce the weights shipped with the package.")
    t.add_argument("which", choices=("mnist-vit", "mnist-vit-paper", "minilm-topics"), help="model to train")
    t.add_argument("--out", required=True, help="directory to save the trained model to")
    t.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    t.add_argument("--epochs", type=int, default=None,
                   help="mnist-vit / mnist-vit-paper only: training epochs (default: the shipped model's; "
                        "mnist-vit 100, ~15 min on 2 cores)")
    t.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    return parser


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
    from manifold_jax.study import StudySpec

    if args.model is None:
        raise CliError("--model is required (mnist-vit, minilm-topics, a directory or a hub id)")
    inputs, args.sources = _inputs(args)
    if not inputs:
        raise CliError("no inputs: give --mnist, --image, --text or --text-file")
    options = {name: getattr(args, name) for name in ENGINE_FLAGS if getattr(args, name) is not None}
    for key, value in args.option:
        if key in options or key == "algorithm":
            raise CliError(f"--option {key}=...: use --{key.replace('_', '-')} for this option")
        options[key] = value
    given = {name: getattr(args, name) for name in ("steps", "select", "bounds", "space", "seed", "max_length")
             if getattr(args, name) is not None}
    given["task"] = _task(args)
    algorithm = args.algorithm or "both"
    algorithms = ALGORITHMS if algorithm == "both" else (algorithm,)
    run_options: dict[str, dict[str, Any]] = {}
    if args.corrector is not None:  # SiMEC's alone: SiMExp leaves the level set by design
        if "simec" not in algorithms:
            raise CliError("--corrector keeps SiMEC on the level set; add SiMEC with --algorithm simec or both")
        run_options["simec"] = {"corrector": args.corrector}
    if args.tol is not None:
        if options.get("step_rule") == "adaptive":
            options["tol"] = args.tol
        elif args.corrector is not None:
            run_options["simec"]["tol"] = args.tol
        else:
            raise CliError("--tol is the tolerance of --step-rule adaptive or of --corrector; give one of them")
    if args.counterfactual is not None:
        algorithms = (*algorithms, "counterfactual")
        target = args.counterfactual
        given["target"] = int(target) if target.isdigit() else target
    return StudySpec(model=args.model, inputs=tuple(inputs), algorithms=algorithms,
                     baseline=not args.no_baseline, options=options, run_options=run_options, **given)


def _resume_spec(args: argparse.Namespace) -> Any:
    """The study --resume continues: as its spec.json says, continued to --steps if given."""
    from manifold_jax.study.storage import read_spec

    given = [name for name in (*SPEC_FLAGS, "out", "overwrite") if getattr(args, name) not in (None, False, [])]
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


def _explore(args: argparse.Namespace) -> None:
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


def _report(args: argparse.Namespace) -> None:
    from manifold_jax.report import build_report

    build_report(_user_path("DIR", args.directory), figures=not args.no_figures, partial=args.partial,
                 progress=sys.stderr.isatty())


def _demo(args: argparse.Namespace) -> None:
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
                            space="pixels", algorithms=runs, baseline=not args.no_baseline, options=options),
        "text": StudySpec(model="minilm-topics", inputs=tuple(Text(t) for t in _demo_texts(demo_sentences())),
                          steps=args.steps, algorithms=runs, baseline=not args.no_baseline,
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


def _train(args: argparse.Namespace) -> None:
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


# --------------------------------------------------------------------------- errors


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe_error(exc: BaseException, args: argparse.Namespace) -> tuple[str, int]:
    """The one-line message and exit status for an error raised by a command."""
    from manifold_jax import study

    sources: list[str] = getattr(args, "sources", [])
    where = (args.resume or args.out) if args.command == "explore" else getattr(args, "directory", None)
    if isinstance(exc, CliError):
        return str(exc), EXIT_USAGE
    if isinstance(exc, study.ModalityError):
        culprit = sources[exc.index] if exc.index < len(sources) else f"input {exc.index}"
        give = "--text or --text-file" if exc.modality == "text" else "--mnist or --image"
        article = "an" if exc.modality == "image" else "a"
        return f"{culprit}: {exc.model} is {article} {exc.modality} model; give {give}", EXIT_USAGE
    if isinstance(exc, study.TextTooLongError):
        culprit = sources[exc.index] if exc.index < len(sources) else f"input {exc.index}"
        return (f"{culprit}: {exc.tokens} tokens, more than the {exc.limit} the model takes; shorten it or pass "
                f"--max-length {exc.limit} to cut it"), EXIT_USAGE
    if isinstance(exc, study.StudyExistsError):
        return (f"--out {exc.path} is not empty; pass --overwrite to replace it or --resume {exc.path} "
                "to continue it"), EXIT_USAGE
    if isinstance(exc, study.NotAStudyError):
        if args.command == "explore" and not args.resume:
            return f"--out {exc.path}: {exc.reason}", EXIT_USAGE
        if args.command == "explore":
            return f"--resume {exc.path}: no study there ({exc.reason})", EXIT_USAGE
        return str(exc), EXIT_USAGE
    if isinstance(exc, study.StudyDamagedError):
        fix = f"; rebuild it with: manifold-jax explore --resume {where}" if exc.recoverable and where else ""
        return f"{exc.path}: {exc.reason}{fix}", EXIT_USAGE
    if isinstance(exc, study.StudyIncompleteError):
        runs = ", ".join(f"{a} ({done} of {exc.steps} steps)" for a, done in exc.missing.items())
        return (f"{exc.path}: unfinished: {runs}; finish it with: manifold-jax explore --resume {where or exc.path}, "
                "or report what is done with --partial"), EXIT_USAGE
    if isinstance(exc, study.ModelLoadError):
        model = getattr(args, "model", None)
        return (f"--model {model}: " if model else "") + _first_line(exc), EXIT_USAGE
    if isinstance(exc, OSError):
        return _os_error(exc), EXIT_USAGE
    if isinstance(exc, OverflowError):
        return f"a number is out of range ({_first_line(exc)})", EXIT_USAGE
    if isinstance(exc, (ValueError, TypeError, KeyError, IndexError)):
        message = _first_line(exc)
        if "weights_only" in message:  # never pass on torch's advice to unpickle untrusted code
            message = "a PyTorch checkpoint was refused by the safe (weights-only) loader; convert it to safetensors"
        return message, EXIT_USAGE
    return (f"internal error: {type(exc).__name__}: {_first_line(exc)} (rerun with --debug for the traceback)",
            EXIT_INTERNAL)


def _os_error(exc: OSError) -> str:
    """An OS error as "FILE: reason" (disk full and read-only disks said plainly)."""
    if exc.errno == errno.ENOSPC:
        reason = "no space left on the device"
    elif exc.errno == errno.EROFS:
        reason = "the file system is read-only"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        reason = "permission denied"
    else:
        reason = exc.strerror or _first_line(exc)
    if exc.filename is None:
        return _first_line(exc) if exc.strerror is None else reason
    return f"{exc.filename}: {reason}"


def _one_line_warnings(command: str) -> None:
    """Show warnings as one line each, ``manifold-jax COMMAND: warning: ...``."""

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
        print(f"manifold-jax {command}: warning: {text}", file=sys.stderr)

    warnings.showwarning = show


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``manifold-jax`` command."""
    args = _parser().parse_args(argv)
    # the CLI never needs torch; transformers' advice that it is missing is noise here
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    handlers = {"explore": _explore, "report": _report, "view": _view, "demo": _demo, "train": _train}
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


def _view(args: argparse.Namespace) -> None:
    from manifold_jax.view import view

    view(_user_path("DIR", args.directory), rebuild=args.rebuild)


if __name__ == "__main__":
    main()
