"""Real sentences near an explored text embedding, verified by the model (docs/method.md section 8).

An explored point x (n, d) of a text model is a point of embedding space that no token
sequence need reach; its nearest-token decoding (Algorithm 3) is a real sentence, but the
model may score it quite differently. This module searches, around that decoded sentence,
for a real token sequence whose *verified* prediction does what the exploration says:

* **Ranking by the metric.** At x, one Jacobian J = dy/dx (k, n, d) ranks every candidate
  substitution of word piece w at explored position i by its first-order output change
  ``c_i(w) = J_i (e_i(w) - x_i)`` (k,), where e_i(w) is the embedding-module output of w at
  position i: one matrix product of J with the embedding table, in vocabulary chunks. For a
  sentence s with verified output y(s), substituting w at i is predicted to give
  ``y(s) + c_i(w) - c_i(s_i)``.
* **A beam over positions.** Single substitutions rarely flip a confident sentence, so a
  small beam of sentences grows one substitution per round (up to ``max_changes``
  positions): each kept sentence proposes its best-ranked substitutions, every proposal is
  re-predicted as a real token sequence, and the best verified ones are kept.
* **Only verified sentences.** The sentence returned is detokenised into text, tokenised
  again and re-predicted; its reported probabilities are that prediction. When no sentence
  meets the goal, :attr:`ProjectedSentence.found` is False and nothing is claimed.

Goals (:class:`Goal`): ``match`` (the class the model gives the explored point, ranked by the
Wasserstein-1 distance to its probabilities: SiMEC points and the interpretation agreement),
``to_class`` (a chosen class: targeted SiMExp) and ``away_from`` (any class but the original:
SiMExp). Wasserstein-1 between class distributions uses the 0/1 ground distance (classes are
unordered), i.e. the total variation (see :func:`manifold_jax.analysis.wasserstein1_01`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from manifold_jax._xla import jit
from manifold_jax.analysis import softmax
from manifold_jax.interpret import predict
from manifold_jax.models.base import Context

__all__ = [
    "Goal",
    "ProjectedSentence",
    "ProjectionConfig",
    "changed_words",
    "first_order_changes",
    "project_points",
    "project_sentence",
]

GOAL_KINDS: tuple[str, ...] = ("match", "class", "away")

FROZEN_CONTEXT = ("topk", "mask_position")
"""Context entries fixed at x0 (the MLM head's frozen top-k tokens) that a re-embedded
sentence must keep rather than recompute."""

_VOCAB_CHUNK = 1024
"""Vocabulary entries per chunk of the first-order table."""

_POINT_GROUP = 4
"""Explored points per compiled call of the first-order table (any number of points, one program)."""


# --------------------------------------------------------------------------- goals


@dataclass(frozen=True)
class Goal:
    """What a projected sentence must do, as a function of its logits (..., k).

    kind "match": reach the arg-max of ``probs`` (the model's output at the explored point),
    scored by minus the Wasserstein-1 distance to ``probs``; done once that distance is at
    most ``tolerance``. "class": reach class ``target``, scored by the logit margin
    ``y_c - max_{j != c} y_j``. "away": leave class ``target``, scored by
    ``max_{j != c} y_j - y_c``. Build with :meth:`match`, :meth:`to_class`, :meth:`away_from`.
    """

    kind: Literal["match", "class", "away"]
    target: int | None = None
    probs: tuple[float, ...] | None = None
    tolerance: float = 0.05

    def __post_init__(self) -> None:
        if self.kind not in GOAL_KINDS:
            raise ValueError(f"Goal kind={self.kind!r}: expected one of {', '.join(GOAL_KINDS)}")
        if self.kind == "match":
            if self.probs is None or len(self.probs) < 2:
                raise ValueError("Goal kind='match' needs probs: the class distribution (k >= 2) to match")
            p = np.asarray(self.probs, np.float64)
            if not np.all(np.isfinite(p)) or np.any(p < 0) or abs(p.sum() - 1) > 1e-4:
                raise ValueError("Goal probs must be a probability vector (non-negative, summing to 1)")
            object.__setattr__(self, "probs", tuple(float(v) for v in p))
        elif not isinstance(self.target, (int, np.integer)) or isinstance(self.target, bool) or self.target < 0:
            raise ValueError(f"Goal kind={self.kind!r} needs target: a class index >= 0, got {self.target!r}")
        else:
            object.__setattr__(self, "target", int(self.target))
        if not (isinstance(self.tolerance, (int, float)) and 0 <= self.tolerance <= 1):
            raise ValueError(f"Goal tolerance must lie in [0, 1], got {self.tolerance!r}")

    @classmethod
    def match(cls, probs: Any, tolerance: float = 0.05) -> Goal:
        """The class the model gives the explored point (``probs``: its distribution (k,))."""
        return cls("match", probs=tuple(np.asarray(probs, np.float64).tolist()), tolerance=tolerance)

    @classmethod
    def to_class(cls, target: int) -> Goal:
        """Class ``target`` (targeted SiMExp, a counterfactual)."""
        return cls("class", target=target)

    @classmethod
    def away_from(cls, original: int) -> Goal:
        """Any class but ``original`` (SiMExp)."""
        return cls("away", target=original)

    def _check(self, k: int) -> None:
        if self.kind == "match" and len(self.probs or ()) != k:
            raise ValueError(f"Goal probs has {len(self.probs or ())} classes, the model {k}")
        if self.kind != "match" and not (self.target or 0) < k:
            raise ValueError(f"Goal target {self.target} is not a class of a model with {k} outputs")

    def distance(self, logits: np.ndarray) -> np.ndarray:
        """Wasserstein-1 (0/1 ground distance) from softmax(logits) to ``probs`` (match only), (...)."""
        return 0.5 * np.abs(softmax(logits) - np.asarray(self.probs)).sum(-1)

    def score(self, logits: np.ndarray) -> np.ndarray:
        """Higher is better, (...)."""
        y = np.asarray(logits, np.float64)
        if self.kind == "match":
            return -self.distance(y)
        c = int(self.target)  # type: ignore[arg-type]
        others = np.delete(y, c, axis=-1).max(-1)
        return y[..., c] - others if self.kind == "class" else others - y[..., c]

    def accepts(self, logits: np.ndarray) -> np.ndarray:
        """Whether a sentence with these logits may be reported for this goal, (...) bool."""
        pred = np.argmax(logits, axis=-1)
        if self.kind == "match":
            return pred == int(np.argmax(np.asarray(self.probs)))
        return pred == self.target if self.kind == "class" else pred != self.target

    def done(self, logits: np.ndarray) -> np.ndarray:
        """Whether the search may stop at a sentence with these logits, (...) bool."""
        ok = self.accepts(logits)
        return ok & (self.distance(logits) <= self.tolerance) if self.kind == "match" else ok


# --------------------------------------------------------------------------- configuration and result


@dataclass(frozen=True)
class ProjectionConfig:
    """The search's sizes, validated when built.

    beam_width: sentences kept per round. candidates: substitutions each kept sentence
    proposes per round (all re-predicted). per_position: best-ranked substitutions
    considered per position before the overall cut. max_changes: rounds, i.e. positions
    changed beyond the decoded sentence. vocabulary: "words" (no special or unused
    tokens) or "all". subwords: allow "##" continuation pieces as substitutes (off: a
    substituted piece then always detokenises into a word of its own). texts_checked:
    best accepted sentences tried at the text level, in order.
    """

    beam_width: int = 3
    candidates: int = 8
    per_position: int = 4
    max_changes: int = 4
    vocabulary: Literal["words", "all"] = "words"
    subwords: bool = False
    texts_checked: int = 4

    def __post_init__(self) -> None:
        for name in ("beam_width", "candidates", "per_position", "texts_checked"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.max_changes, int) or isinstance(self.max_changes, bool) or self.max_changes < 0:
            raise ValueError(f"max_changes must be a non-negative integer, got {self.max_changes!r}")
        if self.vocabulary not in ("words", "all"):
            raise ValueError(f"vocabulary={self.vocabulary!r}: use 'words' or 'all'")


@dataclass(frozen=True)
class ProjectedSentence:
    """A real sentence for one explored point, and what the model says about it.

    found: a sentence meeting the goal was verified (else the fields describe the decoded
    sentence, and nothing is claimed). ids (n,): its token ids, same layout as the
    original; text: the detokenised sentence; logits (k,): the model's output on ``text``
    tokenised again (the verified figure). decoded_ids / decoded_logits: the nearest-token
    decoding of the point (Algorithm 3) and its own re-prediction. changes: positions
    where ``ids`` differs from the decoded sentence. verified: token sequences re-predicted.
    """

    found: bool
    ids: np.ndarray
    text: str
    logits: np.ndarray
    decoded_ids: np.ndarray
    decoded_logits: np.ndarray
    changes: tuple[int, ...]
    goal: Goal
    verified: int = 0
    distance: float = field(default=float("nan"))

    @property
    def probs(self) -> np.ndarray:
        """softmax(logits): the verified class probabilities (k,)."""
        return softmax(self.logits)

    @property
    def decoded_probs(self) -> np.ndarray:
        return softmax(self.decoded_logits)


# --------------------------------------------------------------------------- the first-order table


def _item(ctx: Context, b: int | None) -> dict[str, jax.Array]:
    return {k: jnp.asarray(v if b is None else v[b]) for k, v in ctx.items()}


@jit(static_argnames=("n_vocab", "chunk"))
def _table(model: Any, points: jax.Array, ctx: Context, types: jax.Array, *, n_vocab: int, chunk: int) -> jax.Array:
    jac = jax.vmap(jax.jacrev(model.head), (0, None))(points, ctx)  # (S, k, n, d)
    base = jnp.einsum("sknd,snd->snk", jac, points, precision=jax.lax.Precision.HIGHEST)
    n = points.shape[1]

    def step(_: None, start: jax.Array) -> tuple[None, jax.Array]:
        ids = jnp.minimum(start + jnp.arange(chunk, dtype=jnp.int32), n_vocab - 1)
        cand = model.token_embeddings(ids, n)  # (T, C, n, d)
        cand = cand[types, :, jnp.arange(n)]  # (n, C, d): each position under its own token type
        return None, jnp.einsum("sknd,ncd->snck", jac, cand, precision=jax.lax.Precision.HIGHEST)

    starts = jnp.arange(math.ceil(n_vocab / chunk), dtype=jnp.int32) * chunk
    _, out = jax.lax.scan(step, None, starts)  # (chunks, S, n, C, k)
    table = jnp.moveaxis(out, 0, 2).reshape(points.shape[0], n, -1, out.shape[-1])[:, :, :n_vocab]
    return table - base[:, :, None, :]


def first_order_changes(
    model: Any, points: Any, ctx: Context, chunk: int = _VOCAB_CHUNK, group: int = _POINT_GROUP
) -> np.ndarray:
    """c_i(w) = J_i(x) (e_i(w) - x_i) for every point, position and vocabulary entry: (S, n, V, k).

    ``points`` (S, n, d): explored points of ONE item, ``ctx`` that item's context
    (unbatched). J is the model's Jacobian at each point (one per point), e_i(w) the
    embedding of word piece w at position i with the item's token type there. Points go
    through one compiled program in groups of ``group`` (the last one padded)."""
    pts = np.asarray(points)
    if pts.ndim != 3:
        raise ValueError(f"points must be (S, n, d) for one item, got shape {pts.shape}")
    one = _item(ctx, None)
    vocab = int(model.vocabulary_mask("all").shape[0])
    s = pts.shape[0]
    padded = np.concatenate([pts, np.repeat(pts[:1], (-s) % group, 0)])
    parts = [np.asarray(_table(model, jnp.asarray(padded[i : i + group]), one, one["token_type_ids"],
                               n_vocab=vocab, chunk=chunk)) for i in range(0, padded.shape[0], group)]
    return np.concatenate(parts)[:s]


# --------------------------------------------------------------------------- verification


def _frozen(ctx: dict[str, jax.Array], rows: int) -> dict[str, jax.Array]:
    return {k: jnp.repeat(ctx[k][None], rows, 0) for k in FROZEN_CONTEXT if k in ctx}


def verify_ids(model: Any, ids: np.ndarray, ctx: Context, batch: int | None = None) -> np.ndarray:
    """The model's outputs (B, k) on token sequences ``ids`` (B, n) laid out like the item of
    ``ctx`` (unbatched: same types, attention mask and explorable positions; MLM top-k kept).
    Rows are padded to a multiple of ``batch`` so that repeated calls reuse one program."""
    one = _item(ctx, None)
    rows = np.asarray(ids, np.int32)
    b = rows.shape[0]
    size = batch or b
    padded = np.concatenate([rows, np.repeat(rows[:1], (-b) % size, 0)]) if b % size else rows
    out = []
    for start in range(0, padded.shape[0], size):
        part = padded[start : start + size]
        types, att, explorable = (np.repeat(np.asarray(one[k])[None], part.shape[0], 0)
                                  for k in ("token_type_ids", "attention_mask", "token_mask"))
        x, c = model.embed_ids(part, types, att, explorable)
        c = {**c, **_frozen(one, part.shape[0])}
        out.append(predict(model, x, c))
    return np.concatenate(out)[:b]


def verify_texts(model: Any, texts: list[str], ctx: Context, batch: int | None = None) -> np.ndarray:
    """The model's outputs (B, k) on sentences as text, tokenised again (MLM top-k kept). The list
    is padded to ``batch`` sentences so that the program of :func:`verify_ids` is reused."""
    b = len(texts)
    if batch is not None and b < batch:
        texts = [*texts, *[texts[0]] * (batch - b)]
    one = _item(ctx, None)
    longest = max(len(model.tokenizer(t)["input_ids"]) for t in texts)
    # padded to the item's own length when they fit (the program the search already compiled for the
    # layout), else to a multiple of 8: a few padded lengths, so a few compiled programs
    n = int(np.asarray(one["attention_mask"]).shape[0])
    length = n if longest <= n else -(-longest // 8) * 8
    x, c = model.embed(list(texts), max_length=length)
    c = {**c, **_frozen(one, len(texts))}
    return predict(model, x, c)[:b]


# --------------------------------------------------------------------------- the search


def _allowed(model: Any, config: ProjectionConfig) -> np.ndarray:
    allowed = np.asarray(model.vocabulary_mask(config.vocabulary)).copy()
    if not config.subwords:
        tokens = model.tokenizer.convert_ids_to_tokens(list(range(allowed.size)))
        allowed &= ~np.array([t.startswith("##") for t in tokens])
    return allowed


def _text(model: Any, ids: np.ndarray, ctx: dict[str, jax.Array]) -> str:
    return model.detokenize(np.asarray(ids)[np.asarray(ctx["attention_mask"]).astype(bool)][None])[0]


def project_sentence(
    model: Any,
    x: Any,
    ctx: Context,
    goal: Goal,
    config: ProjectionConfig | None = None,
    *,
    positions: Any = None,
    table: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
    decoded: Any = None,
) -> ProjectedSentence:
    """A verified real sentence near the explored point x (n, d) of one item (``ctx`` unbatched).

    ``positions``: the explored positions (a bool mask (n,) or indices; default the item's
    ``token_mask``): only they change. ``table``: the point's first-order table (n, V, k)
    from :func:`first_order_changes` (computed when None). ``decoded``: the point's decoded
    token ids (n,) when already known (a study's interpretation), else ``model.decode(x)``.
    The search starts at that decoding and keeps a beam over positions (module docstring).
    """
    cfg = config or ProjectionConfig()
    one = _item(ctx, None)
    mask = _explored(one, positions)
    xa = jnp.asarray(x)
    if table is None:
        table = first_order_changes(model, xa[None], one)[0]
    if allowed is None:
        allowed = _allowed(model, cfg)
    if decoded is None:
        start = np.asarray(model.decode(xa[None], {k: v[None] for k, v in one.items()}))[0]
    else:
        start = np.asarray(decoded, np.int32).copy()
        if start.shape != mask.shape:
            raise ValueError(f"decoded must be token ids of shape {mask.shape}, got {start.shape}")
    width = cfg.beam_width * cfg.candidates
    y_start = verify_ids(model, start[None], one, batch=width)[0]
    goal._check(y_start.shape[-1])
    pool: Pool = {tuple(start.tolist()): (y_start, ())}
    verified = _beam_search(model, one, start, pool, _Search(table, np.flatnonzero(mask), allowed, goal, cfg))
    decoded_record = dict(decoded_ids=start, decoded_logits=y_start, goal=goal, verified=verified)
    # best first: done, then fewest changes, then score
    ranked = sorted(
        ((key, y, changed) for key, (y, changed) in pool.items() if goal.accepts(y)),
        key=lambda t: (not bool(goal.done(t[1])), len(t[2]), -float(goal.score(t[1]))),
    )[: cfg.texts_checked]
    if ranked:
        texts = [_text(model, np.asarray(key), one) for key, _, _ in ranked]
        ys = verify_texts(model, texts, one, batch=width)
        for (key, _, changed), text, y in zip(ranked, texts, ys, strict=True):
            if goal.accepts(y):
                dist = float(goal.distance(y)) if goal.kind == "match" else float("nan")
                return ProjectedSentence(True, np.asarray(key), text, y, changes=tuple(sorted(changed)),
                                         distance=dist, **decoded_record)
    text = _text(model, start, one)
    y_text = verify_texts(model, [text], one, batch=width)[0]
    dist = float(goal.distance(y_text)) if goal.kind == "match" else float("nan")
    return ProjectedSentence(False, start, text, y_text, changes=(), distance=dist, **decoded_record)


Pool = dict[tuple[int, ...], tuple[np.ndarray, tuple[int, ...]]]  # ids -> (verified logits (k,), positions changed)


@dataclass(frozen=True)
class _Search:
    """What the search reads: first-order table (n, V, k), explored positions (m,), allowed words (V,)."""

    table: np.ndarray
    pos: np.ndarray
    allowed: np.ndarray
    goal: Goal
    cfg: ProjectionConfig


def _explored(one: Context, positions: Any) -> np.ndarray:
    """The positions that may change (n,) bool: the item's token mask, within ``positions`` when given."""
    mask = np.asarray(one["token_mask"]).astype(bool)
    if positions is not None:
        p = np.asarray(positions)
        chosen = np.zeros_like(mask)
        chosen[p if p.dtype != bool else np.flatnonzero(p)] = True
        mask &= chosen
    return mask


def _beam_search(model: Any, one: Context, start: np.ndarray, pool: Pool, search: _Search) -> int:
    """Grow ``pool`` by a beam over single-position changes until the goal is met; the sentences verified."""
    cfg, beam, verified = search.cfg, [start], 1
    for _ in range(cfg.max_changes if search.pos.size else 0):
        if any(search.goal.done(y) for y, _ in pool.values()):
            break
        proposals = _proposals(beam, pool, search)
        if not proposals:
            break
        ys = verify_ids(model, np.stack([p for p, _ in proposals]), one, batch=cfg.beam_width * cfg.candidates)
        verified += len(proposals)
        for (row, changed), y in zip(proposals, ys, strict=True):
            pool[tuple(row.tolist())] = (y, changed)
        order = np.argsort(-search.goal.score(ys), kind="stable")
        beam = [proposals[i][0] for i in order[: cfg.beam_width]]
    return verified


def _proposals(beam: list[np.ndarray], pool: Pool, search: _Search) -> list[tuple[np.ndarray, tuple[int, ...]]]:
    """The best unseen one-position changes of every beam sentence, by their first-order score."""
    pos, cfg = search.pos, search.cfg
    proposals: list[tuple[np.ndarray, tuple[int, ...]]] = []
    seen = set(pool)
    for s in beam:
        y_s, changed = pool[tuple(s.tolist())]
        rows = search.table[pos]  # (m, V, k)
        predicted = y_s + rows - rows[np.arange(pos.size), s[pos]][:, None, :]
        score = search.goal.score(predicted)  # (m, V)
        score[:, ~search.allowed] = -np.inf
        score[np.arange(pos.size), s[pos]] = -np.inf
        score[np.isin(pos, changed)] = -np.inf
        k_pos = min(cfg.per_position, score.shape[1])
        top = np.argpartition(-score, k_pos - 1, axis=1)[:, :k_pos]  # (m, per_position)
        flat = [(score[j, w], j, w) for j in range(pos.size) for w in top[j] if np.isfinite(score[j, w])]
        for _, j, w in sorted(flat, key=lambda t: -t[0])[: cfg.candidates]:
            new = s.copy()
            new[pos[j]] = w
            key = tuple(new.tolist())
            if key not in seen:
                seen.add(key)
                proposals.append((new, (*changed, int(pos[j]))))
    return proposals


def project_points(
    model: Any,
    points: Any,
    ctx: Context,
    goals: list[Goal],
    config: ProjectionConfig | None = None,
    *,
    positions: Any = None,
    decoded: Any = None,
    on_point: Callable[[], None] | None = None,
) -> list[ProjectedSentence]:
    """:func:`project_sentence` at several explored points (S, n, d) of ONE item, one goal each;
    the first-order tables of all points come from one compiled program. ``decoded``: the
    points' decoded token ids (S, n) when known (a study's interpretation). ``on_point()`` runs
    after each point's search (for a progress bar)."""
    pts = np.asarray(points)
    if pts.ndim != 3 or pts.shape[0] != len(goals):
        raise ValueError(f"points must be (S, n, d) with one goal per point, got {pts.shape} and {len(goals)} goals")
    cfg = config or ProjectionConfig()
    tables = first_order_changes(model, pts, ctx)
    allowed = _allowed(model, cfg)
    found = []
    for s in range(pts.shape[0]):
        found.append(project_sentence(model, pts[s], ctx, goals[s], cfg, positions=positions, table=tables[s],
                                      allowed=allowed, decoded=None if decoded is None else np.asarray(decoded)[s]))
        if on_point is not None:
            on_point()
    return found


def changed_words(model: Any, ids: Any, original_ids: Any, attention_mask: Any) -> list[tuple[str, bool]]:
    """The words of token ids (n,) and whether each differs from ``original_ids`` (n,).

    Special tokens and padding are dropped and "##" continuation pieces joined to their
    word (a word is changed when any of its pieces is)."""
    keep = np.asarray(attention_mask).astype(bool)
    tokens = model.tokenizer.convert_ids_to_tokens(np.asarray(ids)[keep].tolist())
    original = model.tokenizer.convert_ids_to_tokens(np.asarray(original_ids)[keep].tolist())
    special = set(model.tokenizer.all_special_tokens)
    words: list[tuple[str, bool]] = []
    for token, before in zip(tokens, original, strict=True):
        if before in special and token == before:
            continue
        changed = token != before
        if token.startswith("##") and words:
            words[-1] = (words[-1][0] + token[2:], words[-1][1] or changed)
        else:
            words.append((token, changed))
    return words
