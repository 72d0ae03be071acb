"""Studies on disk: exact resume after an interruption, loadable results, attribution, baseline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_jax.runs as runs
from manifold_jax.attribution import select_tokens, token_importance
from manifold_jax.baseline import gradient_baseline
from manifold_jax.report import build_report
from manifold_jax.runs import StudySpec, load_study, run_study
from tests.models_helpers import save_random_hf_vit
from tests.toy_models import toy_classifier


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random HF ViT for 28x28 grayscale images: 49 patches of 4x4 pixels embedded in 16
    dimensions (a full-rank patch embedding, so decoding is exact), one layer."""
    path = tmp_path_factory.mktemp("tiny_vit")
    save_random_hf_vit(path, image_size=28, patch_size=4, num_channels=1, hidden_size=16,
                       num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=4)
    return str(path)


def _spec(model: str, **kw: object) -> StudySpec:
    base = dict(model=model, inputs=("mnist:0", "mnist:1000"), steps=60, save_every=5, chunk_size=20, eta=5.0)
    base.update(kw)
    return StudySpec(**base)


def test_interrupted_study_resumes_to_the_uninterrupted_result(tiny_vit: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(tiny_vit, baseline=False)
    run_study(spec, tmp_path / "whole", progress=False, echo=lambda s: None)

    original = runs.save_trajectory
    calls = {"n": 0}

    def interrupt_on_second_chunk(path: Path, traj: object) -> None:
        if path.parent.name == "chunks":
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
        original(path, traj)

    monkeypatch.setattr(runs, "save_trajectory", interrupt_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        run_study(spec, tmp_path / "cut", progress=False, echo=lambda s: None)
    monkeypatch.setattr(runs, "save_trajectory", original)
    assert not (tmp_path / "cut" / "simec" / "trajectory.npz").exists()
    with pytest.raises(FileExistsError, match="--overwrite.*--resume"):
        run_study(spec, tmp_path / "cut", progress=False, echo=lambda s: None)
    run_study(None, tmp_path / "cut", resume=True, progress=False, echo=lambda s: None)

    whole, cut = load_study(tmp_path / "whole"), load_study(tmp_path / "cut")
    for algorithm in ("simec", "simexp"):
        a, b = whole.trajectories[algorithm], cut.trajectories[algorithm]
        for name in ("x", "y", "step", "eigenvalue", "status", "stalls", "iteration"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=f"{algorithm}.{name}")
        np.testing.assert_array_equal(whole.interpretations[algorithm].inputs, cut.interpretations[algorithm].inputs)


@pytest.mark.slow
def test_a_killed_process_resumes_exactly(tiny_vit: str, tmp_path: Path) -> None:
    """SIGKILL in the middle of a run (no cleanup at all), then --resume."""
    common = ["explore", "--model", tiny_vit, "--mnist", "0", "7", "--algorithm", "simexp", "--steps", "400",
              "--save-every", "5", "--chunk-size", "20", "--eta", "5", "--no-baseline", "--no-report", "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    cli = [sys.executable, "-m", "manifold_jax.cli"]
    subprocess.run([*cli, *common, "--out", str(tmp_path / "whole")], check=True, env=env, capture_output=True)
    proc = subprocess.Popen([*cli, *common, "--out", str(tmp_path / "cut")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    chunks = tmp_path / "cut" / "simexp" / "chunks"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(chunks.glob("*.npz"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "cut" / "simexp" / "trajectory.npz").exists(), "the run finished before it was killed"
    subprocess.run([*cli, "explore", "--resume", str(tmp_path / "cut"), "--no-report", "--quiet"],
                   check=True, env=env, capture_output=True)
    a = load_study(tmp_path / "whole").trajectories["simexp"]
    b = load_study(tmp_path / "cut").trajectories["simexp"]
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.iteration, b.iteration)


def test_study_files_load_back_and_report(tiny_vit: str, tmp_path: Path) -> None:
    out = run_study(_spec(tiny_vit, select="q3"), tmp_path / "s", progress=False, echo=lambda s: None)
    study = load_study(out)
    b, s = 2, 60 // 5 + 1
    assert study.trajectories["simec"].x.shape == (b, s, 50, 16)
    assert study.interpretations["simexp"].inputs.shape == (b, s, 28, 28, 1)
    assert study.baselines["simec"].y.shape == (b, s, 4)
    assert study.spec.labels == tuple(f"LABEL_{i}" for i in range(4))
    # q3: the explored patches are those at or above the third quartile of importance
    imp, sel = study.inputs["importance"], study.inputs["select"]
    for item in range(b):
        cut = np.percentile(imp[item, 1:], 75)
        np.testing.assert_array_equal(sel[item, 1:], imp[item, 1:] >= cut)
        assert not sel[item, 0]
    # the box is honoured and unselected patches never move
    x = study.trajectories["simexp"].x
    assert (x >= study.inputs["lo"][None, None] - 1e-6).all() and (x <= study.inputs["hi"][None, None] + 1e-6).all()
    np.testing.assert_array_equal(x[:, :, ~sel[0]][0], np.broadcast_to(x[0, 0, ~sel[0]], x[0][:, ~sel[0]].shape))
    metrics = build_report(out, echo=lambda s: None)
    assert (out / "report.md").is_file() and (out / "metrics.json").is_file()
    assert len(list((out / "figures").glob("*.png"))) == 2 * b
    assert set(metrics["means"]) == {"simec", "simexp", "baseline_simec", "baseline_simexp"}
    assert "volume_ratio" in metrics["inputs"][0]["simexp"]


def test_interpretation_of_the_start_reproduces_the_input(tiny_vit: str, tmp_path: Path) -> None:
    out = run_study(_spec(tiny_vit, steps=10, baseline=False), tmp_path / "s", progress=False, echo=lambda s: None)
    study = load_study(out)
    raw = study.inputs["raw"]
    decoded0 = study.interpretations["simec"].inputs[:, 0]
    # the pseudo-inverse of a full-row-rank patch embedding is exact up to float32 rounding
    np.testing.assert_allclose(decoded0, raw, atol=1e-4)
    np.testing.assert_allclose(study.interpretations["simec"].logits[:, 0], study.trajectories["simec"].y[:, 0], atol=1e-4)


def test_spec_validates_itself() -> None:
    with pytest.raises(ValueError, match="input 1 is empty"):
        StudySpec(model="m", inputs=("a", "  "))
    with pytest.raises(ValueError, match="select='half'"):
        StudySpec(model="m", inputs=("a",), select="half")
    with pytest.raises(ValueError, match=r"steps \(10\) must be a multiple of save_every \(3\)"):
        StudySpec(model="m", inputs=("a",), steps=10, save_every=3)
    with pytest.raises(ValueError, match="threshold"):
        StudySpec(model="m", inputs=("a",), threshold="loose")
    spec = StudySpec(model="m", inputs=("a", "b"), select=(1, 2))
    assert StudySpec.from_json(spec.to_json()) == spec


def test_token_importance_is_the_largest_metric_eigenvalue() -> None:
    f, x0 = toy_classifier(jax.random.PRNGKey(0), n=5, d=8, k=3)
    mask = jnp.ones((5,), bool)
    imp = token_importance(f, x0[None], (mask[None],))
    jac = np.asarray(jax.jacrev(f)(x0, mask), np.float64)
    ref = [np.linalg.eigvalsh(jac[:, i].T @ jac[:, i]).max() for i in range(5)]
    np.testing.assert_allclose(imp[0], ref, rtol=1e-4)


def test_named_selections() -> None:
    imp = np.array([[9.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    mask = np.array([[False, True, True, True, True, True]])
    assert select_tokens(imp, mask, "one").tolist() == [[False, False, False, False, False, True]]
    assert select_tokens(imp, mask, "q2").tolist() == [[False, False, False, True, True, True]]
    assert select_tokens(imp, mask, "all").tolist() == mask.tolist()
    assert select_tokens(imp, mask, [2, 4]).tolist() == [[False, False, True, False, True, False]]
    with pytest.raises(ValueError, match="position 0 is not an explorable token"):
        select_tokens(imp, mask, [0])
    with pytest.raises(ValueError, match="position 9 is out of range"):
        select_tokens(imp, mask, [9])


def test_gradient_baseline_climbs_or_descends_the_original_class() -> None:
    f, x0 = toy_classifier(jax.random.PRNGKey(7))
    mask = jnp.ones((8,), bool)
    runs_ = {
        d: gradient_baseline(f, x0, key=jax.random.PRNGKey(0), steps=100, step_size=0.05, direction=d,
                             args=(mask,), select=np.arange(1, 8), save_every=10)
        for d in ("stay", "leave")
    }
    c = int(np.argmax(runs_["stay"].y[0]))
    p = {d: np.asarray(jax.nn.softmax(t.y))[:, c] for d, t in runs_.items()}
    assert p["stay"][-1] > p["stay"][0] and p["leave"][-1] < p["leave"][0]
    # each token moves by delta along the unit gradient plus delta of orthogonal noise: sqrt(2) delta
    moved = np.linalg.norm(runs_["stay"].x[1, 1:] - runs_["stay"].x[0, 1:], axis=-1)
    assert np.all(moved <= 10 * np.sqrt(2) * 0.05 + 1e-5)
    np.testing.assert_array_equal(runs_["stay"].x[:, 0], np.broadcast_to(np.asarray(x0[0]), (11, 16)))
