"""`LRStudyCallback`: LR-study tracking for any LightningModule, and for lrstudy's own trials.

Per optimizer step (step = that optimizer's 0-based step count) it records, for every param group,
the LR the step used (read in `on_before_optimizer_step`: after the scheduler set it, before the
update), momentum or beta1 and a non-zero weight decay; the step's training loss (with gradient
accumulation, the mean over the accumulated batches) and the gradient norm before clipping.
Per epoch it forwards the epoch-level metrics the module logged itself.

Metric names: `lr` with one param group, else `lr/<group>` where <group> is the group's "name"
(or `pg<i>`), prefixed by `<optimizer class><index>_` when two optimizers' groups would clash;
likewise `momentum/...` and `weight_decay/...`; `train/loss`; `train/grad_norm` (with several
optimizers `train/grad_norm/opt<i>`). The loss belongs to the first optimizer's steps.

Per-step values stay tensors on the training device and are copied to the host every
`sync_every` steps (a per-step `.item()` would stall a GPU), then handed to a `MetricSink` that
writes off the training thread. The divergence guard (`lrstudy.track.divergence`) checks each copied
chunk; a blow-up tags the run and stops training cleanly at the end of that batch.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import lightning as L
import mlflow  # noqa: F401 - first, so MLflow's entry-point scan never meets a half-imported
import torch  # context_provider (a circular import MLflow would report as a warning)
from lightning.pytorch.callbacks import Callback

from lrstudy import names
from lrstudy.interrupts import check_interrupt
from lrstudy.track import context_provider
from lrstudy.track import runs as track_runs
from lrstudy.track.callback_args import validate_args
from lrstudy.track.divergence import DivergenceGuard
from lrstudy.track.run_params import config_params, group_names, metric_key
from lrstudy.track.sink import MetricSink
from lrstudy.track.step_size import applied_lr, lr_metric_meaning
from lrstudy.track.store import experiment_id, open_client, resolve_tracking_uri
from lrstudy.train.lrfree import ScheduleFreeSwitch

# Names this callback writes per step (bare, or "<name>/<group>"): never forwarded per epoch.
_PER_STEP = (names.LR, names.MOMENTUM, names.WEIGHT_DECAY, names.TRAIN_LOSS, names.GRAD_NORM)


def _is_per_step(key: str) -> bool:
    return key in _PER_STEP or key.startswith(tuple(f"{n}/" for n in _PER_STEP))


class LRStudyCallback(Callback):
    """Track LR, momentum, loss and gradient norm of every optimizer step into MLflow.

    Args:
        study: study name (tag `lrstudy.study`; also the experiment name unless `experiment`).
        tracking_uri: MLflow tracking URI; default MLFLOW_TRACKING_URI, else sqlite:///mlflow.db.
        experiment: MLflow experiment for a run this callback creates.
        run_name: name of a run this callback creates (default: the module's class name).
        run_id: log into this existing run (lrstudy's own trials); its owner ends it.
        client: the MlflowClient `run_id` belongs to (or to create runs with).
        divergence_factor: diverged when loss > factor x initial loss (mean of the first 5
            losses); None turns this rule off (a non-finite loss still counts as diverged).
        stop_on_divergence: stop training when diverged (else only tag the run).
        sync_every: optimizer steps between device->host copies (default 8 on CPU, 64 on GPU).
        tags: extra tags for a run this callback creates or attaches to.
        params: extra params for such a run that count as configuration (say `{"hidden": 64}`):
            the report groups runs by optimizer, LR, schedule and these, seeds aggregated.

    On a run it creates or attaches to, it logs as params what makes the run's configuration:
    `optimizer` (the optimizer's class name), `lr` (the last param group's initial LR; with
    several groups also `lr/<group>`), `opt.<name>` for the other hyperparameters (momentum,
    betas, weight_decay, ...), `schedule` (the LR scheduler's class name, or `none`), `seed`
    (Lightning's `seed_everything` seed, when set) and `params`; tag `lrstudy.config_params`
    lists the names of `params`. A second optimizer's are `optimizer1`, `lr1`, ...

    Which run: `run_id` if given; else the run of the Trainer's `MLFlowLogger` if it has one
    (tagged kind=plugin unless it has a kind, and with the outcome at the end); else a new run
    (kind=plugin) that this callback also ends. During fit, fluent `mlflow.start_run()` calls get
    the study tags (see `lrstudy.track.context_provider`).
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
        stop_on_divergence: bool = True,
        sync_every: int | None = None,
        tags: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        validate_args(locals())
        self.study = study
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.client = client
        self.run_id = run_id
        self._given_run_id = run_id
        self.divergence_factor = divergence_factor
        self.stop_on_divergence = stop_on_divergence
        self.sync_every = sync_every
        self.tags = {k: str(v) for k, v in (tags or {}).items()}
        self.params = dict(params or {})
        self.diverged_at: int | None = None
        self.diverged_reason: str | None = None
        self.interrupted = False
        self.failed: BaseException | None = None
        self._mode = "given"  # "given" (run_id), "logger" (MLFlowLogger's run) or "owned"
        # Set by lrstudy's own study runs of a user LightningModule (`train.user_module`): the
        # module's metrics then arrive through `log_module_metrics` (a Lightning logger, at the
        # steps the module logs them) instead of being forwarded once per epoch, and the epoch's
        # mean step loss is logged as train/loss_epoch (the default ranking metric).
        self.module_logger = False
        self.epoch_losses: list[float] = []  # mean training loss of each finished epoch
        self._sink: MetricSink | None = None
        self._context = None
        # A schedule-free optimizer refuses to step in eval mode and is meant to be validated in
        # it: switched here too, so a user's loop with one trains without calling train()/eval().
        self._schedule_free = ScheduleFreeSwitch()
        self._reset_buffers()

    # --- run set-up ------------------------------------------------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or trainer.global_rank != 0:
            return
        self.diverged_at = self.diverged_reason = self.failed = None
        self.interrupted = False
        if self._given_run_id is None:
            self._attach_or_create_run(trainer, pl_module)
        self._sink = MetricSink(self.client, self.run_id)
        if self.study:
            self._context = context_provider.enter_context(
                self.study, self.tags.get(names.TAG_TRIAL_KEY)
            )
        self._reset_buffers()

    def _attach_or_create_run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning.pytorch.loggers import MLFlowLogger

        tags = dict(self.tags)
        if self.study:
            tags[names.TAG_STUDY] = self.study
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                self._mode = "logger"
                self.client, self.run_id = logger.experiment, logger.run_id
                if names.TAG_KIND not in self.client.get_run(self.run_id).data.tags:
                    tags[names.TAG_KIND] = names.KIND_PLUGIN
                if tags:
                    track_runs.set_tags(self.client, self.run_id, tags)
                return
        self._mode = "owned"
        if self.client is None:
            self.client = open_client(resolve_tracking_uri(self.tracking_uri))
        exp = experiment_id(self.client, self.experiment or self.study or "lrstudy")
        tags.update({names.TAG_KIND: names.KIND_PLUGIN, names.TAG_OUTCOME: names.OUTCOME_RUNNING})
        self.run_id = track_runs.start_run(
            self.client, exp, name=self.run_name or type(pl_module).__name__, tags=tags
        )

    def _reset_buffers(self) -> None:
        self._groups: dict[int, list[str]] = {}  # id(optimizer) -> metric suffix per group
        self._norm_keys: dict[int, str] = {}  # id(optimizer) -> its grad-norm metric name
        self._opt_steps: dict[int, int] = {}  # id(optimizer) -> optimizer steps taken
        self._primary: int | None = None  # id of the optimizer whose steps the loss belongs to
        self._stepped: int | None = None  # primary step taken during the current batch
        self._batch_losses: list[torch.Tensor] = []  # losses waiting for the primary's next step
        self._scalars: list[tuple[str, float, int]] = []  # host-side values (LR, momentum, ...)
        self._loss: list[tuple[int, torch.Tensor]] = []
        self._gnorm: list[tuple[str, int, torch.Tensor]] = []
        self._guard = DivergenceGuard(self.divergence_factor)
        self._forwarded: dict[str, Any] = {}  # epoch metric -> the value forwarded last
        self._epoch_t0 = 0.0
        self._epoch_loss = [0.0, 0]  # sum and count of this epoch's step losses (host side)
        self.epoch_losses.clear()

    # --- per step ----------------------------------------------------------------------------------

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._schedule_free.on_train_start(trainer, pl_module)
        if self._sink is None:
            return
        n_opts = len(trainer.optimizers)
        for j, (opt, gnames) in enumerate(zip(trainer.optimizers, group_names(trainer.optimizers))):
            self._groups[id(opt)] = gnames
            self._norm_keys[id(opt)] = names.group_metric(names.GRAD_NORM, f"opt{j}", n_opts)
        self._primary = id(trainer.optimizers[0]) if trainer.optimizers else None
        flat = [g for gs in self._groups.values() for g in gs]
        tags = {names.TAG_PARAM_GROUPS: ",".join(flat), names.TAG_DEVICE: str(pl_module.device)}
        meaning = next(
            (
                m
                for opt in trainer.optimizers
                for g in opt.param_groups
                if (m := lr_metric_meaning(g))
            ),
            None,
        )
        if meaning:  # the `lr` metric is the applied step size; the param stays the given lr
            tags[names.TAG_LR_METRIC] = meaning
        if self._mode != "given":  # a user's own run: say what its configuration is
            tags[names.TAG_CONFIG_PARAMS] = json.dumps(sorted(self.params))
            self._log_config_params(trainer)
        track_runs.set_tags(self.client, self.run_id, tags)
        if self.sync_every is None:
            self.sync_every = 8 if pl_module.device.type == "cpu" else 64

    def _log_config_params(self, trainer: L.Trainer) -> None:
        """The run's configuration as params (see the class docstring); a param the run has
        already (an MLFlowLogger's hyperparameters) is left as it is: params never change."""
        params = config_params(trainer, self._groups, self.params)
        have = self.client.get_run(self.run_id).data.params
        new = {k: v for k, v in params.items() if k not in have}
        track_runs.log_params(self.client, self.run_id, new)

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self._sink is None:
            return
        opt = getattr(optimizer, "optimizer", optimizer)  # unwrap a LightningOptimizer
        key = id(opt)
        if key not in self._groups:  # an optimizer created after fit start
            self._groups[key] = group_names([opt])[0]
            self._norm_keys[key] = f"{names.GRAD_NORM}/opt{len(self._norm_keys)}"
        step = self._opt_steps.get(key, 0)
        self._opt_steps[key] = step + 1
        if key == self._primary or self._primary is None:
            self._primary = key
            self._stepped = step
        gnames = self._groups[key]
        n = sum(len(g) for g in self._groups.values())
        grads = []
        for gname, group in zip(gnames, opt.param_groups):
            lr = applied_lr(group)  # Prodigy/D-Adaptation: d * lr, what the step applies
            self._scalars.append((names.group_metric(names.LR, gname, n), lr, step))
            mom = group.get("momentum", group.get("betas", (None,))[0])
            if mom is not None:
                self._scalars.append(
                    (names.group_metric(names.MOMENTUM, gname, n), float(mom), step)
                )
            if group.get("weight_decay"):
                wd = float(group["weight_decay"])
                self._scalars.append((names.group_metric(names.WEIGHT_DECAY, gname, n), wd, step))
            grads.extend(p.grad for p in group["params"] if p.grad is not None)
        if grads:
            self._gnorm.append(
                (self._norm_keys[key], step, torch.nn.utils.get_total_norm(grads).detach())
            )

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        check_interrupt()  # a Ctrl-C that a finalizer swallowed stops training here
        if self._sink is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            # Lightning hands on the loss divided by accumulate_grad_batches (what it backprops).
            scale = trainer.accumulate_grad_batches if pl_module.automatic_optimization else 1
            self._batch_losses.append(loss.detach().reshape(()).float() * scale)
        if self._stepped is not None:  # the primary optimizer stepped: its loss is complete
            if self._batch_losses:
                self._loss.append((self._stepped, torch.stack(self._batch_losses).mean()))
            self._batch_losses = []
            self._stepped = None
        if len(self._loss) >= (self.sync_every or 1) or len(self._gnorm) >= 4 * (
            self.sync_every or 1
        ):
            self._drain(trainer)

    def _drain(self, trainer: L.Trainer | None = None) -> None:
        """Copy buffered device scalars to the host, check divergence, hand all to the sink."""
        items, self._scalars = self._scalars, []
        if self._gnorm:
            values = torch.stack([v.float() for _, _, v in self._gnorm]).tolist()
            items += [(k, v, s) for (k, s, _), v in zip(self._gnorm, values)]
            self._gnorm = []
        if self._loss:
            values = torch.stack([v for _, v in self._loss]).tolist()
            losses = [(s, v) for (s, _), v in zip(self._loss, values)]
            self._loss = []
            items += [(names.TRAIN_LOSS, v, s) for s, v in losses]
            self._epoch_loss[0] += sum(v for _, v in losses)
            self._epoch_loss[1] += len(losses)
            self._check_divergence(losses, trainer)
        if items and self._sink is not None:
            self._sink.log_many(items)

    def _check_divergence(self, losses: list[tuple[int, float]], trainer: L.Trainer | None) -> None:
        if self._guard.diverged_at is None and self._guard.check(losses):
            self.diverged_at, self.diverged_reason = self._guard.diverged_at, self._guard.reason
            if trainer is not None and self.stop_on_divergence:
                trainer.should_stop = True

    # --- per epoch ---------------------------------------------------------------------------------

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._schedule_free.on_train_epoch_start(trainer, pl_module)
        self._epoch_t0 = time.perf_counter()

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":  # validate a schedule-free optimizer's averaged weights
            self._schedule_free.on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._schedule_free.on_validation_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._schedule_free.on_train_end(trainer, pl_module)  # fit returns the averaged model

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._sink is None:
            return
        self._drain(trainer)
        step = self._opt_steps.get(self._primary, 0) if self._primary else 0  # steps done so far
        items = [
            (names.EPOCH, trainer.current_epoch + 1, step),
            (names.EPOCH_SECONDS, time.perf_counter() - self._epoch_t0, step),
        ]
        if self.module_logger:
            total, count = self._epoch_loss
            if count:
                self.epoch_losses.append(total / count)
                items.append((names.TRAIN_LOSS_EPOCH, total / count, step))
            self._epoch_loss = [0.0, 0]
            self._sink.log_many(items)
            return
        metrics = trainer.callback_metrics
        for key, value in metrics.items():
            # Skip step values, the unsuffixed twin of a `<key>_epoch`, our own per-step names,
            # and values not recomputed since the last epoch (e.g. validation that did not run).
            if key.endswith("_step") or f"{key}_epoch" in metrics or _is_per_step(key):
                continue
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                continue
            if self._forwarded.get(key) is value:
                continue
            self._forwarded[key] = value  # a reference, not id(): ids of freed tensors are reused
            items.append((key, float(value), step))
        self._sink.log_many(items)

    # --- exit paths --------------------------------------------------------------------------------

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # Lightning skips the teardown hooks after an exception: close the run here instead.
        self.interrupted = isinstance(exception, KeyboardInterrupt)
        self.failed = None if self.interrupted else exception
        with contextlib.suppress(Exception):  # never mask the exception that is propagating
            self._finish()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._finish()

    def _finish(self) -> None:
        if self._sink is None:
            return
        sink = self._sink
        try:
            self._drain(None)
            tags: dict[str, Any] = {}
            if self.diverged_at is not None:
                tags[names.TAG_DIVERGED_AT] = self.diverged_at
                tags[names.TAG_DIVERGED_REASON] = self.diverged_reason
            if self._mode == "logger":
                tags[names.TAG_OUTCOME] = self.outcome
            if tags:
                track_runs.set_tags(self.client, self.run_id, tags)
        finally:
            self._sink = None
            if self._context is not None:
                context_provider.exit_context(self._context)
                self._context = None
            try:
                sink.close()
            finally:
                if self._mode == "owned":
                    track_runs.end_run(self.client, self.run_id, outcome=self.outcome)

    @property
    def outcome(self) -> str:
        if self.interrupted:
            return names.OUTCOME_KILLED
        if self.failed is not None:
            return names.OUTCOME_FAILED
        return names.OUTCOME_DIVERGED if self.diverged_at is not None else names.OUTCOME_OK

    def log_module_metrics(self, metrics: dict[str, float], step: int | None) -> None:
        """What a user's LightningModule logs itself (`self.log`), under its own names, at the
        step Lightning gives (its global step); our own per-step names are never overwritten."""
        if self._sink is None:
            return
        step = int(step or 0)
        items = [
            (metric_key(k), float(v), step)
            for k, v in metrics.items()
            if k != names.EPOCH and not _is_per_step(k) and k != names.TRAIN_LOSS_EPOCH
        ]
        if items:
            self._sink.log_many(items)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log extra values (e.g. end-of-trial summaries) through the same buffered writer."""
        sink = self._sink or MetricSink(self.client, self.run_id)
        sink.log_many((k, v, step) for k, v in metrics.items())
        if sink is not self._sink:
            sink.close()
