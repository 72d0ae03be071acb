"""The README's command-line examples, run as written from a fresh working directory.

Each ``manifold-jax`` line of the README's "Studies from the command line" block runs in order
(the resumes continue the study the first line wrote), with its relative ``--out`` paths, at a
tiny size: ``--steps`` cut to 10 (20 where the README continues a study to 2000) and ``--quiet``.
``path/to/gpt2`` is a tiny random GPT-2 with its tokenizer, written there first. The training
line is parsed, not run (15 minutes; ``tests/test_training.py`` trains the same code at reduced
size).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from manifold_jax.cli import _parser, main
from tests.models_helpers import save_random_gpt2

ROOT = Path(__file__).resolve().parents[1]
TINY_STEPS = {"1000": "10", "2000": "20"}


def readme_cli_examples() -> list[list[str]]:
    """The README's command-line examples as argument lists (continuation lines joined, comments dropped)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Studies from the command line", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block is not None, "the section opens with a bash block"
    lines = block.group(1).replace("\\\n", " ").splitlines()
    commands = [shlex.split(line, comments=True) for line in lines if line.strip()]
    assert all(c[0] == "manifold-jax" for c in commands), commands
    return [c[1:] for c in commands]


def tiny(argv: list[str]) -> list[str]:
    """The same command at a tiny size: --steps cut, progress bars off."""
    out = list(argv)
    if "--steps" in out:
        at = out.index("--steps") + 1
        out[at] = TINY_STEPS[out[at]]
    elif out[0] == "explore" and "--resume" not in out:
        out += ["--steps", "10"]
    return [*out, "--quiet"] if out[0] == "explore" else out


@pytest.mark.xdist_group("readme_cli")
def test_every_readme_cli_example_runs_with_its_relative_paths(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    examples = readme_cli_examples()
    assert [e[0] for e in examples].count("explore") >= 4
    monkeypatch.delenv("DISPLAY", raising=False)  # `view` prints the page's path instead of opening a browser
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    save_random_gpt2(workdir / "path" / "to" / "gpt2", n_layer=1, n_embd=32, n_head=2)
    ran = []
    for argv in examples:
        if argv[0] == "train":
            args = _parser().parse_args(argv)
            assert (args.which, args.out) == ("mnist-vit", "my-vit")
            continue
        main(tiny(argv))
        ran.append(argv)
    out = capsys.readouterr().out
    # every study the README names was written where it says, relative to the working directory
    for argv in ran:
        if argv[0] == "explore" and "--out" in argv:
            study = workdir / argv[argv.index("--out") + 1]
            assert (study / "report.html").is_file() and (study / "metrics.json").is_file(), study
    digits = json.loads((workdir / "runs/digits/spec.json").read_text())
    assert digits["steps"] == 20, "the second resume continued the study to its new step count"
    assert f"{workdir}/runs/digits/report.html" in out, "view printed the page it would open"
    assert not (workdir / "my-vit").exists()
