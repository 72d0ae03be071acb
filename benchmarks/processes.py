"""Throughput of a batch of explorations against the number of processes and the batch size.

Each cell starts N processes on the loopback address (JAX's distributed runtime, gloo
collectives, one CPU device each), shards a batch of B MNIST digits over them and explores
it with SiMExp on the shipped ViT (the study's default settings, the q3 patches): a first
run compiles, a second, timed run of ``--steps`` iterations gives the throughput in
exploration steps per second (items x iterations / seconds, every process's items
together). N = 1 is the same code without the runtime.

    python benchmarks/processes.py --out benchmarks/results --processes 1 2 --batch 4 16
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def child(batch: int, steps: int) -> None:
    """One process of a cell; process 0 prints the timing as a JSON line."""
    import jax

    processes = int(os.environ["MJ_PROCESSES"])
    if processes > 1:
        jax.distributed.initialize(os.environ["MJ_COORDINATOR"], processes, int(os.environ["MJ_PROCESS_ID"]))
    import manifold_jax as mj
    from manifold_jax.study import MnistImage, StudySpec, prepare

    spec = StudySpec(model="mnist-vit", inputs=tuple(MnistImage(i) for i in range(batch)), steps=steps,
                     runs=("simexp",), select="q3", baseline=False,
                     options={"save_every": steps, "chunk_size": steps})
    p = prepare(spec)
    devices = jax.devices() if processes > 1 else None

    def run() -> Any:
        return mj.simexp(p.model.head, p.x0, key=jax.random.PRNGKey(0), steps=steps, args=(p.ctx,), select=p.select,
                         bounds=p.box, devices=devices, save_every=steps, chunk_size=steps)

    start = time.perf_counter()
    run()
    compiled = time.perf_counter() - start
    start = time.perf_counter()
    traj = run()
    seconds = time.perf_counter() - start
    if jax.process_index() == 0:
        assert traj.x.shape[0] == batch
        print(json.dumps({"processes": processes, "batch": batch, "steps": steps, "seconds": seconds,
                          "first_run_seconds": compiled, "steps_per_second": batch * steps / seconds,
                          "tokens": int(p.select.sum() // batch)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for processes.json and processes.md")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.batch[0], args.steps)
        return
    from tests.multiprocess import failures, launch

    rows = []
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "mj-processes-bench"
    for batch in args.batch:
        for n in args.processes:
            command = [sys.executable, __file__, "--child", "--out", str(args.out), "--batch", str(batch),
                       "--steps", str(args.steps)]
            done = launch(command, n, cwd=ROOT, logs=work / f"b{batch}-n{n}", timeout=1800)
            if any(f.returncode != 0 for f in done):
                raise SystemExit(failures(done))
            line = next(x for x in done[0].log.splitlines() if x.startswith("{"))
            rows.append(json.loads(line))
            print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    from manifold_jax import atomic

    atomic.write_json(args.out / "processes.json", rows)
    atomic.write_text(args.out / "processes.md", _table(rows))
    print(_table(rows))


def _table(rows: list[dict[str, Any]]) -> str:
    base = {r["batch"]: r["steps_per_second"] for r in rows if r["processes"] == 1}
    lines = ["| batch | processes | timed run s | exploration steps / s | vs 1 process | first run (compile) s |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = r["steps_per_second"] / base[r["batch"]] if r["batch"] in base else float("nan")
        lines.append(f"| {r['batch']} | {r['processes']} | {r['seconds']:.2f} | {r['steps_per_second']:.2f} | "
                     f"{ratio:.2f}x | {r['first_run_seconds']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
