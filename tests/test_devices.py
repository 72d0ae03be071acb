"""A batch sharded over devices: the same results as one device (4 CPU devices, forced)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import jax, jax.numpy as jnp, numpy as np
    import manifold_jax as mj
    from tests.toy_models import toy_classifier

    assert len(jax.devices()) == 4, jax.devices()
    f, _ = toy_classifier(jax.random.PRNGKey(3), n=5, d=8, k=3)
    xs = jax.random.normal(jax.random.PRNGKey(4), (6, 5, 8))   # 6 items on 4 devices: padded to 8
    masks = jnp.ones((6, 5), bool)
    y0 = np.asarray(jax.vmap(f)(xs, masks))
    runs = {
        "paper": dict(algorithm="simexp", eta=5.0),
        # fixed steps: an adaptive controller's accept / reject is a threshold decision, which
        # rounding differences between partitionings can tip (after which the paths part)
        # and a tolerance well above float32 rounding, so that "converged" is not a coin toss either
        "continuation": dict(algorithm="simec", eta=0.2, step_rule="fixed", corrector="newton", tol=1e-4,
                             direction="coherent"),
        "targeted": dict(algorithm="simexp", eta=0.1, step_rule="fixed", stop="flip",
                         target=[int(np.argsort(y)[0]) for y in y0]),
    }
    for name, options in runs.items():
        one = mj.explore(f, xs, key=jax.random.PRNGKey(0), steps=16, args=(masks,), save_every=4, **options)
        many = mj.explore(f, xs, key=jax.random.PRNGKey(0), steps=16, args=(masks,), save_every=4, devices="all",
                          **options)
        assert many.x.shape == one.x.shape, (name, many.x.shape, one.x.shape)
        # the same per-item arithmetic, partitioned: equal to float32 rounding as it accumulates
        # over 16 steps (each ~1e-7 relative, amplified by the corrector's J^+ by the Gram's
        # condition, 10-100): 1e-4; a wrong partitioning (one item stepped from another's state)
        # moves points by O(eta) = 0.1-5
        np.testing.assert_allclose(many.x, one.x, rtol=0, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(many.y, one.y, rtol=0, atol=1e-4, err_msg=name)
        np.testing.assert_array_equal(many.status, one.status, err_msg=name)
        np.testing.assert_array_equal(many.iteration, one.iteration, err_msg=name)
        np.testing.assert_array_equal(np.asarray(many.final.stop_iteration), np.asarray(one.final.stop_iteration))
        print(name, "max abs difference", float(np.abs(many.x - one.x).max()))
''')


def test_a_batch_sharded_over_four_devices_equals_one_device() -> None:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", PYTHONPATH=str(ROOT),
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout)
    assert proc.stdout.count("max abs difference") == 3


def test_devices_argument_is_checked() -> None:
    import jax

    import manifold_jax as mj
    from tests.toy_models import linear_map

    f, _ = linear_map(jax.random.PRNGKey(0), 2, 3, 1)
    with pytest.raises(ValueError, match="devices='some' is not supported"):
        mj.simec(f, jax.numpy.ones((2, 3)), key=jax.random.PRNGKey(0), steps=2, devices="some")
    with pytest.raises(ValueError, match="between 1 and the"):
        mj.simec(f, jax.numpy.ones((2, 3)), key=jax.random.PRNGKey(0), steps=2, devices=99)
