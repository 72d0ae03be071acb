"""Projection of explored text embeddings onto verified real sentences (manifold_jax.text_projection).

A small random BertForSequenceClassification with MiniLM's real tokenizer (30,522 word pieces)
keeps compilation cheap while the vocabulary, the tokenizer round trip and the beam are real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_jax.models as mm
from manifold_jax.analysis import softmax
from manifold_jax.text_projection import Goal, ProjectionConfig, first_order_changes, project_sentence
from tests.models_helpers import save_random_bert

SENTENCE = "The striker scored a late goal in the final match."


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory = tmp_path_factory.mktemp("bert_projection")
    save_random_bert(Path(directory), "BertForSequenceClassification", num_labels=3)
    return mm.load(directory)


@pytest.fixture(scope="module")
def start(bert: Any) -> tuple[jax.Array, dict[str, np.ndarray], np.ndarray]:
    x0, ctx = bert.embed([SENTENCE])
    item = {k: np.asarray(v[0]) for k, v in ctx.items()}
    return x0[0], item, np.asarray(bert.forward(x0, ctx))[0]


def _recomputed(model: Any, text: str) -> np.ndarray:
    """The model's probabilities on ``text``, computed from scratch (tokenise, embed, forward)."""
    x, ctx = model.embed([text])
    return softmax(np.asarray(model.forward(x, ctx))[0])


def test_first_order_table_is_the_jacobian_times_the_embedding_change(bert: Any, start: Any) -> None:
    """c_i(w) against a forward-mode JVP of the head along (embedding of the sentence with w at
    position i) - x: the same linear map evaluated another way. Both are float32 sums over
    n * d = O(10^2 .. 10^3) terms of O(1) values: 1e-4 absolute on O(0.1 .. 1) entries."""
    x0, item, _ = start
    x = x0 + 0.05 * jax.random.normal(jax.random.PRNGKey(0), x0.shape)  # an explored point, off every sentence
    table = first_order_changes(bert, x[None], item)[0]
    vocab = bert.config.vocab_size
    assert table.shape == (x0.shape[0], vocab, 3)
    one = {k: jnp.asarray(v) for k, v in item.items()}
    jvp = jax.jit(lambda m, z, t: jax.jvp(lambda u: m.head(u, one), (z,), (t,))[1])
    for i, w in ((1, 2003), (3, 7592), (5, vocab - 1)):
        ids = item["input_ids"].copy()
        ids[i] = w
        e, _ = bert.embed_ids(ids[None], item["token_type_ids"][None], item["attention_mask"][None])
        tangent = jnp.zeros_like(x).at[i].set(e[0, i] - x[i])
        np.testing.assert_allclose(table[i, w], np.asarray(jvp(bert, x, tangent)), rtol=0, atol=1e-4)


def test_verified_sentences_have_the_probabilities_they_report(bert: Any, start: Any) -> None:
    """To the runner-up class, then away from the original: every found sentence is recomputed from
    its text. Same float32 computation up to padding (masked positions do not contribute), so the
    probabilities agree to 1e-5."""
    x0, item, logits = start
    original = int(np.argmax(logits))
    runner_up = int(np.argsort(logits)[-2])
    config = ProjectionConfig(max_changes=4)
    for goal in (Goal.to_class(runner_up), Goal.away_from(original)):
        found = project_sentence(bert, x0, item, goal, config)
        assert found.found, f"no sentence for {goal}"
        np.testing.assert_allclose(found.probs, _recomputed(bert, found.text), rtol=0, atol=1e-5)
        assert np.argmax(found.probs) != original
        if goal.kind == "class":
            assert np.argmax(found.probs) == runner_up
        # the decoded start of x0 is the sentence itself; the result differs exactly where it says
        np.testing.assert_array_equal(found.decoded_ids, item["input_ids"])
        differs = tuple(np.flatnonzero(found.ids != item["input_ids"]).tolist())
        assert differs == found.changes and 1 <= len(found.changes) <= config.max_changes
        assert not np.isin(found.changes, np.flatnonzero(~item["token_mask"])).any(), "a special token moved"
        assert found.verified > 1


def test_match_keeps_a_sentence_that_already_agrees_and_nothing_is_claimed_when_none_is_found(
    bert: Any, start: Any
) -> None:
    x0, item, logits = start
    same = project_sentence(bert, x0, item, Goal.match(softmax(logits)))
    assert same.found and same.changes == () and same.distance <= 1e-5
    np.testing.assert_allclose(same.probs, _recomputed(bert, SENTENCE), rtol=0, atol=1e-5)
    # no substitution allowed and a class the sentence is not in: not found, the decoded sentence reported as such
    other = int(np.argmin(logits))
    none = project_sentence(bert, x0, item, Goal.to_class(other), ProjectionConfig(max_changes=0))
    assert not none.found and none.changes == ()
    np.testing.assert_allclose(none.probs, _recomputed(bert, none.text), rtol=0, atol=1e-5)
    assert np.argmax(none.probs) != other


def test_goals_and_config_validate_themselves() -> None:
    with pytest.raises(ValueError, match="probs"):
        Goal("match")
    with pytest.raises(ValueError, match="target"):
        Goal.to_class(-1)
    with pytest.raises(ValueError, match="probability vector"):
        Goal.match([0.5, 0.7])
    with pytest.raises(ValueError, match="beam_width"):
        ProjectionConfig(beam_width=0)
    goal = Goal.match([0.2, 0.8])
    assert goal.accepts(np.array([0.0, 1.0])) and not goal.accepts(np.array([1.0, 0.0]))
    assert Goal.away_from(0).score(np.array([1.0, 3.0])) == pytest.approx(2.0)
