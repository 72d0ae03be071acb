"""The study spec (typed inputs, engine options as ExploreConfig keywords), the atomic writer and
the manifest: fast checks that need no model and no compilation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from manifold_jax.explore import Absolute, Adaptive, ExploreConfig, Newton, Relative
from manifold_jax.study import ImageFile, MnistImage, StudySpec, Text, atomic
from manifold_jax.study.manifest import Manifest, directory_digest, state_digest


def test_spec_validates_itself() -> None:
    with pytest.raises(ValueError, match="input 1 is empty"):
        StudySpec(model="m", inputs=("a", "  "))
    with pytest.raises(ValueError, match="select='half'"):
        StudySpec(model="m", inputs=("a",), select="half")
    with pytest.raises(ValueError, match=r"repeats position\(s\) 3"):
        StudySpec(model="m", inputs=("a",), select=(3, 5, 3))
    with pytest.raises(ValueError, match=r"steps \(10\) must be a multiple of save_every \(3\)"):
        StudySpec(model="m", inputs=("a",), steps=10, options={"save_every": 3})
    with pytest.raises(ValueError, match=r"steps must be an integer in 1\.\.2147483647"):
        StudySpec(model="m", inputs=("a",), steps=10**11)
    with pytest.raises(ValueError, match=r"seed must be an integer in 0\.\.4294967295"):
        StudySpec(model="m", inputs=("a",), seed=2**32)
    with pytest.raises(ValueError, match="steps must be an integer"):
        StudySpec(model="m", inputs=("a",), steps=True)  # a bool is not a count
    with pytest.raises((TypeError, ValueError), match="threshold='loose'"):  # the engine's own check
        StudySpec(model="m", inputs=("a",), options={"threshold": "loose"})
    with pytest.raises(ValueError, match="eta must be a positive finite number"):
        StudySpec(model="m", inputs=("a",), options={"eta": float("inf")})
    with pytest.raises(ValueError, match=r"unknown engine option.*'bogus'"):
        StudySpec(model="m", inputs=("a",), options={"bogus": 1})
    with pytest.raises(TypeError, match=r"options\['output_metric'\] is a function"):
        StudySpec(model="m", inputs=("a",), options={"output_metric": lambda y: y})
    with pytest.raises(ValueError, match=r"the MNIST subset has images 0\.\.4999"):
        MnistImage(5000)
    with pytest.raises(ValueError, match=r"MnistImage\(True\)"):
        MnistImage(True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="input 0 is a int"):
        StudySpec(model="m", inputs=(3,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="repeats position"):
        dataclasses.replace(StudySpec(model="m", inputs=("a",)), select=(2, 2))


def test_engine_options_flow_through_to_the_engine_config() -> None:
    """Whatever ExploreConfig takes passes unchanged; numpy scalars become JSON numbers."""
    spec = StudySpec(model="m", inputs=(Text("a"),), steps=np.int64(40),
                     options={"eta": np.float32(2.5), "mode": "rev", "chunk_size": 20, "threshold": 1e-3})
    assert spec.steps == 40 and type(spec.steps) is int
    assert spec.options == {"eta": 2.5, "mode": "rev", "chunk_size": 20, "threshold": 1e-3, "save_every": 10}
    config = spec.config("simexp")
    assert config == ExploreConfig(algorithm="simexp", eta=2.5, mode="rev", chunk_size=20, save_every=10,
                                   threshold=Relative(1e-3))
    assert (config.eta, config.save_every, config.chunk_size, config.spectrum) == (2.5, 10, 20, "gram")
    reference = StudySpec(model="m", inputs=("a",), options={"threshold": "reference"}).config("simec")
    assert reference.threshold == Absolute(0.01)
    json.dumps(json.loads(spec.to_json()))  # JSON all the way down


def test_inputs_keep_their_kind_through_spec_json() -> None:
    spec = StudySpec(model="m", inputs=(Text("mnist:3"), MnistImage(3), ImageFile("digit.png")), select=(1, 2))
    data = json.loads(spec.to_json())
    assert data["format"] == 3
    assert data["inputs"] == [{"kind": "text", "text": "mnist:3"}, {"kind": "mnist", "index": 3},
                              {"kind": "image", "path": "digit.png"}]
    back = StudySpec.from_json(spec.to_json())
    assert back == spec and isinstance(back.inputs[0], Text) and isinstance(back.inputs[1], MnistImage)
    assert [str(i) for i in back.inputs] == ["mnist:3", "mnist:3", "digit.png"]
    with pytest.raises(ValueError, match="unknown field"):
        StudySpec.from_json(json.dumps({**data, "colour": "blue"}))


def test_a_format_1_spec_json_still_reads() -> None:
    """spec.json written before inputs were typed: "mnist:<i>" strings and flat engine options."""
    old = {"model": "mnist-vit", "inputs": ["mnist:3", "mnist:1502"], "task": "classification",
           "algorithms": ["simec", "simexp"], "steps": 1000, "eta": 10.0, "select": "all", "bounds": "theoretical",
           "seed": 0, "save_every": 20, "spectrum": "gram", "threshold": 0.0001, "step_rule": "reference",
           "blocks": "token", "output_metric": "euclidean", "chunk_size": 100, "baseline": True, "labels": []}
    spec = StudySpec.from_json(json.dumps(old))
    assert spec.inputs == (MnistImage(3), MnistImage(1502))
    config = spec.config("simec")
    assert config.eta == 10.0 and config.save_every == 20 and spec.options["threshold"] == 1e-4
    assert spec.space == "embeddings"  # written before pixel space: the paper's embeddings


FORMAT_2 = (
    '{"format": 2, "model": "mnist-vit", "inputs": [{"kind": "mnist", "index": 3}], "task": "classification", '
    '"algorithms": ["simec", "simexp", "counterfactual"], "steps": 40, "select": "all", "bounds": "theoretical", '
    '"seed": 0, "baseline": true, "max_length": null, "labels": [], "options": {"eta": 5.0, "output_metric": '
    '"fisher_rao", "save_every": 20, "threshold": "reference"}, "run_options": {"simec": {"corrector": "newton", '
    '"tol": 0.0001}}, "target": "runner-up", "space": "embeddings"}'
)
"""A spec.json as version 2 wrote it: the study's options, SiMEC's own, and the runs named "algorithms"."""


def test_a_format_2_spec_json_converts_on_read() -> None:
    """Each run gets the configuration format 2 meant (the study's options, the run's on top, the
    counterfactual's preset), and is written back whole, every option of each run under "runs"."""
    spec = StudySpec.from_json(FORMAT_2)
    assert spec.runs == ("simec", "simexp", "counterfactual")
    shared = dict(eta=5.0, threshold=Absolute(0.01), output_metric="fisher_rao", save_every=20)
    assert spec.config("simec") == ExploreConfig(algorithm="simec", corrector=Newton(tol=1e-4), tol=1e-4, **shared)
    assert spec.config("simexp") == ExploreConfig(algorithm="simexp", **shared)
    assert spec.config("counterfactual") == ExploreConfig(
        algorithm="simexp", eta=0.5, threshold=Absolute(0.01), output_metric="fisher_rao", save_every=1,
        step_rule=Adaptive(tol=1e-2, on="probabilities"), tol=1e-2, on="probabilities", box="active", stop="flip")
    data = json.loads(spec.to_json())
    assert data["format"] == 3 and "options" not in data and "algorithms" not in data
    assert list(data["runs"]) == ["simec", "simexp", "counterfactual"]
    assert all(set(options) == {f.name for f in dataclasses.fields(ExploreConfig)} - {"algorithm"}
               for options in data["runs"].values())
    assert data["runs"]["simec"]["corrector"] == "newton" and data["runs"]["simexp"]["corrector"] is None
    back = StudySpec.from_json(spec.to_json())
    assert back == spec and all(back.config(run) == spec.config(run) for run in spec.runs)


def test_the_study_routes_the_corrector_and_the_tolerance() -> None:
    """Given once for the study, the corrector goes to SiMEC alone and tol to the runs that measure a step;
    an option that reaches no run is refused."""
    spec = StudySpec(model="m", inputs=("a",), options={"corrector": "newton", "tol": 1e-5})
    assert spec.config("simec").corrector == Newton(tol=1e-5)
    assert spec.config("simexp").corrector is None and spec.config("simexp").tol is None
    adaptive = StudySpec(model="m", inputs=("a",), options={"step_rule": "adaptive", "tol": 1e-3})
    assert all(adaptive.config(run).step_rule == Adaptive(tol=1e-3) for run in adaptive.runs)
    with pytest.raises(ValueError, match="corrector='newton' keeps SiMEC on the level set"):
        StudySpec(model="m", inputs=("a",), runs=("simexp",), options={"corrector": "newton"})
    with pytest.raises(ValueError, match=r"tol=0\.001 belongs to step_rule='adaptive'"):
        StudySpec(model="m", inputs=("a",), options={"tol": 1e-3})


def test_the_counterfactual_keeps_every_step() -> None:
    """The counterfactual's path holds every iteration (mj.counterfactual): an option saving it otherwise
    is refused when the spec is built, not found at the first resume as a trajectory that never fits."""
    spec = StudySpec(model="m", inputs=("a",), steps=20, runs=("simexp", "counterfactual"))
    assert spec.config("simexp").save_every == 10 and spec.config("counterfactual").save_every == 1
    with pytest.raises(ValueError, match=r"counterfactual.*save_every 1"):
        StudySpec(model="m", inputs=("a",), steps=20, runs=("counterfactual",),
                  run_options={"counterfactual": {"save_every": 2}})


def test_the_settings_derive_from_the_engine_fields() -> None:
    """The report's settings: every option with a flag of its own, a continuation option where a run sets
    it, one value where the explorations agree and each run's where they differ."""
    from manifold_jax.study.run_config import ENGINE_FIELDS

    spec = StudySpec(model="m", inputs=("a",), runs=("simec", "simexp", "counterfactual"),
                     options={"eta": 2.0}, run_options={"simec": {"corrector": "newton"}})
    settings = spec.settings()
    flagged = {f.name for f in ENGINE_FIELDS if "help" in f.metadata and not f.metadata.get("continuation")}
    assert flagged <= set(settings) and settings["eta"] == 2.0 and settings["save_every"] == 10
    assert settings["corrector"] == "simec: newton; simexp: None" and "box" not in settings
    assert settings["runs"] == ["simec", "simexp", "counterfactual"]


def test_the_space_is_validated_and_kept_in_spec_json() -> None:
    """space: "embeddings" (default) or "pixels"; spec.json keeps it, and a spec.json without it reads as the
    embeddings (every study before pixel space explored those)."""
    with pytest.raises(ValueError, match="space='voxels' is not supported; expected one of embeddings, pixels"):
        StudySpec(model="m", inputs=(MnistImage(3),), space="voxels")
    spec = StudySpec(model="m", inputs=(MnistImage(3),), space="pixels")
    data = json.loads(spec.to_json())
    assert data["space"] == "pixels" and StudySpec.from_json(spec.to_json()) == spec
    del data["space"]
    assert StudySpec.from_json(json.dumps(data)).space == "embeddings"


def test_the_atomic_writer_never_leaves_a_half_file(tmp_path: Path) -> None:
    target = tmp_path / "data.npz"
    atomic.write_npz(target, {"a": np.arange(3)})
    before = target.read_bytes()
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        assert atomic.is_temporary(tmp) and tmp.suffix == ".npz" and tmp.parent == tmp_path
        raise RuntimeError("killed")
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["data.npz"]
    leftover = atomic.temporary_sibling(tmp_path / "00000050.npz")
    leftover.write_bytes(b"torn")
    assert not atomic.is_temporary(target) and atomic.is_temporary(leftover)
    assert atomic.remove_temporaries(tmp_path) == [leftover] and not leftover.exists()
    atomic.write_with(tmp_path / "figure.png", lambda p: p.write_bytes(b"png"))
    assert (tmp_path / "figure.png").read_bytes() == b"png"


def test_the_manifest_tells_intact_from_damaged(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path)
    (tmp_path / "a.json").write_text("{}")
    assert manifest.check(tmp_path / "a.json") == "unrecorded"
    manifest.record(tmp_path / "a.json")
    assert Manifest.load(tmp_path).check("a.json") == "ok"
    (tmp_path / "a.json").write_text("{ }")
    assert Manifest.load(tmp_path).check("a.json") == "mismatch"
    (tmp_path / "a.json").unlink()
    assert Manifest.load(tmp_path).check("a.json") == "missing"
    (tmp_path / "manifest.json").write_text("{not json")
    assert Manifest.load(tmp_path).damaged
    state = {"x": np.ones((2, 3), np.float32), "iteration": np.int32(4)}
    assert state_digest(state) == state_digest(dict(reversed(state.items())))
    assert state_digest(state) != state_digest({**state, "x": state["x"].astype(np.float64)})
    (tmp_path / "ck" / "d").mkdir(parents=True)
    (tmp_path / "ck" / "d" / "blob").write_bytes(b"1")
    digest = directory_digest(tmp_path / "ck")
    (tmp_path / "ck" / "d" / "blob").write_bytes(b"2")
    assert directory_digest(tmp_path / "ck") != digest
