"""The faithful PyTorch reference loop, on a tiny random BERT classifier (float64)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from benchmarks.torch_reference import (  # noqa: E402
    STEP_EPS,
    reference_step,
    run_reference,
    run_reference_batch,
    split_bert,
    split_vit,
)

N_TOKENS, HIDDEN, K = 8, 32, 3
NULL_THRESHOLD = 1e-9  # absolute; the tiny model's non-null eigenvalues are far above it


def _bert(attn: str = "eager", seed: int = 0) -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=100,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=K,
        attn_implementation=attn,
        # wider than BERT's 0.02 so every token matters: per-token non-null eigenvalues
        # then lie in 0.01..0.5, the range docs/method.md section 4 reports for a real MiniLM classifier
        initializer_range=0.3,
    )
    return BertForSequenceClassification(cfg).double().eval()


@pytest.fixture(scope="module")
def split() -> tuple:
    model = _bert()
    ids = torch.tensor([2, 17, 45, 9, 88, 31, 3, 0])
    mask = torch.tensor([1, 1, 1, 1, 1, 1, 1, 0])
    head, x0 = split_bert(model, ids, attention_mask=mask)
    return model, ids, mask, head, x0


def _jacobian_np(head, x0: torch.Tensor) -> np.ndarray:
    """(k, n, d) float64 by torch.autograd.functional.jacobian (not torch.func)."""
    return torch.autograd.functional.jacobian(head, x0).detach().numpy()


def _np_spectra(jac: np.ndarray) -> np.ndarray:
    return np.stack([np.linalg.eigh(jac[:, i, :].T @ jac[:, i, :])[0] for i in range(jac.shape[1])])


# ---------------------------------------------------------------- splitting


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_split_bert_head_reproduces_the_model(attn: str) -> None:
    model = _bert(attn)
    ids = torch.tensor([2, 17, 45, 9, 88, 3, 0, 0])
    mask = torch.tensor([1, 1, 1, 1, 1, 1, 0, 0])
    head, x0 = split_bert(model, ids, attention_mask=mask)
    assert x0.shape == (8, HIDDEN)
    with torch.no_grad():
        full = model(input_ids=ids[None], attention_mask=mask[None]).logits[0]
        ours = head(x0)
        # the padding mask matters: without it the logits differ
        head_nomask, _ = split_bert(model, ids)
        unmasked = head_nomask(x0)
    torch.testing.assert_close(ours, full, rtol=1e-12, atol=1e-12)
    assert (unmasked - full).abs().max() > 1e-6


def test_split_vit_head_reproduces_the_model() -> None:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    cfg = ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1,
                    num_attention_heads=2, intermediate_size=32, num_labels=4)
    model = ViTForImageClassification(cfg).double().eval()
    pix = torch.rand(1, 8, 8, dtype=torch.float64)
    head, x0 = split_vit(model, pix)
    assert x0.shape == (1 + 4, 16)
    with torch.no_grad():
        torch.testing.assert_close(head(x0), model(pixel_values=pix[None]).logits[0], rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------ (a) eigenvalues


def test_first_iteration_eigenvalues_match_numpy(split: tuple) -> None:
    _, _, _, head, x0 = split
    step = reference_step(head, x0, eta=1.0, threshold=NULL_THRESHOLD, algorithm="simec",
                          tokens=np.arange(N_TOKENS), rng=np.random.default_rng(0))
    jac = _jacobian_np(head, x0)
    assert jac.shape == (K, N_TOKENS, HIDDEN)
    # the autograd Jacobian is itself right: central finite differences on a few coordinates
    eps = 1e-6
    for i, j in [(0, 0), (3, 7), (6, 31)]:
        e = torch.zeros_like(x0)
        e[i, j] = eps
        with torch.no_grad():
            fd = (head(x0 + e) - head(x0 - e)) / (2 * eps)
        np.testing.assert_allclose(jac[:, i, j], fd.numpy(), rtol=1e-6, atol=1e-9)
    ref = _np_spectra(jac)
    assert step.eigenvalues.shape == (N_TOKENS, HIDDEN)
    scale = np.abs(ref).max(axis=1, keepdims=True)
    # 1e-10 relative to each token's spectrum (the null eigenvalues are ~1e-17 absolute)
    assert np.all(np.abs(step.eigenvalues - ref) <= 1e-10 * scale)
    # J_i^T J_i has rank k: exactly k eigenvalues above the null level per real token;
    # the padded position (mask 0) does not reach the output at all
    rank = (step.eigenvalues > 1e-10 * scale).sum(axis=1)
    assert rank.tolist() == [K] * (N_TOKENS - 1) + [0]
    assert np.all(step.eigenvalues[-1] == 0) and step.chosen[-1] == -1 and step.deltas[-1] == 0


# ---------------------------------------------------- (b) SiMEC vs SiMExp


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_simec_step_changes_logits_far_less_than_simexp(split: tuple, seed: int) -> None:
    _, _, _, head, x0 = split
    kw = dict(eta=1.0, threshold=NULL_THRESHOLD, tokens=np.arange(1, 7), rng=None)
    ec = reference_step(head, x0, algorithm="simec", **{**kw, "rng": np.random.default_rng(seed)})
    ex = reference_step(head, x0, algorithm="simexp", **{**kw, "rng": np.random.default_rng(seed)})
    np.testing.assert_allclose(ec.deltas, ex.deltas, rtol=1e-12)  # same step size
    assert np.all(ec.deltas > 0)
    with torch.no_grad():
        y0 = head(x0)
        d_ec = (head(ec.x) - y0).norm().item()
        d_ex = (head(ex.x) - y0).norm().item()
    assert d_ex > 0
    assert d_ec < 1e-2 * d_ex, (d_ec, d_ex)


# ---------------------------------------------------------------- (c) clip


def test_clip_keeps_every_point_in_the_box(split: tuple) -> None:
    _, _, _, head, x0 = split
    lo = (x0 - 1e-4).numpy()
    hi = (x0 + 1e-4).numpy()
    run = run_reference(head, x0, steps=3, eta=1e3, threshold=NULL_THRESHOLD, algorithm="simexp",
                        lo=lo, hi=hi, seed=0, collect_garbage=False)
    traj = run.trajectory
    assert traj.shape == (4, N_TOKENS, HIDDEN)
    assert np.all(traj >= lo - 1e-15) and np.all(traj <= hi + 1e-15)
    # the clip was active: the unclipped steps (deltas >> 1e-4) would leave the box
    assert run.deltas.max() > 1e-2
    assert np.any(np.isclose(traj[1:], hi, rtol=0, atol=1e-15)) and np.any(np.isclose(traj[1:], lo, rtol=0, atol=1e-15))
    # scalar bounds too
    run2 = run_reference(head, x0, steps=2, eta=1e3, threshold=NULL_THRESHOLD, algorithm="simexp",
                         lo=-0.5, hi=0.5, seed=1, collect_garbage=False)
    assert np.all(np.abs(run2.trajectory[1:]) <= 0.5)


# ------------------------------------------------------------ (d) step size


@pytest.mark.parametrize("algorithm", ["simec", "simexp"])
def test_step_size_and_direction_follow_the_code_rule(split: tuple, algorithm: str) -> None:
    _, _, _, head, x0 = split
    eta = 3.0
    tokens = np.array([0, 2, 5])
    step = reference_step(head, x0, eta=eta, threshold=NULL_THRESHOLD, algorithm=algorithm,
                          tokens=tokens, rng=np.random.default_rng(4))
    jac = _jacobian_np(head, x0)
    for r, i in enumerate(tokens):
        lam, _ = np.linalg.eigh(jac[:, i, :].T @ jac[:, i, :])
        a = np.abs(lam)
        by_hand = eta * np.sqrt((a.min() + STEP_EPS) / a.max())
        assert step.deltas[r] == pytest.approx(by_hand, rel=1e-9)
        moved = (step.x[i] - x0[i]).numpy()
        assert np.linalg.norm(moved) == pytest.approx(by_hand, rel=1e-9)
        # the move is along an eigenvector of the right kind (no off-by-one)
        j = step.chosen[r]
        g = jac[:, i, :].T @ jac[:, i, :]
        np.testing.assert_allclose(g @ moved, lam[j] * moved, atol=1e-10 * a.max() * by_hand)
        if algorithm == "simec":
            assert abs(lam[j]) < NULL_THRESHOLD
        else:
            assert abs(lam[j]) >= NULL_THRESHOLD
    others = np.setdiff1d(np.arange(N_TOKENS), tokens)
    torch.testing.assert_close(step.x[others], x0[others], rtol=0, atol=0)  # unexplored stay put


def test_paper_step_rule_uses_the_smallest_non_null_eigenvalue(split: tuple) -> None:
    _, _, _, head, x0 = split
    step = reference_step(head, x0, eta=2.0, threshold=NULL_THRESHOLD, algorithm="simec",
                          tokens=np.array([1]), rng=np.random.default_rng(0), step_rule="paper")
    a = np.abs(step.eigenvalues[0])
    nonnull = a[a >= NULL_THRESHOLD]
    assert step.deltas[0] == pytest.approx(2.0 * np.sqrt(nonnull.min() / a.max()), rel=1e-12)
    assert step.deltas[0] > 1e-2  # far larger than the code rule's ~1e-3 / sqrt(lambda_max)


def test_simexp_with_the_absolute_threshold_picks_among_non_null_only(split: tuple) -> None:
    _, _, _, head, x0 = split
    # a threshold above every eigenvalue: SiMExp has nothing to pick and the token stays put
    step = reference_step(head, x0, eta=1.0, threshold=1e6, algorithm="simexp",
                          tokens=np.array([1, 2]), rng=np.random.default_rng(0))
    assert step.chosen.tolist() == [-1, -1] and np.all(step.deltas == 0)
    torch.testing.assert_close(step.x, x0, rtol=0, atol=0)


# ------------------------------------------------------------------ the loop


def test_run_saves_every_save_each_and_writes_npz(split: tuple, tmp_path: Path) -> None:
    _, _, _, head, x0 = split
    mask = np.zeros(N_TOKENS, dtype=bool)
    mask[[1, 4]] = True
    run = run_reference(head, x0, steps=4, eta=1.0, threshold=NULL_THRESHOLD, algorithm="simec",
                        select=mask, seed=0, save_each=2, out_dir=tmp_path)
    assert run.saved_iterations.tolist() == [0, 2, 4]
    assert run.trajectory.shape == (3, N_TOKENS, HIDDEN) and run.logits.shape == (3, K)
    assert run.deltas.shape == (4, 2) and run.seconds.shape == (4,)
    assert np.all(run.seconds >= run.seconds_jacobian + run.seconds_eigh)
    files = sorted(p.name for p in tmp_path.glob("*.npz"))
    assert files == ["iter_0000000.npz", "iter_0000002.npz", "iter_0000004.npz"]
    saved = np.load(tmp_path / "iter_0000004.npz")
    np.testing.assert_array_equal(saved["embedding"], run.trajectory[-1])
    # only the selected tokens moved, and SiMEC kept the logits (nearly) still
    moved = np.abs(run.trajectory[-1] - run.trajectory[0]).max(axis=1) > 0
    assert moved.tolist() == mask.tolist()
    assert np.abs(run.logits - run.logits[0]).max() < 1e-6
    # same seed, same run
    again = run_reference(head, x0, steps=4, eta=1.0, threshold=NULL_THRESHOLD, algorithm="simec",
                          select=mask, seed=0, save_each=2, collect_garbage=False)
    np.testing.assert_array_equal(again.trajectory, run.trajectory)


def test_batch_runs_each_sample_with_its_own_head(split: tuple) -> None:
    model, _, _, head, x0 = split
    head2, x02 = split_bert(model, torch.tensor([2, 50, 60, 3]))
    runs = run_reference_batch([head, head2], [x0, x02], steps=2, eta=1.0, threshold=NULL_THRESHOLD,
                               algorithm="simexp", select=[[1, 2], None], seed=0, collect_garbage=False)
    assert runs[0].trajectory.shape == (3, N_TOKENS, HIDDEN)
    assert runs[1].trajectory.shape == (3, 4, HIDDEN) and runs[1].deltas.shape == (2, 4)


def test_bad_arguments_raise_value_errors_naming_them(split: tuple) -> None:
    _, _, _, head, x0 = split
    base = dict(steps=1, eta=1.0)
    with pytest.raises(ValueError, match="select"):
        run_reference(head, x0, select=np.zeros(N_TOKENS, dtype=bool), **base)
    with pytest.raises(ValueError, match="select"):
        run_reference(head, x0, select=[N_TOKENS], **base)
    bad = x0.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="x0"):
        run_reference(head, bad, **base)
    with pytest.raises(ValueError, match="x0"):
        run_reference(head, x0[None], **base)
    with pytest.raises(ValueError, match="algorithm"):
        run_reference(head, x0, algorithm="simex", **base)
    with pytest.raises(ValueError, match="eta"):
        run_reference(head, x0, steps=1, eta=-1.0)
    with pytest.raises(ValueError, match="lo"):
        run_reference(head, x0, lo=np.zeros(3), **base)
    with pytest.raises(ValueError, match="input_ids"):
        split_bert(split[0], torch.tensor([[1, 2]]))


@pytest.mark.parametrize("no_gc", [False, True])
def test_the_script_times_a_quick_bert_with_and_without_gc(no_gc: bool, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.torch_reference import main

    out = main(["--quick", "--tokens", "4", "--steps", "2", "--threads", "1", *(["--no-gc"] if no_gc else [])])
    assert out["tokens"] == 4 and out["d"] == 32
    assert out["seconds_per_iteration"] > 0 and out["jacobian_s"] > 0 and out["eigh_s"] > 0
    assert "s/iteration" in capsys.readouterr().out
