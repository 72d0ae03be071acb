"""Checkpoint reading and the declarative HF-name -> flax-path mapping.

A port declares a :class:`NameTable`: a list of :class:`Rule` (one HF parameter name
template, with aliases, to one flax parameter path template and a named layout
transform), the prefixes an HF checkpoint may put in front of the base model's names
(``bert.``, ``vit.``), the names to ignore (buffers, tied copies) and its head modules.
:func:`map_weights` turns a flat ``{hf_name: array}`` into a flat ``{flax_path: array}``
and reports, with names, everything that does not fit.
"""

from __future__ import annotations

import functools
import os
import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ModelError, ShapeMismatchError, UnexpectedWeightsError, WeightsNotFoundError

# ----------------------------------------------------------------------------- reading

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    out: dict[str, np.ndarray] = {}
    try:
        with safe_open(path, framework="numpy") as f:
            for name in f.keys():  # noqa: SIM118 (a safetensors file handle, not a dict)
                out[name] = f.get_tensor(name)
    except (TypeError, ValueError):  # e.g. bfloat16, which plain numpy cannot hold
        with safe_open(path, framework="flax") as f:
            for name in f.keys():  # noqa: SIM118 (a safetensors file handle, not a dict)
                out[name] = np.asarray(f.get_tensor(name).astype("float32"))
    return out


def _read_torch_bin(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise WeightsNotFoundError(
            f"{path} is a PyTorch pickle and torch is not installed; "
            "convert it to model.safetensors or install torch"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's own message advises weights_only=False: never pass that on
        raise ModelError(f"{path}: refused: the pickle holds objects beyond tensors, which a safe (weights-only) "
                         "load does not run; convert the checkpoint to model.safetensors") from None
    out: dict[str, np.ndarray] = {}
    for name, t in state.items():
        t = t.detach()
        if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
            t = t.float()
        out[name] = t.numpy()
    return out


def read_checkpoint(directory: str) -> dict[str, np.ndarray]:
    """All tensors of the checkpoint in ``directory`` as numpy arrays, by their stored names.

    Reads ``model.safetensors``, a sharded safetensors checkpoint
    (``model.safetensors.index.json``), or ``pytorch_model.bin`` (``torch.load`` with
    ``weights_only=True``, only when torch is importable), in that order.
    """
    single = os.path.join(directory, SAFETENSORS)
    if os.path.isfile(single):
        return _read_safetensors(single)
    index = os.path.join(directory, SAFETENSORS_INDEX)
    if os.path.isfile(index):
        import json

        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        out: dict[str, np.ndarray] = {}
        for shard in shards:
            out.update(_read_safetensors(os.path.join(directory, shard)))
        return out
    binary = os.path.join(directory, TORCH_BIN)
    if os.path.isfile(binary):
        return _read_torch_bin(binary)
    raise WeightsNotFoundError(
        f"no weights in {directory}: expected {SAFETENSORS}, {SAFETENSORS_INDEX} or {TORCH_BIN}"
    )


# ------------------------------------------------------------------------- transforms


def _identity(a: np.ndarray) -> np.ndarray:
    return a


def _transpose(a: np.ndarray) -> np.ndarray:
    """torch Linear weight (out, in) -> flax Dense kernel (in, out)."""
    return a.T


def _squeeze(a: np.ndarray) -> np.ndarray:
    """HF keeps CLS/position embeddings as (1, 1, d) / (1, n, d); we keep (d,) / (n, d)."""
    while a.ndim > 1 and a.shape[0] == 1:
        a = a[0]
    return a


def _conv_to_dense(a: np.ndarray) -> np.ndarray:
    """Conv2d weight (d, C, p, q) -> dense kernel (p*q*C, d) on patches flattened as (p, q, C)."""
    if a.ndim != 4:
        return a
    return a.transpose(2, 3, 1, 0).reshape(-1, a.shape[0])


TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": _identity,
    "transpose": _transpose,
    "squeeze": _squeeze,
    "conv_to_dense": _conv_to_dense,
}


# ------------------------------------------------------------------------------ table

_PLACEHOLDER = re.compile(r"\\\{(\w+)\\\}")


@functools.lru_cache(maxsize=4096)
def _template_regex(template: str) -> re.Pattern[str]:
    """'encoder.layer.{i}.x' -> regex with a named digit group for each {placeholder}."""
    return re.compile(_PLACEHOLDER.sub(r"(?P<\1>\\d+)", re.escape(template)) + r"\Z")


@dataclass(frozen=True)
class Rule:
    """One parameter: HF name template(s) -> flax path template, plus a layout transform.

    Templates may contain ``{i}`` (digits), e.g. ``encoder.layer.{i}.attention.self.query.weight``
    -> ``encoder/layers_{i}/attention/query/kernel``. The first HF template is the
    canonical one (used in messages); the others are aliases (e.g. old ``gamma``/``beta``).
    """

    hf: str | tuple[str, ...]
    flax: str
    transform: str = "none"

    @property
    def hf_names(self) -> tuple[str, ...]:
        return (self.hf,) if isinstance(self.hf, str) else self.hf


def dense_rules(hf: str, fx: str) -> tuple[Rule, Rule]:
    """A torch Linear ``hf.weight`` (out, in) / ``hf.bias`` -> flax Dense ``fx/kernel`` (in, out) / ``fx/bias``."""
    return Rule(f"{hf}.weight", f"{fx}/kernel", "transpose"), Rule(f"{hf}.bias", f"{fx}/bias")


def norm_rules(hf: str, fx: str) -> tuple[Rule, Rule]:
    """A torch LayerNorm (``weight``/``bias``, old ``gamma``/``beta``) -> ``fx/scale`` / ``fx/bias``."""
    return (
        Rule((f"{hf}.weight", f"{hf}.gamma"), f"{fx}/scale"),
        Rule((f"{hf}.bias", f"{hf}.beta"), f"{fx}/bias"),
    )


@dataclass(frozen=True)
class NameTable:
    """Everything needed to map one architecture's HF checkpoint onto its flax params.

    ``prefixes``: base-model prefixes an HF checkpoint may or may not carry (``bert.``);
    ``ignore``: regexes of stored names that are not parameters (buffers, tied copies);
    ``heads``: top-level flax modules that are task heads (may be absent from a
    checkpoint; dropped without complaint when the requested task does not use them).
    """

    rules: tuple[Rule, ...]
    prefixes: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    heads: frozenset[str] = field(default_factory=frozenset)

    def strip(self, name: str) -> str:
        for prefix in self.prefixes:
            if name.startswith(prefix):
                return name[len(prefix) :]
        return name

    def to_flax(self, hf_name: str) -> tuple[str, str] | None:
        """(flax path, transform name) for an HF name (prefix already stripped), or None."""
        for rule in self.rules:
            for template in rule.hf_names:
                m = _template_regex(template).match(hf_name)
                if m:
                    return rule.flax.format(**m.groupdict()), rule.transform
        return None

    def to_hf(self, flax_path: str) -> str:
        """The canonical HF name of a flax path (for messages); the path itself if unmapped."""
        for rule in self.rules:
            m = _template_regex(rule.flax).match(flax_path)
            if m:
                return rule.hf_names[0].format(**m.groupdict())
        return flax_path

    def ignored(self, hf_name: str) -> bool:
        return any(re.fullmatch(p, hf_name) for p in self.ignore)


# ---------------------------------------------------------------------------- mapping

Shapes = Mapping[str, tuple[int, ...]]


@dataclass
class MappedWeights:
    """Result of :func:`map_weights`: flat flax params and what the checkpoint lacked.

    ``missing`` are flax paths the model needs that the checkpoint does not hold;
    ``unused`` are HF names of known head modules the requested task does not use.
    """

    params: dict[str, np.ndarray]
    missing: list[str]
    unused: list[str]


def map_weights(weights: Mapping[str, np.ndarray], table: NameTable, expected: Shapes) -> MappedWeights:
    """Map an HF checkpoint onto flax paths, checking names and shapes.

    Raises :class:`UnexpectedWeightsError` (listing the names) for stored weights that
    the architecture does not have, and :class:`ShapeMismatchError` (name, expected,
    got) for weights of the wrong shape. Missing weights are returned, not raised: the
    caller knows which ones a head may initialise.
    """
    params: dict[str, np.ndarray] = {}
    unexpected: list[str] = []
    unused: list[str] = []
    mismatched: list[str] = []
    for name, array in weights.items():
        short = table.strip(name)
        if table.ignored(short):
            continue
        mapped = table.to_flax(short)
        if mapped is None:
            unexpected.append(name)
            continue
        path, transform = mapped
        if path not in expected:
            (unused if path.split("/")[0] in table.heads else unexpected).append(name)
            continue
        value = TRANSFORMS[transform](np.asarray(array))
        if tuple(value.shape) != tuple(expected[path]):
            mismatched.append(
                f"{name} (-> {path}): expected {tuple(expected[path])}, got {tuple(value.shape)}"
                + (f" after {transform} from {tuple(np.shape(array))}" if transform != "none" else "")
            )
            continue
        if path in params and not np.array_equal(params[path], value):
            unexpected.append(f"{name} (a second, different value for {path})")
            continue
        params[path] = value
    if unexpected:
        raise UnexpectedWeightsError(
            f"checkpoint holds {len(unexpected)} weight(s) this architecture does not have: "
            + ", ".join(sorted(unexpected))
        )
    if mismatched:
        raise ShapeMismatchError("weight shape mismatch: " + "; ".join(sorted(mismatched)))
    missing = sorted(p for p in expected if p not in params)
    return MappedWeights(params, missing, sorted(unused))


# ----------------------------------------------------------------------- flat <-> tree


def flatten(tree: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
    """Nested dict -> {"a/b/c": leaf}."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            for kk, vv in flatten(v, sep).items():
                out[f"{k}{sep}{kk}"] = vv
        else:
            out[k] = v
    return out


def unflatten(flat: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
    """{"a/b/c": leaf} -> nested dict."""
    out: dict[str, Any] = {}
    for path, v in flat.items():
        node = out
        *parents, leaf = path.split(sep)
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def complete_params(
    mapped: MappedWeights,
    table: NameTable,
    *,
    fresh: Callable[[], Mapping[str, Any]],
    init_missing_head: bool,
    what: str,
) -> dict[str, Any]:
    """Fill the missing weights of ``mapped`` from ``fresh()`` when (and only when) allowed.

    Weights missing from the body (embeddings, encoder) always raise
    :class:`MissingWeightsError`. Weights missing from a head raise
    :class:`MissingHeadError` unless ``init_missing_head``; then they are taken from the
    randomly initialised flat params ``fresh()`` with a ``warnings.warn`` naming them.
    """
    import warnings

    from .errors import MissingHeadError, MissingWeightsError

    if not mapped.missing:
        return dict(mapped.params)

    def names(paths: list[str]) -> str:
        return ", ".join(f"{table.to_hf(p)} ({p})" for p in paths)

    body = [p for p in mapped.missing if p.split("/")[0] not in table.heads]
    head = [p for p in mapped.missing if p.split("/")[0] in table.heads]
    if body:
        raise MissingWeightsError(f"checkpoint lacks {len(body)} weight(s) of {what}: {names(body)}")
    if not init_missing_head:
        raise MissingHeadError(
            f"checkpoint has no weights for the head of {what}: missing {names(head)}; "
            "pass init_missing_head=True (with num_labels and a jax.random key) to initialise it at random"
        )
    init = flatten(fresh())
    warnings.warn(f"{what}: initialised missing head weights at random: {names(head)}", stacklevel=3)
    return {**mapped.params, **{p: np.asarray(init[p]) for p in head}}


def load_params(
    weights: Mapping[str, np.ndarray],
    table: NameTable,
    init: Callable[[Any], Mapping[str, Any]],
    *,
    key: Any,
    init_missing_head: bool,
    dtype: Any,
    what: str,
) -> dict[str, Any]:
    """Checkpoint -> nested flax params of the module that ``init(key)`` initialises.

    The expected names and shapes come from ``jax.eval_shape(init, ...)`` (nothing is
    computed); see :func:`map_weights` and :func:`complete_params` for the checks.
    Every parameter is cast to ``dtype``.
    """
    import jax
    import jax.numpy as jnp

    shapes = jax.eval_shape(init, jax.random.key(0))
    expected = {p: tuple(s.shape) for p, s in flatten(shapes).items()}
    mapped = map_weights(weights, table, expected)

    def fresh() -> Mapping[str, Any]:
        if key is None:
            raise ValueError(f"{what}: init_missing_head=True needs a jax.random key (key=...)")
        return init(key)

    flat = complete_params(mapped, table, fresh=fresh, init_missing_head=init_missing_head, what=what)
    return jax.tree.map(lambda a: jnp.asarray(a, dtype), unflatten(flat))
