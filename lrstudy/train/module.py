"""Train stage: one trial of a reference task with Lightning. Knows nothing of MLflow.

Tracking arrives as callbacks (the executor passes an `LRStudyCallback` bound to the trial's run).
Batches are slices of tensors already on the training device: per-sample `DataLoader` collate
costs more than the whole step of a small model (design.md: ~1.3 ms vs ~0.95 ms per step).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch

from lrstudy import names
from lrstudy.plan import Trial
from lrstudy.schedules.catalog import build_schedule, monitor_of, warmup_steps_from
from lrstudy.spec.optimizers import OPTIMIZERS
from lrstudy.train.data import Dataset, subset_train
from lrstudy.train.losses import is_classification, make_loss
from lrstudy.train.lrfree import ScheduleFreeSwitch, has_batch_norm
from lrstudy.train.models import build_model, layer_groups, named_groups
from lrstudy.train.optim import build_optimizer, make_scheduler

# Lightning announces devices and tips at INFO/WARNING for every Trainer; a study builds hundreds.
for _name in ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"):
    logging.getLogger(_name).setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*iterable.*length.*")


EPOCH_METRICS = (names.VAL_LOSS, names.VAL_ACC, names.TRAIN_LOSS_EPOCH, names.TRAIN_ACC)


class TensorBatches:
    """Reshuffled mini-batches drawn by indexing whole tensors (no per-sample collate).

    The permutation comes from a generator seeded by (seed, epoch), so a trial's batch order is
    reproducible and independent of whatever else consumed the global RNG. The last partial
    batch is dropped so every epoch has the same number of steps.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> None:
        self.x, self.y = x, y
        self.batch_size = min(batch_size, len(x))
        self.seed = seed
        self.epoch = 0

    def to(self, device: torch.device) -> TensorBatches:
        self.x, self.y = self.x.to(device), self.y.to(device)
        return self

    def __len__(self) -> int:
        return max(1, len(self.x) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        perm = torch.randperm(len(self.x), generator=gen).to(self.x.device)
        bs = self.batch_size
        for i in range(len(self)):
            idx = perm[i * bs : (i + 1) * bs]
            yield self.x[idx], self.y[idx]


class FullBatch:
    """The whole evaluation split as one batch (a plain list of tuples reads as many loaders)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield self.x, self.y


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return max(1, n_train // min(batch_size, n_train))


class ReferenceModule(L.LightningModule):
    """Cross-entropy classification of one reference model under a trial's optimizer/schedule."""

    def __init__(
        self, model: torch.nn.Module, trial: Trial, lr: float, batches: TensorBatches
    ) -> None:
        super().__init__()
        # Manual optimization: the same zero_grad/backward/step/scheduler-step as Lightning's
        # automatic loop, minus its closure machinery (measured ~10% less per step, same result).
        # optimizer.step() still runs through Lightning, so callbacks' on_before_optimizer_step fires.
        self.automatic_optimization = False
        self.model = model
        self.trial = trial
        self.peak_lr = lr
        self.batches = batches
        self.total_steps = len(batches) * trial.epochs
        self.schedule = build_schedule(
            trial.schedule,
            trial.schedule_args,
            total_steps=self.total_steps,
            steps_per_epoch=len(batches),
            warmup_steps=warmup_steps_from(trial.warmup, self.total_steps),
        )
        self.history: list[dict[str, float]] = []  # per epoch: step and the four epoch metrics
        self.group_names: list[str] = []
        self.loss_fn = make_loss(trial.loss)
        # Accuracy only for class labels (a user model may regress float targets).
        self.classify = is_classification(batches.y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_fit_start(self) -> None:
        self.batches.to(self.device)

    def on_train_epoch_start(self) -> None:
        # Device-side sums: no host sync per step.
        self._loss_sum = torch.zeros((), device=self.device)
        self._correct = torch.zeros((), device=self.device, dtype=torch.long)
        self._seen = 0

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        x, y = batch
        logits = self.model(x)
        loss = self.loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            self._loss_sum += loss.detach() * len(y)
            if self.classify:
                self._correct += (logits.argmax(-1) == y).sum()
            self._seen += len(y)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.model(x)
        loss = self.loss_fn(logits, y)
        nan = torch.full((), float("nan"), device=loss.device)
        acc = (logits.argmax(-1) == y).float().mean() if self.classify else nan
        train_loss = self._loss_sum / max(self._seen, 1)
        train_acc = self._correct.float() / max(self._seen, 1) if self.classify else nan
        # Logged here (end of the epoch's batches) so the tracking callback sees them in
        # callback_metrics at on_train_epoch_end, which runs before the module's own hook.
        for key, value in (
            (names.VAL_LOSS, loss),
            (names.VAL_ACC, acc),
            (names.TRAIN_LOSS_EPOCH, train_loss),
            (names.TRAIN_ACC, train_acc),
        ):
            if self.classify or key not in (names.VAL_ACC, names.TRAIN_ACC):
                self.log(key, value, on_step=False, on_epoch=True, batch_size=len(y))
        values = torch.stack([loss, acc, train_loss, train_acc]).tolist()
        row = dict(zip(EPOCH_METRICS, values), step=self.trainer.global_step)
        self.history.append(row)
        monitor = monitor_of(self.schedule)
        if monitor:  # plateau (with or without warmup): the cut applies from the next step
            self.lr_schedulers().observe(row.get(monitor, row[names.VAL_LOSS]))

    def configure_optimizers(self) -> dict[str, Any]:
        groups = named_groups(self.model, self.trial.param_groups) or (
            layer_groups(self.model) if self.trial.layer_lr else None
        )
        optimizer, self.group_names = build_optimizer(
            self.model,
            self.trial.optimizer,
            self.peak_lr,
            self.trial.hparams,
            self.trial.layer_lr,
            groups,
        )
        scheduler = make_scheduler(optimizer, self.schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def train_dataloader(self) -> TensorBatches:
        return self.batches


@dataclass
class TrialResult:
    """What a finished trial measured; the executor logs it."""

    outcome: str
    metrics: dict[str, float] = field(default_factory=dict)
    total_steps: int = 0
    steps_per_epoch: int = 0
    metric_value: float | None = None  # final value of the study's ranking metric, if logged
    last_epoch: dict[str, float] = field(default_factory=dict)  # the last epoch's metrics
    available: list[str] = field(default_factory=list)  # metrics a user's module logged


def prepare(trial: Trial, data: Dataset) -> tuple[Dataset, int]:
    """The trial's training data (a seeded subset for learning curves) and its steps per epoch."""
    ds = subset_train(data, trial.train_fraction, trial.seed) if trial.train_fraction < 1 else data
    return ds, steps_per_epoch(len(ds.x_train), trial.batch_size)


def run_trial(
    trial: Trial, data: Dataset, callbacks: list[L.Callback], lr: float | None = None
) -> TrialResult:
    """Train one trial to the end (or until a callback stops it) and measure it.

    Args:
        trial: resolved settings; `lr` overrides `trial.lr` (used for `lr: auto`).
        data: the loaded dataset (shared by all trials of a study).
        callbacks: tracking callbacks; one of them may stop training on divergence.
    """
    lr = trial.lr if lr is None else lr
    if lr is None:
        raise ValueError("trial has no learning rate (lr: auto must be resolved first)")
    torch.set_num_threads(trial.threads)
    L.seed_everything(trial.seed, verbose=False)
    ds, _ = prepare(trial, data)
    model = build_model(trial.model, ds.input_shape, ds.num_classes, trial.model_args)
    batches = TensorBatches(ds.x_train, ds.y_train, trial.batch_size, trial.seed)
    module = ReferenceModule(model, trial, lr, batches)
    callbacks = [*_schedule_free_batch_norm(trial, model, batches), *callbacks]
    trainer = L.Trainer(logger=False, callbacks=callbacks, **trainer_options(trial))
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=batches, val_dataloaders=FullBatch(ds.x_test, ds.y_test))
    seconds = time.perf_counter() - t0
    metrics = summarize(module.history, trial, seconds)
    metrics.update(_noise_accuracy(module, ds, trial))
    diverged = any(getattr(cb, "diverged_at", None) is not None for cb in callbacks)
    return TrialResult(
        outcome=names.OUTCOME_DIVERGED if diverged else names.OUTCOME_OK,
        metrics=metrics,
        total_steps=module.total_steps,
        steps_per_epoch=len(batches),
        last_epoch=dict(module.history[-1]) if module.history else {},
    )


# Batches BatchNorm statistics are recomputed on at a schedule-free eval point (the schedulefree
# README's advice: on the order of 50 training batches, forward only).
BN_BATCHES = 50


def _schedule_free_batch_norm(
    trial: Trial, model: torch.nn.Module, batches: TensorBatches
) -> list[L.Callback]:
    """For a schedule-free trial of a model with BatchNorm: a switch that recomputes its
    statistics on the averaged weights before each validation. (The train/eval switch itself is
    the tracking callback's.) The batches are the first training samples in order, so the
    trial's shuffling (seeded per epoch) is not disturbed."""
    if OPTIMIZERS[trial.optimizer].lr_free != "schedule_free" or not has_batch_norm(model):
        return []

    def inputs() -> Iterator[torch.Tensor]:
        bs = batches.batch_size
        for i in range(min(len(batches), BN_BATCHES)):
            yield batches.x[i * bs : (i + 1) * bs]

    return [ScheduleFreeSwitch(bn_inputs=inputs)]


def trainer_options(trial: Trial) -> dict[str, Any]:
    """A trial's Lightning Trainer, lean: no progress bar, checkpoints, summary or sanity check
    (a study builds hundreds of Trainers); deterministic on CPU (a rerun computes the same)."""
    accelerator = {"cuda": "gpu"}.get(trial.accelerator, trial.accelerator)
    return {
        "max_epochs": trial.epochs,
        "accelerator": accelerator,
        "devices": 1,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "deterministic": accelerator == "cpu" or None,
    }


def summarize(hist: list[dict[str, float]], trial: Trial, seconds: float) -> dict[str, float]:
    """A trial's final metrics from its per-epoch history (shared with the population engine)."""
    out = {names.TRAIN_SECONDS: seconds}
    if hist:
        accs = [row[names.VAL_ACC] for row in hist]
        out[names.FINAL_TRAIN_LOSS] = hist[-1][names.TRAIN_LOSS_EPOCH]
        if not all(math.isnan(a) for a in accs):  # no accuracy without class labels
            out[names.FINAL_VAL_ACC] = accs[-1]
            out[names.BEST_VAL_ACC] = max(
                (a for a in accs if math.isfinite(a)), default=float("nan")
            )
            out[names.FINAL_TRAIN_ACC] = hist[-1][names.TRAIN_ACC]
    target = trial.target
    if target:
        sign = 1 if target["mode"] == "max" else -1
        for row in hist:
            v = row.get(target["metric"], float("nan"))
            if math.isfinite(v) and sign * (v - target["value"]) >= 0:
                out[names.STEPS_TO_TARGET] = float(row["step"])
                break
    return out


@torch.no_grad()
def _noise_accuracy(module: ReferenceModule, ds: Dataset, trial: Trial) -> dict[str, float]:
    """Test accuracy under Gaussian input noise (std in units of the standardised input)."""
    if not trial.evaluate_noise:
        return {}
    model = module.model.eval()
    device = next(model.parameters()).device
    x, y = ds.x_test.to(device), ds.y_test.to(device)
    gen = torch.Generator(device=device).manual_seed(trial.seed)
    out = {}
    for sigma in trial.evaluate_noise:
        noisy = x + sigma * torch.randn(x.shape, generator=gen, device=device)
        acc = (model(noisy).argmax(1) == y).float().mean().item()
        out[f"{names.NOISE_ACC_PREFIX}{sigma:g}"] = acc
    return out
