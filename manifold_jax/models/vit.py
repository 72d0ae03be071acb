"""Vision Transformer split at its input embeddings: the paper's ViT and the shared ViT core.

The paper's ViT (docs/method.md section 10): images cut into p x p patches, each flattened as
(p, p, C) and mapped by a bias-free linear layer W (p*p*C, d); a learned CLS token and
learned position embeddings; pre-LayerNorm encoder blocks with tanh GELU; a final
LayerNorm (our choice, as in the original ViT and HF's ViTForImageClassification); a
linear classifier on the CLS token. The same :class:`ViT` class also runs HF's
``ViTForImageClassification`` (``patch_bias=True``: HF's strided convolution with bias
is exactly a linear map with bias on the flattened patches; see ``hf_vit.py``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from manifold_jax._xla import jit

from .base import BoundsKind, Context, Task
from .common import measured_box
from .errors import UnsupportedModelError
from .layers import Encoder, EncoderConfig, LayerNorm, dense
from .weights import NameTable, Rule, flatten, load_params, read_checkpoint

MODEL_TYPE = "manifold_vit"
"""``model_type`` in the config.json of our own saved ViTs."""

TASKS: tuple[Task, ...] = ("classification", "encoder")

CIFAR10_LABELS = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


@dataclass(frozen=True)
class ViTConfig:
    """Shape of a ViT port. Defaults are the paper's MNIST model (see :data:`MNIST_VIT`).

    ``image_mean``/``image_std`` (one value per channel, or one for all) normalise the
    [0, 1] pixels before the patch embedding: ``(pixel - mean) / std`` (identity by
    default). ``patch_bias`` adds a bias to the patch embedding (HF ViT); the paper's
    ViT has none. ``final_norm`` applies a LayerNorm before the classifier.
    """

    image_size: int = 28
    num_channels: int = 1
    patch_size: int = 2
    hidden_size: int = 48
    num_layers: int = 4
    num_heads: int = 4
    mlp_dim: int = 192
    num_classes: int = 10
    hidden_act: str = "gelu_tanh"
    layer_norm_eps: float = 1e-5
    patch_bias: bool = False
    qkv_bias: bool = True
    final_norm: bool = True
    image_mean: tuple[float, ...] = (0.0,)
    image_std: tuple[float, ...] = (1.0,)
    id2label: tuple[str, ...] = ()
    init_std: float = 0.02
    distillation_token: bool = False
    distillation_head: bool = False

    def __post_init__(self) -> None:
        if self.distillation_head and not self.distillation_token:
            raise ValueError("distillation_head needs distillation_token")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        for name in ("image_mean", "image_std"):
            value = tuple(float(v) for v in np.atleast_1d(getattr(self, name)))
            if len(value) == 1:
                value = value * self.num_channels
            if len(value) != self.num_channels:
                raise ValueError(f"{name} has {len(value)} values for {self.num_channels} channels")
            object.__setattr__(self, name, value)
        if any(s <= 0 for s in self.image_std):
            raise ValueError(f"image_std must be positive, got {self.image_std}")
        object.__setattr__(self, "id2label", tuple(str(v) for v in self.id2label))
        _ = self.encoder  # validates heads / activation

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2

    @property
    def num_prefix(self) -> int:
        """Tokens before the patches: CLS (and DeiT's distillation token)."""
        return 2 if self.distillation_token else 1

    @property
    def patch_dim(self) -> int:
        """Length of one flattened (p, p, C) patch."""
        return self.patch_size**2 * self.num_channels

    @property
    def encoder(self) -> EncoderConfig:
        return EncoderConfig(
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            intermediate_size=self.mlp_dim,
            activation=self.hidden_act,
            layer_norm_eps=self.layer_norm_eps,
            pre_norm=True,
            qkv_bias=self.qkv_bias,
            init_std=self.init_std,
        )

    @property
    def labels(self) -> tuple[str, ...]:
        return self.id2label or tuple(str(i) for i in range(self.num_classes))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ViTConfig:
        """Inverse of :meth:`to_dict` (lists back to tuples); unknown keys raise, naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known - {"model_type", "task"})
        if unknown:
            raise ValueError(f"unknown ViT config field(s): {', '.join(unknown)}")
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known}
        return cls(**fields)


MNIST_VIT = ViTConfig()
"""The paper's MNIST ViT: 28x28x1, 2x2 patches (196 + CLS), hidden 48, 4 layers, 4 heads, MLP 192."""

CIFAR10_VIT = ViTConfig(
    image_size=32,
    num_channels=3,
    patch_size=2,
    hidden_size=384,
    num_layers=6,
    num_heads=8,
    mlp_dim=512,
    num_classes=10,
    id2label=CIFAR10_LABELS,
)
"""The paper's CIFAR-10 ViT: 32x32x3, 2x2 patches (256 + CLS), hidden 384, 6 layers, 8 heads, MLP 512."""


# ---------------------------------------------------------------------- image <-> patches


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
    """(..., H, W, C) -> (..., N, p*p*C): row-major patch grid, each patch flattened as (p, p, C)."""
    *lead, h, w, c = images.shape
    p = patch_size
    t = images.reshape(*lead, h // p, p, w // p, p, c)
    t = jnp.moveaxis(t, -4, -3)  # (..., H/p, W/p, p, p, C)
    return t.reshape(*lead, (h // p) * (w // p), p * p * c)


def unpatchify(patches: jax.Array, image_size: int, patch_size: int, channels: int) -> jax.Array:
    """Inverse of :func:`patchify`: (..., N, p*p*C) -> (..., H, W, C)."""
    *lead, _, _ = patches.shape
    g, p = image_size // patch_size, patch_size
    t = patches.reshape(*lead, g, g, p, p, channels)
    t = jnp.moveaxis(t, -3, -4)  # (..., H/p, p, W/p, p, C)
    return t.reshape(*lead, image_size, image_size, channels)


# --------------------------------------------------------------------------- flax module


class ViTModule(nn.Module):
    """The ViT, one method per stage of the split."""

    config: ViTConfig
    task: Task = "classification"

    def setup(self) -> None:
        c = self.config
        init = nn.initializers.normal(c.init_std)
        self.patch_embed = dense(c.hidden_size, c.init_std, use_bias=c.patch_bias)
        self.cls_token = self.param("cls_token", init, (c.hidden_size,))
        if c.distillation_token:
            self.distillation_token = self.param("distillation_token", init, (c.hidden_size,))
        self.position = self.param("position", init, (c.num_patches + c.num_prefix, c.hidden_size))
        self.encoder = Encoder(c.encoder)
        if c.final_norm:
            self.norm = LayerNorm(c.layer_norm_eps)
        if self.task == "classification":
            self.classifier = dense(c.num_classes, c.init_std)
            if c.distillation_head:
                self.distillation_classifier = dense(c.num_classes, c.init_std)

    def prefix(self) -> jax.Array:
        """The learned tokens before the patches (num_prefix, d): CLS (, distillation)."""
        if self.config.distillation_token:
            return jnp.stack([self.cls_token, self.distillation_token])
        return self.cls_token[None]

    def embed(self, patches: jax.Array) -> jax.Array:
        """Normalised patches (..., N, P) -> x0 (..., N+q, d) = [CLS (; DIST); patches @ W (+ b)] + pos."""
        tokens = self.patch_embed(patches)
        prefix = self.prefix()
        lead = jnp.broadcast_to(prefix, (*tokens.shape[:-2], *prefix.shape))
        return jnp.concatenate([lead.astype(tokens.dtype), tokens], axis=-2) + self.position

    def encode(self, x: jax.Array, rows: jax.Array | None = None) -> jax.Array:
        """x (..., n, d) -> final hidden state (..., n, d) after the final LayerNorm, or only
        the positions ``rows`` (r,) of it, (..., r, d)."""
        h = self.encoder(x, None, rows)
        return self.norm(h) if self.config.final_norm else h

    def forward(self, x: jax.Array) -> jax.Array:
        """Logits (..., num_classes) from the CLS token (DeiT with teacher: the mean of the CLS and
        distillation heads), or the hidden state for task "encoder"."""
        if self.task != "classification":
            return self.encode(x)
        if self.config.distillation_head:
            h = self.encode(x, jnp.arange(2, dtype=jnp.int32))
            return (self.classifier(h[..., 0, :]) + self.distillation_classifier(h[..., 1, :])) / 2
        return self.classifier(self.encode(x, jnp.zeros((1,), jnp.int32))[..., 0, :])

    def init_all(self, patches: jax.Array) -> jax.Array:
        return self.forward(self.embed(patches))


# ----------------------------------------------------------------------------- the model


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
class ViT:
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

    @classmethod
    def create(cls, config: ViTConfig, key: jax.Array, task: Task = "classification", dtype: Any = jnp.float32) -> ViT:
        """A randomly initialised ViT of ``config`` (for training)."""
        check_task(task)
        dummy = jnp.zeros((1, config.num_patches, config.patch_dim), dtype)
        params = ViTModule(config, task).init(key, dummy, method=ViTModule.init_all)["params"]
        return cls(jax.tree.map(lambda a: a.astype(dtype), params), config, task)

    @property
    def module(self) -> ViTModule:
        return ViTModule(self.config, self.task)

    def _apply(self, *args: Any, method: str) -> jax.Array:
        return cast(jax.Array, self.module.apply({"params": self.params}, *args, method=getattr(ViTModule, method)))

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

    def __call__(self, inputs: Any) -> jax.Array:
        """``forward(*embed(images))``: logits (B, num_classes)."""
        return self.forward(self.embed(inputs)[0])

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
    def bounds(self, kind: BoundsKind = "theoretical", data: Any = None) -> tuple[jax.Array, jax.Array]:
        """Feasible box (lo, hi), each (N+1, d) (docs/method.md section 7).

        "theoretical": every pixel in [0, 1], i.e. every normalised patch feature f in
        [x_min_f, x_max_f] = [(0 - mean_c) / std_c, (1 - mean_c) / std_c]; per output
        dimension j, hi_j = sum_f max(W_fj x_max_f, W_fj x_min_f) (+ b_j) + pos_j (that
        is, W >= 0 times x_max plus W < 0 times x_min), lo the mirror. The CLS row is
        CLS + pos exactly (lo = hi). "measured": element-wise min/max over
        ``embed(data)`` (images), per position.
        """
        if kind == "measured":
            if data is None:
                raise ValueError("bounds('measured') needs data: the images to measure the box on")
            return measured_box(self.embed(data)[0])
        if kind != "theoretical":
            raise ValueError(f"unknown bounds kind {kind!r}; use 'theoretical' or 'measured'")
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
class PixelViT:
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

    def __call__(self, inputs: Any) -> jax.Array:
        """``forward(*embed(images))``: logits (B, num_classes)."""
        return self.forward(self.embed(inputs)[0])

    def decode(self, x: jax.Array, ctx: Context) -> np.ndarray:
        """Patches (B, N, p*p*C) -> images (B, H, W, C): the inverse of ``embed``, exact."""
        c = self.config
        return np.asarray(unpatchify(jnp.asarray(x, self.dtype), c.image_size, c.patch_size, c.num_channels))

    def bounds(self, kind: BoundsKind = "theoretical", data: Any = None) -> tuple[jax.Array, jax.Array]:
        """Feasible box (lo, hi), each (N, p*p*C): "theoretical" is the pixel range [0, 1];
        "measured" the element-wise min/max of the patches of ``data`` (images), per position."""
        if kind == "measured":
            if data is None:
                raise ValueError("bounds('measured') needs data: the images to measure the box on")
            return measured_box(self.embed(data)[0])
        if kind != "theoretical":
            raise ValueError(f"unknown bounds kind {kind!r}; use 'theoretical' or 'measured'")
        shape = (self.config.num_patches, self.config.patch_dim)
        return jnp.zeros(shape, self.dtype), jnp.ones(shape, self.dtype)

    def pixel_space(self) -> PixelViT:
        """Already in pixel space: itself."""
        return self


jax.tree_util.register_dataclass(PixelViT)


# ------------------------------------------------------------------------------ loading


def check_task(task: str) -> None:
    if task not in TASKS:
        raise UnsupportedModelError(f"unknown task {task!r} for ViT; supported: {', '.join(TASKS)}")


def vit_init(config: ViTConfig, task: Task) -> Any:
    """``init(key) -> params`` of a ViTModule of this config and task."""
    module = ViTModule(config, task)
    dummy = jnp.zeros((1, config.num_patches, config.patch_dim), jnp.float32)

    def init(key: jax.Array) -> Any:
        return module.init(key, dummy, method=ViTModule.init_all)["params"]

    return init


def _own_names(config: ViTConfig) -> NameTable:
    """Our saved names are the flax paths with '.' for '/': one identity rule per parameter
    of the classification model (the superset of every task)."""
    shapes = jax.eval_shape(vit_init(config, "classification"), jax.random.key(0))
    rules = tuple(Rule(p.replace("/", "."), p) for p in flatten(shapes))
    return NameTable(rules=rules, heads=frozenset({"classifier", "distillation_classifier"}))


def load_manifold_vit(
    directory: str,
    task: Task = "classification",
    *,
    dtype: Any = jnp.float32,
    init_missing_head: bool = False,
    num_labels: int | None = None,
    key: jax.Array | None = None,
) -> ViT:
    """A :class:`ViT` saved by :meth:`ViT.save` (see :func:`manifold_jax.models.load`)."""
    check_task(task)
    with open(os.path.join(directory, "config.json")) as f:
        config = ViTConfig.from_dict(json.load(f))
    if num_labels is not None and num_labels != config.num_classes:
        config = dataclasses.replace(config, num_classes=num_labels, id2label=())
    params = load_params(
        read_checkpoint(directory),
        _own_names(config),
        vit_init(config, task),
        key=key,
        init_missing_head=init_missing_head,
        dtype=dtype,
        what=f"ViT ({task})",
    )
    return ViT(params, config, task)
