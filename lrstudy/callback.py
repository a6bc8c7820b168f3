"""`LRStudyCallback`: LR-study tracking for any LightningModule, and for lrstudy's own trials.

Per optimizer step it records the LR every param group actually used (read in
`on_before_optimizer_step`, i.e. after the scheduler set it and before the update), momentum or
beta1, weight decay, the step's loss and the global gradient norm. Per epoch it forwards the
epoch-level metrics the module logged itself. Values stay as tensors on the training device
and are copied to the host every `sync_every` steps (a per-step `.item()` would stall a GPU),
then handed to a `MetricSink` that writes off the training thread.

A divergence guard stops training cleanly on a non-finite loss or one above `divergence_factor`
x the first loss.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lrstudy import names
from lrstudy.track import runs as track_runs
from lrstudy.track.sink import MetricSink
from lrstudy.track.store import experiment_id, open_client, resolve_tracking_uri


class LRStudyCallback(Callback):
    """Track LR, momentum, loss and gradient norm of every optimizer step into MLflow.

    Args:
        study: study name (tag `lrstudy.study`; also the experiment name unless `experiment`).
        tracking_uri: MLflow tracking URI; default MLFLOW_TRACKING_URI, else sqlite:///mlflow.db.
        experiment: MLflow experiment for a run this callback creates.
        run_name: name of a run this callback creates (default: the module's class name).
        run_id: log into this existing run instead of creating one (lrstudy's own trials).
        client: an MlflowClient to use with `run_id`.
        divergence_factor: stop when loss > factor x first loss; None turns the guard off.
        sync_every: steps between device->host copies of the per-step scalars.

    When the Trainer has an `MLFlowLogger`, the callback logs into that logger's run.
    """

    def __init__(
        self,
        study: str | None = None,
        *,
        tracking_uri: str | None = None,
        experiment: str | None = None,
        run_name: str | None = None,
        run_id: str | None = None,
        client: Any = None,
        divergence_factor: float | None = 10.0,
        sync_every: int | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        if divergence_factor is not None and not divergence_factor > 1:
            raise ValueError(f"divergence_factor must be > 1 or None, got {divergence_factor!r}")
        if sync_every is not None and sync_every < 1:
            raise ValueError(f"sync_every must be >= 1, got {sync_every!r}")
        if run_id is not None and client is None:
            raise ValueError("run_id needs the client it belongs to")
        self.study = study
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.run_id = run_id
        self.client = client
        self.divergence_factor = divergence_factor
        self.sync_every = sync_every
        self.tags = dict(tags or {})
        self.diverged_at: int | None = None
        self.diverged_reason: str | None = None
        self.interrupted = False
        self.failed: BaseException | None = None
        self._owns_run = False
        self._sink: MetricSink | None = None
        self._reset_buffers()

    # --- run set-up ------------------------------------------------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or trainer.global_rank != 0:
            return
        if self.run_id is None:
            self._attach_or_create_run(trainer, pl_module)
        self._sink = MetricSink(self.client, self.run_id)
        self._reset_buffers()

    def _attach_or_create_run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning.pytorch.loggers import MLFlowLogger

        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                self.client, self.run_id = logger.experiment, logger.run_id
                if self.study:
                    track_runs.set_tags(self.client, self.run_id, {names.TAG_STUDY: self.study})
                return
        uri = resolve_tracking_uri(self.tracking_uri)
        self.client = open_client(uri)
        exp = experiment_id(self.client, self.experiment or self.study or "lrstudy")
        tags = {names.TAG_KIND: names.KIND_PLUGIN, names.TAG_OUTCOME: names.OUTCOME_RUNNING, **self.tags}
        if self.study:
            tags[names.TAG_STUDY] = self.study
        self.run_id = track_runs.start_run(
            self.client, exp, name=self.run_name or type(pl_module).__name__, tags=tags
        )
        self._owns_run = True

    def _reset_buffers(self) -> None:
        self._groups: dict[int, list[str]] = {}  # id(optimizer) -> metric suffix per group
        self._opt_steps: dict[int, int] = {}  # id(optimizer) -> optimizer steps taken
        self._scalars: list[tuple[str, float, int]] = []  # host-side values (LR, momentum, ...)
        self._loss: list[tuple[int, torch.Tensor]] = []
        self._gnorm: list[tuple[int, torch.Tensor]] = []
        self._first_loss: float | None = None
        self._last_step = -1
        self._epoch_t0 = 0.0

    # --- per step ----------------------------------------------------------------------------------

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._sink is None:
            return
        group_names = _group_names(trainer.optimizers)
        for opt, gnames in zip(trainer.optimizers, group_names):
            self._groups[id(opt)] = gnames
        flat = [g for gs in group_names for g in gs]
        track_runs.set_tags(self.client, self.run_id, {names.TAG_PARAM_GROUPS: ",".join(flat)})
        if self.sync_every is None:
            self.sync_every = 8 if pl_module.device.type == "cpu" else 64

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self._sink is None:
            return
        opt = getattr(optimizer, "optimizer", optimizer)  # unwrap LightningOptimizer
        key = id(opt)
        if key not in self._groups:  # an optimizer created after fit start
            self._groups[key] = _group_names([opt])[0]
        step = self._opt_steps.get(key, 0)
        self._opt_steps[key] = step + 1
        if key == next(iter(self._groups)):
            self._last_step = step
        gnames = self._groups[key]
        n = sum(len(g) for g in self._groups.values())
        grads = []
        for gname, group in zip(gnames, opt.param_groups):
            self._scalars.append((names.group_metric(names.LR, gname, n), float(group["lr"]), step))
            mom = group.get("momentum", group.get("betas", (None,))[0])
            if mom is not None:
                self._scalars.append((names.group_metric(names.MOMENTUM, gname, n), float(mom), step))
            if group.get("weight_decay"):
                wd = float(group["weight_decay"])
                self._scalars.append((names.group_metric(names.WEIGHT_DECAY, gname, n), wd, step))
            grads.extend(p.grad for p in group["params"] if p.grad is not None)
        if grads:
            self._gnorm.append((step, torch.nn.utils.get_total_norm(grads).detach()))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._sink is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and self._last_step >= 0:
            self._loss.append((self._last_step, loss.detach()))
        if len(self._loss) >= (self.sync_every or 1) or len(self._gnorm) >= 4 * (self.sync_every or 1):
            self._drain(trainer)

    def _drain(self, trainer: L.Trainer | None = None) -> None:
        """Copy buffered device scalars to the host, check divergence, hand all to the sink."""
        items = self._scalars
        self._scalars = []
        if self._gnorm:
            values = torch.stack([v.float() for _, v in self._gnorm]).tolist()
            items += [(names.GRAD_NORM, v, s) for (s, _), v in zip(self._gnorm, values)]
            self._gnorm = []
        if self._loss:
            values = torch.stack([v.float().reshape(()) for _, v in self._loss]).tolist()
            losses = _mean_per_step([(s, v) for (s, _), v in zip(self._loss, values)])
            self._loss = []
            items += [(names.TRAIN_LOSS, v, s) for s, v in losses]
            self._check_divergence(losses, trainer)
        if items and self._sink is not None:
            self._sink.log_many(items)

    def _check_divergence(self, losses: list[tuple[int, float]], trainer: L.Trainer | None) -> None:
        if self.divergence_factor is None or self.diverged_at is not None:
            return
        for step, v in losses:
            if self._first_loss is None and math.isfinite(v):
                self._first_loss = v
            reason = None
            if not math.isfinite(v):
                reason = f"non-finite loss ({v})"
            elif self._first_loss and v > self.divergence_factor * self._first_loss:
                reason = f"loss {v:.4g} > {self.divergence_factor:g} x initial loss {self._first_loss:.4g}"
            if reason:
                self.diverged_at, self.diverged_reason = step, reason
                if trainer is not None:
                    trainer.should_stop = True
                return

    # --- per epoch ---------------------------------------------------------------------------------

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._sink is None:
            return
        self._drain(trainer)
        step = max(self._opt_steps.values(), default=0)  # optimizer steps done so far
        items = [
            (names.EPOCH, trainer.current_epoch + 1, step),
            (names.EPOCH_SECONDS, time.perf_counter() - self._epoch_t0, step),
        ]
        for key, value in trainer.callback_metrics.items():
            if key.endswith("_step") or not isinstance(value, torch.Tensor) or value.numel() != 1:
                continue
            items.append((key, float(value), step))
        self._sink.log_many(items)

    # --- exit paths --------------------------------------------------------------------------------

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.interrupted = isinstance(exception, KeyboardInterrupt)
        self.failed = None if self.interrupted else exception

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self._sink is None:
            return
        try:
            self._drain(None)
            if self.diverged_at is not None:
                track_runs.set_tags(
                    self.client,
                    self.run_id,
                    {
                        names.TAG_DIVERGED_AT: self.diverged_at,
                        names.TAG_DIVERGED_REASON: self.diverged_reason,
                    },
                )
        finally:
            self._sink.close()
            self._sink = None
            if self._owns_run:
                track_runs.end_run(self.client, self.run_id, outcome=self.outcome)

    @property
    def outcome(self) -> str:
        if self.interrupted:
            return names.OUTCOME_KILLED
        if self.failed is not None:
            return names.OUTCOME_FAILED
        return names.OUTCOME_DIVERGED if self.diverged_at is not None else names.OUTCOME_OK

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log extra values (e.g. end-of-trial summaries) through the same buffered writer."""
        sink = self._sink or MetricSink(self.client, self.run_id)
        sink.log_many((k, v, step) for k, v in metrics.items())
        if sink is not self._sink:
            sink.close()


def _mean_per_step(values: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """One loss per optimizer step: with gradient accumulation several batches share a step."""
    out: dict[int, list[float]] = {}
    for s, v in values:
        out.setdefault(s, []).append(v)
    return [(s, vs[0] if len(vs) == 1 else sum(vs) / len(vs)) for s, vs in out.items()]


def _group_names(optimizers: list[torch.optim.Optimizer]) -> list[list[str]]:
    """Metric suffix per param group: its "name" if set, else pg<i>; prefixed when ambiguous."""
    raw = [[str(g.get("name") or f"pg{i}") for i, g in enumerate(o.param_groups)] for o in optimizers]
    flat = [n for gs in raw for n in gs]
    if len(set(flat)) == len(flat):
        return raw
    return [[f"{type(o).__name__.lower()}{j}_{n}" for n in gs] for j, (o, gs) in enumerate(zip(optimizers, raw))]
