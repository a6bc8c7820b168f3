"""A population of same-shape trials trained together in one LightningModule.

Per step, one vmapped forward/backward gives every member's loss and gradients on its own batch,
and one functional optimizer step updates every member with its own LR and hyperparameters. The
host sees per-step scalars only every `sync_every` steps (as LRStudyCallback copies them), and
that is also when each member's divergence guard runs: a member that diverged stops exactly where
its solo trial would stop (at the end of that chunk, after one last validation), leaves the stack,
and the others go on. Nothing of a stopped member stays in the stacked arithmetic.

Slots freed that way (diverged, stopped by successive halving, or trained to the end) take new
work at the next epoch's start when the caller has more (`refill`): a newcomer starts at its own
step 0, epochs behind the members beside it, and every member keeps its own step, epoch, batches,
schedule and optimizer state, so each trains exactly as its solo run would.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import lightning as L
import torch

from lrstudy.interrupts import check_interrupt
from lrstudy.plan import Trial
from lrstudy.spec.optimizers import optimizer_info
from lrstudy.train.data import Dataset
from lrstudy.train.population.batches import MemberBatches, subset_index
from lrstudy.train.population.functional_optim import build_population_optimizer
from lrstudy.train.population.grouping import check_population
from lrstudy.train.population.members import Member, MemberResult, Row
from lrstudy.train.population.stacked import (
    NotVectorisable,
    StackedModel,
    seeded_model,
    vectorise_problem,
)

Emit = Callable[[int, list[Row]], None]
# Successive halving: judge(rung epoch, [(member index, its epoch row)]) -> stop each member?
Judge = Callable[[int, list[tuple[int, dict[str, float]]]], list[bool]]
# Freed slots: refill(free slots) -> up to that many trials to join (claimed by the caller; they
# become members len(trials), len(trials) + 1, ... in this order).
Refill = Callable[[int], list[Trial]]
# on_done(member index, its result): called as each member stops, while the others train on.
OnDone = Callable[[int, MemberResult], None]

warnings.filterwarnings(
    "ignore", message=".*returned `None`, this fit will run with no optimizer.*"
)


class PopulationModule(L.LightningModule):
    """Trials sharing data, model, batch size and optimizer, trained as one stacked model.

    Args:
        emit: emit(member index, rows) receives each member's metric rows, in training order.
        dtype: of parameters and data (float32 is the study path; float64 for exactness checks).
        sync_every: steps between device->host copies; None as LRStudyCallback: 8 on CPU, else 64.
        keep_weights: keep each member's final weights in `weights` (CPU copies), e.g. to save
            or to compare them with a solo run.
        judge: successive halving's rung judge (see `run_population`).
        refill: where freed slots find new work (see `Refill`); None: members only leave.
        on_done: told of each member's result as it stops (see `OnDone`).
    """

    def __init__(
        self,
        trials: list[Trial],
        data: Dataset,
        emit: Emit,
        *,
        dtype: torch.dtype = torch.float32,
        sync_every: int | None = None,
        keep_weights: bool = False,
        judge: Judge | None = None,
        refill: Refill | None = None,
        on_done: OnDone | None = None,
    ) -> None:
        super().__init__()
        self.judge, self.refill, self.on_done = judge, refill, on_done
        self.rungs = set(trials[0].halving["rungs"]) if judge and trials[0].halving else set()
        self.automatic_optimization = False
        first = trials[0]
        self.data, self.emit, self.dtype_, self.sync_every = data, emit, dtype, sync_every
        self.trials, self.capacity = list(trials), len(trials)
        subsets = [subset_index(data, t.train_fraction, t.seed) for t in trials]
        seeds = [t.seed for t in trials]
        self.batches = MemberBatches(len(data.x_train), first.batch_size, seeds, subsets)
        self.spe = len(self.batches)
        models = [
            seeded_model(t.model, data.input_shape, data.num_classes, t.model_args, t.seed)
            for t in trials
        ]
        # Checked before anything trains, so a caller can still hand these trials to run_trial.
        problem = vectorise_problem(models[0], data.input_shape)
        if problem:
            raise NotVectorisable(f"model {first.model!r} does not vectorise: {problem}")
        self.stack = StackedModel(models, dtype)
        self.members = [
            Member(i, t, self.stack.template, self.spe, self.spe * t.epochs)
            for i, t in enumerate(trials)
        ]
        self.optim = build_population_optimizer(
            optimizer_info(first.optimizer).torch_class,
            [m.hparams for m in self.members],
            self.stack.params,
        )
        self.results: dict[int, MemberResult] = {}
        self.keep_weights = keep_weights
        self.weights: dict[int, dict[str, torch.Tensor]] = {}
        self.steps_done = 0
        self._buffer: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (step, loss, grad norm)

    def configure_optimizers(self) -> None:
        return None  # the functional population optimizer steps inside training_step

    def on_fit_start(self) -> None:
        device = self.device
        if self.sync_every is None:  # LRStudyCallback's own rule, so chunks (and stops) line up
            self.sync_every = 8 if device.type == "cpu" else 64
        self.stack.to(device)
        self.optim.to(device)
        d = self.data
        self.x, self.y = d.x_train.to(device, self.dtype_), d.y_train.to(device)
        self.x_test, self.y_test = d.x_test.to(device, self.dtype_), d.y_test.to(device)
        self.t0 = time.perf_counter()
        for m in self.members:
            m.t0 = self.t0

    def on_train_epoch_start(self) -> None:
        for m in self.members:
            m.epoch = (self.steps_done - m.start) // self.spe
        members, epochs = [m.index for m in self.members], [m.epoch for m in self.members]
        self.batch_index = self.batches.epoch(epochs, members).to(self.device)
        # (steps, G, K) float64: row i is every member's LR per layer group at the epoch's step i.
        lrs = [m.epoch_lrs(self.steps_done - m.start, self.spe) for m in self.members]
        table = torch.tensor(lrs, dtype=torch.float64).permute(1, 2, 0).contiguous()
        self.lr_table = table.to(self.device)
        k = len(self.members)
        self.loss_sum = torch.zeros(k, device=self.device, dtype=self.dtype_)
        self.correct = torch.zeros(k, device=self.device, dtype=torch.long)
        self.seen = 0
        self.epoch_t0 = time.perf_counter()

    def training_step(self, batch: int, batch_idx: int) -> None:
        if not self.members:  # all stopped mid-epoch; newcomers start with the next epoch
            return
        index = self.batch_index[:, batch_idx]
        x, y = self.x[index], self.y[index]
        grads, loss, correct = self.stack.train_step(x, y)
        norm = self.stack.grad_norm(grads)
        self.optim.step(self.stack.params, grads, self.lr_table[batch_idx], self.stack.group_of)
        with torch.no_grad():
            self.loss_sum += loss.detach() * y.shape[1]
            self.correct += correct
            self.seen += y.shape[1]
        self._buffer.append((self.steps_done, loss.detach().float(), norm.float()))
        self.steps_done += 1

    def on_train_batch_end(self, outputs: object, batch: int, batch_idx: int) -> None:
        check_interrupt()  # a Ctrl-C that a finalizer swallowed stops the members here
        if len(self._buffer) >= self.sync_every:
            diverged = self._drain()
            if diverged:
                # A solo trial stops at the end of this batch and still validates once.
                self._epoch_end(diverged)
                self._finish(diverged)
                if not self.members and self.refill is None:
                    self.trainer.should_stop = True

    def on_train_epoch_end(self) -> None:
        everyone = list(range(len(self.members)))
        if everyone:
            # Solo order: validation (and the plateau's observation), then the callback's last
            # drain of the epoch, then its epoch rows.
            self._validate(everyone, observe=True)
            diverged = self._drain()
            self._emit_epoch_rows(everyone)
            last = [
                k for k in everyone if self.members[k].epoch + 1 >= self.members[k].trial.epochs
            ]
            going = [k for k in everyone if k not in diverged and k not in last]
            self._finish(sorted({*last, *diverged, *self._judge_rung(going)}))
        self._join()
        if not self.members:
            self.trainer.should_stop = True

    # --- helpers ---------------------------------------------------------------------------------

    def _drain(self) -> list[int]:
        """Copy the buffered losses and grad norms to the host, emit rows, run the guards.

        Returns the stack rows of members that diverged in this chunk.
        """
        if not self._buffer:
            return []
        steps = [s for s, _, _ in self._buffer]
        losses = torch.stack([v for _, v, _ in self._buffer], 1).tolist()
        norms = torch.stack([v for _, _, v in self._buffer], 1).tolist()
        self._buffer = []
        diverged = []
        for k, m in enumerate(self.members):
            own = [s - m.start for s in steps]  # the member's own step numbers
            self.emit(m.index, m.step_rows(own, norms[k], losses[k]))
            if m.guard.diverged_at is None and m.check(own, losses[k]):
                diverged.append(k)
        return diverged

    def _judge_rung(self, going: list[int]) -> list[int]:
        """Of these stack rows (members going on), those successive halving stops at their rung
        (after their epoch rows, as solo).

        The members at one rung are judged together: their decisions do not depend on the order
        in which the population lists them. Newcomers may be at another rung than the others."""
        if self.judge is None:
            return []
        at: dict[int, list[int]] = {}
        for k in going:
            epoch = self.members[k].epoch + 1
            if epoch in self.rungs:
                at.setdefault(epoch, []).append(k)
        out = []
        for epoch, rows in sorted(at.items()):
            stops = self.judge(
                epoch, [(self.members[k].index, self.members[k].history[-1]) for k in rows]
            )
            for k, stop in zip(rows, stops, strict=True):
                if stop:
                    m = self.members[k]
                    m.pruned_at = (epoch, self.steps_done - m.start)
                    out.append(k)
        return sorted(out)

    def _validate(self, rows: list[int], *, observe: bool) -> None:
        val = self.stack.evaluate(self.x_test, self.y_test, rows)
        seen = max(self.seen, 1)
        index = torch.tensor(rows, device=self.device)
        train = torch.stack(
            [
                self.loss_sum.index_select(0, index) / seen,
                self.correct.index_select(0, index).float() / seen,
            ],
            dim=1,
        )
        values = torch.cat([val.to(train.dtype), train], dim=1).tolist()
        for k, v in zip(rows, values, strict=True):
            m = self.members[k]
            m.record_epoch(v, self.steps_done - m.start, observe=observe)

    def _emit_epoch_rows(self, rows: list[int]) -> None:
        seconds = time.perf_counter() - self.epoch_t0
        for k in rows:
            m = self.members[k]
            self.emit(m.index, m.epoch_rows(m.epoch, seconds))

    def _epoch_end(self, rows: list[int]) -> None:
        """Validation and epoch rows for members that stop in the middle of an epoch."""
        self._validate(rows, observe=False)
        self._emit_epoch_rows(rows)

    def _finish(self, rows: list[int]) -> None:
        """Measure these members' results and take them out of the stack."""
        if not rows:
            return
        now = time.perf_counter()
        for k in rows:
            m = self.members[k]
            model = self.stack.member_model(k)
            if self.keep_weights:
                self.weights[m.index] = {n: p.detach().cpu() for n, p in model.named_parameters()}
            self.results[m.index] = m.result(model, self.data, now - m.t0, self.spe, self.capacity)
            if self.on_done is not None:
                self.on_done(m.index, self.results[m.index])
        gone = set(rows)
        keep = [k for k in range(len(self.members)) if k not in gone]
        self.members = [self.members[k] for k in keep]
        self.stack.select(keep)  # all of them may leave: newcomers then join an empty stack
        self.optim.select(keep)
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.batch_index = self.batch_index.index_select(0, index)
        self.lr_table = self.lr_table.index_select(2, index)
        self.loss_sum = self.loss_sum.index_select(0, index)
        self.correct = self.correct.index_select(0, index)

    def _join(self) -> None:
        """Freed slots take new work from `refill`: the newcomers' models are built as their
        solo runs build theirs and stacked after the members in training."""
        free = self.capacity - len(self.members)
        if self.refill is None or free <= 0:
            return
        newcomers = self.refill(free)[:free]
        if not newcomers:
            return
        check_population([self.trials[0], *newcomers])
        data, first = self.data, len(self.trials)
        self.trials += newcomers
        self.batches.add([t.seed for t in newcomers],
                         [subset_index(data, t.train_fraction, t.seed) for t in newcomers])  # fmt: skip
        models = [
            seeded_model(t.model, data.input_shape, data.num_classes, t.model_args, t.seed)
            for t in newcomers
        ]
        params = self.stack.add(models)
        joined = [
            Member(first + j, t, self.stack.template, self.spe, self.spe * t.epochs)
            for j, t in enumerate(newcomers)
        ]
        self.optim.add([m.hparams for m in joined], params)
        now = time.perf_counter()
        for m in joined:
            m.start, m.t0 = self.steps_done, now
        self.members += joined
