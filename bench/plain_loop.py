"""The baseline for bench_quickstart.py: the quickstart's 48 trials as a competent user's plain
PyTorch loop, untracked (data in tensors, batches by indexing, one thread, validation each epoch).

The same trials as studies/quickstart.yaml: MNIST-1D (5000 samples, 4000/1000), MLP 40-100-100-10,
batch 100, 10 epochs, SGD (momentum 0.9) at 8 log-spaced LRs in [1e-3, 3] and Adam at 1e-4..1e-1,
constant and cosine with 5% warmup, seeds 0 and 1. Prints the best final val acc.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from mnist1d.data import get_dataset_args, make_dataset
from torch import nn
from torch.nn import functional as F


def main() -> None:
    torch.set_num_threads(1)
    args = get_dataset_args(as_dict=False)
    args.num_samples, args.train_split, args.seed = 5000, 0.8, 42
    d = make_dataset(args)
    xtr, ytr = torch.tensor(d["x"], dtype=torch.float32), torch.tensor(d["y"])
    xte, yte = torch.tensor(d["x_test"], dtype=torch.float32), torch.tensor(d["y_test"])
    mu, sd = xtr.mean(), xtr.std()
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    epochs, bs = 10, 100
    sgd = [("sgd", lr) for lr in np.logspace(math.log10(1e-3), math.log10(3.0), 8)]
    configs = sgd + [("adam", lr) for lr in (1e-4, 1e-3, 1e-2, 1e-1)]
    best = 0.0
    for name, lr in configs:
        for sched in ("constant", "cosine"):
            for seed in (0, 1):
                best = max(best, _trial(name, lr, sched, seed, xtr, ytr, xte, yte, epochs, bs))
    print(f"plain loop: best final val acc {best:.3f}")


def _trial(name, lr, sched, seed, xtr, ytr, xte, yte, epochs, bs) -> float:
    spe = len(xtr) // bs
    total = epochs * spe
    torch.manual_seed(seed)
    m = nn.Sequential(
        nn.Linear(40, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10)
    )
    opt = (
        torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9)
        if name == "sgd"
        else torch.optim.Adam(m.parameters(), lr=lr)
    )
    warm = max(1, int(0.05 * total))

    def factor(s: int) -> float:
        if sched == "constant":
            return 1.0
        return min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))

    schedule = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    g = torch.Generator().manual_seed(seed)
    acc = 0.0
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(spe):
            idx = perm[i * bs : (i + 1) * bs]
            loss = F.cross_entropy(m(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
        with torch.no_grad():
            acc = (m(xte).argmax(1) == yte).float().mean().item()
    return acc if math.isfinite(acc) else 0.0


if __name__ == "__main__":
    main()
