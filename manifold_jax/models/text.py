"""Helpers shared by the text ports: the tokenizer stored beside a checkpoint."""

from __future__ import annotations

import os
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer_config.json")
"""Any of these beside the weights means the directory ships a tokenizer."""


def load_tokenizer(directory: str) -> Any:
    """The tokenizer stored beside the weights (``AutoTokenizer``), or None when the directory has none."""
    if not any(os.path.isfile(os.path.join(directory, n)) for n in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory)
