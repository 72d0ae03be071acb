"""From a spec to what an exploration starts from: the model, the embedded inputs, the selection, the box.

Everything here only reads: a study validates all of it (modality, text lengths, positions,
bounds) before it writes its first file.
"""

from __future__ import annotations

import json
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from manifold_jax.attribution import select_tokens, token_importance
from manifold_jax.explore import check_exploration, init_state
from manifold_jax.interpret import predict
from manifold_jax.models.base import Task
from manifold_jax.study.errors import ModalityError, TextTooLongError
from manifold_jax.study.spec import COUNTERFACTUAL, ImageFile, MnistImage, StudySpec, Text

MEASURED_IMAGES = 1000
"""Training images the measured box of an image model is taken over."""


class StudyWarning(UserWarning):
    """Something a study did to an input that the user should know (a cut text, unknown tokens)."""


class ModelLoadError(ValueError):
    """A model that could not be loaded; the message names the file at fault."""


# --------------------------------------------------------------------------- the model


def load_model(spec: StudySpec) -> Any:
    """The model a study names (embedded name, local directory or hub id), in the study's space.

    Errors of the files themselves (invalid JSON, a corrupt safetensors file, a pickle that a
    weights-only load refuses, an unreadable file) become a :class:`ModelLoadError` naming the file.
    """
    from manifold_jax.models import load

    try:
        model = load(spec.model, task=cast(Task, spec.task))
    except Exception as exc:  # the loaders' named errors pass; raw file errors get a name
        message = describe_model_error(exc, spec.model)
        if message is None:
            raise
        raise ModelLoadError(message) from None
    return in_space(model, spec)


def in_space(model: Any, spec: StudySpec) -> Any:
    """``model`` as the study explores it: itself for "embeddings", its pixel-space view for "pixels".

    Pixel space makes the normalisation and the patch embedding part of the explored map, so
    every explored point is an image (only ViTs have one: :meth:`ViT.pixel_space`).
    """
    if spec.space != "pixels":
        return model
    if not hasattr(model, "pixel_space"):
        raise ValueError(f"space='pixels' needs a ViT; {spec.model} is a {model.modality} model")
    return model.pixel_space()


def describe_model_error(exc: BaseException, model: str) -> str | None:
    """A one-line message naming the file for errors of a checkpoint's files, else None."""
    directory = Path(model)
    if isinstance(exc, json.JSONDecodeError):
        bad = _invalid_json_file(directory) if directory.is_dir() else None
        where = f"{bad}" if bad is not None else f"a JSON file of {model}"
        return f"{where}: not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})"
    name = type(exc).__name__
    if name == "SafetensorError" or (name == "HeaderTooLarge"):
        files = sorted(directory.glob("*.safetensors")) if directory.is_dir() else []
        where = ", ".join(map(str, files)) or f"the safetensors weights of {model}"
        return f"{where}: not a readable safetensors file ({str(exc).splitlines()[0] if str(exc) else name})"
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in text or "Weights only load failed" in text:
        where = f"{directory / 'pytorch_model.bin'}" if directory.is_dir() else f"the PyTorch weights of {model}"
        return (f"{where}: refused: the pickle holds objects beyond tensors, which a safe (weights-only) load "
                "does not run; convert the checkpoint to model.safetensors")
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
        where = exc.filename or model
        reason = exc.strerror or (text.strip().splitlines() or [name])[0]
        return f"{where}: {reason}"
    if isinstance(exc, UnicodeDecodeError):
        return f"a text file of {model} is not UTF-8 ({exc.reason})"
    return None


def _invalid_json_file(directory: Path) -> Path | None:
    for path in sorted(directory.glob("*.json")):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            return path
    return None


def check_modality(model: Any, spec: StudySpec) -> None:
    """Refuse an input whose kind is not the model's modality (an image for a text model, ...)."""
    for index, item in enumerate(spec.inputs):
        if item.modality != model.modality:
            raise ModalityError(index, item.modality, model.modality, spec.model)


# --------------------------------------------------------------------------- inputs


def load_inputs(model: Any, spec: StudySpec) -> tuple[np.ndarray | list[str], jax.Array, dict[str, jax.Array]]:
    """Raw inputs, their embeddings x0 (B, n, d) and the batched context."""
    check_modality(model, spec)
    if model.modality == "image":
        images = np.stack([_read_image_input(item, model) for item in spec.inputs])  # type: ignore[arg-type]
        x0, ctx = model.embed(images)
        return images, x0, ctx
    texts = [item.text for item in spec.inputs if isinstance(item, Text)]
    if getattr(model, "tokenizer", "") is None:
        raise ModelLoadError(f"{spec.model} has no tokenizer (tokenizer.json, or vocab.txt, or vocab.json and "
                             "merges.txt, beside its config.json); a text input needs the model's tokenizer")
    limit = text_limit(model, spec)
    if limit is None:
        x0, ctx = model.embed(texts)
    else:
        x0, ctx = model.embed(texts, max_length=limit)
    return texts, x0, ctx


def model_positions(model: Any) -> int | None:
    """How many tokens a text model takes, by the model's own rule (None when it does not say).

    A BERT-family port serves ``config.max_length`` tokens: its position table less the
    offset its positions start at (RoBERTa's padding_idx + 1, so 512 of 514); GPT-2 serves
    ``n_positions``. The model's ``embed`` cuts at the same length, so a text is either
    refused here or explored whole.
    """
    from manifold_jax.models.bert_modules import BertConfig

    cfg = getattr(model, "config", None)
    if isinstance(cfg, BertConfig):
        return cfg.max_length
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(cfg, name, None)
        if isinstance(value, int):
            return value
    return None


def text_limit(model: Any, spec: StudySpec) -> int | None:
    """The length texts are cut to (``max_length`` when some text exceeds it), else None.

    A text longer than the model's positions is refused unless ``max_length`` asks for the cut;
    cut texts and tokens the tokenizer does not know (they become its unknown token) are
    reported as :class:`StudyWarning`.
    """
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return spec.max_length
    positions = model_positions(model)
    if spec.max_length is not None and positions is not None and spec.max_length > positions:
        raise ValueError(f"max_length={spec.max_length} exceeds the {positions} positions of {spec.model}")
    limit = spec.max_length if spec.max_length is not None else positions
    cut = False
    for index, item in enumerate(spec.inputs):
        assert isinstance(item, Text)
        ids, pieces = _tokens(tokenizer, item.text)
        if pieces:
            unk = getattr(tokenizer, "unk_token", None) or "the unknown token"
            shown = ", ".join(repr(p) for p in pieces[:5]) + (", ..." if len(pieces) > 5 else "")
            warnings.warn(f"input {index}: {len(pieces)} piece(s) of the text are unknown to the tokenizer "
                          f"and become {unk}: {shown}", StudyWarning, stacklevel=2)
        if limit is not None and len(ids) > limit:
            if spec.max_length is None:
                raise TextTooLongError(index, len(ids), limit, positions or limit)
            warnings.warn(f"input {index}: cut from {len(ids)} to {limit} tokens (max_length={limit})",
                          StudyWarning, stacklevel=2)
            cut = True
    return limit if cut else None


def _tokens(tokenizer: Any, text: str) -> tuple[list[int], list[str]]:
    """The token ids of ``text`` (special tokens included, no truncation) and the pieces that are unknown."""
    unk_id = getattr(tokenizer, "unk_token_id", None)
    try:
        enc = tokenizer(text, truncation=False, return_offsets_mapping=True, verbose=False)
        offsets = enc["offset_mapping"]
    except (NotImplementedError, TypeError, ValueError, KeyError):  # slow tokenizers have no offsets
        enc = tokenizer(text, truncation=False, verbose=False)
        offsets = None
    ids = list(enc["input_ids"])
    if unk_id is None:
        return ids, []
    if offsets is None:
        return ids, [tokenizer.unk_token] * sum(1 for i in ids if i == unk_id)
    return ids, [text[a:b] for i, (a, b) in zip(ids, offsets, strict=True) if i == unk_id]


def _read_image_input(item: ImageFile | MnistImage, model: Any) -> np.ndarray:
    from manifold_jax.data import mnist_images
    from manifold_jax.data.images import read_image

    cfg = model.config
    if isinstance(item, MnistImage):
        if (cfg.image_size, cfg.num_channels) != (28, 1):
            raise ValueError(f"input {item}: the model expects {cfg.image_size}x{cfg.image_size}x{cfg.num_channels} "
                             "images, MNIST is 28x28x1")
        return mnist_images([item.index])[0][0][..., None].astype(np.float32)
    return read_image(item.path, cfg.image_size, cfg.num_channels)


# --------------------------------------------------------------------------- box and selection


def study_bounds(model: Any, spec: StudySpec, x0: jax.Array) -> tuple[np.ndarray, np.ndarray] | None:
    """The feasible box (n, d) the study projects into, or None for "none"."""
    n = x0.shape[1]
    if spec.bounds == "none":
        return None
    if spec.bounds == "theoretical":
        if model.modality == "text":
            lo, hi = model.bounds("theoretical", n)
        else:
            lo, hi = model.bounds("theoretical")
    elif model.modality == "image":
        from manifold_jax.data import mnist_split

        if (model.config.image_size, model.config.num_channels) != (28, 1):
            raise ValueError("bounds='measured' is available for MNIST-shaped image models; use bounds='theoretical'")
        lo, hi = model.bounds("measured", mnist_split(seed=0).train_images[:MEASURED_IMAGES])
    else:
        from manifold_jax.data import load_sentences

        texts, _, _ = load_sentences()
        x_ref, _ = model.embed(texts, max_length=n)
        lo, hi = jnp.min(x_ref, axis=0), jnp.max(x_ref, axis=0)
    lo = np.minimum(np.asarray(lo), np.asarray(x0).min(axis=0))
    hi = np.maximum(np.asarray(hi), np.asarray(x0).max(axis=0))
    return lo, hi


def study_selection(spec: StudySpec, importance: np.ndarray, mask: np.ndarray, ctx: dict[str, jax.Array]) -> np.ndarray:
    """The explored tokens (B, n): a named selection, positions, or the MLM mask token."""
    if spec.select != "mask":
        return select_tokens(importance, mask, spec.select if isinstance(spec.select, str) else list(spec.select))
    if "mask_position" not in ctx:
        raise ValueError("select='mask' explores the masked word: it needs task='mlm' and texts with a mask token")
    out = np.zeros_like(mask)
    out[np.arange(len(out)), np.asarray(ctx["mask_position"])] = True
    return out


@dataclass(frozen=True)
class Prepared:
    """What every exploration of a study starts from, built (and so validated) before anything is written.

    arrays: what inputs.npz holds (x0, importance, select, ctx_*, lo/hi, raw images, and the
    counterfactual's target class per input when the study has one).
    """

    model: Any
    spec: StudySpec
    x0: jax.Array
    ctx: dict[str, jax.Array]
    select: np.ndarray
    box: tuple[np.ndarray, np.ndarray] | None
    arrays: dict[str, np.ndarray]

    @property
    def targets(self) -> np.ndarray | None:
        """The counterfactual's class per input (B,), or None without a counterfactual run."""
        return self.arrays.get("target")


def counterfactual_targets(spec: StudySpec, logits: np.ndarray, labels: tuple[str, ...]) -> np.ndarray:
    """The class each input's counterfactual walks to, from the logits at x0 (B, k).

    "runner-up": the second most likely class; "least": the least likely; an index or a
    label names one class for every input (an input already predicted as it is refused).
    """
    order = np.argsort(-np.asarray(logits), axis=1)
    if spec.target == "runner-up":
        return order[:, 1].astype(np.int32)
    if spec.target == "least":
        return order[:, -1].astype(np.int32)
    k = logits.shape[1]
    if isinstance(spec.target, str) and not spec.target.lstrip("-").isdigit():
        if spec.target not in labels:
            raise ValueError(f"target={spec.target!r} is not a class of the model; its classes: {', '.join(labels)}")
        cls = labels.index(spec.target)
    else:
        cls = int(spec.target)
    if not 0 <= cls < k:
        raise ValueError(f"target class {cls} is out of range: the model has {k} classes (0..{k - 1})")
    already = np.flatnonzero(order[:, 0] == cls)
    if already.size:
        raise ValueError(f"target {spec.target!r}: input {int(already[0])} is already predicted as that class; "
                         "use target='runner-up' or another class")
    return np.full(len(logits), cls, np.int32)


def prepare(spec: StudySpec, model: Any | None = None) -> Prepared:
    """Load the model and inputs of ``spec``, rank the tokens, select them and build the box."""
    model = load_model(spec) if model is None else in_space(model, spec)
    raw, x0, ctx = load_inputs(model, spec)
    mask = np.asarray(ctx["token_mask"])
    importance = token_importance(model.head, x0, (ctx,), spec.config(spec.runs[0]).output_metric)
    select = study_selection(spec, importance, mask, ctx)
    box = study_bounds(model, spec, x0)
    arrays: dict[str, np.ndarray] = {
        "x0": np.asarray(x0), "importance": np.asarray(importance), "select": np.asarray(select),
        **{f"ctx_{k}": np.asarray(v) for k, v in ctx.items()},
    }
    if box is not None:
        arrays["lo"], arrays["hi"] = box
    if model.modality == "image":
        arrays["raw"] = np.asarray(raw)
    if COUNTERFACTUAL in spec.runs:
        logits = predict(model, x0, ctx)
        labels = tuple(spec.labels) or tuple(str(label) for label in model.labels)
        arrays["target"] = counterfactual_targets(spec, logits, labels)
    _check_runs(model, spec, x0, ctx, select, box, arrays.get("target"))
    return Prepared(model, spec, x0, ctx, select, box, arrays)


def _check_runs(model: Any, spec: StudySpec, x0: jax.Array, ctx: dict[str, jax.Array], select: np.ndarray,
                box: tuple[np.ndarray, np.ndarray] | None, targets: np.ndarray | None) -> None:
    """The engine's own checks of every run of the study (box, selection, guides, options), before any write."""
    start = init_state(x0, jax.random.PRNGKey(spec.seed), f=model.head, args=(ctx,))  # f(x0) evaluated once
    for run in spec.runs:
        check_exploration(model.head, start, algorithm=cast(Any, spec.algorithm_of(run)), steps=spec.steps,
                          args=(ctx,), select=select, bounds=box, target=targets if run == COUNTERFACTUAL else None,
                          **spec.run_keywords(run))
