"""Wall time of an LR range test: MNIST-1D MLP (40-100-100-10), batch 100, 200 steps, CPU.

Times `lrstudy.find_lr` exactly as `find-lr` and `lr: auto` run it (SGD momentum 0.9, ramp 1e-7..10,
exponential), with the early stop off so every repeat does all 200 steps, beside a plain PyTorch
loop of the same 200 steps (the floor: forward, backward, step, .item()). Also times the logging of
the finished test into a fresh sqlite store (one run: params, ~600 metrics, the PNG figure).
One torch thread; n repeats after one warm-up, mean +- std.

Usage: python bench/bench_rangetest.py [--repeats 5] [--steps 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _fmt(xs: list[float], unit: str = "s") -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.3f} +- {sd:.3f} {unit}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=200)
    args = p.parse_args()

    import torch
    from torch.nn import functional as F

    from lrstudy import find_lr
    from lrstudy.train.data import load_dataset
    from lrstudy.train.models import build_model
    from lrstudy.train.module import TensorBatches
    from lrstudy.train.optim import build_optimizer

    torch.set_num_threads(1)
    data = load_dataset("mnist1d")

    def setup():
        torch.manual_seed(0)
        model = build_model("mlp", data.input_shape, data.num_classes)
        opt, _ = build_optimizer(model, "sgd", 1e-7, {"momentum": 0.9})
        return model, opt, TensorBatches(data.x_train, data.y_train, 100, 0)

    def ce(model, batch):
        return F.cross_entropy(model(batch[0]), batch[1])

    def plain() -> float:
        model, opt, batches = setup()
        it, t0 = iter(batches), time.perf_counter()
        for _ in range(args.steps):
            batch = next(it, None)
            if batch is None:
                it = iter(batches)
                batch = next(it)
            opt.zero_grad(set_to_none=True)
            loss = ce(model, batch)
            loss.backward()
            opt.step()
            loss.item()
        return time.perf_counter() - t0

    def range_test():
        model, opt, batches = setup()
        t0 = time.perf_counter()
        result = find_lr(model, batches, opt, steps=args.steps, stop_factor=None, loss_fn=ce)
        return time.perf_counter() - t0, result

    plain()
    range_test()  # warm-up
    floor, runs = [], []
    for _ in range(args.repeats):  # interleaved, so a busy neighbour slows both alike
        floor.append(plain())
        runs.append(range_test())
    rt = [t for t, _ in runs]
    result = runs[-1][1]

    from lrstudy.track.range_runs import log_range_test
    from lrstudy.track.store import experiment_id, open_client

    client = open_client(f"sqlite:///{tempfile.mkdtemp()}/mlflow.db")
    exp = experiment_id(client, "bench")
    t0 = time.perf_counter()
    log_range_test(
        client,
        exp,
        name="bench",
        study="bench",
        key=None,
        params={"optimizer": "sgd", "suggestion": result.recommended, "steps": args.steps},
        lrs=result.lrs,
        losses=result.losses,
        smoothed=result.smoothed,
        suggestions=result.suggestions,
        figure=result.figure(),
    )
    log_s = time.perf_counter() - t0

    n = args.steps
    print(f"LR range test, MNIST-1D MLP, batch 100, {n} steps, CPU, 1 thread, n={args.repeats}")
    print(f"  find_lr          {_fmt(rt)}  ({n / statistics.mean(rt):.0f} steps/s)")
    print(f"  plain loop       {_fmt(floor)}  ({n / statistics.mean(floor):.0f} steps/s)")
    print(
        f"  find_lr overhead {statistics.mean(rt) / statistics.mean(floor) - 1:+.0%} vs the plain loop"
    )
    print(f"  log to MLflow    {log_s:.2f} s (one run: params, {3 * n} metrics, PNG)")
    picks = ", ".join(f"{k} {v:.3g}" for k, v in result.suggestions.items() if v is not None)
    print(
        f"  suggestions (SGD momentum 0.9, no early stop): {picks}; recommended {result.recommended}"
    )


if __name__ == "__main__":
    main()
