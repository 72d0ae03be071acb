"""Several processes on JAX's distributed runtime (loopback, CPU, gloo): the same results as one.

Each test launches the processes as JAX's own multi-process tests do (tests/multiprocess.py:
a free port, a coordinator, one log per process, one timeout). The per-item arithmetic is
the same whichever process runs an item, so the results equal one process's; the tolerance
is that of tests/test_devices.py (float32 rounding accumulated over the steps, where a wrong
partitioning moves points by O(eta)).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from manifold_jax.explore import Trajectory, combine
from tests.multiprocess import ROOT, failures, launch

pytestmark = pytest.mark.xdist_group("distributed")

RUNS = ("paper", "corrected", "counterfactual")
ATOL = 1e-4


def _same(a: Trajectory, b: Trajectory, what: str) -> None:
    assert a.x.shape == b.x.shape, (what, a.x.shape, b.x.shape)
    np.testing.assert_allclose(a.x, b.x, rtol=0, atol=ATOL, err_msg=what)
    np.testing.assert_allclose(a.y, b.y, rtol=0, atol=ATOL, err_msg=what)
    np.testing.assert_array_equal(a.status, b.status, err_msg=what)
    np.testing.assert_array_equal(a.iteration, b.iteration, err_msg=what)
    np.testing.assert_array_equal(a.stop_iteration, b.stop_iteration, err_msg=what)


def _load(path: Path) -> Trajectory:
    with np.load(path) as data:
        return Trajectory.from_arrays({k: data[k] for k in data.files})


@pytest.mark.slow
@pytest.mark.parametrize("processes, devices", [(2, 2), (4, 1)])
def test_explore_over_processes_equals_one_process(processes: int, devices: int, tmp_path: Path,
                                                   full_size: bool) -> None:
    """6 items over 2 processes of 2 devices (padded to 8: process 1 holds 2 real items and 2
    copies), or 4 processes of 1 (--full): gathered, and as per-process parts joined by combine."""
    if processes == 4 and not full_size:
        pytest.skip("4 processes: with --full (the 2-process case covers the same code at CI size)")
    script = [sys.executable, str(ROOT / "tests" / "distributed_explore.py"), str(tmp_path)]
    many = launch(script, processes, cwd=tmp_path, logs=tmp_path / "logs", devices_per_process=devices, timeout=600)
    assert all(f.returncode == 0 for f in many), failures(many)
    one = launch([*script, "--reference"], 1, cwd=tmp_path, logs=tmp_path / "logs-one", timeout=600)
    assert one[0].returncode == 0, failures(one)
    for name in RUNS:
        reference = _load(tmp_path / f"{name}-reference.npz")
        _same(_load(tmp_path / f"{name}-whole.npz"), reference, f"{name}, gathered")
        parts = [np.load(tmp_path / f"{name}-part{i}.npz") for i in range(processes)]
        items = np.concatenate([p["items"] for p in parts])
        np.testing.assert_array_equal(items, np.arange(6))  # every item once, in process order
        _same(combine([_load(tmp_path / f"{name}-part{i}.npz") for i in range(processes)]), reference,
              f"{name}, combined parts")


STUDY = ["explore", "--model", "mnist-vit", "--mnist", "11", "22", "33", "44", "--steps", "4", "--save-every", "2",
         "--chunk-size", "2", "--algorithm", "simexp", "--counterfactual", "--no-baseline", "--quiet", "--no-report"]
"""A study the processes share: SiMExp and the counterfactual (its per-input targets travel too)."""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "manifold_jax.cli", *args]


def _same_study(a: Path, b: Path) -> None:
    from manifold_jax.study import load_study

    sa, sb = load_study(a), load_study(b)
    assert sa.unfinished == {} and sb.unfinished == {}
    for name in sa.inputs:
        np.testing.assert_array_equal(sa.inputs[name], sb.inputs[name], err_msg=name)
    assert set(sa.trajectories) == set(sb.trajectories) == {"simexp", "counterfactual"}
    for run in sa.trajectories:
        _same(sa.trajectories[run], sb.trajectories[run], run)
        np.testing.assert_allclose(sa.interpretations[run].logits, sb.interpretations[run].logits, rtol=0, atol=ATOL)


@pytest.mark.slow
def test_a_study_over_two_processes_equals_one_process(workdir: Path) -> None:
    """Every process runs the same command with relative paths; process 0 alone writes the study."""
    from manifold_jax.cli import main

    two = launch(_cli(*STUDY, "--out", "runs/two"), 2, cwd=workdir, logs=workdir / "logs", process_args=True,
                 timeout=600)
    assert all(f.returncode == 0 for f in two), failures(two)
    main([*STUDY, "--out", "runs/one"])
    _same_study(Path("runs/one"), Path("runs/two"))
    assert sorted(p.name for p in workdir.iterdir()) == ["logs", "runs"]  # nothing written elsewhere


@pytest.mark.slow
def test_a_killed_process_then_a_resume_of_all(workdir: Path, full_size: bool) -> None:
    """Process 0 dies like kill -9 at its second chunk write: every process ends; all of them
    started again with --resume finish the study, equal to one process's."""
    if not full_size:
        pytest.skip("a kill and a resume over two processes: with --full")
    from manifold_jax.cli import main

    crash = [sys.executable, str(ROOT / "tests" / "crash_run.py"), "simexp/chunks/*", "2", "--"]
    first = launch([*crash, *STUDY, "--out", "runs/two"], 2, cwd=workdir, logs=workdir / "logs-killed",
                   process_args=True, timeout=600)
    assert first[0].returncode == 137, failures(first)
    assert first[1].returncode not in (0, None), "the other process must end (not hang) once process 0 is gone"
    resumed = launch(_cli("explore", "--resume", "runs/two", "--quiet", "--no-report"), 2, cwd=workdir,
                     logs=workdir / "logs-resumed", process_args=True, timeout=600)
    assert all(f.returncode == 0 for f in resumed), failures(resumed)
    log = resumed[0].log
    assert "resuming at iteration 2" in log or "continuing from iteration 2" in log, log
    main([*STUDY, "--out", "runs/one"])
    _same_study(Path("runs/one"), Path("runs/two"))


# --------------------------------------------------------------------------- cheap checks, one process


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str], pattern: str) -> None:
    from manifold_jax.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and pattern in err, err


def test_mnist_ranges_and_process_flags_are_checked(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from manifold_jax.cli import _parser

    args = _parser().parse_args(["explore", "--mnist", "3", "10:13", "--out", "x"])
    assert [i for chunk in args.mnist for i in chunk] == [3, 10, 11, 12]
    _one_line_error(["explore", "--model", "mnist-vit", "--mnist", "5:3", "--out", "x"], capsys, "START:STOP")
    _one_line_error(["explore", "--model", "mnist-vit", "--mnist", "1", "--out", "x", "--coordinator", "nohost",
                     "--num-processes", "2", "--process-id", "0"], capsys, "--coordinator 'nohost': expected HOST:PORT")
    _one_line_error(["explore", "--model", "mnist-vit", "--mnist", "1", "--out", "x", "--coordinator", "127.0.0.1:1",
                     "--num-processes", "2", "--process-id", "2"], capsys, "--process-id 2: expected 0 to 1")
    assert not Path("x").exists()


def test_combine_refuses_parts_of_different_explorations() -> None:
    import jax

    import manifold_jax as mj
    from tests.toy_models import linear_map

    f, _ = linear_map(jax.random.PRNGKey(0), 2, 3, 1)
    x0 = jax.random.normal(jax.random.PRNGKey(1), (3, 2, 3))
    a = mj.simec(f, x0, key=jax.random.PRNGKey(0), steps=4, save_every=2)
    b = mj.simec(f, x0, key=jax.random.PRNGKey(0), steps=2, save_every=2)
    assert mj.process_items(3, None) == range(3)
    whole = combine([a, a])
    assert whole.x.shape == (6, *a.x.shape[1:]) and whole.final.x.shape == (6, 2, 3)
    with pytest.raises(ValueError, match="different iterations"):
        combine([a, b])
    with pytest.raises(ValueError, match="at least one part"):
        combine([])


@pytest.mark.slow
def test_the_processes_benchmark_writes_its_table(tmp_path: Path, full_size: bool) -> None:
    """``benchmarks/processes.py`` at CI size (one process; --full adds two, whose arithmetic the
    tests above check), run from a working directory with the relative paths a user types."""
    counts = ["1", "2"] if full_size else ["1"]
    command = [sys.executable, str(ROOT / "benchmarks" / "processes.py"), "--out", "out", "--processes", *counts,
               "--batch", "2", "--steps", "2"]
    (done,) = launch(command, 1, cwd=tmp_path, logs=tmp_path / "logs", timeout=600)
    assert done.returncode == 0, failures([done])
    rows = json.loads((tmp_path / "out" / "processes.json").read_text())
    assert [(r["processes"], r["batch"], r["steps"]) for r in rows] == [(int(n), 2, 2) for n in counts]
    for r in rows:
        # the throughput is the items' steps over the timed run's seconds; q3 explores some of the 49 patches
        assert r["seconds"] > 0 and r["steps_per_second"] == pytest.approx(2 * 2 / r["seconds"])
        assert 0 < r["tokens"] < 49
    table = (tmp_path / "out" / "processes.md").read_text().splitlines()
    assert len(table) == 2 + len(rows) and table[2].startswith("| 2 | 1 |") and "| 1.00x |" in table[2]
