"""Vision Transformer split at its input embeddings: the paper's ViT and the shared ViT core.

:class:`ViT` runs the module of :mod:`~manifold_jax.models.vit_modules` (the paper's ViT:
bias-free linear patch embedding, CLS, learned positions, pre-LN blocks, tanh GELU, final
LayerNorm, linear classifier on CLS). The same class also runs HF's
``ViTForImageClassification`` (``patch_bias=True``: HF's strided convolution with bias
is exactly a linear map with bias on the flattened patches; see ``hf_vit.py``).
:class:`PixelViT` is a ViT split at its pixels instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from manifold_jax._xla import jit

from .base import Context, Task
from .port import FlaxPort, Port
from .port_spec import Checkpoint, PortSpec
from .registry import HEAD_OPTIONS
from .vit_modules import (
    CIFAR10_LABELS,
    CIFAR10_VIT,
    MNIST_VIT,
    MODEL_TYPE,
    TASKS,
    ViTConfig,
    ViTModule,
    own_names,
    patchify,
    unpatchify,
    vit_init,
    vit_inputs,
)
from .weights import flatten

__all__ = [
    "CIFAR10_LABELS", "CIFAR10_VIT", "MANIFOLD_VIT", "MNIST_VIT", "MODEL_TYPE", "TASKS", "PixelViT", "ViT",
    "ViTConfig", "ViTModule", "load_manifold_vit", "patchify", "unpatchify", "vit_init", "vit_port",
]


def _as_images(inputs: Any, config: ViTConfig, dtype: Any) -> jax.Array:
    """(B, H, W, C) or grayscale (B, H, W) -> (B, H, W, C) of ``dtype``, shape-checked."""
    images = jnp.asarray(inputs, dtype)
    if images.ndim == 3 and config.num_channels == 1:
        images = images[..., None]
    want = (config.image_size, config.image_size, config.num_channels)
    if images.ndim != 4 or images.shape[1:] != want:
        raise ValueError(f"images must be (B, {want[0]}, {want[1]}, {want[2]}) in [0, 1], got shape {images.shape}")
    return images


@dataclass(frozen=True, eq=False)
class ViT(FlaxPort):
    """A ViT port split at the input embeddings (a pytree: its leaves are ``params``).

    Inputs are images (B, H, W, C) (or (B, H, W) for one channel) with values in [0, 1];
    the config's normalisation ``(pixel - mean) / std`` is applied inside ``embed``.
    ``task``: "classification" (head = logits (num_classes,)) or "encoder"
    (head = final hidden state (n, d), for parity only).
    """

    params: dict[str, Any]
    config: ViTConfig = field(metadata={"static": True})
    task: Task = field(default="classification", metadata={"static": True})

    modality: ClassVar[str] = "image"
    measured_inputs: ClassVar[str] = "images"

    @classmethod
    def create(cls, config: ViTConfig, key: jax.Array, task: Task = "classification", dtype: Any = jnp.float32) -> ViT:
        """A randomly initialised ViT of ``config`` (for training)."""
        MANIFOLD_VIT.check_task(task)
        dummy = jnp.zeros((1, config.num_patches, config.patch_dim), dtype)
        params = ViTModule(config, task).init(key, dummy, method=ViTModule.init_all)["params"]
        return cls(jax.tree.map(lambda a: a.astype(dtype), params), config, task)

    @property
    def module(self) -> ViTModule:
        return ViTModule(self.config, self.task)

    @property
    def dtype(self) -> Any:
        return self.params["position"].dtype

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names (config.id2label, else "0", "1", ...)."""
        return self.config.labels if self.task == "classification" else ()

    # ------------------------------------------------------------------ embed / head
    def normalise(self, images: jax.Array) -> jax.Array:
        """[0, 1] pixels (..., H, W, C) -> model input ``(pixel - mean) / std``."""
        mean = jnp.asarray(self.config.image_mean, images.dtype)
        std = jnp.asarray(self.config.image_std, images.dtype)
        return (images - mean) / std

    def embed(self, inputs: Any) -> tuple[jax.Array, Context]:
        """Images in [0, 1] -> x0 (B, N+1, d) and ctx {"pixels": (B, H, W, C), "token_mask": (B, N+1)}.

        token_mask is False at CLS and True at every patch. Pure jnp: works under jit."""
        images = _as_images(inputs, self.config, self.dtype)
        x0 = self._apply(patchify(self.normalise(images), self.config.patch_size), method="embed")
        mask = jnp.arange(self.config.num_patches + self.config.num_prefix) >= self.config.num_prefix
        return x0, {"pixels": images, "token_mask": jnp.broadcast_to(mask, x0.shape[:2])}

    def head(self, x: jax.Array, ctx: Context) -> jax.Array:
        """ONE item's embeddings (N+1, d) -> logits (num_classes,) (or hidden (N+1, d)). Pure."""
        return self._apply(x, method="forward")

    def forward(self, x: jax.Array, ctx: Context | None = None) -> jax.Array:
        """The full model on a batch of embeddings (B, N+1, d): logits (B, num_classes)."""
        return self._apply(x, method="forward")

    # ------------------------------------------------------------------ decode
    def decode(self, x: jax.Array, ctx: Context) -> np.ndarray:
        """Embeddings (B, N+1, d) -> images (B, H, W, C) in [0, 1] (Algorithm 3).

        patches = (x - pos)[1:] (- b) @ pinv(W): the least-squares inverse of the patch
        embedding (exact when W (p*p*C, d) has full row rank, i.e. p*p*C <= d), folded
        back into an image and un-normalised. Only patches whose ``token_mask`` is True
        replace those of ``ctx["pixels"]``; the result is clipped to [0, 1].
        """
        return np.asarray(_decode_jit(self, jnp.asarray(x, self.dtype), ctx["pixels"], ctx["token_mask"]))

    def _patch_inverse(self, x: jax.Array) -> jax.Array:
        """(B, N+1, d) -> normalised patches (B, N, P) by the pseudo-inverse of W."""
        embed = self.params["patch_embed"]
        q = self.config.num_prefix
        e = x[..., q:, :] - self.params["position"][q:]
        if "bias" in embed:
            e = e - embed["bias"]
        return e @ jnp.linalg.pinv(embed["kernel"])

    # ------------------------------------------------------------------ bounds
    def theoretical_bounds(self, data: Any = None) -> tuple[jax.Array, jax.Array]:
        """The theoretical box of :meth:`bounds`, each (N+1, d) (docs/method.md section 7).

        Every pixel in [0, 1], i.e. every normalised patch feature f in
        [x_min_f, x_max_f] = [(0 - mean_c) / std_c, (1 - mean_c) / std_c]; per output
        dimension j, hi_j = sum_f max(W_fj x_max_f, W_fj x_min_f) (+ b_j) + pos_j (that
        is, W >= 0 times x_max plus W < 0 times x_min), lo the mirror. The CLS row is
        CLS + pos exactly (lo = hi). ("measured": element-wise min/max over
        ``embed(data)`` (images), per position.)
        """
        return _theoretical_box_jit(self)

    # ------------------------------------------------------------------ pixel space
    def pixel_space(self) -> PixelViT:
        """This ViT explored in pixel space: x = the image's patches (N, p*p*C) in [0, 1].

        The normalisation and the patch embedding (with its bias, HF) become part of the
        explored map, so every explored point is an image and decoding is exact
        (docs/method.md section 7). See :class:`PixelViT`."""
        return PixelViT(self)

    # ------------------------------------------------------------------ save
    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``config.json`` (model_type "manifold_vit") and ``model.safetensors`` for :func:`load`."""
        from safetensors.numpy import save_file

        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "config.json"), "w") as f:
            json.dump({"model_type": MODEL_TYPE, "task": self.task, **self.config.to_dict()}, f, indent=2)
        flat = {p.replace("/", "."): np.asarray(a) for p, a in flatten(self.params).items()}
        save_file(flat, os.path.join(directory, "model.safetensors"), metadata={"format": MODEL_TYPE})


@jit
def _decode_jit(model: ViT, x: jax.Array, pixels: jax.Array, token_mask: jax.Array) -> jax.Array:
    c = model.config
    images = unpatchify(model._patch_inverse(x), c.image_size, c.patch_size, c.num_channels)
    images = images * jnp.asarray(c.image_std, x.dtype) + jnp.asarray(c.image_mean, x.dtype)
    per_patch = jnp.broadcast_to(token_mask[:, c.num_prefix :, None],
                                 (*token_mask.shape[:1], c.num_patches, c.patch_dim))
    replace = unpatchify(per_patch, c.image_size, c.patch_size, c.num_channels)
    return jnp.clip(jnp.where(replace, images, pixels.astype(x.dtype)), 0.0, 1.0)


@jit
def _theoretical_box_jit(model: ViT) -> tuple[jax.Array, jax.Array]:
    c = model.config
    dtype = model.dtype
    mean, std = jnp.asarray(c.image_mean, dtype), jnp.asarray(c.image_std, dtype)
    channel = jnp.arange(c.patch_dim) % c.num_channels  # patches are flattened (p, p, C)
    x_min, x_max = ((0 - mean) / std)[channel], ((1 - mean) / std)[channel]
    w = model.params["patch_embed"]["kernel"]  # (P, d)
    a, b = w * x_max[:, None], w * x_min[:, None]
    hi, lo = jnp.maximum(a, b).sum(0), jnp.minimum(a, b).sum(0)
    if "bias" in model.params["patch_embed"]:
        hi, lo = hi + model.params["patch_embed"]["bias"], lo + model.params["patch_embed"]["bias"]
    pos = model.params["position"]
    q = c.num_prefix
    prefix = model._apply(method="prefix") + pos[:q]
    return jnp.concatenate([prefix, lo + pos[q:]]), jnp.concatenate([prefix, hi + pos[q:]])


jax.tree_util.register_dataclass(ViT)


# ---------------------------------------------------------------------- pixel space


@dataclass(frozen=True, eq=False)
class PixelViT(Port):
    """A :class:`ViT` split at its pixels instead of its embeddings (a pytree of the ViT's weights).

    x = the image's p x p patches, each flattened as (p, p, C): shape (N, p*p*C) per item,
    one metric block per patch, values in [0, 1]. ``head`` applies the normalisation
    ``(pixel - mean) / std``, the patch embedding (``@ W (+ b)``), the CLS token and the
    position embeddings, then the ViT: the same map as ``vit.head(vit.embed(image))``.
    ``decode`` folds the patches back into images (no pseudo-inverse, no clipping: exact),
    and ``bounds("theoretical")`` is the valid pixel range [0, 1]. With a box the engine
    clips into, every saved point is an image the model classifies exactly as the
    exploration says. Needs p*p*C > k for SiMEC's per-patch null space (the paper's 2x2
    MNIST patches have 4 pixels for 10 classes: use ``blocks="joint"`` there).
    """

    vit: ViT

    modality: ClassVar[str] = "image"
    space: ClassVar[str] = "pixels"
    measured_inputs: ClassVar[str] = "images"

    @property
    def config(self) -> ViTConfig:
        return self.vit.config

    @property
    def task(self) -> Task:
        return self.vit.task

    @property
    def labels(self) -> tuple[str, ...]:
        return self.vit.labels

    @property
    def dtype(self) -> Any:
        return self.vit.dtype

    def embed(self, inputs: Any) -> tuple[jax.Array, Context]:
        """Images (B, H, W, C) (or (B, H, W), one channel) in [0, 1] -> x0 = patches (B, N, p*p*C)
        and ctx {"token_mask": (B, N), True at every patch}."""
        images = _as_images(inputs, self.config, self.dtype)
        x0 = patchify(images, self.config.patch_size)
        return x0, {"token_mask": jnp.ones(x0.shape[:2], bool)}

    def embeddings(self, patches: jax.Array) -> jax.Array:
        """Pixel patches (..., N, p*p*C) -> the ViT's embeddings (..., N + prefix, d): normalisation,
        patch embedding, CLS and positions (the part of the map pixel space adds)."""
        c = self.config
        channel = np.arange(c.patch_dim) % c.num_channels  # patches are flattened (p, p, C)
        mean = jnp.asarray(np.asarray(c.image_mean)[channel], patches.dtype)
        std = jnp.asarray(np.asarray(c.image_std)[channel], patches.dtype)
        return self.vit._apply((patches - mean) / std, method="embed")

    def head(self, x: jax.Array, ctx: Context) -> jax.Array:
        """ONE item's patches (N, p*p*C) -> logits (num_classes,) (or hidden (N+1, d)). Pure."""
        return self.vit._apply(self.embeddings(x), method="forward")

    def forward(self, x: jax.Array, ctx: Context | None = None) -> jax.Array:
        """The full model on a batch of patches (B, N, p*p*C): logits (B, num_classes)."""
        return self.vit._apply(self.embeddings(x), method="forward")

    def decode(self, x: jax.Array, ctx: Context) -> np.ndarray:
        """Patches (B, N, p*p*C) -> images (B, H, W, C): the inverse of ``embed``, exact."""
        c = self.config
        return np.asarray(unpatchify(jnp.asarray(x, self.dtype), c.image_size, c.patch_size, c.num_channels))

    def theoretical_bounds(self, data: Any = None) -> tuple[jax.Array, jax.Array]:
        """The theoretical box of :meth:`bounds`, each (N, p*p*C): the pixel range [0, 1]
        ("measured": the element-wise min/max of the patches of ``data`` (images), per position)."""
        shape = (self.config.num_patches, self.config.patch_dim)
        return jnp.zeros(shape, self.dtype), jnp.ones(shape, self.dtype)

    def pixel_space(self) -> PixelViT:
        """Already in pixel space: itself."""
        return self


jax.tree_util.register_dataclass(PixelViT)


# ------------------------------------------------------------------------------ loading


def vit_port(params: dict[str, Any], config: ViTConfig, task: Task, _checkpoint: Checkpoint) -> ViT:
    """The :class:`ViT` of loaded params."""
    return ViT(params, config, task)


def manifold_vit_config(checkpoint: Checkpoint) -> ViTConfig:
    """The :class:`ViTConfig` of a ViT saved by :meth:`ViT.save` (``num_labels`` replaces its classes)."""
    with open(os.path.join(checkpoint.directory, "config.json")) as f:
        config = ViTConfig.from_dict(json.load(f))
    num_labels = checkpoint.option("num_labels")
    if num_labels is not None and num_labels != config.num_classes:
        config = dataclasses.replace(config, num_classes=num_labels, id2label=())
    return config


MANIFOLD_VIT: PortSpec[ViTConfig, ViT] = PortSpec(
    name="ViT",
    tasks=TASKS,
    config=manifold_vit_config,
    names=own_names,
    module=ViTModule,
    init_inputs=vit_inputs,
    build=vit_port,
    options=HEAD_OPTIONS,
)
"""Our own saved ViTs (model_type "manifold_vit"): the flax paths are the saved names."""


def load_manifold_vit(directory: str, task: Task = "classification", **options: Any) -> ViT:
    """A :class:`ViT` saved by :meth:`ViT.save` (options: ``init_missing_head``, ``num_labels``, ``key``;
    see :func:`manifold_jax.models.load`)."""
    return MANIFOLD_VIT.load(directory, None, task, **options)
