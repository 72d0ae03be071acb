"""HF ``ViTForImageClassification`` / ``ViTModel`` checkpoints on the shared :class:`ViT` core.

HF's patch embedding is a Conv2d (d, C, p, p) with stride p and a bias: on a patch
flattened as (p, p, C) it is the linear map ``patch @ W + b`` with
``W = conv.transpose(2, 3, 1, 0).reshape(p*p*C, d)``, so the port is a :class:`ViT`
with ``patch_bias=True``. HF's ``ViTForImageClassification`` applies the final
LayerNorm and a linear classifier to the CLS token, like our ViT.

Normalisation: images enter ``embed`` as (B, H, W, C) in [0, 1] (HF's processor
rescale by 1/255 already done); ``embed`` then applies ``(pixel - mean) / std``, the
processor normalisation the checkpoint expects. mean/std come from the checkpoint's
``preprocessor_config.json`` (``image_mean``/``image_std``; identity when it says
``do_normalize: false``) when there is one, else HF's ViT default 0.5 / 0.5 per
channel; ``load(..., image_mean=..., image_std=...)`` overrides both. No resizing:
images must already have the config's ``image_size``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

from .base import Task
from .errors import UnsupportedModelError
from .port_spec import Checkpoint, PortSpec
from .registry import HEAD_OPTIONS
from .vit import ViT, vit_port
from .vit_modules import TASKS, ViTConfig, ViTModule, vit_inputs
from .weights import NameTable, Rule, dense_rules, norm_rules

HF_VIT_MEAN = (0.5, 0.5, 0.5)
HF_VIT_STD = (0.5, 0.5, 0.5)
"""The ``ViTImageProcessor`` defaults (ImageNet-21k ViTs were trained on them)."""



def _layer_rules(saved: str, module: str, fx: str, norm: bool = False) -> tuple[Rule, ...]:
    """Rules for one sub-layer of encoder layer {i}, under both naming schemes: the saved
    checkpoint names (``encoder.layer.{i}.<saved>``) and the module names of
    transformers >= 5 (``layers.{i}.<module>``), which a raw ``state_dict()`` carries."""
    make = norm_rules if norm else dense_rules
    canonical = make(f"encoder.layer.{{i}}.{saved}", f"encoder/layers_{{i}}/{fx}")
    alias = make(f"layers.{{i}}.{module}", f"encoder/layers_{{i}}/{fx}")
    return tuple(Rule((*a.hf_names, *b.hf_names), a.flax, a.transform) for a, b in zip(canonical, alias, strict=True))


HF_VIT_NAMES = NameTable(
    rules=(
        Rule("embeddings.cls_token", "cls_token", "squeeze"),
        Rule("embeddings.position_embeddings", "position", "squeeze"),
        Rule("embeddings.patch_embeddings.projection.weight", "patch_embed/kernel", "conv_to_dense"),
        Rule("embeddings.patch_embeddings.projection.bias", "patch_embed/bias"),
        *_layer_rules("attention.attention.query", "attention.q_proj", "attention/query"),
        *_layer_rules("attention.attention.key", "attention.k_proj", "attention/key"),
        *_layer_rules("attention.attention.value", "attention.v_proj", "attention/value"),
        *_layer_rules("attention.output.dense", "attention.o_proj", "attention/out"),
        *_layer_rules("layernorm_before", "layernorm_before", "attention_norm", norm=True),
        *_layer_rules("intermediate.dense", "mlp.fc1", "mlp/fc1"),
        *_layer_rules("output.dense", "mlp.fc2", "mlp/fc2"),
        *_layer_rules("layernorm_after", "layernorm_after", "mlp_norm", norm=True),
        *norm_rules("layernorm", "norm"),
        *dense_rules("pooler.dense", "pooler"),
        *dense_rules("classifier", "classifier"),
    ),
    prefixes=("vit.",),
    ignore=(r"embeddings\.mask_token",),  # only used for masked-image pre-training
    heads=frozenset({"classifier", "pooler"}),  # pooler: ViTModel's, unused by the classifier
)
"""HF ViT parameter names -> flax paths of :class:`~manifold_jax.models.vit.ViTModule`."""

DEIT_MODEL_TYPE = "deit"

DEIT_NAMES = NameTable(
    rules=(
        Rule("embeddings.distillation_token", "distillation_token", "squeeze"),
        *(r for r in HF_VIT_NAMES.rules if r.hf_names[0] != "classifier.weight" and r.hf_names[0] != "classifier.bias"),
        # DeiTForImageClassification: "classifier"; ...WithTeacher: "cls_classifier" + "distillation_classifier"
        Rule(("classifier.weight", "cls_classifier.weight"), "classifier/kernel", "transpose"),
        Rule(("classifier.bias", "cls_classifier.bias"), "classifier/bias"),
        *dense_rules("distillation_classifier", "distillation_classifier"),
    ),
    prefixes=("deit.",),
    ignore=HF_VIT_NAMES.ignore,
    heads=frozenset({"classifier", "distillation_classifier", "pooler"}),
)
"""HF DeiT parameter names -> flax paths: ViT's, plus the distillation token and head."""


def _side(value: Any, what: str) -> int:
    if isinstance(value, Sequence):
        if len(set(value)) != 1:
            raise UnsupportedModelError(f"non-square {what} {tuple(value)} is not supported")
        return int(value[0])
    return int(value)


def read_normalisation(directory: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(image_mean, image_std) from ``preprocessor_config.json``, or None when there is none."""
    path = os.path.join(directory, "preprocessor_config.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        proc = json.load(f)
    if not proc.get("do_normalize", True):
        return (0.0,), (1.0,)
    return tuple(proc.get("image_mean", HF_VIT_MEAN)), tuple(proc.get("image_std", HF_VIT_STD))


def config_from_hf(
    hf: Any,
    image_mean: Sequence[float] = HF_VIT_MEAN,
    image_std: Sequence[float] = HF_VIT_STD,
    num_labels: int | None = None,
) -> ViTConfig:
    """Our :class:`ViTConfig` (``patch_bias=True``) from a ``transformers.ViTConfig``."""
    k = hf.num_labels if num_labels is None else num_labels
    names = dict(getattr(hf, "id2label", None) or {})
    return ViTConfig(
        image_size=_side(hf.image_size, "image_size"),
        num_channels=hf.num_channels,
        patch_size=_side(hf.patch_size, "patch_size"),
        hidden_size=hf.hidden_size,
        num_layers=hf.num_hidden_layers,
        num_heads=hf.num_attention_heads,
        mlp_dim=hf.intermediate_size,
        num_classes=k,
        hidden_act=hf.hidden_act,
        layer_norm_eps=hf.layer_norm_eps,
        patch_bias=True,
        qkv_bias=getattr(hf, "qkv_bias", True),
        final_norm=True,
        image_mean=_per_channel(image_mean, hf.num_channels),
        image_std=_per_channel(image_std, hf.num_channels),
        id2label=tuple(str(names.get(i, names.get(str(i), f"LABEL_{i}"))) for i in range(k)),
        init_std=hf.initializer_range,
    )


def _per_channel(values: Sequence[float], channels: int) -> tuple[float, ...]:
    """HF's default normalisation lists three equal values; a one-channel model needs one."""
    values = tuple(float(v) for v in values)
    if len(values) != channels and len(set(values)) == 1:
        return values[:1] * channels
    return values


def hf_vit_config(checkpoint: Checkpoint) -> ViTConfig:
    """The :class:`ViTConfig` of an HF ViT checkpoint: its transformers config, the normalisation of
    its ``preprocessor_config.json`` (else HF's 0.5 / 0.5) unless ``image_mean`` / ``image_std`` are
    given, and ``num_labels``."""
    mean, std = read_normalisation(checkpoint.directory) or (HF_VIT_MEAN, HF_VIT_STD)
    return config_from_hf(
        checkpoint.hf, checkpoint.option("image_mean", mean), checkpoint.option("image_std", std),
        checkpoint.option("num_labels"),
    )


def deit_config(checkpoint: Checkpoint) -> ViTConfig:
    """HF ViT's config with DeiT's distillation token, and its distillation head when the weights
    hold one (``DeiTForImageClassificationWithTeacher``)."""
    teacher = any(name.endswith("distillation_classifier.weight") for name in checkpoint.weights)
    return dataclasses.replace(hf_vit_config(checkpoint), distillation_token=True, distillation_head=teacher)


IMAGE_OPTIONS = frozenset(HEAD_OPTIONS | {"image_mean", "image_std"})
"""The loader options of the HF image families."""

HF_VIT: PortSpec[ViTConfig, ViT] = PortSpec(
    name="HF ViT",
    tasks=TASKS,
    config=hf_vit_config,
    names=HF_VIT_NAMES,
    module=ViTModule,
    init_inputs=vit_inputs,
    build=vit_port,
    options=IMAGE_OPTIONS,
)
"""HF ``ViTForImageClassification`` / ``ViTModel`` checkpoints on the shared :class:`ViT`."""

DEIT: PortSpec[ViTConfig, ViT] = dataclasses.replace(HF_VIT, name="DeiT", config=deit_config, names=DEIT_NAMES)
"""HF DeiT checkpoints: HF ViT's spec with the distillation token and head.
``DeiTForImageClassificationWithTeacher`` (weights ``cls_classifier`` and
``distillation_classifier``) predicts the mean of its two heads, as HF does at inference;
``DeiTForImageClassification`` (``classifier``) reads the CLS token only."""


def load_hf_vit(directory: str, hf_config: Any, task: Task = "classification", **options: Any) -> ViT:
    """A :class:`ViT` from an HF ViT checkpoint directory (options: ``init_missing_head``,
    ``num_labels``, ``key``, ``image_mean``, ``image_std``; see :func:`manifold_jax.models.load`)."""
    return HF_VIT.load(directory, hf_config, task, **options)


def load_hf_deit(directory: str, hf_config: Any, task: Task = "classification", **options: Any) -> ViT:
    """A :class:`ViT` with DeiT's distillation token from an HF DeiT checkpoint directory (see
    :data:`DEIT` and :func:`load_hf_vit`)."""
    return DEIT.load(directory, hf_config, task, **options)
