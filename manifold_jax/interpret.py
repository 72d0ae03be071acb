"""Interpretation (Algorithm 3): explored embeddings back to inputs, and their predictions.

Every saved point of a trajectory is decoded by the model (an image through the pseudo-
inverse of the patch embedding, token ids through an MLM head or the nearest token),
the decoded input is embedded again and re-predicted. Comparing that prediction with the
one on the explored embedding says whether what was found is a real input the model
treats the same way, or only a point of embedding space no input reaches.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from manifold_jax._xla import jit
from manifold_jax.models.base import Context, ExplorableModel


@dataclass(frozen=True)
class Interpretation:
    """Decoded inputs and their re-predictions for B items at S saved points.

    inputs: images (B, S, H, W, C) in [0, 1] or token ids (B, S, n); logits: (B, S, k)
    the model's outputs on the re-embedded decoded inputs.
    """

    inputs: np.ndarray
    logits: np.ndarray


@jit
def _predict(model: Any, x: jax.Array, ctx: Context) -> jax.Array:
    return jax.vmap(model.head)(x, ctx)


def predict(model: ExplorableModel, x: Any, ctx: Context) -> np.ndarray:
    """The model's outputs (B, k) on embeddings x (B, n, d) with their context."""
    return np.asarray(_predict(model, jnp.asarray(x), ctx))


def reembed(model: ExplorableModel, decoded: Any, ctx: Context) -> jax.Array:
    """Embeddings (B, n, d) of decoded inputs, keeping the original token types and masks."""
    if model.modality == "image":
        return model.embed(jnp.asarray(decoded))[0]
    embed_ids = getattr(model, "embed_ids", None)
    if embed_ids is None:
        raise TypeError(f"{type(model).__name__} has no embed_ids: text models must embed token ids")
    x, _ = embed_ids(decoded, ctx["token_type_ids"], ctx["attention_mask"], ctx["token_mask"])
    return x


def _tile(ctx: Context, times: int) -> Context:
    """Each item's context repeated for ``times`` consecutive points: (B, ...) -> (B*times, ...)."""
    return {k: jnp.repeat(jnp.asarray(v), times, axis=0) for k, v in ctx.items()}


def interpret(model: ExplorableModel, points: Any, ctx: Context, chunk: int = 64, *, progress: bool = False,
              label: str = "decoding") -> Interpretation:
    """Decode and re-predict every saved point: points (B, S, n, d), ctx batched (B, ...).

    Points go through the model in chunks of ``chunk`` (item, point) pairs; ``progress`` shows a
    bar named ``label`` over the points.
    """
    points = np.asarray(points)
    if points.ndim != 4:
        raise ValueError(f"points must be (B, S, n, d), got shape {points.shape}")
    b, s = points.shape[:2]
    flat = points.reshape(b * s, *points.shape[2:])
    tiled = _tile(ctx, s)
    decoded, logits = [], []
    with tqdm(total=b * s, disable=not progress, unit="point", desc=label, leave=False) as bar:
        for start in range(0, b * s, chunk):
            part = slice(start, start + chunk)
            sub = {k: v[part] for k, v in tiled.items()}
            dec = np.asarray(model.decode(jnp.asarray(flat[part]), sub))
            decoded.append(dec)
            logits.append(predict(model, reembed(model, dec, sub), sub))
            bar.update(len(dec))
    inputs = np.concatenate(decoded)
    return Interpretation(
        inputs=inputs.reshape(b, s, *inputs.shape[1:]),
        logits=np.concatenate(logits).reshape(b, s, -1),
    )


def mark_changes(tokens: list[str], original: list[str], marker: str = "*") -> str:
    """Join tokens into text, wrapping every token that differs from the original as *tok*."""
    words = [f"{marker}{t}{marker}" if t != o else t for t, o in zip(tokens, original, strict=True)]
    text = " ".join(words).replace(" ##", "")
    return html.unescape(text)


def decoded_sentences(model: Any, ids: np.ndarray, original_ids: np.ndarray, attention_mask: np.ndarray) -> list[str]:
    """Decoded token ids (B, n) as sentences with the changed tokens marked (special tokens dropped)."""
    out = []
    for row, orig, att in zip(np.asarray(ids), np.asarray(original_ids), np.asarray(attention_mask), strict=True):
        keep = att.astype(bool)
        toks = model.tokenizer.convert_ids_to_tokens(row[keep].tolist())
        otoks = model.tokenizer.convert_ids_to_tokens(orig[keep].tolist())
        special = set(model.tokenizer.all_special_tokens)
        pairs = [(t, o) for t, o in zip(toks, otoks, strict=True) if o not in special]
        out.append(mark_changes([t for t, _ in pairs], [o for _, o in pairs]))
    return out
