"""Helpers for the population tests (no tests here): trials, tiny data, and the solo reference.

`solo_fit` is `run_trial`'s own setup (seed, subset, model, batches, ReferenceModule, Trainer), with
a `precision` so that the reference can also run in float64 ("64-true" converts the module and
every batch, which run_trial cannot do).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from lrstudy.plan import Trial
from lrstudy.spec.optimizers import resolved_hparams
from lrstudy.train.data import Dataset
from lrstudy.train.models import build_model
from lrstudy.train.module import FullBatch, ReferenceModule, TensorBatches, prepare


def make_trial(**kw: Any) -> Trial:
    """A small MLP trial; keyword arguments override fields (hparams are given, not resolved)."""
    optimizer = kw.pop("optimizer", "sgd")
    hp = resolved_hparams(optimizer, kw.pop("hparams", {}))
    hp = {k: list(v) if isinstance(v, tuple) else v for k, v in hp.items()}  # as plan.py stores it
    base: dict[str, Any] = {
        "study": "pop",
        "optimizer": optimizer,
        "lr": 0.05,
        "hparams": hp,
        "layer_lr": None,
        "schedule": "constant",
        "schedule_args": {},
        "warmup": None,
        "batch_size": 16,
        "epochs": 2,
        "train_fraction": 1.0,
        "seed": 0,
        "dataset": "tiny",
        "model": "mlp",
        "model_args": {"hidden": [8]},
        "data_args": {},
        "target": None,
        "divergence_factor": 10.0,
        "evaluate_noise": (),
        "accelerator": "cpu",
        "threads": 1,
        "swept": {},
    }
    base.update(kw)
    return Trial(**base)


def tiny_data(n_train: int = 64, n_test: int = 48, features: int = 6, classes: int = 3) -> Dataset:
    """Gaussian class clusters: learnable in a few steps, and fast."""
    gen = torch.Generator().manual_seed(1234)
    centers = torch.randn(classes, features, generator=gen) * 2

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % classes
        return centers[y] + torch.randn(n, features, generator=gen), y

    (xtr, ytr), (xte, yte) = split(n_train), split(n_test)
    return Dataset("tiny", xtr, ytr, xte, yte, classes, (features,))


def solo_fit(
    trial: Trial,
    data: Dataset,
    *,
    precision: str = "32-true",
    callbacks: list[L.Callback] | None = None,
) -> ReferenceModule:
    """Train `trial` alone exactly as run_trial does; returns the module (model and history)."""
    L.seed_everything(trial.seed, verbose=False)
    ds, _ = prepare(trial, data)
    model = build_model(trial.model, ds.input_shape, ds.num_classes, trial.model_args)
    batches = TensorBatches(ds.x_train, ds.y_train, trial.batch_size, trial.seed)
    module = ReferenceModule(model, trial, trial.lr, batches)
    trainer = L.Trainer(
        max_epochs=trial.epochs,
        accelerator="cpu",
        devices=1,
        precision=precision,
        logger=False,
        callbacks=callbacks or [],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
    )
    trainer.fit(module, train_dataloaders=batches, val_dataloaders=FullBatch(ds.x_test, ds.y_test))
    return module


def rel_err(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Norm-wise relative difference of two sets of weights (all tensors as one vector)."""
    va = torch.cat([a[k].detach().double().flatten() for k in sorted(b)])
    vb = torch.cat([b[k].detach().double().flatten() for k in sorted(b)])
    return float((va - vb).norm() / vb.norm())


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in module.named_parameters()}


class LRRecorder(L.Callback):
    """Records every param group's LR at each optimizer step, as the step uses it."""

    def __init__(self) -> None:
        self.lrs: list[list[float]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.lrs.append([float(g["lr"]) for g in optimizer.param_groups])
