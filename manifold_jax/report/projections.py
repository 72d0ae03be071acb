"""The projection cache: a text study's decoded sentences and the verified real sentences near them.

At the report's saved points every decoded sentence is projected onto a verified real sentence
(:mod:`manifold_jax.text_projection`), once: the result is kept in ``<algorithm>/projection.json``
and read back while it holds the same saved points.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from manifold_jax import analysis
from manifold_jax.plots import snapshot_indices
from manifold_jax.study import Study
from manifold_jax.study.storage import PROJECTION, StudyFiles


def report_points(saved: int) -> list[int]:
    """Saved-point indices the report shows and projects: the start and the figure's snapshots."""
    return [0, *snapshot_indices(saved)]


def study_projections(
    study: Study, model: Any, algorithm: str, saved: list[int], config: Any = None, *, progress: bool = False,
) -> list[dict[str, Any]]:
    """Decoded and verified real sentences at the saved points ``saved`` of every input of one
    exploration (JSON-ready): per input a dict with ``points`` (one record per saved point,
    goal "match": the class and probabilities of the explored embedding there) and, for
    SiMExp, ``away`` (goal: any class but the original, from the last saved point). ``progress``
    shows a bar over the points searched."""
    from manifold_jax.text_projection import Goal, project_points

    traj = study.trajectories[algorithm]
    ctx = study.context
    out = []
    inputs = len(study.spec.inputs)
    total = inputs * (len(saved) + (algorithm == "simexp"))
    bar = tqdm(total=total, disable=not progress, unit="point", desc=f"{algorithm} verified sentences", leave=False,
               postfix="compiling")

    def searched() -> None:
        bar.set_postfix_str("", refresh=False)
        bar.update(1)

    for b in range(inputs):
        item = {k: v[b] for k, v in ctx.items()}
        probs = analysis.softmax(traj.y[b])
        goals = [Goal.match(probs[s]) for s in saved]
        chosen = list(saved)
        if algorithm == "simexp":
            goals.append(Goal.away_from(int(np.argmax(probs[0]))))
            chosen.append(len(traj.iteration) - 1)
        interp = study.interpretations.get(algorithm)
        found = project_points(model, traj.x[b, chosen], item, goals, config, positions=study.inputs["select"][b],
                               decoded=None if interp is None else interp.inputs[b, chosen],
                               on_point=searched)

        entry: dict[str, Any] = {
            "points": [_record(model, r, s, traj, probs, item) for r, s in zip(found, saved, strict=False)]
        }
        if algorithm == "simexp":
            entry["away"] = _record(model, found[-1], len(traj.iteration) - 1, traj, probs, item)
        out.append(entry)
    bar.close()
    return out


def _record(model: Any, res: Any, s: int, traj: Any, probs: np.ndarray, item: dict[str, Any]) -> dict[str, Any]:
    """One projected point as JSON: the embedding's probabilities, the decoded and the verified sentence."""
    from manifold_jax.text_projection import changed_words

    def words(ids: np.ndarray) -> list[tuple[str, bool]]:
        return changed_words(model, ids, item["input_ids"], item["attention_mask"])

    return {
        "saved": int(s), "iteration": int(traj.iteration[s]), "goal": res.goal.kind,
        "embedding_probs": probs[s].tolist(),
        "decoded": {"text": _decoded_text(model, res.decoded_ids, item), "probs": res.decoded_probs.tolist(),
                    "words": words(res.decoded_ids)},
        "verified": {"found": res.found, "text": res.text, "probs": res.probs.tolist(), "words": words(res.ids),
                     "changes": len(res.changes), "sentences_tried": res.verified},
    }


def _decoded_text(model: Any, ids: np.ndarray, item: dict[str, Any]) -> str:
    keep = np.asarray(item["attention_mask"]).astype(bool)
    return model.detokenize(np.asarray(ids)[keep][None])[0]


def projection_summary(record: dict[str, Any]) -> dict[str, Any]:
    """Agreement of decoded and verified sentences with the embedding's prediction over the
    projected points of one input, their mean Wasserstein-1 distances (0/1 ground distance)
    to the embedding's probabilities, and the largest probability change of a verified
    sentence from the start (SiMEC's "scored like x0")."""
    points = record["points"]
    emb = np.array([p["embedding_probs"] for p in points])
    dec = np.array([p["decoded"]["probs"] for p in points])
    found = np.array([p["verified"]["found"] for p in points])
    ver = np.array([p["verified"]["probs"] if p["verified"]["found"] else p["decoded"]["probs"] for p in points])
    out: dict[str, Any] = {
        "points": len(points),
        "decoded_agreement": float(np.mean(np.argmax(dec, 1) == np.argmax(emb, 1))),
        "verified_agreement": float(np.mean(found & (np.argmax(ver, 1) == np.argmax(emb, 1)))),
        "decoded_wasserstein1_01_mean": float(np.mean(analysis.total_variation(dec, emb))),
        "verified_wasserstein1_01_mean": float(np.mean(analysis.total_variation(ver, emb))),
        "largest_probability_change_from_start": float(np.abs(ver[found] - emb[0]).max()) if found.any() else None,
    }
    if "away" in record:
        away = record["away"]["verified"]
        found_away = away["found"]
        out["away"] = {"found": found_away, "class": int(np.argmax(away["probs"])) if found_away else None,
                       "probs": away["probs"] if found_away else None, "text": away["text"] if found_away else None}
    return out


def cached_projections(
    study: Study, model: Any, files: StudyFiles, echo: Callable[[str], None], progress: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """The projections of every exploration, from ``<algorithm>/projection.json`` when it holds the
    report's saved points (a resume that adds steps removes it), else computed and written."""
    out = {}
    for algorithm, traj in study.trajectories.items():
        rel = f"{algorithm}/{PROJECTION}"
        saved = report_points(len(traj.iteration))
        cached = _read_projection(files.path(rel), saved)
        if cached is not None:
            out[algorithm] = cached
            continue
        echo(f"{algorithm}: verified real sentences at {len(saved)} saved points per input")
        out[algorithm] = study_projections(study, model, algorithm, saved, progress=progress)
        files.write_text(rel, json.dumps({"saved": saved, "inputs": out[algorithm]}, indent=1))
    return out


def _read_projection(path: Path, saved: list[int]) -> list[dict[str, Any]] | None:
    """A cached projection's records if the file is readable and made at ``saved``, else None (recompute)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("saved") != saved or not isinstance(data.get("inputs"), list):
        return None
    return data["inputs"]
