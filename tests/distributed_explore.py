"""One process of the multi-process exploration test (tests/test_distributed.py): run after
``jax.distributed.initialize``, it explores a batch sharded over every process's devices,
gathered (written by process 0) and as this process's part (written by each)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.distributed.initialize(os.environ["MJ_COORDINATOR"], int(os.environ["MJ_PROCESSES"]),
                           int(os.environ["MJ_PROCESS_ID"]))

import manifold_jax as mj  # noqa: E402 - after the runtime is up
from tests.toy_models import toy_classifier  # noqa: E402

out = Path(sys.argv[1])
me = jax.process_index()
f, _ = toy_classifier(jax.random.PRNGKey(3), n=5, d=8, k=3)
xs = jax.random.normal(jax.random.PRNGKey(4), (6, 5, 8))  # 6 items: padded where the devices do not divide 6
masks = jnp.ones((6, 5), bool)
y0 = np.asarray(jax.vmap(f)(xs, masks))
RUNS = {
    "paper": dict(algorithm="simexp", eta=5.0),
    # fixed steps and a tolerance well above float32 rounding: no threshold decision that rounding
    # differences between partitionings could tip (see tests/test_devices.py)
    "corrected": dict(algorithm="simec", eta=0.2, step_rule="fixed", corrector="newton", tol=1e-4),
    "counterfactual": dict(algorithm="simexp", eta=0.1, step_rule="fixed", stop="flip",
                           target=[int(np.argsort(y)[0]) for y in y0]),
}
reference = sys.argv[2:] == ["--reference"]
for name, options in RUNS.items():
    common = dict(key=jax.random.PRNGKey(0), steps=16, args=(masks,), save_every=4, **options)
    if reference:  # one process, one device: what the others must equal
        np.savez(out / f"{name}-reference.npz", **mj.explore(f, xs, **common).to_arrays())
        continue
    whole = mj.explore(f, xs, devices=jax.devices(), **common)
    part = mj.explore(f, xs, devices=jax.devices(), gather=False, **common)
    items = mj.process_items(len(xs), jax.devices())
    np.savez(out / f"{name}-part{me}.npz", items=np.asarray(items), **part.to_arrays())
    if me == 0:
        np.savez(out / f"{name}-whole.npz", **whole.to_arrays())
print("process", me, "of", jax.process_count(), "done:", ", ".join(RUNS), flush=True)
