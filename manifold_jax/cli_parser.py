"""The command line's parser: its commands and flags, the choices and defaults read from the library.

The engine's flags are made from the fields of :class:`~manifold_jax.explore.ExploreConfig`
whose metadata gives them a help text (their type or choices too); any other engine option goes
through ``--option KEY=VALUE``. The defaults shown are the study's (``StudySpec``, its
run_config), never a copy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from typing import Any, NoReturn

from manifold_jax.cli_errors import EXIT_USAGE
from manifold_jax.models.embedded import EMBEDDED


class CliParser(argparse.ArgumentParser):
    """argparse with one-line usage errors (no usage block above them)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --------------------------------------------------------------------------- defaults and types from the library


def spec_default(name: str) -> Any:
    from manifold_jax.study import StudySpec

    return next(f.default for f in dataclasses.fields(StudySpec) if f.name == name)


def engine_flags() -> tuple[dataclasses.Field[Any], ...]:
    """The ExploreConfig fields with a flag of their own (their metadata has a help text)."""
    from manifold_jax.study.run_config import ENGINE_FIELDS

    return tuple(f for f in ENGINE_FIELDS if "help" in f.metadata)


def spec_flags() -> tuple[str, ...]:
    """What a new study is made of: refused beside --resume (which continues the study as it is)."""
    return ("model", "task", "algorithm", "select", "bounds", "space", "seed", "max_length", "no_baseline",
            "mnist", "image", "image_dir", "text", "text_file", "option", "counterfactual",
            *(f.name for f in engine_flags()))


def positions(text: str) -> str | tuple[int, ...]:
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


def mnist_indices(text: str) -> tuple[int, ...]:
    """An index (11) or a range START:STOP (0:1000, STOP excluded)."""
    start, sep, stop = text.partition(":")
    try:
        bounds = (int(start), int(stop)) if sep else (int(text), int(text) + 1)
    except ValueError:
        bounds = (0, 0)
    if bounds[0] < 0 or bounds[1] <= bounds[0]:
        raise argparse.ArgumentTypeError(f"{text!r}: an image index such as 11, or a range START:STOP such as 0:1000")
    return tuple(range(*bounds))


def _number_or_word(kind: type, words: tuple[str, ...]) -> Callable[[str], Any]:
    """An argparse type: one of ``words``, else a number of ``kind``."""
    def parse(text: str) -> Any:
        if text in words:
            return text
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: a number such as 1e-4, or {' or '.join(map(repr, words))}"
                                             ) from None

    return parse


def engine_option(text: str) -> tuple[str, Any]:
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



def _default_text(name: str) -> str:
    from manifold_jax.study.run_config import STUDY_DEFAULTS

    value = STUDY_DEFAULTS[name]
    if value is None:
        return ""
    return f" (default {value:g})" if isinstance(value, float) else f" (default {value})"


def _add_engine_flag(group: Any, f: dataclasses.Field[Any]) -> None:
    """The flag of one ExploreConfig field, from its metadata."""
    meta = f.metadata
    kwargs: dict[str, Any] = {"default": None, "help": meta["help"] + _default_text(f.name)}
    if "choices" in meta:
        kwargs["choices"] = tuple(meta["choices"])
    else:
        words = tuple(meta.get("words", ()))
        kwargs["type"] = _number_or_word(meta["type"], words) if words else meta["type"]
    group.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def _add_exploration_options(p: argparse.ArgumentParser) -> None:
    from manifold_jax.explore import ALGORITHMS
    from manifold_jax.study import BOUNDS, SPACES, STUDY_SELECTIONS, TARGETS

    g = p.add_argument_group("exploration (defaults: the library's)")
    g.add_argument("--algorithm", choices=(*ALGORITHMS, "both"), default=None,
                   help="SiMEC stays in the input's class, SiMExp leaves it (default: both)")
    g.add_argument("--steps", type=int, default=None,
                   help=f"iterations per exploration (default {spec_default('steps')}); with --resume: continue "
                        "the study to this many steps")
    g.add_argument("--select", type=positions, default=None,
                   help=f"tokens/patches to explore: {', '.join(STUDY_SELECTIONS)} or positions 3,5,8 "
                        f"(default {spec_default('select')}; one: highest attribution, q1/q2/q3: at or above the "
                        "1st/2nd/3rd quartile of attribution, mask: the masked word of an MLM)")
    g.add_argument("--bounds", choices=BOUNDS, default=None,
                   help=f"feasible box the explored embeddings are clipped into (default {spec_default('bounds')})")
    g.add_argument("--space", choices=SPACES, default=None,
                   help=f"explore the input embeddings (the paper; default {spec_default('space')}) or, for a ViT, "
                        "the pixels: every point is then an image in [0, 1] and decoding is exact")
    g.add_argument("--seed", type=int, default=None,
                   help=f"seed of every random choice (default {spec_default('seed')})")
    c = p.add_argument_group("continuation (beyond the paper; README: Exploration as numerical continuation)")
    for f in engine_flags():
        _add_engine_flag(c if f.metadata.get("continuation") else g, f)
    c.add_argument("--counterfactual", nargs="?", const="runner-up", default=None, metavar="TARGET",
                   help="also find each input's closest counterfactual of another class (mj.counterfactual, with "
                        f"its KKT certificate): {', '.join(TARGETS)} (default runner-up), a class index or a label")
    g.add_argument("--option", type=engine_option, action="append", default=[], metavar="KEY=VALUE",
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


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command."""
    from manifold_jax.study import TASKS

    common = CliParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser = CliParser(
        prog="manifold-jax",
        description="Explore the input space of Transformer models through the pullback of the output metric "
                    "(SiMEC / SiMExp, arXiv 2410.06019).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("explore", parents=[common], help="explore inputs of a model and write a study directory",
                       description="Run SiMEC and/or SiMExp on images or texts and write trajectories, "
                                   "interpretations, metrics and figures to --out.")
    p.add_argument("--model", default=None,
                   help=f"embedded model ({', '.join(EMBEDDED)}), a local model directory or a hub id")
    p.add_argument("--task", choices=TASKS, default=None,
                   help="model head (default: the model family's, classification for classifiers; for a causal "
                        "LM such as GPT-2, lm-top5: the next-token logits of the 5 likeliest tokens at the prompt, "
                        "frozen)")
    src = p.add_argument_group("inputs (one or more, of the model's kind)")
    src.add_argument("--mnist", type=mnist_indices, nargs="+", default=[], metavar="INDEX",
                     help="images of the shipped MNIST subset (0..4999), for image models: indices, or ranges "
                          "START:STOP such as 0:1000 (STOP excluded)")
    src.add_argument("--image", nargs="+", default=[], metavar="FILE", help="image files of the model's size")
    src.add_argument("--image-dir", nargs="+", default=[], metavar="DIR",
                     help="folders of image files of the model's size (PNG, JPEG, ...), each explored in name order")
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
                        "100 for both: mnist-vit ~15 min, mnist-vit-paper ~50 min on 2 cores)")
    t.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    return parser


__all__ = ["CliParser", "build_parser", "engine_flags", "engine_option", "mnist_indices", "positions", "spec_default",
           "spec_flags"]
