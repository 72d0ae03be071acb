"""The ViT's pieces: the config (with the paper's presets), the patch grid, the flax module, its names.

The paper's ViT (docs/method.md section 10): images cut into p x p patches, each flattened as
(p, p, C) and mapped by a bias-free linear layer W (p*p*C, d); a learned CLS token and
learned position embeddings; pre-LayerNorm encoder blocks with tanh GELU; a final
LayerNorm (our choice, as in the original ViT and HF's ViTForImageClassification); a
linear classifier on the CLS token. HF's ViT is the same module with ``patch_bias=True``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .base import Task
from .layers import Encoder, EncoderConfig, LayerNorm, dense
from .weights import NameTable, Rule, flatten

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


def vit_inputs(config: ViTConfig) -> tuple[jax.Array, ...]:
    """Dummy patches (1, N, P) that run every parameter of a :class:`ViTModule`."""
    return (jnp.zeros((1, config.num_patches, config.patch_dim), jnp.float32),)


def vit_init(config: ViTConfig, task: Task) -> Any:
    """``init(key) -> params`` of a ViTModule of this config and task."""
    module = ViTModule(config, task)
    dummy = vit_inputs(config)

    def init(key: jax.Array) -> Any:
        return module.init(key, *dummy, method=ViTModule.init_all)["params"]

    return init


def own_names(config: ViTConfig) -> NameTable:
    """Our saved names are the flax paths with '.' for '/': one identity rule per parameter
    of the classification model (the superset of every task)."""
    shapes = jax.eval_shape(vit_init(config, "classification"), jax.random.key(0))
    rules = tuple(Rule(p.replace("/", "."), p) for p in flatten(shapes))
    return NameTable(rules=rules, heads=frozenset({"classifier", "distillation_classifier"}))
