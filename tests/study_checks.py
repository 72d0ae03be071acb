"""Checks shared by the study, reliability and CLI tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from manifold_jax.cli import main
from manifold_jax.study import load_study


def same_results(a: Path, b: Path) -> None:
    """Two studies hold bit-identical inputs, trajectories, baselines and interpretations (a kind of run the
    reference ``a`` does not hold, a baseline of the counterfactual say, is not compared)."""
    sa, sb = load_study(a), load_study(b)
    assert sb.unfinished == {}
    for name in sa.inputs:
        np.testing.assert_array_equal(sa.inputs[name], sb.inputs[name], err_msg=name)
    for algorithm in sa.spec.runs:
        for kind in ("trajectories", "baselines"):
            if algorithm not in getattr(sa, kind):
                continue
            ta, tb = getattr(sa, kind)[algorithm], getattr(sb, kind)[algorithm]
            for name in ("x", "y", "step", "eigenvalue", "status", "stalls", "iteration"):
                np.testing.assert_array_equal(getattr(ta, name), getattr(tb, name),
                                              err_msg=f"{kind} {algorithm}.{name}")
        ia, ib = sa.interpretations[algorithm], sb.interpretations[algorithm]
        np.testing.assert_array_equal(ia.inputs, ib.inputs)
        np.testing.assert_array_equal(ia.logits, ib.logits)


def fails_in_one_line(argv: list[str], capsys: pytest.CaptureFixture[str], pattern: str) -> str:
    """The CLI exits 2 with exactly one line on stderr, holding ``pattern``, and no traceback."""
    capsys.readouterr()  # what came before (a model saved by the test) is not the command's
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, f"expected a one-line error, got:\n{err}"
    assert "Traceback" not in err and "weights_only" not in err, err
    assert pattern in err, err
    return err
